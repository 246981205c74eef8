#!/usr/bin/env bash
# Build bin/temporal: the Temporal CLI, whose `server start-dev` is the development server the
# tests and scripts/run-scaled.sh start (Temporal Server 1.29.1 in CLI v1.5.1). Built once from
# the Go module proxy into build/tools; bin/temporal is reused while it reports this version.
# FORCE=1 rebuilds.
set -euo pipefail

cd "$(dirname "$0")/.."

CLI_MODULE="github.com/temporalio/cli"
CLI_VERSION="v1.5.1"
BINARY="bin/temporal"
TOOLS="$PWD/build/tools"

is_current() {
    [[ -x "$1" ]] && "$1" --version 2>/dev/null | grep -q "^temporal version ${CLI_VERSION#v} "
}

if [[ "${FORCE:-0}" != "1" ]] && is_current "$BINARY"; then
    echo "build-temporal: $BINARY is up to date ($("$BINARY" --version))"
    exit 0
fi

if [[ "${FORCE:-0}" == "1" ]] || ! is_current "$TOOLS/temporal"; then
    command -v go >/dev/null || { echo "build-temporal: Go is required (https://go.dev/dl/)" >&2; exit 1; }
    echo "build-temporal: building the Temporal CLI $CLI_VERSION (about 4 minutes the first time)"
    # The version is stamped the way the CLI's release build does; `go install` alone leaves
    # 0.0.0-DEV, which the check above could not tell from another build.
    GOBIN="$TOOLS" go install \
        -ldflags "-X $CLI_MODULE/temporalcli.Version=${CLI_VERSION#v}" \
        "$CLI_MODULE/cmd/temporal@$CLI_VERSION"
fi

mkdir -p bin
cp "$TOOLS/temporal" "$BINARY.tmp"
mv "$BINARY.tmp" "$BINARY"
echo "build-temporal: built $("$BINARY" --version)"
