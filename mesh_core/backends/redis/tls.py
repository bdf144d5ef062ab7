"""Redis over TLS (``rediss://``): the client's TLS options from ``redis.tls_*``, their files checked before the
first connection, and a failed connection told in one line that says what to fix.

``options`` feeds redis-py's SSL parameters (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_check_hostname``; the certificate is always required). ``explain`` reads a failure's exception chain
(pure); ``diagnose`` adds, for a connection that failed before it began, one look at what the port speaks:
plaintext Redis behind a ``rediss://`` url, or TLS behind a ``redis://`` one. The backend and the ``hybrid``
probe both build their clients with ``options`` and word their failures with these.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ...config import RedisConfig
from ...errors import ConfigError

KEYS = {"tls_ca_file": "ssl_ca_certs", "tls_cert_file": "ssl_certfile", "tls_key_file": "ssl_keyfile"}
LOOK_SECONDS = 1.0  # the most ``diagnose`` spends looking at the port


@dataclass(frozen=True)
class Refusal:
    """Why a connection failed (``what``, after "Redis at URL") and what to do about it (``fix``)."""

    what: str
    fix: str


def options(cfg: RedisConfig) -> dict[str, Any]:
    """redis-py's SSL keyword arguments for ``cfg`` (none for a url that is not ``rediss://``), after checking that
    each file given can be read and is what its key says; ``ConfigError`` naming the key and file otherwise."""
    if not cfg.tls:
        return {}
    check_files(cfg)
    out: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": cfg.tls_check_hostname}
    for key, option in KEYS.items():
        if getattr(cfg, key):
            out[option] = getattr(cfg, key)
    return out


def client_context(cfg: RedisConfig) -> ssl.SSLContext | None:
    """The client TLS context ``options`` asks redis-py for (the server's certificate required, its name checked
    as ``tls_check_hostname`` says, the CA given or the system's, this node's certificate if given); None without
    TLS. For a connection the backend makes itself (``lean``)."""
    if not cfg.tls:
        return None
    check_files(cfg)
    made = ssl.create_default_context(cafile=cfg.tls_ca_file)
    made.check_hostname = cfg.tls_check_hostname
    made.verify_mode = ssl.CERT_REQUIRED
    if cfg.tls_cert_file:
        made.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    return made


def check_files(cfg: RedisConfig) -> None:
    """Load the CA, certificate and key as the TLS client will; a ``ConfigError`` saying which file is wrong."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cfg.tls_ca_file:
        _readable("tls_ca_file", cfg.tls_ca_file)
        try:
            context.load_verify_locations(cafile=cfg.tls_ca_file)
        except ssl.SSLError as exc:
            raise _bad("tls_ca_file", cfg.tls_ca_file, f"holds no PEM certificate ({_reason(exc)})",
                       "give the CA certificate: mesh-tui certs init makes <state_dir>/certs/ca.pem") from None
    if cfg.tls_cert_file:
        _readable("tls_cert_file", cfg.tls_cert_file)
        if cfg.tls_key_file:
            _readable("tls_key_file", cfg.tls_key_file)
        try:
            context.load_cert_chain(certfile=cfg.tls_cert_file, keyfile=cfg.tls_key_file or None, password=b"")
        except ssl.SSLError as exc:
            reason = _reason(exc)
            if "KEY_VALUES_MISMATCH" in reason.upper():
                raise _bad("tls_key_file", cfg.tls_key_file or cfg.tls_cert_file, "is not the key of "
                           f"redis.tls_cert_file {cfg.tls_cert_file!r}", "give the key issued with that certificate"
                           ) from None
            raise _bad("tls_cert_file", cfg.tls_cert_file, f"and its key cannot be loaded ({reason})",
                       "give a PEM certificate and its unencrypted PEM key: mesh-tui certs issue NAME makes both"
                       ) from None


def _readable(key: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise _bad(key, path, f"cannot be read: {exc.strerror}",
                   "fix the path, or make the files with mesh-tui certs init and mesh-tui certs issue NAME") from None


def _bad(key: str, path: str, what: str, fix: str) -> ConfigError:
    return ConfigError(f"config: agent_mesh.redis.{key} = {path!r} {what}", hint=fix)


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc)


def describe(cfg: RedisConfig) -> dict[str, Any] | None:
    """What ``status`` shows of the TLS settings (paths only; None for a plaintext connection)."""
    if not cfg.tls:
        return None
    return {"ca_file": cfg.tls_ca_file or "(system CAs)", "cert_file": cfg.tls_cert_file,
            "check_hostname": cfg.tls_check_hostname}


def _chain_text(exc: BaseException) -> str:
    texts: list[str] = []
    seen: BaseException | None = exc
    for _ in range(8):  # redis-py wraps the ssl module's error a link or two down
        if seen is None:
            break
        texts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return " | ".join(texts)


def _after(text: str, marker: str) -> str:
    rest = text[text.find(marker) + len(marker):] if marker in text else text
    return rest.split("(_ssl.c")[0].split(" | ")[0].strip(" .")


def explain(cfg: RedisConfig, exc: BaseException) -> Refusal | None:
    """What a failed connection says about TLS, from its exception chain alone; None when it says nothing."""
    text = _chain_text(exc)
    upper = text.upper()
    host = _host_port(cfg)[0] or "the host"
    if "CERTIFICATE_VERIFY_FAILED" in upper:
        why = _after(text, "certificate verify failed:")
        if "mismatch" in why.lower():
            return Refusal(f"sent a certificate that does not name {host} ({why})",
                           f"dial a host the certificate names, or reissue it with mesh-tui certs issue NAME "
                           f"--host {host}; redis.tls_check_hostname: false skips this check")
        if "expired" in why.lower():
            return Refusal(f"sent an expired certificate ({why})", "renew the server's certificate")
        where = f"redis.tls_ca_file {cfg.tls_ca_file!r}" if cfg.tls_ca_file else "the system's CAs"
        return Refusal(f"sent a certificate not signed by {where} ({why})",
                       "set redis.tls_ca_file to the CA that issued the server's certificate")
    if "CERTIFICATE_REQUIRED" in upper or ("HANDSHAKE_FAILURE" in upper and not cfg.tls_cert_file):
        return Refusal("requires a client certificate and this node sent none",
                       "set redis.tls_cert_file and redis.tls_key_file: mesh-tui certs issue NAME makes them")
    if "ALERT_CERTIFICATE_EXPIRED" in upper:
        return Refusal(f"refused this node's client certificate {cfg.tls_cert_file!r}: expired",
                       "renew it: mesh-tui certs issue NAME")
    for alert in ("UNKNOWN_CA", "BAD_CERTIFICATE", "DECRYPT_ERROR", "CERTIFICATE_UNKNOWN", "ACCESS_DENIED"):
        if f"ALERT_{alert}" in upper:
            return Refusal(f"refused this node's client certificate {cfg.tls_cert_file!r} "
                           f"({alert.lower().replace('_', ' ')})",
                           "use a certificate issued by the CA the server trusts: its tls-ca-cert-file")
    if cfg.tls and any(code in upper for code in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE",
                                                  "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL")):
        return _plaintext_server()
    if "SSLERROR" in upper or "SSLCERT" in upper:
        return Refusal(f"failed the TLS handshake ({_after(text, 'SSLError:')})",
                       "check redis.tls_ca_file, redis.tls_cert_file and redis.tls_key_file against the server's "
                       "tls-* settings")
    return None


def _plaintext_server() -> Refusal:
    return Refusal("speaks plaintext Redis, not TLS", "use a redis:// url, or enable TLS on the server: tls-port")


def _tls_server() -> Refusal:
    return Refusal("speaks TLS only and this url is plaintext",
                   "use a rediss:// url with redis.tls_ca_file, plus redis.tls_cert_file and redis.tls_key_file when "
                   "the server asks clients for a certificate")


async def diagnose(cfg: RedisConfig, exc: BaseException, timeout: float = LOOK_SECONDS) -> Refusal | None:
    """``explain``, and when that says nothing, a look at the port (each look gives up after ``timeout``):
    behind a ``rediss://`` url, does plaintext Redis answer PING there, and else what does the server say after a
    handshake of our own (a refused client certificate is an alert that a connection already sending a command
    can lose to a reset); behind a ``redis://`` url, does it finish a TLS handshake?"""
    found = explain(cfg, exc)
    if found is not None:
        return found
    host, port = _host_port(cfg)
    if not host or not port:
        return None
    if not cfg.tls:
        return _tls_server() if await _look(_answers_tls(host, port), timeout) else None
    if await _look(_answers_plaintext(host, port), timeout):
        return _plaintext_server()
    alert = await _look(_verdict(cfg, host, port), timeout)
    return explain(cfg, alert) if alert is not None else None


async def _look(coro: Any, timeout: float) -> Any:
    """``coro``'s answer; None when it failed to connect or took longer than ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            return await coro
    except (OSError, TimeoutError, EOFError):
        return None


def _host_port(cfg: RedisConfig) -> tuple[str, int]:
    if not cfg.url:
        return cfg.host, cfg.port
    parts = urlsplit(cfg.url)
    if parts.scheme == "unix":
        return "", 0
    try:
        return parts.hostname or "", parts.port or 6379
    except ValueError:
        return "", 0


async def _answers_plaintext(host: str, port: int) -> bool:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        first = await reader.read(64)
        return first.startswith((b"+PONG", b"-NOAUTH", b"-ERR", b"-DENIED"))
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def _verdict(cfg: RedisConfig, host: str, port: int) -> BaseException | None:
    """Shake hands as the client would (without the host name check), send nothing, and wait for the server's
    verdict on the certificate we sent or did not send: its alert as an ``ssl.SSLError``; None when it has none."""
    context = ssl.create_default_context(cafile=cfg.tls_ca_file or None)
    context.check_hostname = False
    if cfg.tls_cert_file:
        context.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file or None, password=b"")
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
    except ssl.SSLError as exc:
        return exc
    try:
        await reader.read(1)
    except ssl.SSLError as exc:
        return exc
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return None


async def _answers_tls(host: str, port: int) -> bool:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only asking whether it speaks TLS; the connection is closed at once
    _, writer = await asyncio.open_connection(host, port, ssl=context)
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return True
