"""The deployment's keys: a CA, the SuperLink's TLS certificate, one key pair per site.

    fedreplay pki init --dir pki --host superlink.hospital-net.org --host 10.0.0.5
    fedreplay pki add-site --dir pki site-berlin        # at the site: its private key stays there
    fedreplay pki register --dir pki site-berlin --pub site-berlin.pub --connection prod

Layout of ``--dir`` (keys are written 0600 and never overwritten; ``--force`` replaces a
certificate, never a key):

    ca.crt  ca.key               the CA (keep ca.key offline after init)
    server.pem  server.key       the SuperLink's certificate (SANs from --host) and key
    sites/<name>/<name>          a site's EC P-384 private key (OpenSSH), stays at the site
    sites/<name>/<name>.pub      its public key: registered with the SuperLink
    registry.json                registered sites: name, key fingerprint, Flower node id

SuperLink: ``--ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key
--enable-supernode-auth``. SuperNode: ``--root-certificates ca.crt
--auth-supernode-private-key sites/<name>/<name>``. docs/deployment.md has the runbooks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.fileio import atomic_write_text
from common.sitestate import SITE_ID_RULE
from server.sites.owners import BINDINGS, bind
from server.sites.registry import server_dir

SITE_NAME = SITE_ID_RULE  # a site name is the site id it is bound to: one rule


class PKIError(ValueError):
    """A key or certificate cannot be created or used (the message names the file)."""


@dataclass(frozen=True)
class SiteKeys:
    name: str
    private_key: Path
    public_key: Path
    fingerprint: str  # SHA256 of the OpenSSH public key, as ssh-keygen -l prints it


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, *, openssh: bool = False) -> None:
    if path.exists():
        raise PKIError(f"{path} exists: a key is never overwritten (move it away first)")
    fmt = serialization.PrivateFormat.OpenSSH if openssh else serialization.PrivateFormat.PKCS8
    data = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_cert(path: Path, cert: x509.Certificate, *, force: bool) -> None:
    if path.exists() and not force:
        raise PKIError(f"{path} exists; pass --force to replace the certificate")
    atomic_write_text(path, cert.public_bytes(serialization.Encoding.PEM).decode())


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise PKIError(f"cannot read the private key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{path} is not an EC private key")
    return key


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9*.-]+", host):
                raise PKIError(f"--host {host!r} is neither an IP address nor a DNS name") from None
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def init(directory: Path, hosts: list[str], *, days: int = 825, force: bool = False) -> None:
    """The CA (created once) and the SuperLink's certificate for ``hosts``."""
    if not hosts:
        raise PKIError("give the SuperLink's addresses with --host (DNS names or IPs)")
    now = dt.datetime.now(dt.UTC)
    ca_key_path, ca_crt_path = directory / "ca.key", directory / "ca.crt"
    if not ca_key_path.exists():
        ca_key = ec.generate_private_key(ec.SECP384R1())
        _write_key(ca_key_path, ca_key)
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("fedreplay CA"))
            .issuer_name(_name("fedreplay CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA384())
        )
        _write_cert(ca_crt_path, ca_cert, force=force)
    ca_key = _load_key(ca_key_path)
    ca_cert = x509.load_pem_x509_certificate(ca_crt_path.read_bytes())
    server_key_path = directory / "server.key"
    if not server_key_path.exists():
        _write_key(server_key_path, ec.generate_private_key(ec.SECP384R1()))
    server_key = _load_key(server_key_path)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    _write_cert(directory / "server.pem", cert, force=force)


def check_site_name(name: str) -> str:
    if not SITE_NAME.match(name):
        raise PKIError(
            f"site name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


def fingerprint(public_key: Path) -> str:
    """``SHA256:<base64>`` of an OpenSSH public key, as ``ssh-keygen -l`` prints it."""
    import base64

    parts = public_key.read_text().split()
    if len(parts) < 2:
        raise PKIError(f"{public_key} is not an OpenSSH public key")
    digest = hashlib.sha256(base64.b64decode(parts[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def add_site(directory: Path, name: str) -> SiteKeys:
    """A site's EC P-384 key pair in OpenSSH format (the format Flower's node auth reads)."""
    check_site_name(name)
    folder = directory / "sites" / name
    private, public = folder / name, folder / f"{name}.pub"
    key = ec.generate_private_key(ec.SECP384R1())
    _write_key(private, key, openssh=True)
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    atomic_write_text(public, f"{pub.decode()} {name}\n")
    return SiteKeys(name, private, public, fingerprint(public))


def receive_public_key(directory: Path, name: str, pub: Path) -> Path:
    """Keep a site's received public key at ``sites/<name>/<name>.pub`` (the site made its
    key pair itself; its private key never left it). Only an EC P-384 OpenSSH public key is
    accepted; a private key sent by mistake is refused and not copied."""
    check_site_name(name)
    try:
        text = pub.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PKIError(f"cannot read the site's public key {pub}: {exc}") from None
    if "PRIVATE KEY" in text:
        raise PKIError(
            f"{pub} is a PRIVATE key: it must never leave the site. Ask the site for the "
            f"'.pub' file only, and have it make a new key pair (this one is exposed)"
        )
    try:
        key = serialization.load_ssh_public_key(" ".join(text.split()[:2]).encode())
    except (ValueError, IndexError, TypeError) as exc:
        raise PKIError(f"{pub} is not an OpenSSH public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise PKIError(
            f"{pub} is not an EC P-384 key (Flower's node authentication needs one; the site "
            f"makes it with `fedreplay pki add-site {name}`)"
        )
    target = directory / "sites" / name / f"{name}.pub"
    if target.is_file() and fingerprint(target) != fingerprint(pub):
        raise PKIError(
            f"{target} already holds another key for {name!r} (fingerprint "
            f"{fingerprint(target)}); a rotated key gets a new name (docs/deployment.md)"
        )
    atomic_write_text(target, " ".join(text.split()[:2]) + f" {name}\n")
    return target


def register(
    directory: Path,
    name: str,
    *,
    connection: str,
    pub: Path | None = None,
    flwr: str = "flwr",
) -> int:
    """Register a site's public key with the running SuperLink (``flwr supernode register``);
    returns Flower's node id and records it in ``registry.json``. ``pub``: the ``.pub`` file
    the site sent (kept under ``sites/<name>/`` first)."""
    public = directory / "sites" / check_site_name(name) / f"{name}.pub"
    if pub is not None:
        public = receive_public_key(directory, name, pub)
    if not public.is_file():
        raise PKIError(
            f"{public} does not exist: pass the public key the site sent, `fedreplay pki "
            f"register {name} --pub {name}.pub` (the site makes its key pair with `fedreplay "
            f"pki add-site {name}` on its own machine; its private key never leaves it)"
        )
    cmd = [flwr, "supernode", "register", str(public), connection, "--format", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    try:
        node_id = int(json.loads(done.stdout)["node-id"])
    except (ValueError, KeyError, TypeError):
        raise PKIError(
            f"`{' '.join(cmd)}` failed (exit {done.returncode}): "
            f"{(done.stdout + done.stderr).strip()[-500:]}"
        ) from None
    path = directory / "registry.json"
    registry = json.loads(path.read_text()) if path.is_file() else {}
    registry[name] = {"node_id": node_id, "fingerprint": fingerprint(public)}
    atomic_write_text(path, json.dumps(registry, indent=1, sort_keys=True))
    # the ServerApp binds site id `name` to this node: no other node may claim it
    bind(server_dir() / BINDINGS, name, node_id)
    return node_id
