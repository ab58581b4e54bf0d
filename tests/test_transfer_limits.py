"""FTP and TFTP downloads that never hang and never overfill (issue #16), without QEMU: the
guest's fetch (lib/ftp.sh.j2, lib/fetch.sh.j2, lib/transfer.sh.j2) under BusyBox ash against
tests/ftpserver.py and tests/tftpserver.py on loopback, with short timeouts. TFTP's full
folder is a real 64 KiB tmpfs mounted in a mount namespace of the test's own (``unshare``)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.ftpserver import FtpServer
from tests.ftpserver import serve as serve_ftp
from tests.test_discovery import kvm, render
from tests.tftpserver import TftpServer

BODY = bytes(range(256)) * 1200  # 307200 bytes
FAKE_DF = ("df() { echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'; "
           "echo 'tmpfs 2097152 419430 1677722 20% /run'; }")


@pytest.fixture()
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "f").write_bytes(BODY)
    (root / "small").write_bytes(BODY[:3000])
    return root


@pytest.fixture()
def ftp(www: Path, tmp_path: Path) -> Iterator[FtpServer]:
    server = serve_ftp(www, tmp_path / "ftp.jsonl")
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


def ash(tmp_path: Path, body: str, prelude: str = "", wrap: list[str] | None = None) -> str:
    """Run ``body`` after the guest library (short timeouts); its stdout and stderr."""
    require_tool("busybox", "to run the generated shell (busybox-static)")
    lib = tmp_path / "lib.sh"
    lib.write_text(render("guest/discovery.sh.j2", kvm(), tmp_path, library=True))
    (tmp_path / "run").mkdir(exist_ok=True)
    script = (f". {shlex.quote(str(lib))}\nSERIAL=SN1 ETH_ADDR=52:54:00:12:34:56 SEC_KEY= "
              "OPERATION=os-install STALL_TIMEOUT=2 TRANSFER_TIMEOUT=8 PROGRESS_INTERVAL=2 "
              f"RESUME_COUNT=2 TFTP_TIMEOUT=2\n{prelude}\nrun_setup\n{body}\n")
    proc = subprocess.run([*(wrap or []), "busybox", "ash", "-c", script], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    return proc.stdout + proc.stderr


def fetch_lines(cases: dict[str, str], dest: str = "got") -> str:
    """Shell that fetches each URL to ``dest`` and prints CASE=ok, CASE=fail: REASON, and
    CASE=left when a failed fetch left its file."""
    return "\n".join(
        f"if fetch {shlex.quote(u)} {dest}; then echo '{c}=ok'; cmp -s {dest} www/f || echo '{c}=differs'; "
        f"else echo \"{c}=fail: $FETCH_ERROR\"; [ -e {dest} ] && echo '{c}=left'; fi"
        for c, u in cases.items())


def said(output: str, cases: dict[str, str]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines()
                if "=" in line and line.split("=", 1)[0] in cases)


def ftp_url(server: FtpServer, path: str) -> str:
    return f"ftp://127.0.0.1:{server.server_address[1]}{path}"


def test_ftp_bounds_size_and_rest(ftp: FtpServer, tmp_path: Path) -> None:
    cases = {c: ftp_url(ftp, f"/{c}/f") for c in ("good", "nosize", "hang", "reset", "missing")}
    cases["missing"] = ftp_url(ftp, "/good/nothing")
    out = ash(tmp_path, fetch_lines(cases))
    assert said(out, cases) == {"good": "ok", "nosize": "ok", "hang": "ok", "reset": "ok",
                                "missing": "fail: bad response to RETR: 550 no such file"}, out
    # The stall at 90 % and the reset at 50 % were continued by REST from what had arrived.
    assert re.search(r"resume \S+/hang/f at 270 KiB \(stalled 2 s at 90 %\), 1 of 2", out), out
    assert re.search(r"resume \S+/reset/f at [\d.]+ KiB \(.+\), 1 of 2", out), out
    rests = [arg for command, arg in ftp.commands() if command == "REST"]
    assert rests[0] == str(len(BODY) * 9 // 10) and len(rests) == 2 and int(rests[1]) > 0, rests


def test_ftp_stall_without_resume_and_size_beyond_free_space(ftp: FtpServer, tmp_path: Path) -> None:
    """No resumes left: the stall is the reason. A SIZE of 10 GiB against 1.6 GiB free (``df``
    stands in for a switch's RAM disk): refused before RETR's data is read, nothing left."""
    cases = {"hang": ftp_url(ftp, "/hang/f"), "huge": ftp_url(ftp, "/huge/f")}
    out = ash(tmp_path, fetch_lines(cases), prelude=f"{FAKE_DF}\nRESUME_COUNT=0")
    assert said(out, cases) == {"hang": "fail: stalled 2 s at 90 %",
                                "huge": "fail: SIZE 10 GiB > 1.6 GiB free in ."}, out


def test_busybox_tftp_asks_tsize_but_does_not_tell(www: Path, tmp_path: Path) -> None:
    """The fact docs/discovery.md rests on: BusyBox tftp asks tsize in every request and its
    answer reaches no output a script can read (the progress bar needs a terminal)."""
    busybox = require_tool("busybox", "to run the generated shell (busybox-static)")
    server = TftpServer(www).start()
    try:
        proc = subprocess.run([busybox, "tftp", "-g", "-b", "1468", "-r", "f", "-l",
                               str(tmp_path / "got"), "127.0.0.1", str(server.port)],
                              capture_output=True, text=True, timeout=30)
    finally:
        server.close()
    assert proc.returncode == 0 and (tmp_path / "got").read_bytes() == BODY
    assert server.requests == [{"file": "f", "tsize": "0", "blksize": "1468"}]
    assert proc.stdout == "" and str(len(BODY)) not in proc.stderr


def tmpfs_wrap(folder: Path, size: str) -> list[str]:
    """argv prefix: a mount namespace of our own with a ``size`` tmpfs on ``folder``."""
    unshare = require_tool("unshare", "to mount a small tmpfs of the test's own (util-linux)")
    folder.mkdir(parents=True, exist_ok=True)
    flags = ["--mount"] if os.geteuid() == 0 else ["--map-root-user", "--mount"]
    return [unshare, *flags, "sh", "-c",
            f'mount -t tmpfs -o size={size} onie-test {shlex.quote(str(folder))} && exec "$@"', "-"]


def test_tftp_stops_cleanly_when_the_folder_is_full(www: Path, tmp_path: Path) -> None:
    """300 KiB over TFTP into a 64 KiB tmpfs: the write fails, the reason names the folder and
    its free space, the partial file is removed, the server is told (ERROR 3, disk full); a
    file that fits arrives whole."""
    server = TftpServer(www).start()
    dl = tmp_path / "dl"
    try:
        body = "\n".join([
            f"if fetch_tftp 127.0.0.1:{server.port} f {dl}/inst; then echo big=ok; "
            "else echo \"big=fail: $FETCH_ERROR\"; fi",
            f"ls -A {dl} | sed 's/^/left=/'",
            "ls -A $RUN | grep tftp | sed 's/^/link=/'",
            f"fetch_tftp 127.0.0.1:{server.port} small {dl}/inst && cmp -s {dl}/inst www/small "
            "&& echo small=ok",
        ])
        out = ash(tmp_path, body, wrap=tmpfs_wrap(dl, "64k"))
    finally:
        server.close()
    lines = said(out, {"big": "", "small": "", "left": "", "link": ""})
    assert re.fullmatch(rf"fail: TFTP no space left in {re.escape(str(dl))} after 6\d(\.\d)? KiB "
                        r"\(64 KiB free\)", lines.get("big", "")), out
    assert "left" not in lines and "link" not in lines, out
    assert lines.get("small") == "ok", out
    assert server.errors and server.errors[0][0] == 3, server.errors
