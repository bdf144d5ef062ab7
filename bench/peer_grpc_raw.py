"""The raw gRPC reference (the ceiling): a bidirectional ``grpc.aio`` echo stream per worker process.

Worker: ``python -m bench.peer_grpc_raw worker [--tls-dir DIR]`` serves ``/bench.Echo/Stream`` on an
ephemeral port of 127.0.0.1 and prints one readiness line with the port. It echoes each message
as it comes, bytes in, bytes out (a generic handler: no proto to compile, nothing decoded).

Submitter (:class:`EchoClient`): one long-lived stream per worker; request ``i`` is a 100-byte
message carrying a sequence number, sent to worker ``i % 2``; a reader per stream matches each
echo to its waiting future by that number. With ``--tls-dir`` both sides use mutual TLS from a
throw-away CA (:func:`make_certs`, needs the ``cryptography`` package).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
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
    """A CA and a server (127.0.0.1, localhost) and a client certificate, ECDSA P-256, valid ``days``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(who: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        (folder / f"{who}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        path = folder / f"{who}.key"
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)

    def usage(ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                             encipher_only=False, decipher_only=False)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder().subject_name(name("mesh bench throw-away CA"))
               .issuer_name(name("mesh bench throw-away CA")).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(usage(ca=True), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    leaves: tuple[tuple[str, list[x509.GeneralName], x509.ObjectIdentifier], ...] = (
        ("server", [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
         ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", [x509.DNSName("bench-client")], ExtendedKeyUsageOID.CLIENT_AUTH),
    )
    for who, sans, eku in leaves:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(f"mesh bench {who}")).issuer_name(ca_cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(usage(ca=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        write(who, key, cert)
    return TlsFiles(folder)


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
