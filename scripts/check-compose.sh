#!/usr/bin/env bash
# CI check: docker-compose.yml is valid with and without its profiles (langfuse, scale). Needs no Docker
# engine: only the compose CLI plugin, installed here when missing (Debian package if one is
# offered, else built from its Go module, github.com/docker/compose).
set -euo pipefail

cd "$(dirname "$0")/.."

COMPOSE_MODULE="github.com/docker/compose/v5"
COMPOSE_VERSION="v5.6.0"   # the newest whose go directive the Go toolchain here satisfies
PLUGIN_DIR="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose "$@"
    else
        "$PLUGIN_DIR/docker-compose" "$@"   # the plugin binary also runs on its own
    fi
}

have_compose() {
    docker compose version >/dev/null 2>&1 || "$PLUGIN_DIR/docker-compose" version >/dev/null 2>&1
}

install_from_apt() {
    command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]] || return 1
    apt-get update -qq >/dev/null 2>&1 || return 1
    apt-cache policy docker-compose-plugin 2>/dev/null | grep -q 'Candidate: [0-9]' || return 1
    apt-get install -y -qq docker-compose-plugin >/dev/null
}

install_from_go_module() {
    command -v go >/dev/null || { echo "check-compose: Go is needed to build the compose plugin" >&2; return 1; }
    local src="build/compose-src"
    local dir
    dir="$(go mod download -json "$COMPOSE_MODULE@$COMPOSE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    rm -rf "$src" && mkdir -p build && cp -r "$dir" "$src" && chmod -R u+w "$src"
    # Built inside its own module: `go install module@version` refuses its go.mod exclude lines.
    echo "check-compose: building the compose plugin $COMPOSE_VERSION (a few minutes)"
    (cd "$src" && GOFLAGS=-buildvcs=false go build -trimpath \
        -ldflags "-s -w -X $COMPOSE_MODULE/internal.Version=$COMPOSE_VERSION" \
        -o "$OLDPWD/build/tools/docker-compose" ./cmd)
    mkdir -p "$PLUGIN_DIR"
    cp build/tools/docker-compose "$PLUGIN_DIR/docker-compose"
}

if ! have_compose; then
    install_from_apt || install_from_go_module
fi
compose version

# Placeholders for the required variables, only for validating the file; real values come from
# the environment or .env.
export LANGFUSE_HOST="${LANGFUSE_HOST:-http://langfuse-web:3000}"
export LANGFUSE_PUBLIC_KEY="${LANGFUSE_PUBLIC_KEY:-pk-lf-ci-placeholder}"
export LANGFUSE_SECRET_KEY="${LANGFUSE_SECRET_KEY:-sk-lf-ci-placeholder}"
export SCHEDULER_API_TOKEN="${SCHEDULER_API_TOKEN:-ci-placeholder}"

compose config --quiet
echo "check-compose: docker compose config OK"
compose --profile langfuse config --quiet
echo "check-compose: docker compose --profile langfuse config OK"
compose --profile scale config --quiet
echo "check-compose: docker compose --profile scale config OK"
compose --profile langfuse --profile scale config --quiet
echo "check-compose: docker compose --profile langfuse --profile scale config OK"
