"""The local stack's ports: flag, else environment variable, else default; busy ones named."""

from __future__ import annotations

import argparse
import errno
import socket
from collections.abc import Collection, Mapping
from dataclasses import dataclass

__all__ = ["PORTS", "PortError", "PortSetting", "check_ports_free", "port_in_use", "read_ports"]


class PortError(ValueError):
    """A port setting is invalid or the port is taken; the message names the variable."""


@dataclass(frozen=True)
class PortSetting:
    """One port of the stack and the two ways to change it."""

    key: str
    role: str
    flag: str
    variable: str
    default: int

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


PORTS = (
    PortSetting("service", "service HTTP", "--service-port", "SERVICE_PORT", 8000),
    PortSetting(
        "otlp_grpc", "collector OTLP/gRPC", "--otlp-grpc-port", "OTELCOL_OTLP_GRPC_PORT", 4317
    ),
    PortSetting(
        "otlp_http", "collector OTLP/HTTP", "--otlp-http-port", "OTELCOL_OTLP_HTTP_PORT", 4318
    ),
    PortSetting("health", "collector health check", "--health-port", "OTELCOL_HEALTH_PORT", 13133),
    PortSetting("metrics", "collector metrics", "--metrics-port", "OTELCOL_METRICS_PORT", 8888),
    PortSetting("sink", "development sink", "--sink-port", "DEVSINK_PORT", 4319),
)


def read_ports(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, int]:
    """Every port by key; PortError naming the setting for a value that is not a TCP port."""
    ports: dict[str, int] = {}
    for setting in PORTS:
        raw = getattr(args, setting.dest, None) or environ.get(setting.variable, "").strip()
        source = setting.flag if getattr(args, setting.dest, None) else setting.variable
        if not raw:
            ports[setting.key] = setting.default
            continue
        try:
            port = int(raw)
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            raise PortError(f"{source} must be a TCP port (1-65535), got {raw!r}")
        ports[setting.key] = port
    by_port: dict[int, list[str]] = {}
    for setting in PORTS:
        by_port.setdefault(ports[setting.key], []).append(setting.variable)
    clashes = [
        f"{' and '.join(names)} are all {port}" for port, names in by_port.items() if len(names) > 1
    ]
    if clashes:
        raise PortError("each port must differ: " + "; ".join(clashes))
    return ports


def check_ports_free(
    ports: Mapping[str, int], *, skip: Collection[str] = (), host: str = "127.0.0.1"
) -> None:
    """PortError naming every busy port and the variable (or flag) that moves it."""
    busy = [
        f"port {ports[s.key]} ({s.role}) is already in use on {host}: stop what listens there, "
        f"or set {s.variable} (or {s.flag}) to a free port"
        for s in PORTS
        if s.key not in skip and port_in_use(ports[s.key], host)
    ]
    if busy:
        raise PortError("\n".join(busy))


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could not bind `host:port` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As uvicorn and the collector do: a port with only TIME_WAIT connections is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False
