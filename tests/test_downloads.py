"""Downloads that never hang (issue #16), without QEMU: the fault server's behaviours, and the
guest's fetch (lib/fetch.sh.j2, lib/transfer.sh.j2) run under BusyBox ash against it on
loopback, with short timeouts. tests/test_downloads_boot.py runs the same cases in a guest."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.faultserver import HUGE, SHORT_BY, FaultServer, serve
from tests.test_discovery import kvm, render

BODY = bytes(range(256)) * 1200  # 307200 bytes


@pytest.fixture()
def faults(tmp_path: Path) -> Iterator[tuple[FaultServer, int]]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "f").write_bytes(BODY)
    server, stall = serve(root, log=tmp_path / "requests.jsonl", tls_stall_port=0)
    assert stall is not None
    yield server, stall
    server.shutdown()
    server.server_close()


def url(server: FaultServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def get(server: FaultServer, path: str, headers: dict[str, str] | None = None,
        timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url(server, path), headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), b""


def raw(server: FaultServer, path: str, want: int, timeout: float) -> tuple[bytes, str]:
    """Read up to ``want`` bytes of a GET's raw answer; how the read ended."""
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        try:
            while len(data) < want:
                chunk = s.recv(65536)
                if not chunk:
                    return data, "closed"
                data += chunk
        except TimeoutError:
            return data, "timeout"
        except ConnectionResetError:
            return data, "reset"
        return data, "enough"


def test_good_and_range(faults: tuple[FaultServer, int]) -> None:
    server, _ = faults
    assert get(server, "/good/f")[2] == BODY
    status, headers, body = get(server, "/good/f", {"Range": "bytes=1000-"})
    assert (status, body) == (206, BODY[1000:])
    assert headers["Content-Range"] == f"bytes 1000-{len(BODY) - 1}/{len(BODY)}"
    assert get(server, "/good/missing")[0] == 404


def test_busy_then_good_and_loop(faults: tuple[FaultServer, int]) -> None:
    server, _ = faults
    assert get(server, "/busy/f")[0] == 503
    assert get(server, "/busy/f")[2] == BODY
    with pytest.raises(urllib.error.HTTPError, match="redirect"):
        urllib.request.urlopen(url(server, "/loop/f"), timeout=5)


def test_hang_huge_slow_short_reset(faults: tuple[FaultServer, int]) -> None:
    server, _ = faults
    data, how = raw(server, "/hang/f", len(BODY) + 1000, timeout=3)
    assert how == "timeout" and data.endswith(BODY[:len(BODY) * 9 // 10])
    data, how = raw(server, "/huge/f", 1 << 20, timeout=5)
    assert how == "enough" and f"Content-Length: {HUGE}".encode() in data
    # Read until two body bytes came (the second one a second after the first): a trickle
    # leaves nearly all of the body unsent. No short timeout: a loaded machine must not fail it.
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30) as s:
        s.sendall(b"GET /slow/f HTTP/1.0\r\n\r\n")
        data = b""
        while len(data.partition(b"\r\n\r\n")[2]) < 2:
            chunk = s.recv(65536)
            assert chunk, "the slow answer ended early"
            data += chunk
    body = data.partition(b"\r\n\r\n")[2]
    assert body == BODY[:len(body)] and len(body) < 100 < len(BODY)
    data, how = raw(server, "/short/f", len(BODY) + SHORT_BY + 1000, timeout=5)
    assert how == "closed" and f"Content-Length: {len(BODY) + SHORT_BY}".encode() in data
    data, how = raw(server, "/reset/f", len(BODY) + 1000, timeout=5)
    body = data.partition(b"\r\n\r\n")[2]  # a reset may drop what was not read yet
    assert how in ("reset", "closed") and BODY[:len(BODY) // 2].startswith(body)
    assert get(server, "/reset/f", {"Range": "bytes=5-"})[2] == BODY[5:]


def test_tls_stall_never_answers(faults: tuple[FaultServer, int]) -> None:
    _, stall = faults
    with socket.create_connection(("127.0.0.1", stall), timeout=1) as s:
        s.sendall(b"\x16\x03\x01\x00\x05hello")
        with pytest.raises(TimeoutError):
            s.recv(1)


# --- the guest's fetch under BusyBox ash ------------------------------------------------------


def ash_fetch(tmp_path: Path, server: FaultServer, cases: list[str],
              prelude: str = "") -> dict[str, str]:
    """Fetch each case's /CASE/f with the guest library; CASE -> "ok" or "fail: REASON".
    ``prelude`` runs after the library is sourced (e.g. a stand-in for ``df``)."""
    require_tool("busybox", "to run the generated shell (busybox-static)")
    lib = tmp_path / "lib.sh"
    lib.write_text(render("guest/discovery.sh.j2", kvm(), tmp_path, library=True))
    (tmp_path / "run").mkdir()
    body = "\n".join(
        f"if fetch {shlex.quote(url(server, f'/{case}/f'))} got; then echo '{case}=ok'; "
        f"cmp -s got www/f || echo '{case}=differs'; "
        f"else echo \"{case}=fail: $FETCH_ERROR\"; [ -e got ] && echo '{case}=left'; fi"
        for case in cases)
    script = (f". {shlex.quote(str(lib))}\nSERIAL=SN1 ETH_ADDR=52:54:00:12:34:56 SEC_KEY= "
              "OPERATION=os-install STALL_TIMEOUT=2 TRANSFER_TIMEOUT=6 PROGRESS_INTERVAL=2 "
              f"RESUME_COUNT=2\n{prelude}\nrun_setup\n{body}\n")
    proc = subprocess.run(["busybox", "ash", "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    said = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line
                and line.split("=", 1)[0] in cases)
    said["console"] = proc.stdout + proc.stderr
    return said


def test_fetch_names_every_failure_and_resumes(faults: tuple[FaultServer, int],
                                               tmp_path: Path) -> None:
    server, _ = faults
    got = ash_fetch(tmp_path, server, ["good", "busy", "short", "loop", "hang", "slow", "reset",
                                       "nothing"])
    console = got.pop("console")
    assert got == {
        "good": "ok",
        "busy": "fail: HTTP 503 Service Unavailable",
        "short": "fail: connection closed at 300 KiB of 300.9 KiB at 99 %",
        "loop": "fail: too many redirections",
        "hang": "fail: stalled 2 s at 90 %",
        "slow": "fail: timed out after 6 s at 0 %",
        "reset": "ok",
        "nothing": "fail: HTTP 404 Not Found",
    }, console
    # The reset throws away what the client had not read yet: the resume point varies.
    assert re.search(r"resume \S+/reset/f at [\d.]+ KiB \(connection closed at [\d.]+ KiB of "
                     r"300 KiB at \d+ %\), 1 of 2", console), console
    assert re.search(r"progress \S+/slow/f at 0 % 0\.0 MiB/s", console), console
    log = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    ranges = [e["range"] for e in log if e["path"] == "/reset/f"]
    assert ranges[0] is None and len(ranges) == 2 and re.fullmatch(r"bytes=[1-9]\d*-", ranges[1])


def test_fetch_refuses_a_length_beyond_the_free_space(faults: tuple[FaultServer, int],
                                                      tmp_path: Path) -> None:
    """A 10 GB Content-Length against a download folder with 1.6 GiB free (``df`` stands in
    for a switch's RAM disk, as the host's /tmp may hold more): refused before any byte."""
    server, _ = faults
    fake_df = ("df() { echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'; "
               "echo 'tmpfs 2097152 419430 1677722 20% /run'; }")
    got = ash_fetch(tmp_path, server, ["huge"], prelude=fake_df)
    assert got["huge"] == "fail: Content-Length 10 GiB > 1.6 GiB free in .", got  # ./got
    assert "huge=left" not in got["console"]


def test_fetch_stops_cleanly_when_space_runs_out(faults: tuple[FaultServer, int],
                                                 tmp_path: Path) -> None:
    """No length to check first (a chunked or close-delimited answer): the write fails with
    ENOSPC (here /dev/full stands for a full tmpfs), the reason says so, nothing is left."""
    server, _ = faults
    require_tool("busybox", "to run the generated shell (busybox-static)")
    lib = tmp_path / "lib.sh"
    lib.write_text(render("guest/discovery.sh.j2", kvm(), tmp_path, library=True))
    (tmp_path / "run").mkdir()
    script = (f". {shlex.quote(str(lib))}\nSTALL_TIMEOUT=2 TRANSFER_TIMEOUT=6\nrun_setup\n"
              "cat() { command cat \"$@\" > /dev/full; }\n"
              f"fetch {shlex.quote(url(server, '/good/f'))} \"$PWD/got\" || echo \"fail: $FETCH_ERROR\"\n"
              "[ -e got ] && echo left\n")
    proc = subprocess.run(["busybox", "ash", "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    assert re.fullmatch(r"fail: no space left in \S+ after 0 bytes\n", proc.stdout), proc
