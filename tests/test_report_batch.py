"""Group commit of devices' status reports (#19): reports decided in one transaction are
judged exactly as one by one, and none is answered before its transaction committed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from builder.factory.registry import DbRegistry
from builder.factory.reports import Pending, ReportWriter, decide_batch
from builder.factory.site import Site
from builder.factory.sitefile import load_site
from builder.factory.status import StatusStore
from tests.serving import SimDevice, write_site


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[StatusStore, DbRegistry, Site]]:
    site, _ = load_site(write_site(tmp_path))
    store = StatusStore.open(f"sqlite:///{tmp_path / 'state.db'}", site)
    yield store, DbRegistry(store.db), site
    store.close()


def pending(sim: SimDevice, phase: str, result: str, counter: int | None = None) -> Pending:
    body = sim.body(phase, result, counter=counter)
    return Pending(body, sim.sign(body), "192.0.2.7")


def test_a_replay_inside_one_batch_is_refused_as_one_by_one(
        parts: tuple[StatusStore, DbRegistry, Site]) -> None:
    store, registry, site = parts
    sim, other = SimDevice("BATCH0001"), SimDevice("BATCH0002")
    batch = [pending(sim, "discovery", "running", 1), pending(other, "discovery", "running", 1),
             pending(sim, "install", "running", 1),  # the same counter again: a replay
             pending(sim, "install", "ok", 2)]
    impostor = SimDevice("BATCH0002")  # another key for a device registered earlier in the batch
    batch.append(pending(impostor, "install", "ok", 9))
    batch.append(Pending(b"garbage", None, None))
    statuses = [outcome.status for outcome in decide_batch(store, registry, site, batch)]
    assert statuses == [200, 200, 409, 200, 409, 400]
    assert registry.find("BATCH0001", None).counter == 2  # type: ignore[union-attr]
    history = store.history("BATCH0001")
    assert history is not None
    assert [(e["phase"], e["result"]) for e in history["events"] if e["kind"] == "report"] == \
        [("discovery", "running"), ("install", "ok")]
    other_history = store.history("BATCH0002")
    assert other_history is not None and len(other_history["device"]["conflicts"]) == 1


def test_reports_queued_together_commit_as_one_batch_before_their_answers(
        parts: tuple[StatusStore, DbRegistry, Site]) -> None:
    store, registry, site = parts
    writer = ReportWriter(store, registry, site, start=False)
    sim = SimDevice("BATCH0003")
    bodies = [sim.body("install", "running", counter=n) for n in (1, 2, 2, 3)]
    futures = [writer.submit(body, sim.sign(body), None) for body in bodies]
    assert not any(future.done() for future in futures)  # nothing answered before the commit
    writer.start()
    assert [future.result(30).status for future in futures] == [200, 200, 409, 200]
    assert (writer.batches, writer.reports) == (1, 4)
    binding = DbRegistry(store.db).find("BATCH0003", None)  # what was committed
    assert binding is not None and binding.counter == 3
    writer.close()
    late = writer.submit(*sim.report("install", "ok"), None).result(1)
    assert late.status == 503


def test_a_failed_batch_commit_is_retried_one_report_at_a_time(
        parts: tuple[StatusStore, DbRegistry, Site], monkeypatch: pytest.MonkeyPatch) -> None:
    store, registry, site = parts
    writer = ReportWriter(store, registry, site, start=False)
    sims = [SimDevice(f"BATCH01{n:02d}") for n in range(3)]
    futures = [writer.submit(*sim.report("install", "running"), None) for sim in sims]
    real = store.report

    def fail_for_one(device, report):  # type: ignore[no-untyped-def]
        if report.serial == "BATCH0101":
            raise OperationalError("UPDATE", {}, Exception("disk I/O error"))
        real(device, report)

    monkeypatch.setattr(store, "report", fail_for_one)
    writer.start()
    assert futures[0].result(30).status == 200 and futures[2].result(30).status == 200
    with pytest.raises(OperationalError):
        futures[1].result(30)
    writer.close()
    assert registry.find("BATCH0101", None) is None  # its registration rolled back with it
    assert registry.find("BATCH0100", None) is not None
