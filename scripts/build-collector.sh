#!/usr/bin/env bash
# Build bin/otelcol from collector/builder-config.yaml with the OpenTelemetry Collector Builder.
# Builds once: bin/otelcol is reused while the manifest is unchanged (by content, recorded next
# to the binary), so a fresh checkout's timestamps do not trigger rebuilds. FORCE=1 rebuilds.
set -euo pipefail

cd "$(dirname "$0")/.."

BUILDER_VERSION="v0.155.0"   # keep equal to the component versions in the manifest
MANIFEST="collector/builder-config.yaml"
BINARY="bin/otelcol"
TOOLS="$PWD/build/tools"
STAMP="$BINARY.manifest.sha256"
manifest_sum="$(sha256sum "$MANIFEST" | cut -d' ' -f1)"

if [[ "${FORCE:-0}" != "1" && -x "$BINARY" && "$(cat "$STAMP" 2>/dev/null)" == "$manifest_sum" ]]; then
    echo "build-collector: $BINARY is up to date ($("$BINARY" --version))"
    exit 0
fi

command -v go >/dev/null || { echo "build-collector: Go is required (https://go.dev/dl/)" >&2; exit 1; }

if [[ ! -x "$TOOLS/builder" ]] || ! "$TOOLS/builder" version 2>/dev/null | grep -q "${BUILDER_VERSION#v}"; then
    echo "build-collector: installing the collector builder $BUILDER_VERSION"
    GOBIN="$TOOLS" go install "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION"
fi

echo "build-collector: building $BINARY (takes a few minutes the first time)"
# -buildvcs=false: the generated module lives inside this git work tree, which go build would
# otherwise try to stamp into the binary.
GOFLAGS="${GOFLAGS:-} -buildvcs=false" "$TOOLS/builder" --config "$MANIFEST"

mkdir -p bin
cp build/otelcol/otelcol "$BINARY.tmp"
mv "$BINARY.tmp" "$BINARY"
echo "$manifest_sum" > "$STAMP"
echo "build-collector: built $("$BINARY" --version)"
