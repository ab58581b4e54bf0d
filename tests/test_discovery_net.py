"""The script's fetch functions against real servers, run by the host's BusyBox in a namespace.

No QEMU: two namespaces joined by a veth pair, dnsmasq (TFTP) and the lab's HTTP server in
one, ``busybox ash`` with the generated script's functions in the other. This proves the
bounds the boot tests cannot reach quickly: a TFTP server that never answers is given up after
``timeouts.tftp``, a closed HTTP port fails at once, and the headers as the server got them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.lab.netns import NetNamespace
from builder.lab.servers import Dnsmasq, HttpServer
from tests.conftest import require_root_netns, require_tool
from tests.test_discovery import kvm, render

pytestmark = pytest.mark.lab

NET = f"10.200.{150 + os.getpid() % 50}"
SILENT = """import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 69))
print("silent tftp up", flush=True)
while True:
    s.recvfrom(2048)  # read and never answer
"""


@pytest.fixture
def net(tmp_path: Path) -> Iterator[tuple[NetNamespace, NetNamespace]]:
    require_root_netns()
    require_tool("dnsmasq", "for the lab's TFTP server (dnsmasq-base)")
    require_tool("busybox", "to run the generated shell (busybox-static)")
    with NetNamespace.create("obs") as servers, NetNamespace.create("obc") as clients:
        servers.add_veth("obv0", f"{NET}.1/24", clients, "obv1", f"{NET}.9/24")
        # The silent TFTP server's address sits on lo: dnsmasq binds every address of obv0.
        servers.ip("addr", "add", f"{NET}.2/32", "dev", "lo")
        yield servers, clients


def run_lib(ns: NetNamespace, tmp: Path, body: str) -> subprocess.CompletedProcess[str]:
    lib = tmp / "lib.sh"
    if not lib.exists():
        lib.write_text(render("guest/discovery.sh.j2", kvm(), tmp, library=True))
        (tmp / "run").mkdir()
    script = (f". {shlex.quote(str(lib))}\nSERIAL=SN1 ETH_ADDR=52:54:00:12:34:56 SEC_KEY="
              f" OPERATION=os-install\n{body}")
    return subprocess.run(ns.exec_argv(["busybox", "ash", "-c", script]), capture_output=True,
                          text=True, timeout=60, cwd=tmp, env={"PATH": os.environ["PATH"]})


def test_fetches_are_bounded_and_carry_onies_headers(net: tuple[NetNamespace, NetNamespace],
                                                     tmp_path: Path) -> None:
    servers, clients = net
    tftp = tmp_path / "tftp"
    tftp.mkdir()
    (tftp / "a").write_text("tftp payload\n")
    Dnsmasq(servers, "obv0", f"{NET}.1", tmp_path / "dnsmasq", tftp_root=tftp).start()
    www = tmp_path / "www"
    www.mkdir()
    (www / "b").write_text("http payload\n")
    web = HttpServer(servers, www, tmp_path / "httpd", address=f"{NET}.1").start()
    silent = tmp_path / "silent.py"
    silent.write_text(SILENT)
    proc = servers.spawn(["python3", str(silent), f"{NET}.2"], tmp_path / "silent.log")
    deadline = time.monotonic() + 10
    while "up" not in (tmp_path / "silent.log").read_text():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)

    out = run_lib(clients, tmp_path, f"""
fetch_tftp {NET}.1 a got-a && cat got-a
fetch_tftp {NET}.1 missing got-b || echo "missing: $FETCH_ERROR timed_out=$TFTP_TIMED_OUT"
t0=$(cut -d' ' -f1 /proc/uptime)
fetch_tftp {NET}.2 a got-c || echo "silent: $FETCH_ERROR timed_out=$TFTP_TIMED_OUT"
t1=$(cut -d' ' -f1 /proc/uptime)
echo "silent took $t0 $t1"
fetch http://{NET}.1/b got-d && cat got-d
fetch http://{NET}.1:81/b got-e || echo "closed: $FETCH_ERROR"
fetch http://{NET}.1/nothing got-f || echo "404: $FETCH_ERROR"
""")
    said = out.stdout.splitlines()
    assert said[0] == "tftp payload"
    assert said[1].startswith("missing: ") and said[1].endswith("timed_out=")
    assert said[2] == "silent: TFTP timeout: no answer within 3 s timed_out=1"
    t0, t1 = map(float, said[3].split()[2:])
    assert 2.9 <= t1 - t0 < 10  # the TFTP bound, not busybox tftp's own retries
    assert said[4] == "http payload"
    assert said[5] == f"closed: no answer from {NET}.1 port 81 within 2s"
    assert said[6] == "404: HTTP 404 Not Found"
    got = web.requests()
    assert [(r.path, r.status) for r in got] == [("/b", 200), ("/nothing", 404)]
    assert got[0].header("ONIE-SERIAL-NUMBER") == "SN1"
    assert got[0].header("ONIE-ETH-ADDR") == "52:54:00:12:34:56"
    assert got[0].header("ONIE-MACHINE") == "kvm_x86_64"
    assert got[0].header("ONIE-OPERATION") == "os-install"
