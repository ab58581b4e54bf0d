"""HTTPS in QEMU: one boot offered, in discovery's order, an installer over HTTPS from a server
with a certificate of another CA (install_url=), one naming another address (VIVSO option 125),
an expired one (option 114), then a good one by DNS name (option 67). Each bad one is refused
with a one-line reason and the next is tried; the good one runs. The same boot is offered an
iSCSI root path (option 17) that it must only log: the recipe leaves iSCSI off."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console, machine_for, qemu_command
from builder.lab.servers import Dnsmasq, HttpServer, TlsFiles
from tests.conftest import require_qemu, require_root_netns, require_tool
from tests.transportlab import LAB_RECIPE, build_image, installer, make_ca, make_server_cert, subnet

pytestmark = [pytest.mark.lab, pytest.mark.network]

NAME = "onie.lab"


def recipe(ca: Path) -> str:
    return f"""extends: {LAB_RECIPE}
images:
  formats: []
discovery:
  methods: [install_url, dhcp_url, iscsi, http]
transports:
  https:
    ca: [{ca}]
"""


def test_https_boot(cache_env: dict[str, str], tmp_path: Path) -> None:
    require_root_netns()
    require_qemu("x86_64")
    require_tool("dnsmasq", "for the lab's DHCP and DNS server (dnsmasq-base)")
    net = subnet(2)
    server = f"{net}.1"
    certs = tmp_path / "certs"
    good = make_ca(certs, "lab ca")
    other = make_ca(certs, "other ca")
    tls = {
        8441: make_server_cert(certs, "wrong-ca", other, [server]),
        8442: make_server_cert(certs, "wrong-name", good, [f"{net}.99"]),
        8443: make_server_cert(certs, "expired", good, [server], days=(-60, -30)),
        8444: make_server_cert(certs, "good", good, [NAME, server]),
    }
    image = build_image(recipe(good[0]), tmp_path / "build", cache_env)
    manifest = json.loads((image / "manifest.json").read_text())
    www = tmp_path / "www"
    installer(www, "onie-installer", "HTTPS-INSTALLER ran", 0)
    urls = {port: f"https://{server}:{port}/onie-installer" for port in (8441, 8442, 8443)}
    good_url = f"https://{NAME}:8444/onie-installer"
    with NetNamespace.create("obhttps") as ns:
        ns.add_tap("tap0", f"{server}/24")
        Dnsmasq(ns, "tap0", server, tmp_path / "dnsmasq", hosts={NAME: server},
                options=[f"6,{server}", f"vi-encap:42623,1,{urls[8442]}", f"114,{urls[8443]}",
                         f"67,{good_url}", f"17,iscsi:{server}:::1:iqn.2024-01.lab.test:off"]).start()
        servers = {port: HttpServer(ns, www, tmp_path / f"httpd{port}", address=server, port=port,
                                    tls=TlsFiles(chain, key)).start()
                   for port, (chain, key) in tls.items()}
        cmdline = f"{manifest['kernel']['cmdline']} install_url={urls[8441]}"
        argv = qemu_command(machine_for("x86_64"), image / "vmlinuz", image / "initrd.img", cmdline,
                            tap="tap0")
        with Console.start(argv, tmp_path / "console.log", netns=ns.name) as console:
            for url, reason in ((urls[8441], "self-signed certificate in certificate chain"),
                                (urls[8442], "IP address mismatch"),
                                (urls[8443], "certificate has expired")):
                console.expect(rf"fail {re.escape(url)} certificate refused: {reason}\r?\n", timeout=180)
            console.expect(r"ignore iscsi root path from option-17 \S+: iSCSI is off", timeout=60)
            console.expect(rf"exec {re.escape(good_url)}", timeout=120)
            console.expect(r"HTTPS-INSTALLER ran", timeout=30)
            console.expect(r"reboot: Power down", timeout=60)
    got = servers[8444].requests()
    assert [r.path for r in got] == ["/onie-installer"]
    assert got[0].header("ONIE-MACHINE") == "qemu_x86_64"
    assert got[0].header("Host") == f"{NAME}:8444"
    for port in (8441, 8442, 8443):
        assert servers[port].requests() == []  # refused in the handshake: no request was sent
