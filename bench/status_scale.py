#!/usr/bin/env python3
"""Scale of the device table (issue #23): 100,000 made-up identities through the request
handler's identity path, 10,000 signed first reports (each committed to the SQLite state
database before the next), /status.json pages over them. In-process, no network.

    python bench/status_scale.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from builder.factory.registry import DbRegistry
from builder.factory.reports import accept_report
from builder.factory.serve import Provisioner, tracked_device
from builder.factory.sitefile import load_site
from builder.factory.status import StatusStore, identity_from_headers
from tests.serving import SimDevice, write_site


def main() -> None:
    """Print the three figures."""
    with tempfile.TemporaryDirectory(prefix="status-scale-") as tmp:
        folder = Path(tmp)
        site, _ = load_site(write_site(folder))
        store = StatusStore.open(f"sqlite:///{folder / 'state.db'}")  # SQLite, synchronous=FULL
        registry = DbRegistry(store.db)
        provisioner = Provisioner(site, folder, store, registry)
        started = time.perf_counter()
        for n in range(100_000):
            who = identity_from_headers({"ONIE-SERIAL-NUMBER": f"M{n}", "ONIE-ARCH": "x86_64",
                                         "ONIE-MACHINE": "qemu_x86_64"}, "192.0.2.1")
            store.note_request(tracked_device(provisioner, who, waterfall=True), "/onie-installer")
        print(f"100000 made-up identities: {time.perf_counter() - started:.2f} s, "
              f"records {store.snapshot()['total']}")
        devices = [SimDevice(f"R{n:05d}") for n in range(10_000)]
        started = time.perf_counter()
        for device in devices:
            accept_report(store, registry, site, *device.report("install", "running"), None)
        print(f"10000 signed first reports: {time.perf_counter() - started:.2f} s")
        for limit in (1000, 10_000):
            started = time.perf_counter()
            text = json.dumps(store.snapshot(0, limit))
            took = time.perf_counter() - started
            print(f"status.json page of {limit} with 10000 devices: {took * 1000:.0f} ms, "
                  f"{len(text)} bytes")
        store.close()


if __name__ == "__main__":
    main()
