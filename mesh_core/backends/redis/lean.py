"""``LeanLine``: one pipelined connection to a single Redis server for the backend's scripts and memory writes.

Why: redis-py 8 spends some 140–170 µs of CPU on one ``EVALSHA`` round trip here (pool checkout, its
observability hooks, a timeout context per read), against about 45 µs for this path, on the same loopback
server (``python -m bench.redis_client``; bench/README.md, "Redis: the backend's own connections"). Every task
is two scripts (ENQUEUE on the submitter, COMPLETE on the worker) on the critical path of its round trip.

What it is: an ``asyncio.Protocol`` that writes each command in the caller's task and parses replies with hiredis
(redis-py's own optional parser). Calls made while others wait are pipelined on the one connection and answered in
order (Redis runs commands one at a time anyway). A caller cancelled while it waits leaves its reply to be read and
dropped: the replies never get out of step. The connection is opened on first use, with ``AUTH`` and ``SELECT``
as the configuration says, over TLS for ``rediss://``, and opened again after it was lost.

Failures are redis-py's exceptions, so the backend translates them as it does any other call's: a lost or refused
connection is ``ConnectionError`` (every caller waiting on it hears it), a reply not come within
``socket_timeout_seconds`` is ``TimeoutError`` (the connection is dropped, as redis-py does), an error reply is the
class redis-py gives that reply (``ReadOnlyError``, ``AuthenticationError`` …). ``NOSCRIPT`` (a restarted or
flushed server) loads the script and runs it again.

The backend has two: one for the scripts and the memory writes (``batch``, ``transaction``), one for the blocking
``XREAD`` of its result feed (a blocking read would hold the others behind it); and ``LeanPubSub`` reads its
wake-ups. Used only for one server by url or
host/port: Sentinel and Cluster keep redis-py's clients, which follow the primary and the slot map, and a url with
query options this path does not take (``usable`` says) keeps them too.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import AuthenticationError, DataError, InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...config import RedisConfig

try:  # the reply-code → exception table redis-py's own parsers use (redis-py ≥ 5)
    from redis._parsers.base import BaseParser
    ERROR_CLASSES: dict[str, Any] = dict(BaseParser.EXCEPTION_CLASSES)
except ImportError:  # pragma: no cover - an older layout: every error reply is a ResponseError
    ERROR_CLASSES = {}

TAKEN_URL_OPTIONS = {"host", "port", "db", "username", "password", "path", "connection_class"}


def usable(cfg: RedisConfig) -> bool:
    """This path serves ``cfg``: one server, its url (if any) naming nothing beyond host, port, db, credentials
    and TLS."""
    if cfg.mode != "single":
        return False
    return not cfg.url or set(parse_url(cfg.url)) <= TAKEN_URL_OPTIONS


def error_of(reply: ResponseError) -> Exception:
    """An error reply as the exception redis-py raises for it."""
    text = str(reply)
    code = text.split(" ", 1)[0]
    cls = ERROR_CLASSES.get(code)
    if cls is None:
        return ResponseError(text)
    rest = text[len(code) + 1:]
    if isinstance(cls, dict):
        cls = cls.get(rest, ResponseError)
    return cls(rest)  # type: ignore[no-any-return]


def stream_reply(raw: Any) -> list[Any]:
    """An ``XREAD`` reply in redis-py's shape: ``[[stream, [(id, {field: value})]]]``, ``[]`` when nothing came."""
    return [[name, [(entry_id, dict(zip(fields[::2], fields[1::2], strict=True)) if fields else {})
                    for entry_id, fields in entries]] for name, entries in raw or ()]


def hash_reply(raw: Any) -> Any:
    """An ``HGETALL`` reply as redis-py gives it: a dict (redis-py's own already is one; an error stays the
    exception it is)."""
    return dict(zip(raw[::2], raw[1::2], strict=True)) if isinstance(raw, list) else raw


def _arg(value: Any) -> bytes:
    """One command argument as redis-py encodes it (and refuses what it refuses)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        raise DataError("Invalid input of type: 'bool'. Convert to a bytes, string, int or float first.")
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, float):
        return repr(value).encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise DataError(f"Invalid input of type: '{type(value).__name__}'. Convert to a bytes, string, int or float "
                    "first.")


def pack(args: tuple[Any, ...]) -> bytes:
    """A command in RESP."""
    out = [b"*%d\r\n" % len(args)]
    for value in args:
        raw = _arg(value)
        out.append(b"$%d\r\n" % len(raw))
        out.append(raw)
        out.append(b"\r\n")
    return b"".join(out)


class _Replies(asyncio.Protocol):
    """The socket's side: replies matched to the calls in the order they were sent."""

    def __init__(self, timeout: float) -> None:
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()  # (call, due)
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.timeout = timeout
        self._watch: asyncio.TimerHandle | None = None
        self.pushes: Callable[[Any], None] | None = None  # a subscribed connection: every reply is a push

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except InvalidResponse as exc:
                self._fail(RedisConnectionError(f"Redis sent what is not RESP: {exc}"))
                return
            if reply is False:
                return
            if self.pushes is not None:
                self.pushes(reply)
                continue
            if not waiting:
                self._fail(RedisConnectionError("Redis sent a reply no call waits for"))
                return
            future = waiting.popleft()[0]
            if not future.done():  # a cancelled caller's reply is read and dropped
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Connection to Redis lost: {exc}" if exc else "Connection closed by Redis"))

    def send(self, commands: bytes, n: int = 1, blocks: float = 0.0) -> list[asyncio.Future[Any]]:
        """Write ``n`` packed commands at once (no other caller's command between them); a future per reply, due
        within the timeout, plus ``blocks`` seconds for a command that waits on the server (``XREAD BLOCK``)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        due = time.monotonic() + self.timeout + blocks
        futures = [loop.create_future() for _ in range(n)]
        self.waiting.extend((future, due) for future in futures)
        self.transport.write(commands)
        if self._watch is None:
            self._watch = loop.call_later(self.timeout + blocks, self._check)
        return futures

    def _check(self) -> None:
        """The oldest call's reply is past due: the connection is dropped (every caller hears it)."""
        self._watch = None
        if not self.waiting:
            return
        left = self.waiting[0][1] - time.monotonic()
        if left <= 0:
            self._fail(RedisTimeoutError(f"Timeout reading from Redis: no reply in {self.timeout:g} s"))
        else:
            self._watch = asyncio.get_running_loop().call_later(left, self._check)

    def _fail(self, exc: Exception) -> None:
        if self.lost is None:
            self.lost = exc
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        waiting, self.waiting = self.waiting, collections.deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(exc)
        if self.pushes is not None:
            self.pushes(None)
        if self.transport is not None:
            self.transport.abort()


class LeanLine:
    """One pipelined connection to a single Redis server (see the module's docstring)."""

    def __init__(self, cfg: RedisConfig, ssl_context: ssl.SSLContext | None) -> None:
        self.cfg = cfg
        self._ssl = ssl_context
        self._replies: _Replies | None = None
        self._opening: asyncio.Future[_Replies] | None = None
        self._shas: dict[str, bytes] = {}
        self.opened = 0  # connections made (the first one and each one after a loss)

    async def call(self, *args: Any, blocks: float = 0.0) -> Any:
        """One command's reply; an error reply raised as redis-py raises it. ``blocks``: seconds the command may wait
        on the server before it answers (its reply is due that much later)."""
        command = pack(args)
        reply = await (await self._ready()).send(command, blocks=blocks)[0]
        if isinstance(reply, ResponseError):
            raise error_of(reply)
        return reply

    async def batch(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """The replies of ``commands``, sent in one write (a pipeline): each error reply as its exception, in its
        place, not raised (redis-py's ``raise_on_error=False``)."""
        packed = b"".join(pack(command) for command in commands)
        out = [await future for future in (await self._ready()).send(packed, len(commands))]
        return [error_of(r) if isinstance(r, ResponseError) else r for r in out]

    async def transaction(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``commands`` in ``MULTI`` … ``EXEC``, sent in one write: their replies, the first error among them raised
        (as redis-py's transaction pipeline raises it)."""
        got = await self.batch([(b"MULTI",), *commands, (b"EXEC",)])
        for reply in got:  # a command refused while queued (EXECABORT follows): that refusal says why
            if isinstance(reply, Exception):
                raise reply
        results = got[-1]
        if not isinstance(results, list):
            raise ResponseError(f"the transaction was not run: EXEC answered {results!r}")
        for reply in results:
            if isinstance(reply, ResponseError):
                raise error_of(reply)
        return results

    async def script(self, body: str, keys: list[Any], args: list[Any]) -> Any:
        """``EVALSHA`` of ``body``; a server that does not hold it (``NOSCRIPT``) is given it, then asked again."""
        sha = self._shas.get(body)
        if sha is None:
            sha = self._shas[body] = hashlib.sha1(body.encode()).hexdigest().encode()
        try:
            return await self.call(b"EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.call(b"SCRIPT", b"LOAD", body)
            return await self.call(b"EVALSHA", sha, len(keys), *keys, *args)

    async def _ready(self) -> _Replies:
        """The connection, opened (with its handshake) if there is none or it was lost: by the first caller, the
        others waiting for that one."""
        replies = self._replies
        if replies is not None and replies.lost is None:
            return replies
        if self._opening is not None:
            return await asyncio.shield(self._opening)
        loop = asyncio.get_running_loop()
        self._opening = loop.create_future()
        try:
            replies = await connect(self.cfg, self._ssl)
        except BaseException as exc:
            if not self._opening.done():
                self._opening.set_exception(exc if isinstance(exc, Exception) else RedisConnectionError("cancelled"))
                self._opening.exception()  # retrieved here: a later caller opens again
            self._opening = None
            raise
        self._opening.set_result(replies)
        self._opening = None
        self._replies = replies
        self.opened += 1
        return replies

    def close(self) -> None:
        replies, self._replies = self._replies, None
        if replies is not None:
            replies._fail(RedisConnectionError("the node closed its Redis connection"))


async def connect(cfg: RedisConfig, ssl_context: ssl.SSLContext | None) -> _Replies:
    """A connection to the server ``cfg`` names, its handshake done (``AUTH``, ``SELECT``)."""
    found: dict[str, Any] = dict(parse_url(cfg.url)) if cfg.url else {}
    host, port = found.get("host", cfg.host), found.get("port", cfg.port)
    db = found.get("db", cfg.db)
    username, password = found.get("username", cfg.username), found.get("password", cfg.password)
    loop = asyncio.get_running_loop()
    timeout = cfg.socket_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            if "path" in found:
                _, replies = await loop.create_unix_connection(lambda: _Replies(timeout), found["path"])
            else:
                _, replies = await loop.create_connection(
                    lambda: _Replies(timeout), host, port, ssl=ssl_context,
                    server_hostname=host if ssl_context is not None else None)
    except TimeoutError:
        raise RedisTimeoutError(f"Timeout connecting to Redis at {host}:{port}") from None
    except OSError as exc:
        raise RedisConnectionError(f"Error connecting to Redis at {host}:{port}: {exc}") from exc
    try:
        if password:
            reply = await replies.send(pack((b"AUTH", username, password) if username else (b"AUTH", password)))[0]
            if isinstance(reply, ResponseError):
                raise AuthenticationError(str(reply))
        if db:
            reply = await replies.send(pack((b"SELECT", db)))[0]
            if isinstance(reply, ResponseError):
                raise error_of(reply)
    except BaseException:
        if replies.transport is not None:
            replies.transport.abort()
        raise
    return replies


class LeanPubSub:
    """A subscription on a connection of its own, read as its messages arrive: what the backend's wake-up listener
    reads (``get_message`` and ``aclose`` as redis-py's ``PubSub`` has them). ``subscribe`` returns once the
    server confirmed every channel; a lost connection is a ``ConnectionError`` from ``get_message`` (the listener
    subscribes again)."""

    def __init__(self, cfg: RedisConfig, ssl_context: ssl.SSLContext | None) -> None:
        self.cfg = cfg
        self._ssl = ssl_context
        self._replies: _Replies | None = None
        self._messages: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._confirmed: asyncio.Future[None] | None = None
        self._unconfirmed = 0

    async def subscribe(self, *channels: str) -> None:
        replies = self._replies = await connect(self.cfg, self._ssl)
        replies.pushes = self._push
        loop = asyncio.get_running_loop()
        self._confirmed, self._unconfirmed = loop.create_future(), len(channels)
        replies.transport.write(pack((b"SUBSCRIBE", *channels)))  # type: ignore[union-attr]
        try:
            async with asyncio.timeout(self.cfg.socket_timeout_seconds):
                await self._confirmed
        except TimeoutError:
            raise RedisTimeoutError(f"Timeout subscribing: no answer in {self.cfg.socket_timeout_seconds:g} s"
                                    ) from None
        self._lost()

    def _push(self, reply: Any) -> None:
        if reply is None:  # the connection is gone (``_Replies._fail``): a waiting reader raises why
            self._wake()
            if self._confirmed is not None and not self._confirmed.done():
                self._confirmed.set_exception(self._replies.lost if self._replies and self._replies.lost
                                              else RedisConnectionError("subscription lost"))
            return
        kind = reply[0] if isinstance(reply, list) and len(reply) == 3 else None
        if kind == b"message":
            self._messages.append((reply[1], reply[2]))
            self._wake()
        elif kind == b"subscribe":
            self._unconfirmed -= 1
            if self._unconfirmed <= 0 and self._confirmed is not None and not self._confirmed.done():
                self._confirmed.set_result(None)
        elif isinstance(reply, ResponseError) and self._confirmed is not None and not self._confirmed.done():
            self._confirmed.set_exception(error_of(reply))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _lost(self) -> None:
        """Raise what ended the connection, if it ended."""
        replies = self._replies
        if replies is None:
            raise RedisConnectionError("not subscribed")
        if replies.lost is not None:
            raise replies.lost

    async def get_message(self, ignore_subscribe_messages: bool = True, timeout: float = 0.0
                          ) -> dict[str, Any] | None:
        """The next message (``type``, ``channel``, ``data``), or None after ``timeout`` seconds without one."""
        if not self._messages:
            self._lost()
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, self._wake)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not self._messages:
                self._lost()
                return None
        channel, data = self._messages.popleft()
        return {"type": "message", "channel": channel, "pattern": None, "data": data}

    async def aclose(self) -> None:
        replies, self._replies = self._replies, None
        if replies is not None:
            replies._fail(RedisConnectionError("the node closed its subscription"))
