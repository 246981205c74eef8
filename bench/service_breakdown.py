"""What each part of tracing costs a chat request, in instructions counted by callgrind.

`service_instructions.py` says how much tracing adds to a chat request in total; issue 14 asks
for at most 10%, so the next question is where the rest goes. This answers it the only way
that does not depend on a profiler's attribution: take one part away and count again. The
working tree is copied once to a scratch workspace; each variant is a copy of that copy with
exact text substitutions (`VARIANTS`: file, old text, new text, why). An old text that is not
found exactly once stops the benchmark before anything is counted, so when the code moves the
table must follow instead of silently measuring the unchanged tree.

Every tree is counted as `service_instructions.py` counts (its functions and its child mode):
in-process ASGI `POST /api/v1/ai/chat` under `valgrind --tool=callgrind`, "on" exporting to a
null OTLP endpoint (one per tree, so each variant's spans are checked on their own), two runs
of N1 and N2 requests after a warm-up, per request = difference / (N2 - N1). "Saved" is the
full tree's "on" minus the variant's. Where the removed code also runs with tracing off (the
FastAPI middleware, the no-op node span) the variant's "off" is counted too, and the saving is
split into tracing's part (what tracing adds, full minus variant) and untraced work removed.

The variants are diagnostics, not options: each breaks the product (spans without a session,
spans never sent, requests without a server span). Not part of `make bench` (about 15 minutes
of callgrind on 2 cores): run it when deciding what to make cheaper next.

Usage: python bench/service_breakdown.py [--quick] [--jobs J] [--output FILE]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    REPO_ROOT, RESULTS_DIR, command_line, git_revision, machine_line, utc_now, write_results,
)
from local_stack import workspace
from null_endpoint import PUBLIC_KEY, SECRET_KEY
from service_instructions import (
    PACKAGES, Tree, basic_auth_header, copy_working_tree, count, provision,
)

RESULTS_NAME = "service_breakdown.md"
WARMUP = 30
FULL = "full tracing"
FLOOR = "OpenTelemetry alone (no payload encoding, no session processor, no export)"


@dataclass(frozen=True)
class Edit:
    """`old` replaced by `new` in the file at `path` (relative to the tree)."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Variant:
    """One part of tracing taken away by its edits."""

    name: str
    edits: tuple[Edit, ...]
    why: str
    count_off: bool = False  # the removed code runs with tracing off too
    sends: bool = True  # spans still reach the endpoint
    stamps: bool = True  # every span it sends carries session.id


_EXPORT_TOP = "    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:\n"
_ENCODE = "        data = self._exporter.encode_request(spans)\n"
_NODE_RUN = "await self._before_deadline(node.run(state, runtime), deadline)\n"
_NO_PAYLOADS = Edit(
    "service/graphs/payloads.py",
    "        return encode_payload(value, max_bytes=cap, mask_content=self.mask_content)\n",
    '        return "x"\n')
_NO_PROCESSOR = Edit(
    "telemetry/sessiontrace/_setup.py",
    "    provider.add_span_processor(session_processor or SessionSpanProcessor())\n"
    "    if _sdk_disabled():\n",
    "    if _sdk_disabled():\n")
_NO_EXPORT = Edit("telemetry/sessiontrace/_spooling.py",
                  _EXPORT_TOP, _EXPORT_TOP + "        return SpanExportResult.SUCCESS\n")
VARIANTS = (
    Variant("no HTTP server span", (Edit(
        "service/main.py",
        '_UNTRACED_URLS = "healthz,readyz"\n', '_UNTRACED_URLS = "healthz,readyz,chat"\n'),),
            "the chat URL joins the FastAPI instrumentation's excluded URLs", count_off=True),
    Variant("no payload encoding", (_NO_PAYLOADS,),
            "`PayloadRecorder._encode` returns a constant: no scrubbing, capping or JSON"),
    Variant("no session processor", (_NO_PROCESSOR,),
            "`configure_tracing` adds no `SessionSpanProcessor`", stamps=False),
    Variant("no export", (_NO_EXPORT,),
            "`SpoolingSpanExporter.export` drops every batch (the BatchSpanProcessor still runs)",
            sends=False),
    Variant("encode but do not send", (Edit(
        "telemetry/sessiontrace/_spooling.py",
        _ENCODE, _ENCODE + "        return SpanExportResult.SUCCESS\n"),),
            "`export` encodes the batch (`encode_request`), then drops it: encoding vs sending",
            sends=False),
    Variant("no node span", (Edit(
        "service/graphs/executor.py",
        "                    with self._tracer.start_as_current_span(\n"
        '                        f"node {node.name}", **MANUAL_OUTCOME\n'
        "                    ) as node_span, recording_outcome(node_span, mask_content="
        "mask_content):\n                        " + _NODE_RUN,
        "                    " + _NODE_RUN),),
            "the graph runs each node without its `node` span and `recording_outcome`",
            count_off=True),
    # What is left when the library's own work is gone: the OpenTelemetry SDK's span
    # lifecycle and attributes, and the FastAPI instrumentation's recording work.
    Variant(FLOOR, (_NO_PAYLOADS, _NO_PROCESSOR, _NO_EXPORT),
            "the three above together: the four spans, their attributes and the SDK's machinery",
            sends=False, stamps=False),
)


def apply(variant: Variant, root: Path) -> None:
    """Make `variant` in the tree at `root`; stops unless each old text occurs exactly once."""
    for edit in variant.edits:
        file = root / edit.path
        text = file.read_text()
        found = text.count(edit.old)
        if found != 1:
            raise SystemExit(
                f"variant {variant.name!r}: the old text occurs {found} times in {edit.path}, "
                f"not once; the code moved, so update VARIANTS in bench/service_breakdown.py. "
                f"Old text:\n{edit.old}")
        file.write_text(text.replace(edit.old, edit.new))


def check_endpoint(name: str, variant: Variant | None, stats: dict[str, Any],
                   requests: int) -> str:
    """Spans a request at this endpoint (with a session.id), once the variant did what it says."""
    spans, stamped, rejected = stats["spans"], stats["stamped"], stats["rejected"]
    sends = variant is None or variant.sends
    stamps = variant is None or variant.stamps
    problems = []
    if rejected:
        problems.append(f"{rejected} requests rejected")
    if sends != (spans > 0) or (sends and spans % requests):
        problems.append(f"{spans} spans for {requests} traced requests")
    if sends and (stamped == spans) != stamps:
        problems.append(f"{stamped} of {spans} spans with a session.id")
    if problems:
        raise SystemExit(f"{name}: the null endpoint got {stats}: {'; '.join(problems)}")
    return f"{spans / requests:g} ({stamped / requests:g})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    parser.add_argument("--jobs", type=int, default=2, help="callgrind runs at a time")
    parser.add_argument("--output", type=Path,
                        help=f"markdown file (default: results/{RESULTS_NAME})")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is required: apt-get install valgrind")

    first, second = (10, 60) if args.quick else (30, 130)
    variants: dict[str, Variant | None] = {FULL: None, **{v.name: v for v in VARIANTS}}
    with workspace("breakdown") as space, \
            ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        roots = {name: space.path(name.replace(" ", "-")) for name in variants}
        copy_working_tree(REPO_ROOT, roots[FULL])
        # What the copy held: another engineer may be editing service/ and telemetry/.
        revision = git_revision(*PACKAGES)
        status = subprocess.run(["git", "status", "--short", "--", *PACKAGES], cwd=REPO_ROOT,
                                capture_output=True, text=True, check=False).stdout.strip()
        for name, variant in variants.items():
            if variant is not None:
                copy_working_tree(roots[FULL], roots[name])
                apply(variant, roots[name])
        trees: dict[str, Tree] = dict(zip(variants, pool.map(
            lambda name: provision(roots[name], name, REPO_ROOT), variants)))
        endpoints = {name: space.null_endpoint() for name in variants}
        headers = basic_auth_header(PUBLIC_KEY, SECRET_KEY)
        jobs = [(name, mode, n) for name, variant in variants.items()
                for mode in ("off", "on") if mode == "on" or variant is None or variant.count_off
                for n in (first, second)]
        counts = list(pool.map(
            lambda job: count(trees[job[0]], job[1], warmup=WARMUP, requests=job[2],
                              endpoint=endpoints[job[0]].url, headers=headers,
                              scratch=space.root), jobs))
        stats = {name: endpoint.stats() for name, endpoint in endpoints.items()}

    traced = 2 * WARMUP + first + second
    spans = {name: check_endpoint(name, variant, stats[name], traced)
             for name, variant in variants.items()}
    by_job = dict(zip(jobs, counts))
    per_request = {(name, mode): (by_job[name, mode, second] - by_job[name, mode, first])
                   / (second - first) for name, mode, n in jobs if n == first}
    off, on = per_request[FULL, "off"], per_request[FULL, "on"]
    added = on - off

    def saved(name: str) -> float:
        """What the variant takes off tracing's cost, without untraced work it removes."""
        if (name, "off") in per_request:
            return added - (per_request[name, "on"] - per_request[name, "off"])
        return on - per_request[name, "on"]

    rows = ["| variant | on: instructions/request | saved vs full tracing "
            "| share of what tracing adds | off: instructions/request | untraced work removed "
            "| spans/request at the endpoint (with session.id) |",
            "|---|--:|--:|--:|--:|--:|--:|",
            f"| {FULL} (working tree) | {on / 1e6:.3f} M | | | {off / 1e6:.3f} M | "
            f"| {spans[FULL]} |"]
    for variant in VARIANTS:
        name = variant.name
        variant_off = per_request.get((name, "off"))
        rows.append(
            f"| {name} | {per_request[name, 'on'] / 1e6:.3f} M | {saved(name) / 1e6:.3f} M "
            f"| {saved(name) / added:.0%} "
            + (f"| {variant_off / 1e6:.3f} M | {(off - variant_off) / 1e6:.3f} M "
               if variant_off is not None else "| (same as full) | ")
            + f"| {spans[name]} |")
    changes = ["| variant | file | change |", "|---|---|---|"]
    changes += [f"| {v.name} | {', '.join(f'`{e.path}`' for e in v.edits)} | {v.why} |"
                for v in VARIANTS]
    disjoint = ("no HTTP server span", "no payload encoding", "no session processor",
                "no export", "no node span")
    explained = sum(saved(name) for name in disjoint)
    floor = added - saved(FLOOR)
    send = saved("encode but do not send")
    encode = saved("no export") - send
    status_lines = "\n".join(f"    {line}" for line in status.splitlines()) or "    (clean)"
    text = f"""# What each part of tracing costs a chat request, in instructions (callgrind)

`{command_line("service_breakdown.py")}`, {utc_now()}.

- Machine: {machine_line()}. Instruction counts do not depend on the load.
- Tree: the working tree at {revision}, copied once; `git status --short` of
  {", ".join(f"{p}/" for p in PACKAGES)} at that moment:

{status_lines}

- Each variant is that copy with exact text substitutions (below); each tree provisioned
  by its own CLI. Per (tree, mode): two runs under `valgrind --tool=callgrind`, {WARMUP}
  warm-up requests then {first} or {second} more, in-process through ASGI
  (`POST /api/v1/ai/chat`, `builtin:chat`, offline LLM); "on" exports to a null OTLP
  endpoint, one per tree. Per request = difference / {second - first}. Every request
  answered 200.
- Full tree: off {off / 1e6:.3f} M, on {on / 1e6:.3f} M instructions a request; tracing
  adds {added / 1e6:.3f} M ({added / off:+.1%}; issue 14 asks for at most +10%).
- "Saved" = full "on" minus the variant's "on"; where "off" was counted too, it is what
  tracing adds in the full tree minus what it adds in the variant, and the untraced work the
  change also removes (the middleware with OTEL_SDK_DISABLED=true, the no-op node span) is
  shown apart.

{chr(10).join(rows)}

{chr(10).join(changes)}

- The export splits into encoding {encode / 1e6:.3f} M ("no export" minus "encode but do
  not send") and handing the batch to the sender and sending it {send / 1e6:.3f} M.
- The five variants that do not nest (all but "encode but do not send", a part of "no
  export") save {explained / 1e6:.3f} M together, against the {added / 1e6:.3f} M tracing
  adds ({explained / added:.0%}). They overlap, so this is no partition: a span taken away
  (server, node) is also one the processor, the encoder and the exporter no longer handle,
  and the overlap hides what no variant touches (the remaining spans, the SDK's span
  machinery, the BatchSpanProcessor's queue).
- What is left with the library's own work gone ("{FLOOR}"): tracing still adds
  {floor / 1e6:.3f} M ({floor / off:+.1%} of the untraced request, {floor / added:.0%} of what
  tracing adds): the OpenTelemetry SDK's lifecycle of the four spans and their attributes,
  and the FastAPI instrumentation's recording work. Under this floor the only ways down are
  fewer spans or fewer attributes, that is, a different trace.
- These variants are diagnostics, not options: each breaks the product (a server span
  missing, spans without a session, spans never sent). They say where to look next, not what
  to switch off.
"""
    write_results(text, args.output or (None if args.quick else RESULTS_DIR / RESULTS_NAME))
    return 0


if __name__ == "__main__":
    sys.exit(main())
