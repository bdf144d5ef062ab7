"""Network addresses as the mesh reads them: ``host:port`` (an IPv6 address in brackets), Redis URLs, and the
address this machine is reached at. Pure but for ``machine_address``, which asks the resolver."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

REDIS_SCHEMES = ("redis", "rediss", "unix")


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is not a Redis URL the client can open (None when it is)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed [ of an IPv6 host
        return "a URL that parses (redis://host:port/db)"
    if parts.scheme not in REDIS_SCHEMES:
        return "a URL starting redis://, rediss:// or unix://"
    if parts.scheme == "unix":
        return None if parts.path else "unix:// followed by a socket path"
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
        parts.password  # noqa: B018 - and for a malformed authority
    except ValueError:
        return "a URL whose port is a number from 1 to 65535"
    return None


HOST_PORT = "host:port with a port from 1 to 65535, an IPv6 address in brackets"


def host_port_problem(value: str) -> str | None:
    """Why ``value`` is not a ``host:port`` another node can dial (None when it is)."""
    return HOST_PORT if split_host_port(value) is None else None


def host_port_or_empty_problem(value: str) -> str | None:
    return f"{HOST_PORT}; or empty to derive it" if value and split_host_port(value) is None else None


def split_host_port(value: str) -> tuple[str, int] | None:
    """``("host", port)`` from ``host:port`` or ``[v6addr]:port`` with a port from 1 to 65535; None otherwise."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host or ":" not in host:
            return None
    elif ":" in host:
        return None  # a bare IPv6 address is ambiguous: it needs brackets
    if not host or any(c.isspace() or c in "/@[]" for c in host):
        return None
    return host, int(port)


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def machine_address() -> str:
    """This machine's address as others may reach it: its hostname resolved; when that fails or gives a
    loopback address, the address of the interface that routes outward (found without sending anything)."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        address = ""
    if address and not address.startswith("127."):
        return address
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: a UDP connect picks a route and sends nothing
            outward = str(probe.getsockname()[0])
    except OSError:
        outward = ""
    return outward if outward and outward != "0.0.0.0" else (address or name)
