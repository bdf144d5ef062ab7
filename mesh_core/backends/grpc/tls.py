"""Mutual TLS for ``grpc_mesh``: which files, whether a plaintext server may listen, credentials that follow the files.

Which files (``grpc.tls``, see ``config.TLSConfig``): ``ca_file``, ``cert_file`` and ``key_file`` when given;
else the mesh CA and this node's certificate in ``<state_dir>/certs`` (``ca.pem``, ``NAME.pem``, ``NAME.key``,
as ``mesh-tui certs init`` and ``mesh-tui certs issue NAME`` make them). With ``enabled`` unset (auto) TLS is
on when those files are there (with the mesh CA there but not this node's certificate, the node does not start:
plaintext would only be refused by its peers); ``true`` requires them; ``false`` never speaks TLS.

A server without TLS listens on a loopback address only, unless ``grpc.insecure`` (``--insecure``) says
otherwise; then the node says INSECURE wherever it shows its medium.

What TLS proves (every call, both ends): the server asks for the caller's certificate, signed by the mesh
CA, and reads the caller's node name from it (``identity_of``); a Hello naming another node is refused
(``Wire.check_caller``, ``auth.identity_refusal``). A client dialling an address where it knows which node
listens sets the target name to that node's DNS SAN (``certs.node_dns_name``): the handshake fails unless the
server's certificate names that node. A seed dialled by address alone is checked by the host or IP SAN the
address names.

Rotation: ``Credentials.refresh`` (the wire calls it every ``RELOAD_SECONDS``) reads the files again when
their modification times change; the server presents the new certificate on its next handshake (gRPC's
dynamic server credentials ask at every handshake) and new channels use it. Connections already made stay
as they were until they close. A set of files that does not read as a certificate and key signed by the CA
is not taken (counted ``tls_reload_failures``, logged), the old one stays.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ... import certs
from ...config import MeshConfig
from ...errors import ConfigError

log = logging.getLogger("mesh.grpc")

RELOAD_SECONDS = 2.0  # the wire looks at the files' modification times this often
EXPIRY_WARNING_DAYS = 14  # ``status`` warns this close to a certificate's end (and after it)
SAN_KEY = "x509_subject_alternative_name"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    source: str  # "config" (grpc.tls.*_file) or "certs" (<state_dir>/certs)

    def all(self) -> tuple[Path, Path, Path]:
        return (self.ca, self.cert, self.key)


def tls_files(cfg: MeshConfig, name: str) -> TlsFiles | None:
    """The files node ``name`` speaks TLS with, or None for plaintext (``grpc.tls.enabled`` false, or auto and
    the files are not there). ``ConfigError`` when TLS is required (or half configured) and a file is missing."""
    tls = cfg.grpc.tls
    if tls.enabled is False:
        return None
    given = {"ca_file": tls.ca_file, "cert_file": tls.cert_file, "key_file": tls.key_file}
    if any(given.values()):
        missing_keys = [key for key, value in given.items() if not value]
        if missing_keys:
            raise ConfigError(f"config: agent_mesh.grpc.tls.{missing_keys[0]} is unset while "
                              f"{', '.join(k for k in given if k not in missing_keys)} is set",
                              hint="give ca_file, cert_file and key_file together, or none of them to use "
                                   f"{certs.CertPaths.of(cfg.state_dir).folder}")
        files = TlsFiles(Path(str(tls.ca_file)), Path(str(tls.cert_file)), Path(str(tls.key_file)), "config")
    else:
        paths = certs.CertPaths.of(cfg.state_dir)
        files = TlsFiles(paths.ca_cert, paths.node_cert(name), paths.node_key(name), "certs")
        # auto: no mesh CA here, plaintext; a mesh CA but not this node's files is a mistake to say, not a
        # silent fall back to plaintext that every TLS peer would refuse
        if tls.enabled is None and not files.ca.exists():
            return None
    for path in files.all():
        if not path.exists():
            raise ConfigError(f"grpc.tls: {path} is missing", hint=_fix_for(name, cfg))
    return files


def _fix_for(name: str, cfg: MeshConfig) -> str:
    return (f"run mesh-tui certs init && mesh-tui certs issue {name} --host H (H: the address others dial), "
            f"with --state-dir {cfg.state_dir} or copy the files there")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (a wildcard or any other address does not)."""
    bare = host.strip().removeprefix("[").removesuffix("]")
    if bare.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def check_plaintext_listen(cfg: MeshConfig, name: str, tls_on: bool) -> bool:
    """Refuse (``ConfigError``, before anything binds) a plaintext server on a non-loopback ``grpc.host``
    unless ``grpc.insecure``; True when the node runs insecure (plaintext on a non-loopback address)."""
    host = cfg.grpc.host
    if tls_on or is_loopback(host):
        return False
    if cfg.grpc.insecure:
        return True
    raise ConfigError(f"grpc_mesh will not listen on {host or '0.0.0.0'} without TLS",
                      hint=f"run mesh-tui certs init && mesh-tui certs issue {name} --host H, "
                           "or start with --insecure (grpc.insecure: true) to accept plaintext")


def identity_of(auth: Mapping[str, Sequence[bytes]]) -> str | None:
    """The node name in the peer certificate of a TLS call (``context.auth_context()``); None without one."""
    return certs.node_name_from_sans(auth.get(SAN_KEY, ()))


def fingerprint_of(auth: Mapping[str, Sequence[bytes]]) -> str:
    """SHA-256 of the peer certificate of a TLS call (``certs show``'s form), '' without one."""
    pem = auth.get("x509_pem_cert") or ()
    if not pem:
        return ""
    cert = x509.load_pem_x509_certificate(pem[0])
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


@dataclass(frozen=True)
class _Loaded:
    material: certs.TlsMaterial
    name: str
    not_after: dt.datetime
    fingerprint: str
    mtimes: tuple[float, ...]


class Credentials:
    """One node's TLS files, read again when they change; gRPC credentials made from what was last read."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.generation = 0
        self.failures = 0
        self._lock = threading.Lock()  # the server's fetcher runs on a gRPC thread
        self._served = 0  # the generation the server last handed out
        self._channel_creds: Any = None
        self._loaded = self._load()  # raises ConfigError: a node does not start with files it cannot use

    # -- what is loaded --------------------------------------------------------------------------------
    @property
    def material(self) -> certs.TlsMaterial:
        return self._loaded.material

    @property
    def name(self) -> str:
        """The node name this node's certificate gives it."""
        return self._loaded.name

    @property
    def fingerprint(self) -> str:
        return self._loaded.fingerprint

    def days_left(self, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.UTC)
        return (self._loaded.not_after - now).total_seconds() / 86400

    def describe(self) -> dict[str, Any]:
        days = self.days_left()
        return {"name": self.name, "cert_file": str(self.files.cert), "ca_file": str(self.files.ca),
                "fingerprint": self.fingerprint, "not_after": self._loaded.not_after.isoformat(),
                "days_left": round(days, 1), "expiring": days <= EXPIRY_WARNING_DAYS, "expired": days <= 0,
                "reload_failures": self.failures}

    def _mtimes(self) -> tuple[float, ...]:
        out = []
        for path in self.files.all():
            try:
                out.append(path.stat().st_mtime)
            except OSError:
                out.append(-1.0)
        return tuple(out)

    def _load(self) -> _Loaded:
        mtimes = self._mtimes()
        try:
            ca, cert_pem, key_pem = (path.read_bytes() for path in self.files.all())
        except OSError as exc:
            raise ConfigError(f"grpc.tls: cannot read {exc.filename}: {exc.strerror}") from None
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            ca_cert = x509.load_pem_x509_certificate(ca)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"grpc.tls: {self.files.cert}, {self.files.key} or {self.files.ca} is not a PEM "
                              f"certificate or unencrypted key: {exc}") from None
        name = certs.node_name_of(cert)
        if name is None:
            raise ConfigError(f"grpc.tls: {self.files.cert} names no mesh node (no mesh-node: SAN)",
                              hint="issue node certificates with mesh-tui certs issue NAME")
        if not certs.signed_by(cert, ca_cert):
            raise ConfigError(f"grpc.tls: {self.files.cert} is not signed by {self.files.ca}")
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        if public != cert.public_key().public_bytes(serialization.Encoding.DER,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo):
            raise ConfigError(f"grpc.tls: {self.files.key} is not the key of {self.files.cert}")
        return _Loaded(certs.TlsMaterial(ca=ca, cert=cert_pem, key=key_pem), name, cert.not_valid_after_utc,
                       cert.fingerprint(hashes.SHA256()).hex(":").upper(), mtimes)

    def refresh(self) -> bool:
        """Read the files again if they changed since last read; True when a new set was taken."""
        if self._mtimes() == self._loaded.mtimes:
            return False
        try:
            loaded = self._load()
        except ConfigError as exc:
            self.failures += 1
            log.warning("grpc tls: the changed certificate files were not taken (%s); keeping %s", exc.message,
                        self._loaded.fingerprint[:23])
            self._loaded = _Loaded(self._loaded.material, self._loaded.name, self._loaded.not_after,
                                   self._loaded.fingerprint, self._mtimes())  # not tried again until they change
            return False
        if loaded.fingerprint == self._loaded.fingerprint and loaded.material == self._loaded.material:
            self._loaded = loaded
            return False
        if loaded.name != self._loaded.name:
            log.warning("grpc tls: the new certificate names node %s, this node is %s", loaded.name,
                        self._loaded.name)
        with self._lock:
            self._loaded = loaded
            self.generation += 1
            self._channel_creds = None
        log.info("grpc tls: certificate reloaded from %s (sha256 %s…, %d days left)", self.files.cert,
                 loaded.fingerprint[:23], int(self.days_left()))
        return True

    # -- gRPC credentials --------------------------------------------------------------------------------
    def _server_config(self) -> Any:
        import grpc

        material = self.material
        return grpc.ssl_server_certificate_configuration([(material.key, material.cert)],
                                                         root_certificates=material.ca)

    def server_credentials(self) -> Any:
        """Mutual TLS for the server: the caller must present a certificate signed by the CA; the certificate
        presented is the one last read (asked at every handshake)."""
        import grpc

        with self._lock:
            self._served = self.generation
            initial = self._server_config()

        def fetch() -> Any:  # on a gRPC thread, at each handshake: a new configuration only when the files changed
            with self._lock:
                if self._served == self.generation:
                    return None
                self._served = self.generation
                return self._server_config()

        return grpc.dynamic_ssl_server_credentials(initial, fetch, require_client_authentication=True)

    def channel_credentials(self) -> Any:
        """This node's certificate for the channels it dials, and the CA it trusts servers by."""
        import grpc

        with self._lock:
            if self._channel_creds is None:
                material = self.material
                self._channel_creds = grpc.ssl_channel_credentials(root_certificates=material.ca,
                                                                   private_key=material.key,
                                                                   certificate_chain=material.cert)
            return self._channel_creds
