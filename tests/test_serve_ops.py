"""`serve` operations: the access log, /metrics parsed with prometheus_client's own parser,
sendfile on plain HTTP (chunks on TLS), a stalled sendfile download timed out."""

from __future__ import annotations

import logging
import queue
import re
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from builder.factory import transfer
from builder.factory.limits import Limits
from builder.factory.ops import MAX_LOGGED_PATH, escape_path
from builder.factory.reports import BATCH
from tests.serving import Running, SimDevice, installer_bytes, make_ca, make_server_cert, running, write_site

QEMU = {"ONIE-ARCH": "x86_64", "ONIE-MACHINE": "qemu_x86_64", "ONIE-MACHINE-REV": "0"}
SPECIAL = {**QEMU, "ONIE-SERIAL-NUMBER": "SN-SPECIAL"}
SIZE = 100_000
BIG = 24 * 1024 * 1024  # far more than the loopback socket buffers hold
LINE = re.compile(r"^(?P<addr>\S+) (?P<key>\S+) (?P<method>\S+) (?P<path>\S+) (?P<status>\d{3}) "
                  r"(?P<bytes>\d+) (?P<seconds>\d+\.\d{3})s$")


class Lines(logging.Handler):
    """Records of the access log and the server's own log, handed over as they come."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.queue: queue.Queue[logging.LogRecord] = queue.Queue()

    def emit(self, record: logging.LogRecord) -> None:
        self.queue.put(record)

    def next(self, logger: str = "builder.factory.access") -> str:
        """The next line of ``logger`` (waits for it, 20 s at most)."""
        while True:
            record = self.queue.get(timeout=20)
            if record.name == logger:
                return record.getMessage()


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    loggers = [logging.getLogger(n) for n in ("builder.factory.access", "builder.factory.serve")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.INFO)
        lg.addHandler(handler)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


def fields(line: str) -> dict[str, str]:
    match = LINE.match(line)
    assert match, line
    return match.groupdict()


def port_of(server: Running) -> int:
    return int(server.url().split(":")[2].rstrip("/"))


def stalled_download(server: Running, headers: dict[str, str]) -> socket.socket:
    """A connection that asked for the installer, read its headers and some body, and stops
    reading (small receive buffer, so the server's sends block)."""
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.connect(("127.0.0.1", port_of(server)))
    conn.sendall(("GET /onie-installer HTTP/1.1\r\nHost: x\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
    received = b""
    while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < 10_000:
        chunk = conn.recv(4096)
        assert chunk, "server closed early"
        received += chunk
    return conn


def test_access_log_lines(tmp_path: Path, lines: Lines) -> None:
    with running(write_site(tmp_path, installer_size=SIZE), tmp_path) as server:
        session = requests.Session()
        assert session.get(server.url("onie-installer"), headers=SPECIAL, timeout=10).ok
        line = fields(lines.next())
        assert line == {**line, "addr": "127.0.0.1", "key": "SN-SPECIAL", "method": "GET",
                        "path": "/onie-installer", "status": "200", "bytes": str(SIZE)}
        ranged = session.get(server.url("onie-installer"), headers={**SPECIAL, "Range": "bytes=10-"},
                             timeout=10)
        assert ranged.status_code == 206
        assert fields(lines.next())["bytes"] == str(SIZE - 10)
        assert session.head(server.url("onie-installer"), headers=SPECIAL, timeout=10).ok
        assert fields(lines.next())["bytes"] == "0"
        missing = session.get(server.url("nothing?x=1"), timeout=10)
        assert missing.status_code == 404
        line = fields(lines.next())
        assert (line["key"], line["path"], line["status"], line["bytes"]) == (
            "-", "/nothing?x=1", "404", str(len(missing.content)))
        long = "a" * 300
        assert session.get(server.url(long), timeout=10).status_code == 404
        assert fields(lines.next())["path"] == "/" + "a" * (MAX_LOGGED_PATH - 1) + "..."
        body, auth = SimDevice("SN-LOGGED").report("install", "running")
        assert session.post(server.url("status"), data=body, headers={"Authorization": auth},
                            timeout=10).ok
        line = fields(lines.next())
        assert (line["key"], line["method"], line["path"], line["status"]) == (
            "SN-LOGGED", "POST", "/status", "200")
        page = session.get(server.url("/"), timeout=10)
        assert fields(lines.next())["bytes"] == str(len(page.content))


def test_a_cut_download_logs_the_bytes_handed_over(tmp_path: Path, lines: Lines) -> None:
    with running(write_site(tmp_path, installer_size=BIG), tmp_path) as server:
        conn = stalled_download(server, SPECIAL)
        conn.close()  # unread data: the kernel resets the connection
        line = fields(lines.next())
        assert (line["key"], line["status"]) == ("SN-SPECIAL", "200")
        assert 10_000 <= int(line["bytes"]) < BIG


def test_paths_are_escaped_for_the_log() -> None:
    assert escape_path("/a b\x1b[2J\\é\u2028\U0001f600") == "/a\\x20b\\x1b[2J\\x5c\\xe9\\u2028\\U0001f600"
    assert escape_path("x" * 500) == "x" * MAX_LOGGED_PATH + "..."


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: Running, session: requests.Session) -> Samples:
    """/metrics parsed by prometheus_client: {(sample name, labels): value}."""
    response = session.get(server.url("metrics"), timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def test_metrics_after_real_requests(tmp_path: Path, lines: Lines) -> None:
    with running(write_site(tmp_path, installer_size=BIG), tmp_path) as server:
        # One connection: each request's access-log hook (which counts it) runs before the next.
        session = requests.Session()
        assert session.get(server.url("onie-installer"), headers=SPECIAL, timeout=10).ok
        assert session.get(server.url("onie-installer"), timeout=10,
                           headers={**QEMU, "ONIE-SERIAL-NUMBER": "SN-UNLISTED"}).ok
        assert session.get(server.url("onie-installer"), timeout=10,
                           headers={**SPECIAL, "Range": "bytes=0-99"}).status_code == 206
        assert session.get(server.url("nothing"), timeout=10).status_code == 404
        device = SimDevice("SN-REPORTS")
        body, auth = device.report("install", "running")
        assert session.post(server.url("status"), data=body, headers={"Authorization": auth},
                            timeout=10).ok
        body, _ = device.report("done", "ok")
        bad = session.post(server.url("status"), data=body, timeout=10,
                           headers={"Authorization": SimDevice("SN-REPORTS").sign(body)})
        assert bad.status_code in (401, 409)
        counts = session.get(server.url("status.json"), timeout=10).json()["counts"]
        metrics = scrape(server, session)
        assert metrics[("onie_serve_sent_bytes_total", ())] == 2 * BIG + 100
        assert metrics[("onie_serve_requests_total", (("code", "2xx"),))] == 5
        assert metrics[("onie_serve_requests_total", (("code", "4xx"),))] == 2
        assert metrics[("onie_serve_report_errors_total", (("status", str(bad.status_code)),))] == 1
        assert metrics[("onie_serve_downloads_in_flight", ())] == 0
        states = {dict(k[1])["state"]: v for k, v in metrics.items() if k[0] == "onie_serve_devices"}
        assert states == counts  # every state, zeros included, as /status.json counts them
        assert {"waiting", "downloading", "installed", "failed"} <= set(states)
        # A download in flight shows while it is held; once cut, the bytes the kernel took
        # for it are counted, as many as its access-log line says.
        conn = stalled_download(server, SPECIAL)
        metrics = scrape(server, session)
        assert metrics[("onie_serve_downloads_in_flight", ())] == 1
        assert metrics[("onie_serve_requests_total", (("code", "2xx"),))] == 6  # and the first scrape
        conn.close()
        cut = next(f for f in map(fields, iter(lines.next, None))
                   if (f["path"], f["status"]) == ("/onie-installer", "200") and int(f["bytes"]) < BIG)
        metrics = scrape(server, session)
        assert metrics[("onie_serve_downloads_in_flight", ())] == 0
        assert metrics[("onie_serve_sent_bytes_total", ())] == 2 * BIG + 100 + int(cut["bytes"])


REPORTS = 120  # sent at once by WORKERS clients (under Limits.per_address connections)
WORKERS = 24


def test_report_batches_and_commit_seconds_on_metrics(tmp_path: Path) -> None:
    devices = [SimDevice(f"SN-BATCH-{i:03d}") for i in range(REPORTS)]
    signed = [device.report("install", "running") for device in devices]
    with running(write_site(tmp_path, installer_size=SIZE), tmp_path) as server:
        session = requests.Session()
        before = scrape(server, session)
        assert before[("onie_serve_report_batch_size_count", ())] == 0
        assert before[("onie_serve_report_batch_size_sum", ())] == 0

        local = threading.local()  # one kept-alive connection per client thread
        sessions: list[requests.Session] = []

        def post(report: tuple[bytes, str]) -> int:
            if not hasattr(local, "session"):
                local.session = requests.Session()
                sessions.append(local.session)
            return int(local.session.post(server.url("status"), data=report[0], timeout=30,
                                          headers={"Authorization": report[1]}).status_code)

        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            assert list(pool.map(post, signed)) == [200] * REPORTS
        for each in sessions:
            each.close()
        metrics = scrape(server, session)
        writer = server.server.provisioner.reports
    batches = metrics[("onie_serve_report_batch_size_count", ())]
    # Every report is in exactly one committed batch: the sizes add up to the reports sent.
    assert metrics[("onie_serve_report_batch_size_sum", ())] == REPORTS == writer.reports
    assert 1 <= batches == writer.batches <= REPORTS
    buckets = {dict(labels)["le"]: value for (name, labels), value in metrics.items()
               if name == "onie_serve_report_batch_size_bucket"}
    assert list(buckets) == [f"{2.0**n}" for n in range(9)] + ["+Inf"]
    assert BATCH == 2.0 ** 8  # the largest bucket is the writer's largest batch
    assert buckets[f"{float(BATCH)}"] == buckets["+Inf"] == batches
    assert list(buckets.values()) == sorted(buckets.values())  # cumulative
    # One commit time per batch, each a positive duration.
    assert metrics[("onie_serve_report_commit_seconds_count", ())] == batches
    assert metrics[("onie_serve_report_commit_seconds_sum", ())] > 0
    commits = {dict(labels)["le"]: value for (name, labels), value in metrics.items()
               if name == "onie_serve_report_commit_seconds_bucket"}
    assert commits["+Inf"] == batches


def test_plain_http_uses_sendfile_and_tls_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    for name in ("_sendfile", "_chunks"):
        original = getattr(transfer, name)

        async def spy(*args: object, _name: str = name, _original: object = original) -> object:
            calls.append(_name)
            return await _original(*args)  # type: ignore[operator]

        monkeypatch.setattr(transfer, name, spy)
    ca = make_ca(tmp_path / "ca")
    chain, key = make_server_cert(tmp_path / "ca", ca, ["127.0.0.1"])
    with running(write_site(tmp_path, tls=(chain, key, ca[0]), installer_size=SIZE), tmp_path) as server:
        plain = requests.get(server.url("onie-installer"), headers=QEMU, timeout=10)
        assert plain.content == installer_bytes("default", SIZE) and calls == ["_sendfile"]
        calls.clear()
        tls = requests.get(server.url("onie-installer", tls=True), headers={**QEMU, "Range": "bytes=5-"},
                           verify=str(ca[0]), timeout=10)
        assert tls.content == installer_bytes("default", SIZE)[5:] and calls == ["_chunks"]


def test_a_stalled_sendfile_download_times_out(tmp_path: Path, lines: Lines) -> None:
    site = write_site(tmp_path, installer_size=BIG)
    with running(site, tmp_path, limits=Limits(send_timeout=0.5)) as server:
        conn = stalled_download(server, SPECIAL)
        assert "client stalled" in lines.next("builder.factory.serve")
        line = fields(lines.next())
        assert line["status"] == "200" and int(line["bytes"]) < BIG
        received = 0
        try:
            while chunk := conn.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass  # the server aborted the stalled connection
        finally:
            conn.close()
        assert received < BIG
