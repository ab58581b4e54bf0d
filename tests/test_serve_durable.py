"""Nothing acknowledged is lost (issue #19): 200 devices report to `onie-builder serve` at once,
the server is SIGKILLed mid-way and restarted on the same database, and every report that got
its 200 is in `onie-builder status URL --json` and in the device's `/status/<key>.json`
history. Once with the default SQLite file; once with two servers sharing a PostgreSQL server
the test starts, where replays sent to the other server are refused too."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, run_cli
from tests.pgserver import postgres_server
from tests.serving import SimDevice, write_site
from tests.test_json import check_envelope

DEVICES = 200
REPORTS = [("discovery", "running"), ("install", "running"), ("install", "running"),
           ("done", "ok")]
KILL_AFTER = 250  # acknowledged reports before the SIGKILL (of 800)


def site_with_devices(folder: Path) -> Path:
    """The test site with DEVICES more listed devices, status reports on."""
    site = write_site(folder)
    lines = [f"  - serial: SN-D{n:03d}\n    mac: \"02:19:00:00:{n >> 8:02x}:{n & 255:02x}\"\n"
             f"    name: rack{n // 40}-sw{n % 40}\n" for n in range(DEVICES)]
    site.write_text(site.read_text() + "".join(lines))
    return site


class Serve:
    """One `onie-builder serve` subprocess; ``restart`` starts it again (a new port)."""

    def __init__(self, site: Path, db: str | None, log: Path) -> None:
        self.site, self.db, self.log = site, db, log
        self.proc: subprocess.Popen[str] | None = None
        self.base = ""
        self.start()

    def start(self) -> None:
        argv = [sys.executable, "-m", "builder", "serve", "--site", str(self.site), "--out",
                str(self.site.parent), "--listen", "127.0.0.1", "--http-port", "0",
                "--per-address", "0"]  # 200 devices, one address here
        if self.db is not None:
            argv += ["--db", self.db]
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                         stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "serving ...": bound, database migrated
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert match, line + self.log.read_text()[-3000:]
        self.base = match.group(1)

    def kill(self) -> None:
        """SIGKILL by PID: no shutdown code runs."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Fleet:
    """Simulated devices reporting to a set of servers in turn; what was acknowledged."""

    servers: list[Serve]
    devices: list[SimDevice] = field(default_factory=list)
    acked: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # serial: (counter, message)
    bodies: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # an acknowledged report
    lock: threading.Lock = field(default_factory=threading.Lock)
    moved: threading.Condition = field(default_factory=threading.Condition)
    generation: int = 0
    count: int = 0
    enough: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)

    def run_device(self, index: int) -> None:
        device = self.devices[index]
        assert device.serial is not None
        with requests.Session() as session:
            for step, (phase, result) in enumerate(REPORTS):
                body, auth = device.report(phase, result, b"log line\n",
                                           message=f"report {device.counter + 1}")
                server = self.servers[(index + step) % len(self.servers)]
                self.send(session, server, device.serial, body, auth, device.counter)

    def send(self, session: requests.Session, server: Serve, serial: str, body: bytes,
             auth: str, counter: int) -> None:
        """Send until answered; a server that died is waited for (restarted by the test)."""
        for _attempt in range(3):
            with self.moved:
                seen = self.generation
            changed = lambda seen=seen: self.generation != seen  # noqa: E731
            try:
                answer = session.post(f"{server.base}/status", data=body, timeout=30,
                                      headers={"Authorization": auth})
            except requests.RequestException:
                with self.moved:
                    if not self.moved.wait_for(changed, timeout=120):
                        self.errors.append(f"{serial}: no server came back")
                        return
                continue
            if answer.status_code == 200:
                with self.lock:
                    self.acked.setdefault(serial, []).append((counter, f"report {counter}"))
                    self.bodies[serial] = (body, auth)
                    self.count += 1
                    if self.count >= KILL_AFTER:
                        self.enough.set()
            elif answer.status_code != 409:  # 409: committed, but the answer was lost
                self.errors.append(f"{serial}: {answer.status_code} {answer.text.strip()}")
            return
        self.errors.append(f"{serial}: counter {counter} never answered")

    def restarted(self) -> None:
        with self.moved:
            self.generation += 1
            self.moved.notify_all()


def run_fleet(fleet: Fleet, victim: Serve) -> None:
    """All devices at once; ``victim`` is SIGKILLed after KILL_AFTER acknowledgements, then
    restarted on the same database."""
    fleet.devices = [SimDevice(f"SN-D{n:03d}", f"02:19:00:00:{n >> 8:02x}:{n & 255:02x}")
                     for n in range(DEVICES)]
    with ThreadPoolExecutor(max_workers=64) as pool:
        jobs = [pool.submit(fleet.run_device, n) for n in range(DEVICES)]
        assert fleet.enough.wait(300), f"only {fleet.count} reports acknowledged: {fleet.errors[:5]}"
        victim.kill()  # requests sent to the dead server wait for the new one
        victim.start()
        fleet.restarted()
        for job in jobs:
            job.result(timeout=600)
    assert fleet.errors == []
    assert fleet.count > KILL_AFTER  # reports were acknowledged after the restart too


def check_everything_acknowledged_is_there(fleet: Fleet, base: str) -> None:
    """Every acknowledged report: in `status --json` (the device's counter and state) and in
    its `/status/<key>.json` history (the report's own message)."""
    data = check_envelope(run_cli("status", "--json", base).stdout, "status", True)
    by_key = {d["key"]: d for d in data["devices"]}
    assert len(fleet.acked) == DEVICES
    for serial, acked in fleet.acked.items():
        device = by_key[serial]
        assert device["counter"] >= max(c for c, _ in acked), serial
        assert device["state"] == "installed" and device["name"] is not None
        history = requests.get(f"{base}/status/{serial}.json", timeout=30).json()
        messages = {e["message"] for e in history["events"] if e["kind"] == "report"}
        missing = [m for _, m in acked if m not in messages]
        assert missing == [], f"{serial}: acknowledged but lost: {missing}"
    assert data["counts"]["installed"] == DEVICES


@pytest.fixture
def servers() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def test_sqlite_keeps_every_acknowledged_report_across_kill_9(tmp_path: Path,
                                                              servers: ExitStack) -> None:
    site = site_with_devices(tmp_path)
    serve = Serve(site, None, tmp_path / "serve.log")  # the default: <site stem>.db beside it
    servers.callback(serve.stop)
    fleet = Fleet([serve])
    run_fleet(fleet, serve)
    assert (tmp_path / "site.db").is_file()
    check_everything_acknowledged_is_there(fleet, serve.base)


def test_postgresql_two_servers_share_state_across_kill_9(tmp_path: Path,
                                                          servers: ExitStack) -> None:
    url = servers.enter_context(postgres_server())
    site = site_with_devices(tmp_path)
    first = Serve(site, url, tmp_path / "first.log")
    servers.callback(first.stop)
    second = Serve(site, url, tmp_path / "second.log")
    servers.callback(second.stop)
    fleet = Fleet([first, second])  # each device's reports alternate between the two
    run_fleet(fleet, first)
    assert not (tmp_path / "site.db").exists()
    for serve in (first, second):
        check_everything_acknowledged_is_there(fleet, serve.base)
    # Replays across the two servers: an acknowledged report sent again, to either, is refused.
    for serial, (body, auth) in list(fleet.bodies.items())[:20]:
        for serve in (first, second):
            answer = requests.post(f"{serve.base}/status", data=body, timeout=30,
                                   headers={"Authorization": auth})
            assert answer.status_code == 409 and "replayed report" in answer.text, serial
    # The same new report sent to both at once: the database lets exactly one through.
    racers = fleet.devices[:40]
    reports = [d.report("done", "ok", message="raced") for d in racers]
    with ThreadPoolExecutor(max_workers=80) as pool:
        answers = [(pool.submit(post, first, *r), pool.submit(post, second, *r)) for r in reports]
        codes = [sorted((a.result(), b.result())) for a, b in answers]
    assert codes == [[200, 409]] * len(racers)


def post(serve: Serve, body: bytes, auth: str) -> int:
    return requests.post(f"{serve.base}/status", data=body, timeout=30,
                         headers={"Authorization": auth}).status_code
