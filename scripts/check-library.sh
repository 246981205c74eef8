#!/usr/bin/env bash
# The library as a team installs it: a wheel built from telemetry/ alone, in a fresh venv with
# nothing of the service. Checks what it brings (and what it must not), that it resolves beside
# the packages teams use with it, and runs the library's own tests against the installed wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PYTEST_PIN=$(grep '^pytest==' requirements.lock)

python3 -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -m pip install -q --upgrade pip
# Built from a copy: setuptools writes build/ next to the sources it builds.
cp -r telemetry "$WORK/source"
rm -rf "$WORK/source/build" "$WORK/source"/*.egg-info
"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$WORK/source"
WHEEL=$(ls "$WORK"/dist/sessiontrace-*.whl)
echo "check-library: built $(basename "$WHEEL")"
# With the `instrument` extra, as the zero-code setup needs it: the distro's tests run too.
"$PY" -m pip install -q "$WHEEL[instrument]" "$PYTEST_PIN"

# From outside the repository, so nothing in the tree can stand in for a missing package.
cd "$WORK"
"$PY" - <<'PY'
import importlib, importlib.metadata

import sessiontrace

print(f"check-library: sessiontrace {importlib.metadata.version('sessiontrace')} imports")
for name in ("fastapi", "service", "devstack", "telemetry"):
    try:
        importlib.import_module(name)
    except ImportError:
        continue
    raise SystemExit(f"check-library: installing the library made {name!r} importable")
PY

echo "check-library: co-installs (pip --dry-run) with the threading and LangChain instrumentations"
"$PY" -m pip install -q --dry-run "$WHEEL" opentelemetry-instrumentation-threading \
    openinference-instrumentation-langchain
echo "check-library: co-installs (pip --dry-run) with the Langfuse SDK"
"$PY" -m pip install -q --dry-run "$WHEEL" langfuse

echo "check-library: the library's tests against the installed wheel"
"$PY" -m pytest -q -p no:cacheprovider --rootdir="$REPO" -c "$REPO/pyproject.toml" \
    "$REPO"/tests/unit/test_processor.py "$REPO"/tests/unit/test_trace_attributes.py \
    "$REPO"/tests/unit/test_otlp_encoder.py "$REPO"/tests/unit/test_exporter.py \
    "$REPO"/tests/unit/test_spool.py "$REPO"/tests/unit/test_configure_tracing.py \
    "$REPO"/tests/unit/test_session_ids.py "$REPO"/tests/unit/test_payload.py \
    "$REPO"/tests/unit/test_bind_caller_concurrency.py "$REPO"/tests/unit/test_parent_session.py \
    "$REPO"/tests/unit/test_distro.py "$REPO"/tests/unit/test_pytest_plugin.py \
    "$REPO"/tests/unit/test_third_party_content.py "$REPO"/tests/unit/test_threads.py
# pytest put the test folders first on sys.path: the package found from there is the wheel's.
REPO="$REPO" "$PY" - <<'PY'
import os, sys

sys.path[:0] = [os.path.join(os.environ["REPO"], "tests", "unit"), os.path.join(os.environ["REPO"], "tests")]
import sessiontrace

assert "site-packages" in sessiontrace.__file__, f"tested {sessiontrace.__file__}, not the wheel"
print("check-library: the tests ran against", sessiontrace.__file__)
PY

# Last: installing it moves OpenTelemetry back a patch release (its newest release, 0.66b1, pins
# opentelemetry-instrumentation 0.66b1), and the tests above ran against the newest.
echo "check-library: the thread recipes beside opentelemetry-instrumentation-threading"
"$PY" -m pip install -q "$WHEEL" opentelemetry-instrumentation-threading
"$PY" -m pytest -q -p no:cacheprovider --rootdir="$REPO" \
    -c "$REPO/pyproject.toml" "$REPO"/tests/unit/threading_instrumentor_checks.py
