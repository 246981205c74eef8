"""Candidate changes to service/ or telemetry/, measured before anyone makes them: an A/B run.

Each variant is a copy of the working tree's service/ and telemetry/ in a temporary directory,
with a few regular-expression replacements applied (each must match exactly once, or the run
stops: the code has moved on and the variant needs updating), started as
`python -m service serve` with PYTHONSAFEPATH=1 and PYTHONPATH pointing at the copy, plus its
environment. With `--baseline REV`, tracing off and on also run for service/ and telemetry/
as they were at git revision REV (`git archive`): a change set against what it replaces, in
one run. Each variant's database is made by its own tree's CLI. Rounds run every variant
once, in a rotating order, each in a fresh process (warm-up, measured wrk run, stop, drain:
`service_overhead.measure`); medians, each variant against tracing off in its own tree. The
repository is never changed. Not part of `make bench`: run it when weighing a suggestion.

Usage: python bench/service_variants.py [--quick] [--rounds R] [--duration S]
       [--variants off,on,...] [--baseline REV]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from devstack.delivery import collector_counters

from common import (
    REPO_ROOT,
    RESULTS_DIR,
    command_line,
    git_revision,
    machine_line,
    utc_now,
    write_results,
)
from local_stack import build_collector, workspace
from service_checks import exported_traces
from service_overhead import Round, Stack, Target, ensure_wrk, measure, provision

RESULTS = RESULTS_DIR / "service_variants.md"
# The FastAPI/ASGI instrumentation call in create_app: without it the run span is the root.
NO_SERVER_SPAN = ("service/main.py",
                  r"    FastAPIInstrumentor\.instrument_app\(\n(?:        .*\n)*?    \)\n", "")


@dataclass(frozen=True)
class Variant:
    """A name, the service's extra variables, (path, pattern, replacement) edits, and in words.

    `revision`: the tree is service/ and telemetry/ at that git revision (`git archive`, which
    changes nothing), not the working tree.
    """

    key: str
    name: str
    env: dict[str, str] = field(default_factory=dict)
    patches: tuple[tuple[str, str, str], ...] = ()
    what: str = ""
    revision: str | None = None


VARIANTS = [
    Variant("off", "off", {"OTEL_SDK_DISABLED": "true"}),
    Variant("on", "on (working tree)", what="the service as it is"),
    Variant("sdk-encoder", "on, the SDK's OTLP encoder", {"SESSIONTRACE_OTLP_ENCODER": "sdk"},
            what="protobuf objects, as before sessiontrace._otlp_encoder"),
    Variant("no-server-span", "on, no FastAPI instrumentation (no HTTP server span)",
            patches=(NO_SERVER_SPAN,),
            what="`FastAPIInstrumentor.instrument_app(...)` removed from `create_app`"),
]


def at_revision(revision: str) -> list[Variant]:
    """Tracing off and on, for service/ and telemetry/ as they were at `revision` (a git
    revision, or a directory holding the two, such as another checkout)."""
    return [
        Variant("off@", f"off ({revision})", {"OTEL_SDK_DISABLED": "true"}, revision=revision,
                what=f"service/ and telemetry/ at {revision}"),
        Variant("on@", f"on ({revision})", revision=revision,
                what=f"service/ and telemetry/ at {revision}"),
    ]


def materialise(variant: Variant, root: Path) -> dict[str, str]:
    """Copy service/ and telemetry/ under `root`, apply the patches; the variables to run it."""
    if variant.revision is not None and Path(variant.revision).is_dir():
        for package in ("service", "telemetry"):
            shutil.copytree(Path(variant.revision) / package, root / package,
                            ignore=shutil.ignore_patterns("__pycache__", "build"))
    elif variant.revision is not None:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", variant.revision, "service", "telemetry"],
            cwd=REPO_ROOT, check=True, capture_output=True,
        ).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(root, filter="data")
    else:
        for package in ("service", "telemetry"):
            shutil.copytree(REPO_ROOT / package, root / package,
                            ignore=shutil.ignore_patterns("__pycache__", "build"))
    for path, pattern, replacement in variant.patches:
        target = root / path
        text, count = re.subn(pattern, replacement, target.read_text())
        if count != 1:
            raise SystemExit(f"{variant.name}: {pattern!r} matched {path} {count} times, not once")
        target.write_text(text)
    # The library's package lives in telemetry/sessiontrace: both folders go on the path.
    path = os.pathsep.join((str(root), str(root / "telemetry")))
    return {"PYTHONSAFEPATH": "1", "PYTHONPATH": path, **variant.env}


@contextmanager
def tree_environment(env: dict[str, str]) -> Iterator[None]:
    """The variant's PYTHONPATH for the CLI that provisions its database (devstack's
    service_cli runs `python -m service` with this process's environment): each tree
    creates its own schema."""
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "PYTHONSAFEPATH")}
    os.environ.update({name: env[name] for name in saved})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def table(rounds: list[Round], variants: list[Variant]) -> str:
    """Medians; each variant against tracing off in its own tree (the working tree's, or its
    revision's)."""
    def median(name: str, value: Callable[[Round], float]) -> float:
        return float(statistics.median(value(r) for r in rounds if r.mode == name))

    def cpu(r: Round) -> float:
        return float(r.cpu["service"] / r.wrk["requests"] * 1e3)

    offs = {v.revision: v.name for v in variants if v.env.get("OTEL_SDK_DISABLED") == "true"}
    lines = ["| variant | req/s | ratio to off | service CPU ms/request | added vs off "
             "| CPU ratio to off |", "|---|--:|--:|--:|--:|--:|"]
    for variant in variants:
        off = offs.get(variant.revision, variants[0].name)
        rps, off_rps = median(variant.name, lambda r: r.rps), median(off, lambda r: r.rps)
        ms, off_ms = median(variant.name, cpu), median(off, cpu)
        lines.append(f"| {variant.name} | {rps:,.1f} | {rps / off_rps:.3f} | {ms:.2f} "
                     f"| {ms - off_ms:+.2f} | {ms / off_ms:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one short round")
    parser.add_argument("--rounds", type=int, help="rounds of every variant")
    parser.add_argument("--duration", type=float, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, help="untimed seconds before each run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--variants", default=",".join(v.key for v in VARIANTS),
                        help="which to run, by key: " + ", ".join(v.key for v in VARIANTS))
    parser.add_argument("--baseline", metavar="REV",
                        help="also run tracing off and on for service/ and telemetry/ at REV "
                             "(a git revision, or a directory holding both)")
    parser.add_argument("--output", type=Path, help=f"markdown file (full run default: {RESULTS})")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 4)
    args.duration = args.duration or (2.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0)

    keys = args.variants.split(",")
    unknown = sorted(set(keys) - {v.key for v in VARIANTS})
    if unknown:
        parser.error(f"--variants: no variant {', '.join(unknown)}")
    variants = [v for v in VARIANTS if v.key in keys]
    if args.baseline:
        variants += at_revision(args.baseline)
    # The first is every ratio's reference.
    if variants[0].env.get("OTEL_SDK_DISABLED") != "true":
        parser.error("--variants must start with off")

    wrk = ensure_wrk()
    build_collector()
    with workspace("variants") as space:
        sink = space.sink()
        collector = space.collector(
            destination=sink.url, public_key=sink.public_key, secret_key=sink.secret_key
        )
        stack = Stack(space, sink, collector)
        targets: list[Target] = []
        for index, variant in enumerate(variants):
            env = materialise(variant, space.path(f"variant-{index}"))
            with tree_environment(env):
                targets.append(provision(stack, variant.name, env, user=f"bench-variant-{index}"))
        rounds: list[Round] = []
        for index in range(args.rounds):
            shift = index % len(targets)
            for target in targets[shift:] + targets[:shift]:
                rounds.append(measure(wrk, target, stack, args))
                print(f"round {index + 1}/{args.rounds} {target.mode}: "
                      f"{rounds[-1].rps:,.1f} req/s", file=sys.stderr)
        users = exported_traces(sink.db).users
        problems = [f"{r.mode}: wrk errors {r.wrk}" for r in rounds if r.errors]
        for target in targets:
            if (target.account.user_id in users) != target.exports:
                state = "did not reach" if target.exports else "reached"
                problems.append(f"{target.mode}: its spans {state} the sink")
        if collector_counters(collector.metrics_url).failed:
            problems.append("the collector failed to send spans")
        if problems:
            print("variants did not run as intended:", *problems, sep="\n  ", file=sys.stderr)
            return 1
    patches = "\n".join(
        f"- {v.name}: "
        + "; ".join([*(f"`{k}={val}`" for k, val in v.env.items()), *([v.what] if v.what else [])])
        for v in variants
    )
    text = f"""# Service variants: candidate changes, measured side by side

`{command_line("service_variants.py")}`, {utc_now()}.

- Machine: {machine_line()}; shared with other sessions' tests.
- service/ and telemetry/ at {git_revision("service", "telemetry")}, copied per variant and patched
  in a temporary directory (the repository is not changed).
- {args.rounds} round(s); each round runs every variant once in a rotating order, each run a
  fresh `python -m service serve` process: {args.warmup:g} s warm-up, {args.duration:g} s of
  `wrk -t1 -c{args.connections}` on `POST /api/v1/ai/chat`, stop, drain. Medians.

{table(rounds, variants)}

Variants:

{patches}
"""
    write_results(text, args.output or (None if args.quick else RESULTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
