"""The writer thread of the server's own events (requests, downloads and their progress, a
missing installer): the request handlers queue them and never wait for the disk; the thread
commits whatever has queued up in one transaction (group commit), so a burst of downloads
costs one sync, not one each. Devices' reports do not go through here: they are committed
before they are answered (``builder.factory.reports``).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from builder.factory.db.engine import Database, describe

log = logging.getLogger(__name__)

Op = Callable[[Connection], None]
T = TypeVar("T")
Item = Op | threading.Event  # an operation, or a marker set once what came before is committed
BATCH = 500  # operations in one transaction at most


def take_batch(source: queue.Queue[T | None], limit: int) -> tuple[list[T], bool]:
    """What a writer thread commits next: the first item (waited for) and whatever else is
    queued, up to ``limit`` items; and whether ``None`` (stop) was met."""
    batch: list[T] = []
    item = source.get()
    while item is not None:
        batch.append(item)
        if len(batch) >= limit:
            return batch, False
        try:
            item = source.get_nowait()
        except queue.Empty:
            return batch, False
    return batch, True


class Journal:
    """A queue of operations and the thread that commits them in order."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: queue.Queue[Item | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="state-journal", daemon=True)
        self._thread.start()

    def put(self, op: Op) -> None:
        """Queue ``op`` (run on the journal's connection, in a transaction)."""
        self._queue.put(op)

    def sync(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued before this call is committed."""
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self) -> None:
        """Commit what is queued and stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(60)

    def _run(self) -> None:
        stop = False
        while not stop:
            taken: tuple[list[Item], bool] = take_batch(self._queue, BATCH)
            items, stop = taken
            markers = [i for i in items if isinstance(i, threading.Event)]
            batch = [i for i in items if not isinstance(i, threading.Event)]
            if batch:
                self._commit(batch)
            for marker in markers:
                marker.set()

    def _commit(self, batch: list[Op]) -> None:
        try:
            with self.db.atomic() as conn:
                for op in batch:
                    op(conn)
            return
        except SQLAlchemyError:
            pass
        lost = 0  # one at a time: one bad operation must not take the others with it
        error = ""
        for op in batch:
            try:
                with self.db.atomic() as conn:
                    op(conn)
            except SQLAlchemyError as exc:
                lost, error = lost + 1, describe(exc)
        if lost:
            log.error("state database: %d of %d server events not written: %s", lost,
                      len(batch), error)
