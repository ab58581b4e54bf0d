"""The lab's servers (dnsmasq, the HTTP server) against the host's BusyBox clients, no QEMU.

Two namespaces joined by a veth pair: servers in one, ``busybox udhcpc/wget/tftp`` in the
other. Needs root (network namespaces); fails in CI when a tool is missing, skips elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.lab.netns import NetNamespace
from builder.lab.servers import Dnsmasq, HttpServer
from tests.conftest import require_root_netns, require_tool

pytestmark = pytest.mark.lab

SUBNET = f"10.200.{100 + os.getpid() % 50}"
DUMP = """#!/bin/sh
[ "$1" = bound ] && { echo "ip=$ip"; echo "opt114=$opt114"; echo "siaddr=$siaddr"; } > "$OUT"
exit 0
"""


@pytest.fixture
def pair() -> Iterator[tuple[NetNamespace, NetNamespace]]:
    require_root_netns()
    require_tool("dnsmasq", "for the lab's DHCP server (dnsmasq-base)")
    require_tool("busybox", "for the lab's clients (busybox-static)")
    with NetNamespace.create("obs") as servers, NetNamespace.create("obc") as clients:
        servers.add_veth("obv0", f"{SUBNET}.1/24", clients, "obv1")
        yield servers, clients


def client(ns: NetNamespace, *argv: str, env: dict[str, str] | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ns.exec_argv(["busybox", *argv]), capture_output=True, text=True,
                          timeout=30, check=check, env={"PATH": os.environ["PATH"], **(env or {})})


def test_dnsmasq_leases_options_and_tftp(pair: tuple[NetNamespace, NetNamespace],
                                         tmp_path: Path) -> None:
    servers, clients = pair
    tftp = tmp_path / "tftp"
    tftp.mkdir()
    (tftp / "hello").write_text("from tftp\n")
    dhcp = Dnsmasq(servers, "obv0", f"{SUBNET}.1", tmp_path / "dnsmasq",
                   options=[f"114,http://{SUBNET}.1/x"], tftp_root=tftp).start()
    script = tmp_path / "dump.sh"
    script.write_text(DUMP)
    script.chmod(0o755)
    out = tmp_path / "lease.txt"
    started = time.monotonic()
    client(clients, "udhcpc", "-f", "-q", "-n", "-t", "3", "-T", "1", "-i", "obv1",
           "-s", str(script), "-O", "114", env={"OUT": str(out)})
    assert time.monotonic() - started < 2.5, "no ping check: the first OFFER comes at once"
    lease = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert lease["ip"].startswith(f"{SUBNET}.")
    assert bytes.fromhex(lease["opt114"]).decode() == f"http://{SUBNET}.1/x"
    dhcp.wait_for_log(r"DHCPACK\(obv0\) " + lease["ip"].replace(".", r"\."))
    assert lease["ip"] in (tmp_path / "dnsmasq" / "leases").read_text()
    got = tmp_path / "got"
    client(clients, "ip", "addr", "add", f"{lease['ip']}/24", "dev", "obv1")
    client(clients, "tftp", "-g", "-r", "hello", "-l", str(got), f"{SUBNET}.1")
    assert got.read_text() == "from tftp\n"
    dhcp.stop()
    assert dhcp.proc is not None and dhcp.proc.poll() is not None


def test_http_server_logs_headers_errors_and_comes_up_late(
        pair: tuple[NetNamespace, NetNamespace], tmp_path: Path) -> None:
    servers, clients = pair
    client(clients, "ip", "addr", "add", f"{SUBNET}.2/24", "dev", "obv1")
    www = tmp_path / "www"
    www.mkdir()
    (www / "file").write_text("payload\n")
    web = HttpServer(servers, www, tmp_path / "httpd", address=f"{SUBNET}.1",
                     errors={"/broken": 503}, up_after=1.5).start()
    down = client(clients, "wget", "-q", "-O", "-", web.url("file"), check=False)
    assert down.returncode != 0 and "refused" in down.stderr  # not up yet
    web.wait_up()
    ok = client(clients, "wget", "-q", "-O", "-", "--header", "ONIE-MACHINE: qemu",
                "-U", "agent/1", web.url("/file"))
    assert ok.stdout == "payload\n"
    assert client(clients, "wget", "-q", "-O", "-", web.url("broken"), check=False).returncode != 0
    assert client(clients, "wget", "-q", "-O", "-", web.url("none"), check=False).returncode != 0
    got = web.requests()
    assert [(r.path, r.status) for r in got] == [("/file", 200), ("/broken", 503), ("/none", 404)]
    assert got[0].header("onie-machine") == "qemu"
    assert got[0].header("User-Agent") == "agent/1"
    assert got[0].client == f"{SUBNET}.2"
    assert web.url("x") == f"http://{SUBNET}.1/x"


def test_dnsmasq_refuses_a_bare_extra_argument(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as info:
        Dnsmasq(NetNamespace("x", "ip"), "tap0", "10.200.1.1", tmp_path, extra=["dhcp-boot=x"])
    assert info.value.message == "dnsmasq extra argument: expected '--name[=value]', got 'dhcp-boot=x'"
