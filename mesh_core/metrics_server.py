"""This node's ``GET /metrics`` endpoint: a small HTTP/1.1 responder on the node's own event loop.

On the loop, not in prometheus_client's threaded server, so a scrape reads the
node's dicts between the loop's own steps rather than while the loop mutates them.
Each connection serves one request and is closed; a request head over
``MAX_REQUEST_BYTES`` or slower than ``READ_TIMEOUT_SECONDS`` is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import ConfigError

MAX_REQUEST_BYTES = 8 * 1024  # request line and headers; a scraper sends a few hundred bytes
READ_TIMEOUT_SECONDS = 5.0
WRITE_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 16  # open at once; more are closed unanswered (a scraper needs one)

Render = Callable[[Any], bytes]
Gather = Callable[[], Awaitable[Any]]  # what ``render`` needs from the medium, read first (it answers its own errors)


class MetricsServer:
    """Serves ``render(await gather())`` at ``/metrics``; 404 for any other path, 405 for any other method."""

    def __init__(self, host: str, port: int, render: Render, gather: Gather, content_type: str) -> None:
        self.host, self.port = host, port
        self._render, self._gather, self._content_type = render, gather, content_type
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self.scrapes = 0

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` as bound (the port picked when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            return self.host, self.port
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def bind(self) -> None:
        """Take the port now (a port in use fails the node's start before it joins); answer from ``serve``."""
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_REQUEST_BYTES,
                                                      start_serving=False)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"metrics: port {self.port} on {self.host} is already in use",
                                  hint="pick another with --metrics-port (or metrics.port), or 0 for a free one")
            raise ConfigError(f"metrics: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}",
                              hint="check metrics.host / --metrics-host is an address of this machine")

    async def serve(self) -> None:
        if self._server is not None:
            await self._server.start_serving()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for client in list(self._clients):
            client.transport.abort()  # its handler's read fails and it returns (a cancel would be logged)
        with contextlib.suppress(Exception):
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._clients.add(writer)
        try:
            async with asyncio.timeout(READ_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body, ctype = await self._answer(head)
            writer.write(b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                         % (status.encode(), ctype.encode(), len(body)) + body)
            async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # slow, oversized or gone: closed without an answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._clients.discard(writer)

    async def _answer(self, head: bytes) -> tuple[str, bytes, str]:
        line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(line) != 3 or not line[2].startswith("HTTP/"):
            return "400 Bad Request", b"bad request\n", "text/plain"
        method, target = line[0], line[1].split("?", 1)[0]
        if target != "/metrics":
            return "404 Not Found", b"not found: try /metrics\n", "text/plain"
        if method != "GET":
            return "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
        try:
            body = self._render(await self._gather())
        except Exception as exc:  # a bug in a collector: the scraper hears why, the node goes on
            return "500 Internal Server Error", f"{type(exc).__name__}: {exc}\n".encode(), "text/plain"
        self.scrapes += 1
        return "200 OK", body, self._content_type
