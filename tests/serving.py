"""Helpers for the factory tests: a site on disk, a test CA, a server running in a thread."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from builder.factory.db.engine import default_url
from builder.factory.identity import AUTH_SCHEME
from builder.factory.listener import Server
from builder.factory.site import Site
from builder.factory.sitefile import load_site
from tests.conftest import require_tool

DAEMON_PACKAGES = {"dnsmasq": "dnsmasq-base", "kea-dhcp4": "kea-dhcp4-server",
                   "kea-dhcp6": "kea-dhcp6-server", "dhcpd": "isc-dhcp-server"}


def require_daemon(name: str) -> str:
    """A DHCP daemon for checking generated configurations (fails in CI when missing)."""
    return require_tool(name, f"to check generated DHCP configurations (Debian package "
                              f"{DAEMON_PACKAGES[name]})")


def make_ca(folder: Path, name: str = "Test factory CA") -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key) PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return _write(folder, "ca", cert, key)


def make_server_cert(folder: Path, ca: tuple[Path, Path], addresses: list[str]) -> tuple[Path, Path]:
    """A server certificate for ``addresses`` (IP SANs) signed by ``ca``: (chain, key)."""
    ca_cert = x509.load_pem_x509_certificate(ca[0].read_bytes())
    ca_key = serialization.load_pem_private_key(ca[1].read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, addresses[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _write(folder, "server", cert, key)


def _write(folder: Path, name: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def installer_bytes(label: str, size: int) -> bytes:
    """Distinct, non-repeating content of ``size`` bytes (so misplaced ranges show)."""
    out = bytearray()
    n = 0
    while len(out) < size:
        out += f"{label}:{n:08d}\n".encode()
        n += 1
    return bytes(out[:size])


SITE_YAML = """\
name: test-factory
server:
  address: 127.0.0.1
  listen: [127.0.0.1]
  http_port: 8080
{https}
status:
  max_body: 4096
  log_tail: 64
subnets:
  - network: 10.200.77.0/24
    pool: [10.200.77.50, 10.200.77.60]
platforms:
  - platform: x86_64-qemu_x86_64-r0
    installer: installers/default.bin
    updater: installers/updater.bin
  - platform: arm64-qemu_arm64-r0
devices:
  - serial: SN-SPECIAL
    installer: installers/special.bin
  - mac: "52:54:00:aa:bb:cc"
    name: rack1-leaf2
    platform: x86_64-qemu_x86_64-r0
    installer: installers/bymac.bin
"""


def write_site(folder: Path, *, tls: tuple[Path, Path, Path] | None = None,
               installer_size: int = 100_000) -> Path:
    """A site file with installers in ``folder``; ``tls`` = (chain, key, ca)."""
    (folder / "installers").mkdir(parents=True, exist_ok=True)
    for name in ("default", "special", "bymac", "updater"):
        (folder / "installers" / f"{name}.bin").write_bytes(installer_bytes(name, installer_size))
    https = ""
    if tls is not None:
        https = (f"  https_port: 8443\ntls:\n  cert: {tls[0]}\n  key: {tls[1]}\n  ca: {tls[2]}")
    path = folder / "site.yaml"
    path.write_text(SITE_YAML.format(https=https))
    return path


class SimDevice:
    """A device as the image behaves: its own Ed25519 key and a counter that grows with every
    report (templates/guest/discovery/lib/report.sh.j2, in Python)."""

    def __init__(self, serial: str | None = None, mac: str | None = None,
                 keystore: str = "disk") -> None:
        self.serial, self.mac, self.keystore = serial, mac, keystore
        self.private = Ed25519PrivateKey.generate()
        self.counter = 0

    @property
    def public(self) -> str:
        """The base64 SubjectPublicKeyInfo the body carries."""
        der = self.private.public_key().public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()

    def body(self, phase: str, result: str, log: bytes = b"", *, counter: int | None = None,
             **fields: str) -> bytes:
        """A report body with the next counter (or ``counter``)."""
        if counter is None:
            self.counter += 1
            counter = self.counter
        ident = {k: v for k, v in (("serial", self.serial), ("mac", self.mac)) if v is not None}
        values = {"phase": phase, "result": result, **ident, "counter": str(counter),
                  "key": self.public, "keystore": self.keystore, **fields}
        return "".join(f"{k}={v}\n" for k, v in values.items()).encode() + b"\n" + log

    def sign(self, body: bytes) -> str:
        """The Authorization value of ``body``."""
        return f"{AUTH_SCHEME} {base64.b64encode(self.private.sign(body)).decode()}"

    def report(self, phase: str, result: str, log: bytes = b"", **fields: str) -> tuple[bytes, str]:
        """(body, Authorization) of the next report."""
        body = self.body(phase, result, log, **fields)
        return body, self.sign(body)


class Running:
    """A ``Server`` serving from a thread with its own event loop; ``urls`` once started."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.urls: list[str] = []

    def start(self) -> Running:
        self.thread.start()
        self.urls = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def url(self, path: str = "/", tls: bool = False) -> str:
        base = next(u for u in self.urls if u.startswith("https:" if tls else "http:"))
        return f"{base}/{path.lstrip('/')}"


@contextmanager
def running(site_path: Path, out_dir: Path, **kwargs: object) -> Iterator[Running]:
    """Serve ``site_path`` on 127.0.0.1 with free ports for the duration of the block; the
    state database is the default one beside the site file unless ``database=`` says."""
    site: Site = load_site(site_path)[0]
    kwargs.setdefault("database", default_url(site_path))
    server = Server(site, out_dir, listen=["127.0.0.1"], http_port=0,
                    https_port=0 if site.tls else None, **kwargs)  # type: ignore[arg-type]
    handle = Running(server).start()
    try:
        yield handle
    finally:
        handle.stop()
        server.close()
