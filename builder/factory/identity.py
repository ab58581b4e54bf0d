"""Signed status reports: the body a device posts to ``/status``, its Ed25519 signature and
the device identity it names.

A device generates its own Ed25519 key (``templates/guest/discovery/lib/report.sh.j2``) and
signs every report with it; nothing that ``serve`` hands out holds a secret that authorizes a
report. The body names the device (``serial``, ``mac``), carries the public key and a counter
that grows with every report; ``builder.factory.registry`` binds the key to the device on
first contact and refuses replays. docs/factory.md, "Status protocol", is the reference.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

from builder.factory.values import MAC_RE, SERIAL_RE, normalize_mac

AUTH_SCHEME = "ONIE-ED25519"
RESULTS = ("running", "ok", "fail")
KEYSTORES = ("disk", "ram")
PHASE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
PLATFORM_VALUE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
COUNTER_RE = re.compile(r"^[1-9][0-9]{0,17}$")
# The base64 of an Ed25519 SubjectPublicKeyInfo (RFC 8410): 44 bytes, 60 characters.
KEY_RE = re.compile(r"^[A-Za-z0-9+/]{59}=$")
SIGNATURE_RE = re.compile(r"^[A-Za-z0-9+/]{86}==$")
REPORT_KEYS = ("phase", "result", "serial", "mac", "platform", "version", "message", "counter",
               "key", "keystore")
MESSAGE_MAX = 200


class ReportError(ValueError):
    """A status report that is malformed (HTTP 400)."""


class SignatureError(ValueError):
    """A report whose signature is missing or does not verify (HTTP 401)."""


@dataclass(frozen=True)
class Report:
    """One status report: ``key=value`` lines, a blank line, then the log tail."""

    phase: str
    result: str
    serial: str | None
    mac: str | None
    counter: int
    key: str
    keystore: str
    fields: dict[str, str]
    log: str

    @property
    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the raw 32-byte public key (what the status page shows)."""
        return key_fingerprint(self.key)


def key_fingerprint(key: str) -> str:
    """The fingerprint of a base64 SubjectPublicKeyInfo: sha256 of its last 32 bytes."""
    raw = base64.b64decode(key)[-32:]
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def parse_report(body: bytes) -> Report:
    """Parse a report body; raise ReportError naming the first problem."""
    head, sep, tail = body.partition(b"\n\n")
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise ReportError("the key=value lines must be ASCII") from None
    text = text.removesuffix("\n")
    if any((ord(c) < 32 and c != "\n") or ord(c) == 127 for c in text):
        raise ReportError("control characters in the key=value lines")
    values: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        key, eq, value = raw.partition("=")
        if not eq:
            raise ReportError(f"line {number}: expected 'key=value', got {raw[:40]!r}")
        if key not in REPORT_KEYS:
            raise ReportError(f"line {number}: unknown key {key[:20]!r}; expected one of "
                              f"{', '.join(REPORT_KEYS)}")
        if key in values:
            raise ReportError(f"line {number}: {key} given twice")
        values[key] = value.strip()
    return _report(values, tail.decode("utf-8", "replace") if sep else "")


def _report(values: dict[str, str], log: str) -> Report:
    phase = values.pop("phase", "")
    if not PHASE_RE.match(phase):
        raise ReportError(f"phase: expected lower-case letters, digits, '_' or '-' (at most 32), "
                          f"got {phase[:40]!r}")
    result = values.pop("result", "running")
    if result not in RESULTS:
        raise ReportError(f"result: expected one of {', '.join(RESULTS)}, got {result[:20]!r}")
    for key in ("serial", "platform", "version"):
        if key in values and not (SERIAL_RE if key == "serial" else PLATFORM_VALUE_RE).match(values[key]):
            raise ReportError(f"{key}: unexpected characters in {values[key][:40]!r}")
    serial = values.pop("serial", None)
    mac = values.pop("mac", None)
    if mac is not None:
        if not MAC_RE.match(mac):
            raise ReportError(f"mac: expected a MAC address, got {mac[:40]!r}")
        mac = normalize_mac(mac)
    if serial is None and mac is None:
        raise ReportError("expected 'serial', 'mac' or both: the signed body names the device")
    counter = values.pop("counter", "")
    if not COUNTER_RE.match(counter):
        raise ReportError(f"counter: expected a positive decimal number, got {counter[:40]!r}")
    key = values.pop("key", "")
    if not KEY_RE.match(key) or _public_key(key) is None:
        raise ReportError("key: expected the base64 SubjectPublicKeyInfo of an Ed25519 key")
    keystore = values.pop("keystore", "disk")
    if keystore not in KEYSTORES:
        raise ReportError(f"keystore: expected one of {', '.join(KEYSTORES)}, got {keystore[:20]!r}")
    if "message" in values:
        values["message"] = values["message"][:MESSAGE_MAX]
    return Report(phase, result, serial, mac, int(counter), key, keystore, values, log)


def _public_key(key: str) -> Ed25519PublicKey | None:
    try:
        loaded = load_der_public_key(base64.b64decode(key, validate=True))
    except (ValueError, binascii.Error):
        return None
    return loaded if isinstance(loaded, Ed25519PublicKey) else None


def check_signature(report: Report, body: bytes, authorization: str | None) -> None:
    """Raise SignatureError unless ``authorization`` is the body's signature by its own key."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.upper() != AUTH_SCHEME:
        raise SignatureError(f"expected 'Authorization: {AUTH_SCHEME} <base64 signature>'")
    value = value.strip()
    key = _public_key(report.key)
    if not SIGNATURE_RE.match(value) or key is None:
        raise SignatureError("the signature is not 64 bytes of base64")
    try:
        key.verify(base64.b64decode(value), body)
    except InvalidSignature:
        raise SignatureError("the signature does not verify under the report's key") from None

