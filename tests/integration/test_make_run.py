"""`make run` (python -m devstack.run --once): the whole local stack, end to end, on free ports."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from devstack.ports import PORTS
from devstack.processes import REPO_ROOT, free_port, python_module
from devstack.report import sessions_report
from devstack.stack import SinkHandle

pytestmark = pytest.mark.integration

TABLE_HEADER = re.compile(r"^session\s+trigger\s+traces\s+spans\s+users\s+tokens$", re.MULTILINE)
SESSION_ROW = re.compile(
    r"^(?P<session>(?:ba|gov):demo:\S+)\s+(?P<trigger>\S+)\s+(?P<traces>\d+)\s+(?P<spans>\d+)"
    r"\s+(?P<users>\S+)\s+(?P<tokens>\d+)$",
    re.MULTILINE,
)
LANGFUSE_VARIABLES = ("LANGFUSE_HOST", "LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY")


def run_once(
    tmp_path: Path, *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m devstack.run --once` with its state in tmp_path, on free ports."""
    argv = python_module("devstack.run", "--once", "--var-dir", str(tmp_path / "var"))
    argv += [arg for port in PORTS for arg in (port.flag, str(free_port()))]
    clean = {k: v for k, v in os.environ.items() if k not in LANGFUSE_VARIABLES}
    return subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env=clean | {"LLM_BASE_URL": ""} | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_make_run_prints_the_sessions_table_with_no_span_without_a_session(
    collector_binary: Path, tmp_path: Path
) -> None:
    completed = run_once(tmp_path)

    output = completed.stdout
    assert completed.returncode == 0, output + completed.stderr
    assert "development sink (not Langfuse)" in output
    assert TABLE_HEADER.search(output), output
    rows = {row["trigger"]: row for row in SESSION_ROW.finditer(output)}
    assert set(rows) == {"user", "schedule"}, output
    assert rows["user"]["traces"] == "1" and rows["schedule"]["traces"] == "2"
    assert rows["user"]["users"] == rows["schedule"]["users"] == "demo-user"
    assert re.search(r"^2 sessions, \d+ spans, spans without a session: 0$", output, re.MULTILINE)
    # The table is what the sink stored, which the run left under its var directory.
    report = sessions_report(tmp_path / "var" / "devsink.sqlite3")
    assert {s.session_id for s in report.sessions} == {row["session"] for row in rows.values()}
    assert (tmp_path / "var" / "log" / "service.log").stat().st_size > 0


def test_make_run_with_langfuse_keys_exports_there_and_names_the_sessions_to_look_for(
    collector_binary: Path, sink: SinkHandle, tmp_path: Path
) -> None:
    # The test's sink stands in for a Langfuse instance, with its own keys.
    langfuse = {
        "LANGFUSE_HOST": sink.url,
        "LANGFUSE_PUBLIC_KEY": sink.public_key,
        "LANGFUSE_SECRET_KEY": sink.secret_key,
    }

    completed = run_once(tmp_path, env=langfuse)

    output = completed.stdout
    assert completed.returncode == 0, output + completed.stderr
    assert "development sink" not in output
    assert not (tmp_path / "var" / "devsink.sqlite3").exists()
    listed = set(re.findall(r"^  ((?:ba|gov):demo:\S+)  \(", output, re.MULTILINE))
    received = {span["attributes"].get("session.id") for span in sink.spans()}
    assert len(listed) == 2 and received == listed, output


def test_make_run_names_a_busy_port_and_the_variable_that_moves_it(
    collector_binary: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        flags = {p.key: free_port() for p in PORTS if p.key != "service"}
        argv = python_module("devstack.run", "--once", "--var-dir", str(tmp_path / "var"))
        argv += [arg for p in PORTS if p.key in flags for arg in (p.flag, str(flags[p.key]))]

        completed = subprocess.run(
            argv, cwd=REPO_ROOT, env=os.environ | {"SERVICE_PORT": str(port)},
            capture_output=True, text=True, timeout=60, check=False,
        )

    assert completed.returncode != 0
    assert f"port {port} (service HTTP) is already in use" in completed.stderr
    assert "SERVICE_PORT" in completed.stderr
    assert "started" not in completed.stdout, "nothing starts when a port is busy"
