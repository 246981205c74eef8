#!/usr/bin/env bash
# Build bin/telemetrygen: the OpenTelemetry project's own load generator (Go, contrib's
# cmd/telemetrygen), which the pipeline benchmarks use to load the collector at its capacity
# without a Python process's ~55 µs of CPU a span. The same release as the collector
# (collector/builder-config.yaml, v0.155.0). Built once from the Go module proxy into
# build/tools; bin/telemetrygen is reused while its embedded module version is this one
# (telemetrygen has no --version: `go version -m` reads what the Go toolchain stamped).
# FORCE=1 rebuilds.
set -euo pipefail

cd "$(dirname "$0")/.."

MODULE="github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen"
VERSION="v0.155.0"   # keep equal to the collector's release in collector/builder-config.yaml
BINARY="bin/telemetrygen"
TOOLS="$PWD/build/tools"

is_current() {
    [[ -x "$1" ]] && command -v go >/dev/null \
        && go version -m "$1" 2>/dev/null | grep -qE "^[[:space:]]+mod[[:space:]]+$MODULE[[:space:]]+$VERSION([[:space:]]|$)"
}

if [[ "${FORCE:-0}" != "1" ]] && is_current "$BINARY"; then
    echo "build-telemetrygen: $BINARY is up to date ($VERSION)"
    exit 0
fi

command -v go >/dev/null || { echo "build-telemetrygen: Go is required (https://go.dev/dl/)" >&2; exit 1; }

if [[ "${FORCE:-0}" == "1" ]] || ! is_current "$TOOLS/telemetrygen"; then
    echo "build-telemetrygen: building telemetrygen $VERSION"
    GOBIN="$TOOLS" go install "$MODULE@$VERSION"
fi

mkdir -p bin
cp "$TOOLS/telemetrygen" "$BINARY.tmp"
mv "$BINARY.tmp" "$BINARY"
echo "build-telemetrygen: built $BINARY ($VERSION)"
