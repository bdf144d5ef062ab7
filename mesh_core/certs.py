"""A small certificate authority for the mesh: one CA per mesh, one certificate per node (``mesh-tui certs``).

Files, in ``<state_dir>/certs/`` (folder 0700, every file 0600, see ``mesh_core.files``)::

    ca.pem  ca.key          the mesh CA (the key stays on the machine that ran ``certs init``)
    NAME.pem  NAME.key      node NAME's certificate and private key

Keys are ECDSA P-256, unencrypted PKCS#8 PEM (what ``grpc.ssl_server_credentials`` and
``grpc.ssl_channel_credentials`` take). A node certificate names its node twice: the subject's
common name ``NAME`` and a URI subject alternative name ``mesh-node:NAME``; the URI is the identity
a peer reads back (:func:`node_name_of`, :func:`node_name_from_sans`), since a DNS name could be any
host. Each ``--host`` is a further SAN (an IP address as an IP SAN, a name as a DNS SAN), which is
what a TLS client checks the address it dialled against. A node certificate is for both ends of
mutual TLS (server and client auth), names its node a third time as the DNS SAN
``NAME.node.mesh.invalid`` (:func:`node_dns_name`, what a client dialling a known node checks) and lives
``DEFAULT_NODE_DAYS`` unless told otherwise.

The ``build_*`` functions are pure (key, time and names in; objects out); ``init_ca``, ``issue`` and
``inspect`` read and write the folder.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import CertError
from .files import make_dirs, write_file
from .identity import NAME_RE

CERTS_FOLDER = "certs"
NODE_URI_PREFIX = "mesh-node:"
# A node certificate also names its node as a DNS SAN under a reserved top-level domain (``.invalid`` is never a
# real host): a TLS client that expects node NAME at an address dials with that as the target name
# (``grpc.ssl_target_name_override``), so the handshake itself checks the server is NAME.
NODE_DNS_SUFFIX = ".node.mesh.invalid"
ORGANIZATION = "Agent Mesh"
DEFAULT_CA_DAYS = 3650
DEFAULT_NODE_DAYS = 90
MAX_CA_DAYS = 36500
MAX_NODE_DAYS = 3650
RENEW_WITHIN_DAYS = 14  # ``show`` says "renew soon" this close to the end
BACKDATE = dt.timedelta(minutes=5)  # valid from a little before now: a peer's clock may be behind
_DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")

Key = ec.EllipticCurvePrivateKey


# -- where the files are ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CertPaths:
    """The certificate folder of one state folder, and the file names in it."""

    folder: Path

    @classmethod
    def of(cls, state_dir: str | Path) -> CertPaths:
        return cls(Path(state_dir) / CERTS_FOLDER)

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    def node_cert(self, name: str) -> Path:
        return self.folder / f"{name}.pem"

    def node_key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def node_names(self) -> list[str]:
        """Names of the node certificates in the folder, sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.pem") if p.name != self.ca_cert.name)


@dataclass(frozen=True)
class TlsMaterial:
    """One node's PEM bytes: ``grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
    require_client_auth=True)`` and ``grpc.ssl_channel_credentials(ca, key, cert)``."""

    ca: bytes
    cert: bytes
    key: bytes


def load_tls(state_dir: str | Path, name: str) -> TlsMaterial:
    """Node ``name``'s CA, certificate and key from ``<state_dir>/certs`` as bytes; ``CertError`` naming the
    missing file otherwise."""
    paths = CertPaths.of(state_dir)
    return TlsMaterial(ca=_read(paths.ca_cert), cert=_read(paths.node_cert(name)), key=_read(paths.node_key(name)))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CertError(f"no {path}", hint=_hint_for(path)) from None
    except OSError as exc:
        raise CertError(f"cannot read {path}: {exc.strerror}") from None


def _hint_for(path: Path) -> str:
    if path.name in ("ca.pem", "ca.key"):
        return "run mesh-tui certs init first (or copy ca.pem here from the machine that did)"
    return f"run mesh-tui certs issue {path.stem} (on the machine holding the CA) and copy its files here"


# -- names and hosts --------------------------------------------------------------------------------
def check_node_name(name: str) -> str:
    if not NAME_RE.match(name) or name == "ca":
        raise CertError(f"node name {name!r} cannot name a certificate",
                        hint="use the node's --name: letters, digits, '.', '_' or '-', up to 63 characters, not 'ca'")
    return name


def parse_host(text: str) -> x509.GeneralName:
    """A ``--host`` as a subject alternative name: an IP address (v4, or v6 with or without brackets) as an
    IP SAN, anything else as a DNS SAN, which must be a host name (no port, scheme, path or wildcard)."""
    host = text.strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(host.removeprefix("[").removesuffix("]")))
    except ValueError:
        pass
    dns = host.removesuffix(".")
    labels = dns.split(".")
    if not dns or len(dns) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        why = ("drop the port" if re.search(r":\d+$", host) else
               "no wildcards" if "*" in host else
               "a host name (letters, digits, '-' between dots) or an IP address")
        raise CertError(f"--host {text!r} is not a host name or IP address", hint=why)
    return x509.DNSName(dns.lower())


def node_dns_name(name: str) -> str:
    """The DNS SAN under which node ``name``'s certificate names it (a TLS client's target name for it)."""
    return f"{name.lower()}{NODE_DNS_SUFFIX}"


def node_name_from_sans(values: Iterable[str | bytes]) -> str | None:
    """The node name in SAN values as a TLS stack lists them (e.g. gRPC's ``auth_context()``
    ``x509_subject_alternative_name`` entries): the one that reads ``mesh-node:NAME``."""
    for value in values:
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if text.startswith(NODE_URI_PREFIX) and NAME_RE.match(text[len(NODE_URI_PREFIX):]):
            return text[len(NODE_URI_PREFIX):]
    return None


def node_name_of(cert: x509.Certificate | bytes) -> str | None:
    """The node a certificate was issued to (its ``mesh-node:NAME`` URI SAN); None for the CA or a foreign
    certificate. Accepts a parsed certificate or PEM bytes."""
    if isinstance(cert, bytes):
        cert = x509.load_pem_x509_certificate(cert)
    return node_name_from_sans(san for kind, san in _sans(cert) if kind == "URI")


def _sans(cert: x509.Certificate) -> list[tuple[str, str]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out: list[tuple[str, str]] = []
    for general in ext:
        if isinstance(general, x509.UniformResourceIdentifier):
            out.append(("URI", general.value))
        elif isinstance(general, x509.DNSName):
            out.append(("DNS", general.value))
        elif isinstance(general, x509.IPAddress):
            out.append(("IP", str(general.value)))
        else:
            out.append((type(general).__name__, str(general.value)))
    return out


# -- building (pure) --------------------------------------------------------------------------------
def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def _check_days(days: int, most: int) -> None:
    if not 1 <= days <= most:
        raise CertError(f"--days {days} is out of range", hint=f"give 1 to {most}")


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def build_ca(key: Key, *, now: dt.datetime, days: int = DEFAULT_CA_DAYS,
             common_name: str | None = None) -> x509.Certificate:
    """A self-signed mesh CA certificate for ``key``: may sign node certificates, nothing below them."""
    _check_days(days, MAX_CA_DAYS)
    subject = _name(common_name or f"Agent Mesh CA {secrets.token_hex(4)}")
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))


def build_node_cert(name: str, key: Key, hosts: Sequence[str], ca_key: Key, ca_cert: x509.Certificate, *,
                    now: dt.datetime, days: int = DEFAULT_NODE_DAYS) -> x509.Certificate:
    """Node ``name``'s certificate for ``key``, signed by the CA: CN ``name``, SANs ``mesh-node:name`` and
    each host; server and client auth; ends no later than the CA does."""
    check_node_name(name)
    _check_days(days, MAX_NODE_DAYS)
    not_after = now + dt.timedelta(days=days)
    if not_after > ca_cert.not_valid_after_utc:
        left = (ca_cert.not_valid_after_utc - now).days
        raise CertError(f"a certificate for {days} days would outlive the CA ({left} days left)",
                        hint=f"give --days {max(left, 1)} or less, or make a new CA with certs init --force")
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(NODE_URI_PREFIX + name),
                                    x509.DNSName(node_dns_name(name))]
    for host in hosts:
        san = parse_host(host)
        if san not in sans:
            sans.append(san)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))


def signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether ``ca_cert`` issued ``cert`` (issuer name and signature; not the dates)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# -- what a certificate says ------------------------------------------------------------------------
@dataclass(frozen=True)
class CertInfo:
    """What ``certs show`` says about one certificate file."""

    role: str  # "ca" or "node"
    name: str  # the node name (its mesh-node: SAN), or the CA's common name
    path: str
    subject: str = ""
    sans: tuple[str, ...] = ()
    sha256: str = ""
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    signed_by_ca: bool | None = None  # None: no CA certificate to check against (or this is the CA)
    problem: str = ""  # why the file could not be read as a certificate

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400 if self.not_after else 0.0

    def to_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "path": self.path, "subject": self.subject,
                "sans": list(self.sans), "sha256": self.sha256,
                "not_before": self.not_before.isoformat() if self.not_before else None,
                "not_after": self.not_after.isoformat() if self.not_after else None,
                "days_left": round(self.days_left(now), 1) if self.not_after else None,
                "expired": bool(self.not_after and self.not_after <= now),
                "signed_by_ca": self.signed_by_ca, "problem": self.problem or None}


def describe(cert: x509.Certificate, *, role: str, path: str | Path,
             ca_cert: x509.Certificate | None = None) -> CertInfo:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common = str(cn[0].value) if cn else ""
    name = (node_name_of(cert) or common) if role == "node" else common
    return CertInfo(role=role, name=name, path=str(path), subject=cert.subject.rfc4514_string(),
                    sans=tuple(f"{kind}:{value}" for kind, value in _sans(cert)),
                    sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
                    not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                    signed_by_ca=None if ca_cert is None or role == "ca" else signed_by(cert, ca_cert))


def _load_cert(path: Path) -> x509.Certificate:
    data = _read(path)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CertError(f"{path} is not a PEM certificate") from None


def _load_key(path: Path) -> Key:
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise CertError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{path} is not an ECDSA key (the mesh CA's keys are P-256)")
    return key


# -- the folder ---------------------------------------------------------------------------------------
def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def init_ca(state_dir: str | Path, *, days: int = DEFAULT_CA_DAYS, force: bool = False,
            now: dt.datetime | None = None) -> CertInfo:
    """Make the mesh CA in ``<state_dir>/certs``; an existing one is kept unless ``force``."""
    paths = CertPaths.of(state_dir)
    present = [p for p in (paths.ca_cert, paths.ca_key) if p.exists()]
    if present and not force:
        raise CertError(f"a mesh CA is already in {paths.folder} ({', '.join(p.name for p in present)})",
                        hint="keep it; or add --force to replace it, after which every node certificate it "
                             "signed must be issued again")
    now = _now(now)
    key = new_key()
    cert = build_ca(key, now=now, days=days)
    make_dirs(paths.folder, own_leaf=True)
    write_file(paths.ca_key, _key_pem(key))  # the key first: a CA certificate is never there without it
    write_file(paths.ca_cert, _pem(cert))
    return describe(cert, role="ca", path=paths.ca_cert)


def issue(state_dir: str | Path, name: str, hosts: Sequence[str] = (), *, days: int = DEFAULT_NODE_DAYS,
          force: bool = False, now: dt.datetime | None = None) -> CertInfo:
    """Make node ``name``'s key and certificate in ``<state_dir>/certs``, signed by the CA there."""
    check_node_name(name)
    for host in hosts:
        parse_host(host)  # a bad host is refused before anything is read or written
    paths = CertPaths.of(state_dir)
    if not paths.ca_cert.exists():
        raise CertError(f"no mesh CA in {paths.folder}", hint="run mesh-tui certs init first")
    if not paths.ca_key.exists():
        raise CertError(f"{paths.folder} has the CA certificate but not its key",
                        hint="issue certificates on the machine that ran mesh-tui certs init")
    present = [p for p in (paths.node_cert(name), paths.node_key(name)) if p.exists()]
    if present and not force:
        raise CertError(f"node {name!r} already has a certificate in {paths.folder}",
                        hint="add --force to replace it with a new key and certificate, as for a rotation")
    ca_cert, ca_key = _load_cert(paths.ca_cert), _load_key(paths.ca_key)
    key = new_key()
    cert = build_node_cert(name, key, hosts, ca_key, ca_cert, now=_now(now), days=days)
    make_dirs(paths.folder, own_leaf=True)
    write_file(paths.node_key(name), _key_pem(key))
    write_file(paths.node_cert(name), _pem(cert))
    return describe(cert, role="node", path=paths.node_cert(name), ca_cert=ca_cert)


def inspect(state_dir: str | Path) -> list[CertInfo]:
    """The CA (when its certificate is there) and every node certificate in ``<state_dir>/certs``; a file that
    is not a certificate is listed with its ``problem``. ``CertError`` when there is none at all."""
    paths = CertPaths.of(state_dir)
    names = paths.node_names()
    if not paths.ca_cert.exists() and not names:
        raise CertError(f"no certificates in {paths.folder}", hint="run mesh-tui certs init")
    out: list[CertInfo] = []
    ca_cert: x509.Certificate | None = None
    if paths.ca_cert.exists():
        try:
            ca_cert = _load_cert(paths.ca_cert)
            out.append(describe(ca_cert, role="ca", path=paths.ca_cert))
        except CertError as exc:
            out.append(CertInfo(role="ca", name="", path=str(paths.ca_cert), problem=exc.message))
    for name in names:
        path = paths.node_cert(name)
        try:
            out.append(describe(_load_cert(path), role="node", path=path, ca_cert=ca_cert))
        except CertError as exc:
            out.append(CertInfo(role="node", name=name, path=str(path), problem=exc.message))
    return out


# -- text -----------------------------------------------------------------------------------------------
def expiry_text(info: CertInfo, now: dt.datetime) -> str:
    if info.not_after is None:
        return ""
    when = info.not_after.strftime("%Y-%m-%d %H:%M UTC")
    days = info.days_left(now)
    if days <= 0:
        return f"{when} (EXPIRED {int(-days)} days ago)" if days <= -1 else f"{when} (EXPIRED)"
    soon = ": renew soon" if days < RENEW_WITHIN_DAYS else ""
    left = f"{round(days)} days" if days >= 1 else f"{max(1, round(days * 24))} hours"
    return f"{when} ({left} left{soon})"


def render(infos: Sequence[CertInfo], now: dt.datetime) -> str:
    """``certs show``'s text: a block per certificate."""
    blocks = []
    for info in infos:
        lines = [f"{info.role:<5} {info.name}  {info.path}"]
        if info.problem:
            lines.append(f"      problem    {info.problem}")
        else:
            lines.append(f"      subject    {info.subject}")
            if info.sans:
                lines.append(f"      SANs       {', '.join(info.sans)}")
            lines.append(f"      sha256     {info.sha256}")
            lines.append(f"      expires    {expiry_text(info, now)}")
            if info.signed_by_ca is not None:
                signer = "the CA in this folder" if info.signed_by_ca else "NOT the CA in this folder"
                lines.append(f"      signed by  {signer}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)
