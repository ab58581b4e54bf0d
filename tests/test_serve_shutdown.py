"""`serve` on SIGTERM: new connections are refused at once, a download in flight finishes
within --grace, one still running after it is cut (short body, logged), exit 0."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.serving import installer_bytes, write_site

BIG = 24 * 1024 * 1024  # far more than the loopback socket buffers hold
HEADERS = ("ONIE-SERIAL-NUMBER: SN-SPECIAL\r\nONIE-ARCH: x86_64\r\nONIE-MACHINE: qemu_x86_64\r\n"
           "ONIE-MACHINE-REV: 0\r\n")


class Serve:
    """`onie-builder serve` as its own process, its stderr read line by line."""

    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc, self.port = proc, port
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: str) -> str:
        """The next stderr line matching ``pattern`` (20 s at most)."""
        while True:
            line = self.lines.get(timeout=20)
            if re.search(pattern, line):
                return line


@contextmanager
def serve(tmp_path: Path, grace: float) -> Iterator[Serve]:
    site = write_site(tmp_path, installer_size=BIG)
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", "serve", "--site", str(site), "--out", str(tmp_path),
         "--listen", "127.0.0.1", "--http-port", "0", "--grace", str(grace)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        yield Serve(proc, int(match.group(1)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def start_download(port: int) -> tuple[socket.socket, bytes]:
    """A download that has begun: (connection, body so far); the client then stops reading."""
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.connect(("127.0.0.1", port))
    conn.sendall(f"GET /onie-installer HTTP/1.1\r\nHost: x\r\n{HEADERS}\r\n".encode())
    received = b""
    while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < 30_000:
        chunk = conn.recv(4096)
        assert chunk, "server closed early"
        received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {BIG}".encode() in head
    return conn, body


def read_to_end(conn: socket.socket, body: bytes, want: int) -> bytes:
    """Read until ``want`` bytes of body or the end of the stream."""
    while len(body) < want:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        body += chunk
    return body


def refused(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


@pytest.mark.timeout(120)
def test_sigterm_lets_a_download_in_flight_finish_and_refuses_new_connections(tmp_path: Path) -> None:
    with serve(tmp_path, grace=30) as server:
        conn, body = start_download(server.port)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(r"stopping: no new connections; 1 download\(s\) in flight get up to 30 s")
        assert refused(server.port)
        with conn:
            body = read_to_end(conn, body, BIG)
        assert body == installer_bytes("special", BIG)
        assert server.proc.wait(30) == 0
        assert time.monotonic() - signalled < 30
        log = "".join(server.log)
        assert "stopped: 1 download(s) finished, 0 cut" in log
        assert re.search(rf"^127\.0\.0\.1 SN-SPECIAL GET /onie-installer 200 {BIG} \d+\.\d{{3}}s$", log,
                         re.M), log


@pytest.mark.timeout(120)
def test_sigterm_cuts_a_download_still_running_after_the_grace(tmp_path: Path) -> None:
    with serve(tmp_path, grace=1) as server:
        conn, body = start_download(server.port)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0  # the client never read on: the grace ran out
        assert time.monotonic() - signalled >= 1
        with conn:  # what the server handed over before the cut, then the end of the stream
            body = read_to_end(conn, body, BIG)
        assert 30_000 <= len(body) < BIG
        assert body == installer_bytes("special", BIG)[:len(body)]
        log = "".join(server.log)
        assert "stopped: 0 download(s) finished, 1 cut" in log
        assert "'special.bin': cut at shutdown" in log
        line = re.search(r"^127\.0\.0\.1 SN-SPECIAL GET /onie-installer 200 (\d+) \d+\.\d{3}s$", log, re.M)
        assert line, log
        assert len(body) <= int(line.group(1)) < BIG


@pytest.mark.timeout(120)
def test_a_second_signal_cuts_at_once(tmp_path: Path) -> None:
    with serve(tmp_path, grace=600) as server:
        conn, body = start_download(server.port)
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(r"stopping: no new connections; 1 download\(s\) in flight get up to 600 s")
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(30) == 0
        assert time.monotonic() - signalled < 30  # not the 600 s grace
        with conn:
            body = read_to_end(conn, body, BIG)
        assert len(body) < BIG and body == installer_bytes("special", BIG)[:len(body)]
        log = "".join(server.log)
        assert "SIGINT again: cutting the downloads in flight now" in log
        assert "stopped: 0 download(s) finished, 1 cut" in log
