"""IPv6 in QEMU, with no DHCPv4 at all: dnsmasq sends router advertisements (SLAAC, O flag)
and answers DHCPv6 with option 59 (RFC 5970); discovery first fetches that URL over IPv6 (the
installer there exits 1), then sweeps its IPv6 link-local neighbours and runs the installer
the server's link-local address serves under a default file name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console, machine_for, qemu_command
from builder.lab.servers import Dnsmasq, HttpServer
from tests.conftest import require_qemu, require_root_netns, require_tool
from tests.transportlab import LAB_RECIPE, build_image, installer, subnet

pytestmark = [pytest.mark.lab, pytest.mark.network]


def recipe() -> str:
    return f"""extends: {LAB_RECIPE}
images:
  formats: []
discovery:
  methods: [ipv6]
transports:
  ipv6:
    dhcpv6: true
    wait: 5
"""


def test_ipv6_boot(cache_env: dict[str, str], tmp_path: Path) -> None:
    require_root_netns()
    require_qemu("x86_64")
    require_tool("dnsmasq", "for the lab's router advertisements and DHCPv6 (dnsmasq-base)")
    net = subnet(3)
    v6 = f"fd00:200:{net.split('.')[-1]}::"
    image = build_image(recipe(), tmp_path / "build", cache_env)
    manifest = json.loads((image / "manifest.json").read_text())
    assert any(f["path"] == "/usr/sbin/dhcpcd" for f in manifest["initramfs"]["files"])
    www = tmp_path / "www"
    installer(www, "v6-installer", "OPTION-59-INSTALLER ran", 1)
    installer(www, "onie-installer", "LINK-LOCAL-INSTALLER ran", 0)
    url = f"http://[{v6}1]/v6-installer"
    with NetNamespace.create("obipv6") as ns:
        ns.add_tap("tap0", f"{net}.1/24")
        ns.ip("-6", "addr", "add", f"{v6}1/64", "dev", "tap0", "nodad")
        Dnsmasq(ns, "tap0", f"{net}.1", tmp_path / "dnsmasq",
                options=[f"option6:bootfile-url,{url}"],
                extra=["--enable-ra", f"--dhcp-range={v6},ra-stateless,64"]).start()
        web = HttpServer(ns, www, tmp_path / "httpd", address="::", port=80).start()
        argv = qemu_command(machine_for("x86_64"), image / "vmlinuz", image / "initrd.img",
                            manifest["kernel"]["cmdline"], tap="tap0")
        with Console.start(argv, tmp_path / "console.log", netns=ns.name) as console:
            console.expect(rf"dhcpv6 option 59 on eth0: {re.escape(url)}", timeout=180)
            console.expect(r"OPTION-59-INSTALLER ran", timeout=60)
            found = console.expect(r"found http://\[(fe80::[0-9a-f:]+)%25eth0\]/(\S+)\r?\n", timeout=90)
            console.expect(r"LINK-LOCAL-INSTALLER ran", timeout=30)
            console.expect(r"reboot: Power down", timeout=60)
        # The tap's link-local address exists once QEMU holds the tap (carrier up).
        link_local = re.search(r"inet6 (fe80::[0-9a-f:]+)/64",
                               ns.ip("-6", "addr", "show", "dev", "tap0"))
    assert link_local is not None and found.group(1) == link_local.group(1)
    assert found.group(2) in ("onie-installer-x86_64-qemu_x86_64-r0", "onie-installer")
    clients = {r.path: r.client for r in web.requests() if r.status == 200}
    assert ":" in clients["/v6-installer"]  # fetched over IPv6 (no IPv4 lease in this boot)
    assert clients["/onie-installer"].startswith("fe80:")
