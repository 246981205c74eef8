#!/usr/bin/env bash
# The library beside OpenInference and LangGraph, with the real PyPI packages (issue 11): the
# wheel built from telemetry/ in a fresh venv with LangGraph, langchain-core and OpenInference's
# LangChain instrumentation, then tests/integration/openinference_langgraph.py (graphs with a
# checkpointer and a thread_id, using_session/using_user, a fan-out, ainvoke; a fake chat model,
# no network). It checks that the session and user Langfuse reads are ours on every span and
# that each span whose session.id OpenInference overwrote is counted in session_conflicts.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Picked 2026-12-04: the newest releases on PyPI that day. OpenTelemetry comes from the wheel's
# own ranges, as it would for a team installing the library.
PINS=(
    langgraph==1.2.24
    langgraph-checkpoint==4.3.2
    langchain-core==1.8.3
    openinference-instrumentation-langchain==0.1.80
    openinference-instrumentation==0.1.72
)

python3 -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -m pip install -q --upgrade pip
# From a copy: pip builds in the source tree, and git tracks telemetry/build/.
mkdir "$WORK/src"
cp -R telemetry/pyproject.toml telemetry/sessiontrace "$WORK/src/"
"$PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$WORK/src"
WHEEL=$(ls "$WORK"/dist/sessiontrace-*.whl)
START=$SECONDS
"$PY" -m pip install -q "$WHEEL" "${PINS[@]}"
echo "check-coexistence: installed $(basename "$WHEEL") ${PINS[*]} in $((SECONDS - START)) s"
"$PY" -m pip list --format=freeze 2>/dev/null | grep -E '^(opentelemetry-(api|sdk)|langchain-core|langgraph|openinference-)' \
    | sed 's/^/check-coexistence:   /'

# From outside the repository, so the package imported is the wheel's.
cd "$WORK"
"$PY" -c 'import sessiontrace; assert "site-packages" in sessiontrace.__file__, sessiontrace.__file__'
"$PY" "$REPO/tests/integration/openinference_langgraph.py"
