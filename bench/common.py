"""What every benchmark's results file says about where it ran, and per-process /proc readings."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "RESULTS_DIR",
    "command_line",
    "cpu_model",
    "cpu_seconds",
    "git_revision",
    "machine_line",
    "memory_kib",
    "package_versions",
    "utc_now",
    "write_results",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """CPU model, cores, kernel and the current load average, for a results file."""
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()};\n"
        f"  load average {os.getloadavg()[0]:.2f} at the end of the run"
    )


def git_revision(*paths: str) -> str:
    """The commit HEAD names, marked when any of `paths` has local changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *paths],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    changed = ", ".join(f"{p}/" for p in paths)
    return f"{head or 'unknown'}{f' with local changes to {changed}' if dirty else ''}"


def package_versions(packages: Iterable[str]) -> str:
    return ", ".join(f"{p} {metadata.version(p)}" for p in packages)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command_line(script: str) -> str:
    """How this benchmark was started, as a reader would type it from the repository root."""
    return " ".join([f"python bench/{script}", *sys.argv[1:]])


def write_results(text: str, output: Path | None) -> None:
    """Print the report, and write it to `output` when there is one."""
    print(text)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        print(f"written to {output}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a live process has used so far (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name in parentheses may hold spaces: count fields after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def memory_kib(pid: int, field: str = "VmHWM") -> int:
    """A /proc/<pid>/status memory figure in KiB: VmHWM is the peak resident set, VmRSS now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")
