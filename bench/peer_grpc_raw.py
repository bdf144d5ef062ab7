"""The raw gRPC reference (the ceiling): a bidirectional ``grpc.aio`` echo stream per worker process.

Worker: ``python -m bench.peer_grpc_raw worker [--tls-dir DIR]`` serves ``/bench.Echo/Stream`` on an
ephemeral port of 127.0.0.1 and prints one readiness line with the port. It echoes each message
as it comes, bytes in, bytes out (a generic handler: no proto to compile, nothing decoded).

Submitter (:class:`EchoClient`): one long-lived stream per worker; request ``i`` is a 100-byte
message carrying a sequence number, sent to worker ``i % 2``; a reader per stream matches each
echo to its waiting future by that number. With ``--tls-dir`` both sides use mutual TLS from a
throw-away mesh CA (:func:`make_certs`, made as ``mesh-tui certs`` makes one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Stream"
MESSAGE_BYTES = 100
_ID_BYTES = 8
_PAD = b"x" * (MESSAGE_BYTES - _ID_BYTES)
READY = "grpc echo worker ready on 127.0.0.1:"


# -- throw-away mutual TLS ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throw-away CA and one server and one client certificate it signed."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    def cert(self, who: str) -> Path:
        return self.folder / f"{who}.pem"

    def key(self, who: str) -> Path:
        return self.folder / f"{who}.key"

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key("server").read_bytes(), self.cert("server").read_bytes())],
                                           root_certificates=self.ca.read_bytes(), require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes(),
                                            private_key=self.key("client").read_bytes(),
                                            certificate_chain=self.cert("client").read_bytes())


def make_certs(folder: Path, days: int = 1) -> TlsFiles:
    """A throw-away mesh CA and a server (127.0.0.1, localhost) and a client certificate valid ``days``, made as
    ``mesh-tui certs`` makes them (``mesh_core.certs``: ECDSA P-256), in ``folder/certs``."""
    from mesh_core import certs

    certs.init_ca(folder, force=True)
    certs.issue(folder, "server", ["127.0.0.1", "localhost"], days=days, force=True)
    certs.issue(folder, "client", days=days, force=True)
    return TlsFiles(certs.CertPaths.of(folder).folder)


# -- the worker ----------------------------------------------------------------------------------------
async def _echo(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes],
                ) -> AsyncIterator[bytes]:
    async for message in requests:
        yield message


def echo_handler() -> grpc.GenericRpcHandler:
    """The service: one bidirectional streaming method, bytes in and out (no (de)serializers)."""
    return grpc.method_handlers_generic_handler(SERVICE, {"Stream": grpc.stream_stream_rpc_method_handler(_echo)})


async def start_server(tls: TlsFiles | None = None, host: str = "127.0.0.1") -> tuple[grpc.aio.Server, int]:
    """A started echo server on an ephemeral port of ``host``: (server, port)."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((echo_handler(),))
    address = f"{host}:0"
    port = server.add_secure_port(address, tls.server_credentials()) if tls else server.add_insecure_port(address)
    await server.start()
    return server, port


async def serve(tls: TlsFiles | None) -> None:
    server, port = await start_server(tls)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    print(f"{READY}{port}", flush=True)
    try:
        await done.wait()
    finally:
        await server.stop(0.5)


# -- the submitter -------------------------------------------------------------------------------------
class EchoClient:
    """One long-lived echo stream per worker; ``send(i)`` goes to worker ``i % len(workers)``."""

    def __init__(self, addresses: Sequence[str], tls: TlsFiles | None = None) -> None:
        if not addresses:
            raise ValueError("EchoClient needs at least one worker address")
        creds = tls.channel_credentials() if tls else None
        self.channels = [grpc.aio.secure_channel(a, creds) if creds else grpc.aio.insecure_channel(a)
                         for a in addresses]
        self.calls: list[Any] = []
        self.readers: list[asyncio.Task[None]] = []
        self.pending: dict[int, tuple[asyncio.Future[int], int, int]] = {}  # seq -> (future, i, stream)
        self.seq = 0
        self.unmatched = 0  # echoes whose sequence number nobody waited for (should stay 0)

    async def open(self, timeout: float = 10.0) -> EchoClient:
        for channel in self.channels:
            await asyncio.wait_for(channel.channel_ready(), timeout)
            call = channel.stream_stream(METHOD)()  # no serializers: bytes as they are
            self.calls.append(call)
            self.readers.append(asyncio.create_task(self._read(len(self.calls) - 1, call)))
        return self

    async def _read(self, stream: int, call: Any) -> None:
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    error: Exception = ConnectionError(f"echo stream ended: {await call.code()}")
                    break
                entry = self.pending.pop(int.from_bytes(message[:_ID_BYTES], "big"), None)
                if entry is None:
                    self.unmatched += 1
                    continue
                future, i, _ = entry
                if not future.done():
                    future.set_result(i)
        except grpc.aio.AioRpcError as exc:
            error = ConnectionError(f"echo stream failed: {exc.code()} {exc.details()}")
        for seq, (future, _, on) in list(self.pending.items()):  # nobody waits out a timeout on a dead stream
            if on == stream:
                del self.pending[seq]
                if not future.done():
                    future.set_exception(error)

    async def send(self, i: int) -> asyncio.Future[int]:
        """Send request ``i``; the future resolves to ``i`` when its echo comes back."""
        self.seq += 1
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        stream = i % len(self.calls)
        self.pending[self.seq] = (future, i, stream)
        try:
            await self.calls[stream].write(self.seq.to_bytes(_ID_BYTES, "big") + _PAD)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            # the stream is gone: this request fails now, as one error, and the run goes on
            self.pending.pop(self.seq, None)
            if not future.done():  # the reader may have failed it already
                future.set_exception(ConnectionError(f"echo stream {stream} cannot send: {type(exc).__name__}: "
                                                     f"{exc}"))
        return future

    async def close(self) -> None:
        for call in self.calls:
            with contextlib.suppress(Exception):
                await call.done_writing()
        for reader in self.readers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader, 5)
        for channel in self.channels:
            await channel.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.peer_grpc_raw")
    p.add_argument("role", choices=("worker",))
    p.add_argument("--tls-dir", type=Path, help="mutual TLS with the files of make_certs() in this folder")
    args = p.parse_args(argv)
    asyncio.run(serve(TlsFiles(args.tls_dir) if args.tls_dir else None))


if __name__ == "__main__":
    main()
