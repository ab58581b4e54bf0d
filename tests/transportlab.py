"""Helpers for the transport boot tests: disk images, signed installers, test certificates,
images built from a recipe written at test time, and a private /24 per test."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from builder.signing.format import ImageType, sign_installer
from builder.signing.keys import KeyType, load_private_key, make_key_pair
from builder.signing.signers import KeySigner
from tests.conftest import ROOT, require_tool, run_cli

LAB_RECIPE = ROOT / "tests" / "recipes" / "lab_x86_64.yaml"
PLATFORM = "x86_64-qemu_x86_64-r0"


def subnet(offset: int) -> str:
    """A 10.200.N prefix of our own: N from the test's offset and the PID (other engineers'
    tests run at the same time on other N)."""
    return f"10.200.{150 + (offset * 7 + os.getpid()) % 100}"


def installer(folder: Path, name: str, marker: str, status: int) -> Path:
    """A shell installer that prints ``marker`` and exits with ``status``."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{marker}'\nexit {status}\n")
    path.chmod(0o755)
    return path


def make_key(folder: Path) -> Path:
    """An Ed25519 signing key pair; returns the public key file (for trust.keys)."""
    make_key_pair(KeyType.ED25519, folder / "signer")
    return folder / "signer.pub"


def signed(src: Path, key_folder: Path, dest: Path) -> Path:
    """``src`` signed as an installer for any platform with the key of ``make_key``."""
    signer = KeySigner(load_private_key(key_folder / "signer.key"))
    sign_installer(src, dest, signer, image=ImageType.INSTALLER, version=1, platforms=("*",))
    return dest


def ext2_image(files: Path, dest: Path, size_mib: int = 4) -> Path:
    """An ext2 filesystem holding the folder ``files``, built without mounting."""
    mke2fs = require_tool("mke2fs", "to build test filesystems (e2fsprogs)")
    subprocess.run([mke2fs, "-q", "-F", "-t", "ext2", "-d", str(files), str(dest), f"{size_mib}M"],
                   check=True, capture_output=True)
    return dest


def partitioned_image(files: Path, dest: Path, size_mib: int = 8) -> Path:
    """An MBR disk whose first partition (from 1 MiB) is an ext2 filesystem holding ``files``."""
    sfdisk = require_tool("sfdisk", "to partition test disks (fdisk)")
    part = ext2_image(files, dest.with_suffix(".part"), size_mib - 2)
    with dest.open("wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run([sfdisk, "-q", str(dest)], input=b"start=2048, type=83\n", check=True,
                   capture_output=True)
    with dest.open("r+b") as out:
        out.seek(1 << 20)
        out.write(part.read_bytes())
    part.unlink()
    return dest


def raw_image(content: Path, dest: Path, size_mib: int = 4) -> Path:
    """A disk holding ``content`` from its first byte, zeros after it."""
    data = content.read_bytes()
    with dest.open("wb") as f:
        f.write(data)
        f.truncate(max(size_mib << 20, len(data)))
    return dest


def build_image(recipe_text: str, folder: Path, cache_env: dict[str, str]) -> Path:
    """Build the recipe (written to ``folder``) with the CLI; returns out/<platform>."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "recipe.yaml"
    recipe.write_text(recipe_text)
    proc = run_cli("build", "--allow-untrusted",
                   str(recipe), "--out", str(folder / "out"), "--json", "--no-lock",
                   env=cache_env)
    return Path(json.loads(proc.stdout)["result"][0]["out"])


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(folder: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate (PEM file) and its key, valid for ten years around now."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=3650))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = folder / f"{name.replace(' ', '-')}.pem"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key


def make_server_cert(folder: Path, stem: str, ca: tuple[Path, ec.EllipticCurvePrivateKey],
                     names: list[str], *, days: tuple[int, int] = (-1, 30)) -> tuple[Path, Path]:
    """A server certificate for ``names`` (IP or DNS SANs) valid from/to ``days`` around now,
    signed by ``ca``; returns (chain PEM, key PEM)."""
    ca_cert = x509.load_pem_x509_certificate(ca[0].read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=days[0]))
            .not_valid_after(now + datetime.timedelta(days=days[1]))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca[1], hashes.SHA256()))
    chain, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                      + ca_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return chain, key_path


def spki_sha256(chain: Path) -> str:
    """The pin of a certificate file's first certificate: sha256 of its SubjectPublicKeyInfo."""
    import hashlib

    cert = x509.load_pem_x509_certificate(chain.read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()
