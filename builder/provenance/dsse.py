"""DSSE envelopes (the Dead Simple Signing Envelope, v1.0.2): a payload, its type and
signatures over the pre-authentication encoding (PAE) of both.

Written here rather than taken from securesystemslib: PAE is one line of the spec, and our
signers (builder.signing: key files in three types, HSM commands) and key ids stay the ones
every other signature of the project uses. Signatures are those of builder.signing.keys:
Ed25519 over the PAE bytes, ECDSA P-256 and RSA PKCS#1 v1.5 over their SHA-256.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Protocol

from builder.errors import BuildError
from builder.signing.keys import PublicKey

IN_TOTO = "application/vnd.in-toto+json"


class Signer(Protocol):
    """What signs: a builder.signing.signers backend."""

    @property
    def public_key(self) -> PublicKey: ...

    def sign(self, statement: bytes) -> bytes: ...


@dataclass(frozen=True)
class Envelope:
    """A decoded envelope: the payload bytes, its type and (key id, signature) pairs."""

    payload_type: str
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]


def pae(payload_type: str, payload: bytes) -> bytes:
    """``DSSEv1 SP LEN(type) SP type SP LEN(body) SP body``, lengths in ASCII decimal."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def render_envelope(payload_type: str, payload: bytes, signer: Signer | None) -> str:
    """The envelope as one line of JSON (an ``.intoto.jsonl`` line); unsigned without a signer."""
    signatures = [] if signer is None else [
        {"keyid": signer.public_key.key_id,
         "sig": base64.b64encode(signer.sign(pae(payload_type, payload))).decode()}]
    return json.dumps({"payloadType": payload_type,
                       "payload": base64.b64encode(payload).decode(),
                       "signatures": signatures}, sort_keys=True, separators=(",", ":")) + "\n"


def parse_envelope(text: str, where: str) -> Envelope:
    """Decode an envelope; errors name ``where``."""
    try:
        data = json.loads(text)
        signatures = tuple((str(s.get("keyid", "")), base64.b64decode(s["sig"], validate=True))
                           for s in data["signatures"])
        return Envelope(str(data["payloadType"]),
                        base64.b64decode(data["payload"], validate=True), signatures)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise BuildError(f"{where}: not a DSSE envelope ({exc.__class__.__name__}: {exc})") \
            from None


def check_signature(envelope: Envelope, keys: list[PublicKey], where: str) -> PublicKey:
    """The key that signed the envelope; raise when none of ``keys`` did."""
    if not envelope.signatures:
        raise BuildError(f"{where}: unsigned: the envelope has no signature",
                         hint="name a key in the recipe (provenance.key) and build again")
    message = pae(envelope.payload_type, envelope.payload)
    for key in keys:
        if any(key.verifies(sig, message) for _, sig in envelope.signatures):
            return key
    ids = ", ".join(k for k, _ in envelope.signatures)
    raise BuildError(f"{where}: bad signature: no signature verifies with "
                     f"{', '.join(k.key_id for k in keys)} (signed by key id {ids})")
