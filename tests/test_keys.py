"""Signing keys: generation, passphrases, key ids (checked against openssl), bad keys refused."""

from __future__ import annotations

import hashlib
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from builder.errors import BuildError
from builder.signing.keys import (
    KeyType,
    load_private_key,
    load_public_key,
    make_key_pair,
    read_passphrase,
)
from tests.conftest import require_tool, run_cli


@pytest.mark.parametrize("key_type", [t for t in KeyType if t.generatable], ids=lambda t: t.value)
def test_generated_pair_signs_and_verifies(key_type: KeyType, tmp_path: Path) -> None:
    public = make_key_pair(key_type, tmp_path / "k")
    assert public.type is key_type
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k.pub").stat().st_mode) == 0o644
    private = load_private_key(tmp_path / "k.key")
    assert private.public.key_id == public.key_id == load_public_key(tmp_path / "k.pub").key_id
    signature = private.sign(b"statement\n")
    assert public.verifies(signature, b"statement\n")
    assert not public.verifies(signature, b"statement!")


def test_key_id_is_what_openssl_computes(tmp_path: Path) -> None:
    """Anyone can recompute an id: sha256 of the DER SubjectPublicKeyInfo."""
    openssl = require_tool("openssl", "to recompute key ids independently")
    for key_type in (KeyType.ED25519, KeyType.ECDSA_P256):
        public = make_key_pair(key_type, tmp_path / key_type.value)
        der = subprocess.run([openssl, "pkey", "-pubin", "-in", str(public.source), "-outform",
                              "DER"], capture_output=True, check=True).stdout
        assert public.key_id == hashlib.sha256(der).hexdigest()


def test_passphrase_protected_key(tmp_path: Path) -> None:
    make_key_pair(KeyType.ECDSA_P256, tmp_path / "k", b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "k.key").read_bytes()
    assert load_private_key(tmp_path / "k.key", b"correct horse").public.type is KeyType.ECDSA_P256
    with pytest.raises(BuildError) as err:
        load_private_key(tmp_path / "k.key")
    assert err.value.message == f"{tmp_path}/k.key: the private key is passphrase-protected"
    assert err.value.hint == "give the passphrase with --passphrase-file FILE"
    with pytest.raises(BuildError, match=r"k.key: cannot load the private key \(wrong passphrase, "
                                         r"or not a PEM private key\)$"):
        load_private_key(tmp_path / "k.key", b"wrong")


def test_passphrase_for_an_unprotected_key(tmp_path: Path) -> None:
    make_key_pair(KeyType.ED25519, tmp_path / "k")
    with pytest.raises(BuildError, match="the private key is not protected, but a passphrase"):
        load_private_key(tmp_path / "k.key", b"x")


def test_passphrase_file_is_its_first_line(tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"s3cret\r\nignored\n")
    assert read_passphrase(tmp_path / "pw") == b"s3cret"
    (tmp_path / "empty").write_bytes(b"\nx\n")
    with pytest.raises(BuildError, match="empty: the passphrase file's first line is empty"):
        read_passphrase(tmp_path / "empty")


def test_never_overwrites_a_key(tmp_path: Path) -> None:
    make_key_pair(KeyType.ED25519, tmp_path / "k")
    before = (tmp_path / "k.key").read_bytes()
    with pytest.raises(BuildError, match=r"k.key: already exists; not overwriting a key"):
        make_key_pair(KeyType.ED25519, tmp_path / "k")
    assert (tmp_path / "k.key").read_bytes() == before


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(("make", "name"), [
    (lambda: ec.generate_private_key(ec.SECP384R1()), "ECDSA secp384r1"),
    (lambda: rsa.generate_private_key(65537, 2048), "RSA-2048"),
])
def test_unsupported_public_keys(make: object, name: str, tmp_path: Path) -> None:
    assert callable(make)
    (tmp_path / "k.pub").write_bytes(pem(make()))
    with pytest.raises(BuildError) as err:
        load_public_key(tmp_path / "k.pub")
    assert err.value.message == (f"{tmp_path}/k.pub: unsupported key type {name}: expected "
                                 "Ed25519, ECDSA P-256, RSA-3072 or RSA-4096")


def test_a_private_key_is_not_a_public_key(tmp_path: Path) -> None:
    make_key_pair(KeyType.ED25519, tmp_path / "k")
    with pytest.raises(BuildError, match=r"k.key: not a PEM public key \(expected '-----BEGIN "
                                         r"PUBLIC KEY-----'; a private key goes to --key"):
        load_public_key(tmp_path / "k.key")


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"nope.pub: cannot read public key: no such file"):
        load_public_key(tmp_path / "nope.pub")


def test_cli_generate_and_id(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("pass phrase\n")
    out = run_cli("keys", "generate", str(tmp_path / "rel"), "--type", "rsa-3072",
                  "--passphrase-file", str(tmp_path / "pw")).stdout
    key = load_public_key(tmp_path / "rel.pub")
    assert out == f"{tmp_path}/rel.pub: rsa-3072 key {key.key_id}\n"
    assert load_private_key(tmp_path / "rel.key", b"pass phrase").public.key_id == key.key_id
    listed = run_cli("keys", "id", str(tmp_path / "rel.pub")).stdout
    assert listed == f"{key.key_id}  rsa-3072    {tmp_path}/rel.pub\n"
    again = run_cli("keys", "generate", str(tmp_path / "rel"), check=False)
    assert again.returncode == 1
    assert again.stderr == f"error: {tmp_path}/rel.key: already exists; not overwriting a key\n"
