#!/usr/bin/env bash
# More than one machine, on one: two service replicas sharing DATABASE_URL, the Temporal dev server
# (bin/temporal) holding the schedules of SCHEDULES_FILE, and one worker per replica, as local
# processes. Logs and Temporal's state go to var/scaled/. Ctrl-C stops everything.
#
#   DATABASE_URL=postgresql://USER@127.0.0.1:5432/sessiontrace SCHEDULES_FILE=schedules.yaml \
#   SCHEDULER_API_TOKEN=... scripts/run-scaled.sh
#
# Optional: TEMPORAL_PORT (7233), REPLICA_PORTS ("8001 8002"), and every setting the service reads
# (LLM_*, OTEL_EXPORTER_OTLP_ENDPOINT...), passed on to each process.
set -euo pipefail

cd "$(dirname "$0")/.."

: "${DATABASE_URL:?set DATABASE_URL to the postgresql://... database both replicas share}"
: "${SCHEDULES_FILE:?set SCHEDULES_FILE to the schedules to sync into Temporal (see schedules.example.yaml)}"
: "${SCHEDULER_API_TOKEN:?set SCHEDULER_API_TOKEN (a long random string: the workers call the replicas with it)}"
PY="${PYTHON:-.venv/bin/python}"
VAR="var/scaled"
TEMPORAL_PORT="${TEMPORAL_PORT:-7233}"
read -r -a PORTS <<< "${REPLICA_PORTS:-8001 8002}"

export DATABASE_URL SCHEDULES_FILE SCHEDULER_API_TOKEN SCHEDULER_ENABLED=false
export TEMPORAL_ADDRESS="127.0.0.1:$TEMPORAL_PORT"

bash scripts/build-temporal.sh
mkdir -p "$VAR/log"

pids=()
stop_all() {
    trap - EXIT INT TERM
    echo "run-scaled: stopping"
    # Workers first (their firings hand back to Temporal), then replicas, then Temporal.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop_all EXIT INT TERM

wait_for() {  # wait_for WHAT COMMAND...: up to 60 s
    local what="$1"; shift
    for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "run-scaled: $what did not come up; see $VAR/log/" >&2
    exit 1
}

bin/temporal server start-dev --headless --ip 127.0.0.1 --port "$TEMPORAL_PORT" \
    --db-filename "$VAR/temporal.db" --log-level warn >>"$VAR/log/temporal.log" 2>&1 &
pids+=($!)
wait_for "Temporal on $TEMPORAL_ADDRESS" bin/temporal operator cluster health --address "$TEMPORAL_ADDRESS"

for n in "${!PORTS[@]}"; do
    port="${PORTS[$n]}"
    # One span spool per process: a directory is never shared.
    SESSIONTRACE_SPOOL_DIR="$VAR/spool-$((n + 1))" \
        "$PY" -m service serve --host 127.0.0.1 --port "$port" >>"$VAR/log/replica-$((n + 1)).log" 2>&1 &
    pids+=($!)
done
for port in "${PORTS[@]}"; do
    wait_for "the replica on port $port" "$PY" -c \
        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/readyz', timeout=1)"
done

"$PY" -m service schedules sync

for n in "${!PORTS[@]}"; do
    SERVICE_URL="http://127.0.0.1:${PORTS[$n]}" \
        "$PY" -m service worker >>"$VAR/log/worker-$((n + 1)).log" 2>&1 &
    pids+=($!)
done

echo "run-scaled: Temporal $TEMPORAL_ADDRESS; replicas ${PORTS[*]/#/http://127.0.0.1:}; one worker each"
echo "run-scaled: try  $PY -m service schedules list   (with TEMPORAL_ADDRESS=$TEMPORAL_ADDRESS)"
wait -n "${pids[@]}" || true
echo "run-scaled: a process exited; see $VAR/log/" >&2
