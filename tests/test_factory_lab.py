"""Factory provisioning end to end: the image leases its address from the dnsmasq
configuration `dhcp-config` generated, gets its own installer from `serve`, runs it, and
its final status shows on the server."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.factory.db.engine import Database, default_url
from builder.factory.registry import DbRegistry
from builder.initramfs.cpio import compress, render_cpio
from builder.initramfs.tree import Tree
from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console, machine_for, qemu_command
from builder.lab.servers import wait_for_text
from builder.process import run
from builder.recipe.formats import Compression
from tests.conftest import ROOT, require_qemu, require_root_netns, run_cli
from tests.serving import require_daemon

pytestmark = [pytest.mark.lab, pytest.mark.network]

SERIAL = "SN-LAB-0001"
MAC = "52:54:00:12:34:56"  # QEMU's default address for the first NIC
NET = f"10.200.{160 + os.getpid() % 40}"
SERVE = "import sys; sys.path.insert(0, sys.argv.pop(1)); from builder.cli import main; main()"
FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"


def installer(label: str, size: int) -> bytes:
    """An ONIE-style installer script padded with comment lines to ``size`` bytes."""
    script = (f'#!/bin/sh\necho "{label} INSTALLER RAN for $onie_serial_num from $onie_exec_url"\n'
              'echo "NOS installed"\nexit 0\n').encode()
    filler = b"".join(f"# padding line {n:06d}\n".encode() for n in range(size // 22 + 1))
    return (script + filler)[:size]


def site_file(folder: Path) -> Path:
    (folder / "installers").mkdir(parents=True)
    (folder / "installers" / "generic.sh").write_bytes(installer("GENERIC", 60_000))
    (folder / "installers" / "special.sh").write_bytes(installer("FACTORY", 300_000))
    path = folder / "site.yaml"
    path.write_text(f"""\
name: lab-factory
server:
  address: {NET}.1
  listen: [{NET}.1]
  http_port: 8080
status:
  log_tail: 4096
subnets:
  - network: {NET}.0/24
    pool: [{NET}.50, {NET}.60]
    router: {NET}.1
    interface: tap0
    lease_time: 600
platforms:
  - platform: x86_64-qemu_x86_64-r0
    installer: installers/generic.sh
devices:
  - mac: "{MAC}"
    serial: {SERIAL}
    name: lab-sw1
    installer: installers/special.sh
""")
    return path


def with_reports(image: Path, dest: Path) -> Path:
    """The image's initramfs plus a second archive turning status reports on (the kernel
    unpacks concatenated archives in order), as a factory overlay would: no secret in it."""
    tree = Tree()
    tree.add_dir("/etc/onie", origin="test")
    tree.add_file("/etc/onie/status.enable", data=b"", origin="test", mode=0o644)
    dest.write_bytes((image / "initrd.img").read_bytes()
                     + compress(render_cpio(tree, 0), Compression.GZIP))
    return dest


def test_factory_install_reports_its_status(built: Callable[[str], Path], tmp_path: Path) -> None:
    require_root_netns()
    dnsmasq = require_daemon("dnsmasq")
    image = built("tests/recipes/lab_x86_64.yaml")
    manifest = json.loads((image / "manifest.json").read_text())
    require_qemu(manifest["arch"])
    site = site_file(tmp_path / "site")
    conf = tmp_path / "dnsmasq.conf"
    run_cli("dhcp-config", "qemu_x86_64", "--site", str(site), "--format", "dnsmasq", "-o", str(conf))
    initrd = with_reports(image, tmp_path / "initrd.img")

    with NetNamespace.create("obfac") as ns:
        ns.add_tap("tap0", f"{NET}.1/24")
        dhcp = ns.spawn([dnsmasq, "--no-daemon", f"--conf-file={conf}", "--port=0", "--log-dhcp",
                         f"--dhcp-leasefile={tmp_path / 'leases'}", "--user=root", "--group=root",
                         f"--pid-file={tmp_path / 'dnsmasq.pid'}"], tmp_path / "dnsmasq.log")
        wait_for_text(tmp_path / "dnsmasq.log", r"DHCP, IP range", 10, dhcp, "dnsmasq")
        server = ns.spawn([sys.executable, "-c", SERVE, str(ROOT), "serve", "--site", str(site),
                           "--out", str(image.parent)], tmp_path / "serve.log")
        wait_for_text(tmp_path / "serve.log", r"^serving ", 30, server, "serve")

        argv = qemu_command(machine_for(manifest["arch"]), image / "vmlinuz", initrd,
                            manifest["kernel"]["cmdline"], tap="tap0",
                            extra=["-smbios", f"type=1,serial={SERIAL}"])
        with Console.start(argv, tmp_path / "console.log", netns=ns.name) as console:
            console.expect(r"FACTORY INSTALLER RAN for (\S+) from (\S+)", timeout=240)
            done = console.expect(r"onie-discovery: done (\S+) then poweroff", timeout=60)
            assert done.group(1) == f"http://{NET}.1:8080/onie-installer-x86_64-qemu_x86_64-r0"
            console.expect(r"reboot: Power down", timeout=60)
        status = json.loads(run(ns.exec_argv([sys.executable, "-c", FETCH,
                                              f"http://{NET}.1:8080/status.json"])).stdout)
        history = json.loads(run(ns.exec_argv([sys.executable, "-c", FETCH,
                                               f"http://{NET}.1:8080/status/{SERIAL}.json"])).stdout)

    # The address came from the generated configuration: its pool, its vendor class match.
    # (The lease itself is gone: discovery releases it before powering off.)
    log = (tmp_path / "dnsmasq.log").read_text()
    ack = re.search(rf"DHCPACK\(tap0\) {re.escape(NET)}\.(\d+) {MAC}", log)
    assert ack is not None and 50 <= int(ack.group(1)) <= 60
    assert "vendor class: onie_vendor:x86_64-qemu_x86_64-r0" in log
    assert f"DHCPRELEASE(tap0) {NET}.{ack.group(1)} {MAC}" in log

    # The server chose this device's installer and saw it through to the end.
    [device] = [d for d in status["devices"] if d["key"] == SERIAL]
    assert device["name"] == "lab-sw1" and device["mac"] == MAC
    assert device["platform"] == "x86_64-qemu_x86_64-r0"
    assert device["installer"] == "special.sh" and device["size"] == 300_000
    assert device["downloads"] == 1 and device["bytes_sent"] >= 300_000
    assert device["state"] == "installed" and device["result"] == "ok"
    sources = [(p["phase"], p["result"], p["source"]) for p in device["phases"]]
    assert sources[:2] == [("download", "running", "server"), ("downloaded", "ok", "server")]
    assert ("install", "running", "device") in sources and sources[-1] == ("done", "ok", "device")
    assert "FACTORY INSTALLER RAN for SN-LAB-0001" in device["log"]
    assert "NOS installed" in device["log"]
    # Its history, from the state database beside the site file.
    kinds = [(e["source"], e["kind"]) for e in history["events"]]
    assert ("server", "download") in kinds and kinds[-1] == ("device", "report")
    assert history["events"][-1]["phase"] == "done" and history["device"]["key"] == SERIAL
    assert site.with_suffix(".db").is_file()
    # Signed with a key the device made (no disk: kept in RAM), one counter step per report.
    assert device["keystore"] == "ram" and device["counter"] == len(
        [p for p in device["phases"] if p["source"] == "device"])
    registry = DbRegistry(Database(default_url(site)))
    binding = registry.find(SERIAL, None)
    registry.db.close()
    assert binding is not None and (binding.mac, binding.keystore) == (MAC, "ram")
