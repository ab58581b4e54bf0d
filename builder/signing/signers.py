"""Signing backends: a private key file, or an external command (an HSM, a signing service).

An external signer command gets the exact statement bytes on stdin and writes the raw
signature on stdout, exit status 0: 64 bytes for Ed25519, a DER ECDSA-Sig-Value (or the
64-byte ``r || s`` form many HSMs return) for ECDSA P-256 over SHA-256, and the PKCS#1 v1.5
SHA-256 signature for RSA. The command is split like a shell would (``shlex``) but run
without a shell, with the statement's key id in ``$ONIE_SIGN_KEY_ID``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from builder.errors import BuildError
from builder.process import run
from builder.signing.keys import KeyType, PrivateKey, PublicKey

SIGNER_TIMEOUT = 300.0  # seconds: an HSM may wait for an operator's touch


@dataclass(frozen=True)
class KeySigner:
    """Signs with a private key loaded from a file."""

    key: PrivateKey

    @property
    def public_key(self) -> PublicKey:
        """The private key's public half."""
        return self.key.public

    def sign(self, statement: bytes) -> bytes:
        """Sign the statement bytes."""
        return self.key.sign(statement)


@dataclass(frozen=True)
class CommandSigner:
    """Signs by running ``command`` (statement on stdin, signature on stdout)."""

    command: str
    public_key: PublicKey

    def argv(self) -> list[str]:
        """The command split into arguments, refusing an empty or unbalanced one."""
        try:
            argv = shlex.split(self.command)
        except ValueError as exc:
            raise BuildError(f"--signer-cmd: cannot split {self.command!r}: {exc}") from None
        if not argv:
            raise BuildError("--signer-cmd: the command is empty")
        return argv

    def sign(self, statement: bytes) -> bytes:
        """Run the command and return its stdout, normalized to what openssl verifies."""
        proc = run(self.argv(), input=statement, timeout=SIGNER_TIMEOUT, check=False,
                   env={"ONIE_SIGN_KEY_ID": self.public_key.key_id})
        if proc.returncode != 0:
            stderr = proc.stderr.decode(errors="replace").strip()
            raise BuildError(f"the signer command failed with exit code {proc.returncode}"
                             + (f": {stderr}" if stderr else ""))
        if not proc.stdout:
            raise BuildError("the signer command wrote no signature on stdout")
        return normalize_signature(self.public_key.type, proc.stdout)


def normalize_signature(key_type: KeyType, signature: bytes) -> bytes:
    """ECDSA P-256 as ``r || s`` (64 bytes) becomes DER, which ``openssl dgst`` expects."""
    if key_type is KeyType.ECDSA_P256 and len(signature) == 64:
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        return encode_dss_signature(r, s)
    return signature
