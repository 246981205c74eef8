"""Instructions a chat request costs with tracing off and on, counted by callgrind, for two trees.

CPU time on a shared 2-core machine moves by tens of percent between runs; the number of
instructions a request executes does not, so it can tell apart changes of a few percent
that `service_overhead.py` cannot. Each tree (the working tree, and `--baseline`: a git
revision read with `git archive`, or a directory such as another checkout) is copied to a
temporary directory; its own CLI provisions
a SQLite database with a user. A child process then builds the app as `python -m service
serve` does (`create_app(Settings())`, lifespan included) and calls it in-process through
ASGI with `POST /api/v1/ai/chat` (`builtin:chat`, offline LLM), under
`valgrind --tool=callgrind`: "off" with OTEL_SDK_DISABLED=true, "on" exporting over OTLP/HTTP
to a null endpoint (the real exporter, spool and BatchSpanProcessor, in batches of 512 spans
as under load). Each (tree, mode) runs twice, with W warm-up requests and then N1 or N2 more;
instructions per request = (count(N2) - count(N1)) / (N2 - N1), so start-up, imports and
shutdown cancel out. The child freezes the heap after its warm-up (`gc.freeze()`, as the
service does), so a full collection cannot land in one count and not the other.

What this leaves out: uvicorn's HTTP parsing and the access log (the same in both modes, so
the ratio here is larger than the service's), waiting, and that an instruction is not a
fixed amount of time (cache misses, the GIL). Time stays `service_overhead.py`'s to measure.
Not part of `make bench` (about 10 minutes of one core): run it when weighing a change.

Usage: python bench/service_instructions.py [--baseline REV] [--quick] [--jobs J]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

RESULTS_NAME = "service_instructions.md"
PACKAGES = ("service", "telemetry")
BODY = json.dumps({
    "graphId": "builtin:chat", "stateKey": "bench-conversation",
    "messages": [{"role": "user",
                  "content": "Summarise this week's community activity in two lines."}],
}).encode()


# ---- the child: runs inside valgrind, imports only the tree under test ----------------------

async def _chat(app: Any, api_key: str) -> int:
    """One `POST /api/v1/ai/chat` through the app's ASGI interface; the response status."""
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/api/v1/ai/chat",
        "raw_path": b"/api/v1/ai/chat", "query_string": b"", "root_path": "",
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk/4.2"),
                    (b"content-type", b"application/json"),
                    (b"authorization", f"Bearer {api_key}".encode()),
                    (b"content-length", str(len(BODY)).encode())],
    }
    delivered = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.Event().wait()  # the client never goes away
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def child(warmup: int, requests: int) -> None:
    from service.config import get_settings
    from service.main import create_app

    api_key = os.environ["BENCH_API_KEY"]

    async def run() -> list[int]:
        app = create_app(get_settings())
        statuses = []
        async with app.router.lifespan_context(app):
            for index in range(warmup + requests):
                if index == warmup:
                    gc.collect()
                    gc.freeze()
                statuses.append(await _chat(app, api_key))
        return statuses  # the lifespan's exit flushed the spans

    statuses = asyncio.run(run())
    print(json.dumps({"answered_200": statuses.count(200), "requests": len(statuses)}))


# ---- the parent -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Tree:
    name: str
    root: Path
    database_url: str
    api_key: str

    def env(self) -> dict[str, str]:
        path = os.pathsep.join((str(self.root), str(self.root / "telemetry")))
        return {"PYTHONSAFEPATH": "1", "PYTHONPATH": path}


def copy_working_tree(repo: Path, into: Path) -> None:
    """service/ and telemetry/ of a checkout, without caches and build output."""
    for package in PACKAGES:
        shutil.copytree(repo / package, into / package,
                        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))


def extract_revision(repo: Path, revision: str, into: Path) -> None:
    """`git archive` of the packages at `revision` (reads the object store, changes nothing)."""
    archive = subprocess.run(["git", "archive", "--format=tar", revision, *PACKAGES],
                             cwd=repo, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def provision(root: Path, name: str, repo: Path) -> Tree:
    """A SQLite database with an account and a user, made by the tree's own CLI."""
    database_url = f"sqlite:///{root / 'service.db'}"
    path = os.pathsep.join((str(root), str(root / "telemetry")))
    env = {**os.environ, "DATABASE_URL": database_url, "DEPLOY_ENVIRONMENT": "development",
           "PYTHONSAFEPATH": "1", "PYTHONPATH": path}

    def cli(*args: str) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-m", "service", *args], cwd=repo, env=env,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{name}: `python -m service {' '.join(args)}` failed: "
                             f"{done.stderr or done.stdout}")
        answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return answer

    cli("accounts", "create", "--billing-account", "bench")
    user = cli("users", "create", "--billing-account", "bench", "--user", "bench-user")
    return Tree(name, root, database_url, str(user["apiKey"]))


def basic_auth_header(public_key: str, secret_key: str) -> str:
    """OTEL_EXPORTER_OTLP_HEADERS for the null endpoint's Basic credentials."""
    token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
    return f"Authorization=Basic%20{token}"


def count(tree: Tree, mode: str, *, warmup: int, requests: int, endpoint: str,
          headers: str, scratch: Path) -> int:
    """Instructions of one child run under callgrind (all threads, start to exit)."""
    out = Path(tempfile.mkdtemp(dir=scratch))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        **tree.env(),
        "DATABASE_URL": tree.database_url, "BENCH_API_KEY": tree.api_key,
        "SCHEDULER_API_TOKEN": "bench-scheduler-token-0123456789",
        "DEPLOY_ENVIRONMENT": "development", "LLM_BASE_URL": "", "PYTHONHASHSEED": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_HEADERS": headers,
        "SESSIONTRACE_SPOOL_DIR": str(out / "spool"),
        # Batches of 512 spans, as under load: valgrind is too slow to fill one in 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
    }
    if mode == "off":
        env["OTEL_SDK_DISABLED"] = "true"
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out / 'callgrind.out'}",
            sys.executable, str(Path(__file__).resolve()), "--child",
            "--warmup", str(warmup), "--requests", str(requests)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    shutil.rmtree(out, ignore_errors=True)
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    expected = warmup + requests
    if done.returncode != 0 or not answers or answers[-1]["answered_200"] != expected:
        raise SystemExit(f"{tree.name} {mode}: the child did not answer {expected} requests "
                         f"200:\n{done.stdout}\n{done.stderr[-3000:]}")
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"{tree.name} {mode}: no instruction count from callgrind")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="HEAD",
                        help="git revision to compare with, or a directory holding service/ "
                             "and telemetry/ (another checkout)")
    parser.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    parser.add_argument("--jobs", type=int, default=2, help="callgrind runs at a time")
    parser.add_argument("--output", type=Path,
                        help=f"markdown file (default: results/{RESULTS_NAME})")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=30, help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.warmup, args.requests)
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is required: apt-get install valgrind")

    # Imported here: the child must import nothing but the tree under test.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import (
        REPO_ROOT, RESULTS_DIR, command_line, git_revision, machine_line, utc_now,
        write_results,
    )
    from local_stack import workspace
    from null_endpoint import PUBLIC_KEY, SECRET_KEY

    first, second = (10, 60) if args.quick else (30, 130)
    with workspace("instructions") as space:
        trees = []
        baseline = Path(args.baseline)
        for name, fill in ((f"{args.baseline} (baseline)", lambda p: (
                copy_working_tree(baseline, p) if baseline.is_dir()
                else extract_revision(REPO_ROOT, args.baseline, p))),
                           ("working tree", lambda p: copy_working_tree(REPO_ROOT, p))):
            root = space.path(name.split()[0].replace("/", "_"))
            root.mkdir()
            fill(root)
            trees.append(provision(root, name, REPO_ROOT))
        endpoint = space.null_endpoint()
        headers = basic_auth_header(PUBLIC_KEY, SECRET_KEY)
        jobs = [(tree, mode, n) for tree in trees for mode in ("off", "on")
                for n in (first, second)]
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            counts = list(pool.map(
                lambda job: count(job[0], job[1], warmup=args.warmup, requests=job[2],
                                  endpoint=endpoint.url, headers=headers,
                                  scratch=space.root), jobs))
        stats = endpoint.stats()
    # Four spans a chat request, every one stamped, from the "on" runs only; none refused.
    expected = 4 * sum(args.warmup + n for _, mode, n in jobs if mode == "on")
    if (stats["spans"], stats["stamped"], stats["rejected"]) != (expected, expected, 0):
        raise SystemExit(f"the null endpoint got {stats}; expected {expected} spans, all "
                         "stamped, and no rejected request")
    by_job = {(tree.name, mode, n): c for (tree, mode, n), c in zip(jobs, counts)}
    per_request = {
        (tree.name, mode): (by_job[tree.name, mode, second] - by_job[tree.name, mode, first])
        / (second - first)
        for tree in trees for mode in ("off", "on")
    }
    rows = ["| tree | off: instructions/request | on | added by tracing | on / off |",
            "|---|--:|--:|--:|--:|"]
    for tree in trees:
        off, on = per_request[tree.name, "off"], per_request[tree.name, "on"]
        rows.append(f"| {tree.name} | {off / 1e6:.3f} M | {on / 1e6:.3f} M "
                    f"| {(on - off) / 1e6:+.3f} M | {on / off:.3f} |")
    base, work = (tree.name for tree in trees)
    added = {name: per_request[name, "on"] - per_request[name, "off"] for name in (base, work)}
    off_change = per_request[work, "off"] / per_request[base, "off"] - 1
    text = f"""# Instructions per chat request, tracing off and on (callgrind)

`{command_line("service_instructions.py")}`, {utc_now()}.

- Machine: {machine_line()}. Instruction counts do not depend on the load.
- Trees: `{args.baseline}` ({"a directory" if Path(args.baseline).is_dir() else "git archive"})
  and the working tree at {git_revision(*PACKAGES)}; each provisioned by its own CLI.
- Per (tree, mode): two runs under `valgrind --tool=callgrind`, {args.warmup} warm-up requests
  then {first} or {second} more, in-process through ASGI (`POST /api/v1/ai/chat`,
  `builtin:chat`, offline LLM); "on" exports to a null OTLP endpoint. Per request =
  difference / {second - first}. Every request answered 200, and the null endpoint got
  every span of the "on" runs, each with a session.id, and none of the "off" runs.

{chr(10).join(rows)}

- Tracing adds {added[work] / 1e6:.3f} M instructions a request in the working tree, against
  {added[base] / 1e6:.3f} M at `{args.baseline}` ({added[work] / added[base] - 1:+.0%}).
- The untraced request: {per_request[work, "off"] / 1e6:.3f} M against
  {per_request[base, "off"] / 1e6:.3f} M ({off_change:+.0%}).
"""
    write_results(text, args.output or (None if args.quick else RESULTS_DIR / RESULTS_NAME))
    return 0


if __name__ == "__main__":
    sys.exit(main())
