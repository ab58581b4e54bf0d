"""Signing keys: generation, loading (optionally passphrase-protected PEM) and key ids.

Three key types, each one that Debian's ``openssl`` 3.0 verifies in the initramfs:
Ed25519 (raw 64-byte signature over the statement), ECDSA P-256 (DER signature over its
SHA-256) and RSA 3072/4096 (PKCS#1 v1.5 over its SHA-256, what every HSM offers). A key id
is the lower-case hex SHA-256 of the public key's DER SubjectPublicKeyInfo, so any tool can
recompute it: ``openssl pkey -pubin -in KEY.pub -outform DER | sha256sum``.
"""

from __future__ import annotations

import enum
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from builder.errors import BuildError
from builder.files import FileRefused, read_bounded

PublicKeyObject = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKeyObject = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

MAX_KEY_FILE = 1 << 20  # a PEM key or passphrase file; anything larger is not one
SUPPORTED = "Ed25519, ECDSA P-256, RSA-3072 or RSA-4096"


class KeyType(enum.Enum):
    """A supported key type, named as ``keys generate --type`` names it."""

    ED25519 = "ed25519"
    ECDSA_P256 = "ecdsa-p256"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    @property
    def prehashed(self) -> bool:
        """True when the signature is over SHA-256 of the statement (``openssl dgst -sha256``);
        False for Ed25519, which signs the statement itself (``openssl pkeyutl -rawin``)."""
        return self is not KeyType.ED25519

    @property
    def generatable(self) -> bool:
        """Whether ``keys generate`` makes this type (RSA-4096 is accepted, not offered)."""
        return self is not KeyType.RSA_4096


@dataclass(frozen=True)
class PublicKey:
    """A public key with its type and id; ``source`` is the file it came from, if any."""

    type: KeyType
    key_id: str
    pem: bytes
    obj: PublicKeyObject
    source: Path | None = None

    def verifies(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's signature over ``message``."""
        try:
            if isinstance(self.obj, ed25519.Ed25519PublicKey):
                self.obj.verify(signature, message)
            elif isinstance(self.obj, ec.EllipticCurvePublicKey):
                self.obj.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            else:
                self.obj.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class PrivateKey:
    """A private key that signs statements the way ``PublicKey.verifies`` checks them."""

    obj: PrivateKeyObject
    public: PublicKey

    def sign(self, message: bytes) -> bytes:
        """The signature over ``message`` in the format the guest's openssl verifies."""
        if isinstance(self.obj, ed25519.Ed25519PrivateKey):
            return self.obj.sign(message)
        if isinstance(self.obj, ec.EllipticCurvePrivateKey):
            return self.obj.sign(message, ec.ECDSA(hashes.SHA256()))
        return self.obj.sign(message, padding.PKCS1v15(), hashes.SHA256())


def find_key_type(obj: PublicKeyObject | object) -> KeyType | None:
    """The KeyType of a cryptography key object, or None when it is not supported."""
    if isinstance(obj, ed25519.Ed25519PublicKey):
        return KeyType.ED25519
    if isinstance(obj, ec.EllipticCurvePublicKey) and isinstance(obj.curve, ec.SECP256R1):
        return KeyType.ECDSA_P256
    if isinstance(obj, rsa.RSAPublicKey) and obj.key_size in (3072, 4096):
        return KeyType.RSA_3072 if obj.key_size == 3072 else KeyType.RSA_4096
    return None


def describe_key(obj: object) -> str:
    """A short name for an unsupported key, for error messages."""
    if isinstance(obj, ec.EllipticCurvePublicKey):
        return f"ECDSA {obj.curve.name}"
    if isinstance(obj, rsa.RSAPublicKey):
        return f"RSA-{obj.key_size}"
    return type(obj).__name__.removeprefix("_").removesuffix("PublicKey") or "unknown"


def make_public_key(obj: object, where: str, source: Path | None = None) -> PublicKey:
    """Wrap a cryptography public key; refuse unsupported types naming ``where``."""
    key_type = find_key_type(obj)
    if key_type is None:
        raise BuildError(f"{where}: unsupported key type {describe_key(obj)}: expected {SUPPORTED}")
    assert isinstance(obj, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    der = obj.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = obj.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return PublicKey(key_type, hashlib.sha256(der).hexdigest(), pem, obj, source)


def parse_public_key(data: bytes, where: str, source: Path | None = None) -> PublicKey:
    """A public key from PEM (SubjectPublicKeyInfo) bytes; errors name ``where``."""
    try:
        obj = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise BuildError(f"{where}: not a PEM public key (expected '-----BEGIN PUBLIC KEY-----'; "
                         "a private key goes to --key, its .pub file to the recipe)") from None
    return make_public_key(obj, where, source)


def load_public_key(path: Path) -> PublicKey:
    """Read a PEM public key file."""
    try:
        data = read_bounded(path, MAX_KEY_FILE)
    except FileRefused as exc:
        raise BuildError(f"{path}: cannot read public key: {exc.reason}") from None
    return parse_public_key(data, str(path), path)


def read_passphrase(path: Path) -> bytes:
    """The passphrase in ``path``: its first line without the line ending (as openssl's file:)."""
    try:
        data = read_bounded(path, MAX_KEY_FILE)
    except FileRefused as exc:
        raise BuildError(f"{path}: cannot read passphrase file: {exc.reason}") from None
    line = data.split(b"\n", 1)[0].removesuffix(b"\r")
    if not line:
        raise BuildError(f"{path}: the passphrase file's first line is empty")
    return line


def load_private_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    """Read a PEM private key file, decrypting it with ``passphrase`` when it is protected."""
    try:
        data = read_bounded(path, MAX_KEY_FILE)
    except FileRefused as exc:
        raise BuildError(f"{path}: cannot read private key: {exc.reason}") from None
    try:
        obj = serialization.load_pem_private_key(data, passphrase)
    except TypeError:
        if passphrase is None:
            raise BuildError(f"{path}: the private key is passphrase-protected",
                             hint="give the passphrase with --passphrase-file FILE") from None
        raise BuildError(f"{path}: the private key is not protected, but a passphrase was given") \
            from None
    except ValueError:
        why = "wrong passphrase, or not" if passphrase is not None else "not"
        raise BuildError(f"{path}: cannot load the private key ({why} a PEM private key)") from None
    except UnsupportedAlgorithm:
        raise BuildError(f"{path}: unsupported private key: expected {SUPPORTED}") from None
    public = make_public_key(obj.public_key(), str(path))
    assert isinstance(obj, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return PrivateKey(obj, public)


def generate_private_key(key_type: KeyType) -> PrivateKeyObject:
    """A new private key of ``key_type``."""
    if key_type is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if key_type is KeyType.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(65537, 3072 if key_type is KeyType.RSA_3072 else 4096)


def make_key_pair(key_type: KeyType, stem: Path, passphrase: bytes | None = None) -> PublicKey:
    """Write ``STEM.key`` (PKCS#8 PEM, mode 0600, encrypted with ``passphrase`` if given) and
    ``STEM.pub``; refuse to overwrite either. Returns the public key."""
    private_path, public_path = stem.with_name(stem.name + ".key"), stem.with_name(stem.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise BuildError(f"{path}: already exists; not overwriting a key")
    obj = generate_private_key(key_type)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase
        else serialization.NoEncryption())
    private_pem = obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    encryption)
    public = make_public_key(obj.public_key(), str(public_path), public_path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    _write_new(private_path, private_pem, 0o600)
    try:
        _write_new(public_path, public.pem, 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return public


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (a private key is never world-readable)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise BuildError(f"{path}: cannot create: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
