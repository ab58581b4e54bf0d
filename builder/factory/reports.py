"""Taking a device's status report: parse it, check its signature, judge it against the key
registry (trust on first use, replays, changed keys) and apply it to the status store, the
report and its registry change in one database transaction, committed before the answer.

``accept_report`` is the whole decision as one function from a request's body, its
``Authorization`` value and the client's address to an ``Outcome`` (an HTTP status and a
one-line text); ``builder.factory.serve`` only moves bytes. docs/factory.md, "Status protocol".
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.factory.identity import (
    AUTH_SCHEME,
    Report,
    ReportError,
    SignatureError,
    check_signature,
    key_fingerprint,
    parse_report,
)
from builder.factory.registry import KeyRegistry, Raced, Verdict, binding_for, judge
from builder.factory.site import Site
from builder.factory.status import Device, Identity, StatusStore

RETRIES = 5  # a race lost to another server is judged again, in a new transaction

__all__ = ["AUTH_SCHEME", "Outcome", "accept_report"]


@dataclass(frozen=True)
class Outcome:
    """The answer to a report: HTTP status, a one-line text, the device record it touched."""

    status: int
    text: str
    device: Device | None = None


def accept_report(store: StatusStore, registry: KeyRegistry, site: Site, body: bytes,
                  authorization: str | None, address: str | None) -> Outcome:
    """Decide on one report and apply it when accepted (200), committed before returning."""
    try:
        report = parse_report(body)
    except ReportError as exc:
        return Outcome(400, f"bad status report: {exc}")
    try:
        check_signature(report, body, authorization)
    except SignatureError as exc:
        return Outcome(401, f"bad signature: {exc}")
    for _ in range(RETRIES):
        try:
            with store.atomic():
                return _decide(store, registry, site, report, address)
        except Raced:
            continue
    return Outcome(503, "busy: the report raced other servers too often; send it again")


def _decide(store: StatusStore, registry: KeyRegistry, site: Site, report: Report,
            address: str | None) -> Outcome:
    """The verdict and its effect, inside the caller's transaction."""
    verdict, binding = judge(registry, report)
    entry = site.find_device(report.serial, report.mac)
    name = entry.name if entry else None
    if verdict is Verdict.REPLAY:
        assert binding is not None
        return Outcome(409, f"replayed report: counter {report.counter} is not above "
                            f"{binding.counter}, the last accepted from {binding.device}")
    if verdict is Verdict.CONFLICT:
        assert binding is not None
        # The record is found by the registered identity: the report's other claims are not
        # applied (an impostor must not change the record's MAC, platform or address).
        trusted = Identity(binding.serial, binding.mac)
        device = store.lookup(trusted) or store.find(trusted, name, listed=entry is not None)
        if device is not None:
            store.conflict(device, report, binding.keystore)
        return Outcome(409, f"key conflict: {binding.device} is registered with key "
                            f"{key_fingerprint(binding.key)}, this report is signed by "
                            f"{report.fingerprint}; shown to the operator, not applied")
    who = Identity(report.serial, report.mac, report.fields.get("platform"), address)
    device = store.find(who, name, listed=entry is not None)
    if device is None:
        store.count_unknown("reports")
        return Outcome(503, "the device table is full: this device is not in the site file")
    if verdict is Verdict.NEW:
        registry.register(binding_for(report))
    else:
        assert binding is not None
        registry.advance(binding, report.counter)
    store.report(device, report)
    return Outcome(200, f"{device.key} {device.phase} {device.result}", device)
