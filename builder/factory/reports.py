"""Taking devices' status reports: parse each, check its signature, judge it against the key
registry (trust on first use, replays, changed keys) and apply it to the status store, the
report and its registry change in a database transaction committed before the answer.

``ReportWriter`` is the server's way (group commit): one writer thread takes every report
that arrived while its previous transaction was committing and judges and applies them, in
arrival order, in one transaction, each in its own savepoint; every report is answered only
once that transaction has committed, so a burst of reports costs one sync, not one each. The
judgement is the same as one by one: a report sees what the reports before it in the batch
did (the second of two reports with the same counter is a replay, 409). ``accept_report``
is a batch of one, in the caller's thread. Each gives an ``Outcome`` (an HTTP status and a
one-line text); ``builder.factory.serve`` only moves bytes. docs/factory.md, "Status protocol".
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from builder.factory.db.engine import describe
from builder.factory.db.journal import take_batch
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

log = logging.getLogger(__name__)

RETRIES = 5  # a race lost to another server is judged again (its savepoint rolled back)
BATCH = 256  # reports in one transaction at most

__all__ = ["AUTH_SCHEME", "BATCH", "Outcome", "ReportWriter", "accept_report", "decide_batch"]


@dataclass(frozen=True)
class Outcome:
    """The answer to a report: HTTP status, a one-line text, the device record it touched."""

    status: int
    text: str
    device: Device | None = None


@dataclass(frozen=True)
class Pending:
    """A report as it arrived: its body, ``Authorization`` value and the client's address."""

    body: bytes
    authorization: str | None
    address: str | None


def accept_report(store: StatusStore, registry: KeyRegistry, site: Site, body: bytes,
                  authorization: str | None, address: str | None) -> Outcome:
    """Decide on one report and apply it when accepted (200), committed before returning."""
    [outcome] = decide_batch(store, registry, site, [Pending(body, authorization, address)])
    return outcome


def decide_batch(store: StatusStore, registry: KeyRegistry, site: Site,
                 batch: list[Pending]) -> list[Outcome]:
    """The outcome of every report of ``batch``, judged in order and applied in one
    transaction, committed before returning (SQLAlchemyError when the commit fails: then
    nothing of the batch is applied)."""
    checked = [_check(pending) for pending in batch]
    if all(isinstance(item, Outcome) for item in checked):
        return [item for item in checked if isinstance(item, Outcome)]
    outcomes: list[Outcome] = []
    with store.atomic() as conn:
        for item, pending in zip(checked, batch, strict=True):
            outcomes.append(item if isinstance(item, Outcome)
                            else _judged(conn, store, registry, site, item, pending.address))
    return outcomes


def _check(pending: Pending) -> Report | Outcome:
    """The parsed report when it is well formed and correctly signed, else the refusal."""
    try:
        report = parse_report(pending.body)
    except ReportError as exc:
        return Outcome(400, f"bad status report: {exc}")
    try:
        check_signature(report, pending.body, pending.authorization)
    except SignatureError as exc:
        return Outcome(401, f"bad signature: {exc}")
    return report


def _judged(conn: Connection, store: StatusStore, registry: KeyRegistry, site: Site,
            report: Report, address: str | None) -> Outcome:
    """One report judged and applied in its own savepoint of the batch's transaction: a race
    lost to another server undoes only this report's writes, and it is judged again."""
    for _ in range(RETRIES):
        try:
            with conn.begin_nested():
                return _decide(store, registry, site, report, address)
        except Raced:
            continue
    return Outcome(503, "busy: the report raced other servers too often; send it again")


class ReportWriter:
    """The group-commit writer: a queue of reports and the thread that decides them."""

    def __init__(self, store: StatusStore, registry: KeyRegistry, site: Site, *,
                 start: bool = True,
                 committed: Callable[[int, float], None] | None = None) -> None:
        self.store, self.registry, self.site = store, registry, site
        # Told (reports, seconds) of every batch decided and committed: /metrics.
        self.committed = committed
        self.batches = 0  # transactions committed, for the tests and the figures
        self.reports = 0
        self._queue: queue.Queue[tuple[Pending, Future[Outcome]] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="status-reports", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        """Start the writer thread (reports submitted before wait for it)."""
        self._thread.start()

    def submit(self, body: bytes, authorization: str | None,
               address: str | None) -> Future[Outcome]:
        """Queue a report; the future's outcome is set once it is decided and, when it
        changed anything, committed."""
        future: Future[Outcome] = Future()
        with self._lock:
            if self._closed:
                future.set_result(Outcome(503, "the server is stopping; send the report again"))
            else:
                self._queue.put((Pending(body, authorization, address), future))
        return future

    def close(self) -> None:
        """Decide what is queued, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(60)

    def _run(self) -> None:
        stop = False
        while not stop:
            batch, stop = take_batch(self._queue, BATCH)
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[tuple[Pending, Future[Outcome]]]) -> None:
        """Decide ``batch`` in one transaction, then answer; when that transaction fails,
        one report at a time, so one bad report does not take the others with it."""
        began = time.perf_counter()
        try:
            outcomes = decide_batch(self.store, self.registry, self.site,
                                    [pending for pending, _ in batch])
        except Exception as exc:  # the waiting request gets it (500), not the thread
            if len(batch) > 1:
                for one in batch:
                    self._commit([one])
                return
            if isinstance(exc, SQLAlchemyError):
                log.error("state database: a status report not written: %s", describe(exc))
            batch[0][1].set_exception(exc)
            return
        self.batches += 1
        self.reports += len(batch)
        if self.committed is not None:
            self.committed(len(batch), time.perf_counter() - began)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            future.set_result(outcome)


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
