"""An iSCSI target that stops answering while the guest reads the installer (issue #16), in one
QEMU boot with short timeouts (stall 4 s).

DHCP option 17 points at a tgt target whose ext2 LUN holds a 24 MiB onie-installer; nftables in
the test's namespace drops every packet from port 3260 once 6 MiB have gone out (a quota), so
the copy stops at about a quarter, deterministically, while the TCP connection stays open.
The guest must set the session's replacement timeout and the SCSI command timeout to the stall
timeout, name the stall ("iSCSI read stalled 4 s at N %"), let the LUN go and go on: the next
method (TFTP, option 67) finds the good installer, which runs and powers QEMU off.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console, machine_for, qemu_command
from builder.lab.servers import Dnsmasq
from tests.conftest import require_qemu, require_root_netns, require_tool
from tests.iscsilab import Tgt
from tests.transportlab import LAB_RECIPE, build_image, ext2_image, installer, subnet

pytestmark = [pytest.mark.lab, pytest.mark.network]

IQN = "iqn.2024-01.lab.test:stall"
STALL = 4
BIG = 24 << 20
QUOTA_MIB = 6

RECIPE = f"""extends: {LAB_RECIPE}
images:
  formats: []
discovery:
  methods: [iscsi, tftp]
  timeouts:
    stall: {STALL}
    transfer: 120
  downloads:
    progress: 2
transports:
  iscsi:
    enabled: true
"""


def test_a_stalled_iscsi_read_is_named_and_discovery_goes_on(
        cache_env: dict[str, str], tmp_path: Path) -> None:
    require_root_netns()
    require_qemu("x86_64")
    require_tool("tgtd", "for the lab's iSCSI target (tgt)")
    require_tool("dnsmasq", "for the lab's DHCP and TFTP server (dnsmasq-base)")
    nft = require_tool("nft", "to cut the lab target's traffic mid-read (Debian package nftables)")
    net = subnet(23)
    server = f"{net}.1"
    image = build_image(RECIPE, tmp_path / "build", cache_env)
    big = installer(tmp_path / "fs", "onie-installer", "STALL-BIG-INSTALLER ran", 0)
    with big.open("a") as f:  # never runs: the copy never ends
        f.write("# " + "x" * BIG + "\n")
    disk = ext2_image(tmp_path / "fs", tmp_path / "big.img", 32)
    tftp = tmp_path / "tftp"
    installer(tftp, "inst", "STALL-NEXT-INSTALLER ran", 0)
    manifest = json.loads((image / "manifest.json").read_text())
    argv = qemu_command(machine_for("x86_64"), image / "vmlinuz", image / "initrd.img",
                        manifest["kernel"]["cmdline"], tap="tap0")
    rules = ("add table inet stall\n"
             "add chain inet stall out { type filter hook output priority 0; }\n"
             f"add rule inet stall out tcp sport 3260 quota over {QUOTA_MIB} mbytes counter drop\n")
    with NetNamespace.create("obist") as ns:
        ns.add_tap("tap0", f"{server}/24")
        Dnsmasq(ns, "tap0", server, tmp_path / "dnsmasq", tftp_root=tftp,
                options=[f"17,iscsi:{server}:::1:{IQN}"], extra=["--dhcp-boot=inst"]).start()
        tgt = Tgt(ns, tmp_path / "tgt", server).start()
        try:
            tgt.add_target(IQN, disk)
            subprocess.run(ns.exec_argv([nft, "-f", "-"]), input=rules, text=True, check=True)
            with Console.start(argv, tmp_path / "console.log", netns=ns.name) as console:
                console.expect(r"dhcp lease", timeout=120)
                console.expect(rf"iscsi disk sd\w+ recovery_tmo={STALL} timeout={STALL}\r?\n",
                               timeout=60)
                console.expect(r"try iscsi:\S+/onie-installer\r?\n", timeout=30)
                began = time.monotonic()
                stalled = console.expect(rf"fail iscsi:\S+/onie-installer iSCSI read stalled "
                                         rf"{STALL} s at (\d+) %\r?\n", timeout=90)
                named = time.monotonic() - began
                console.expect(r"method tftp", timeout=30)
                went_on = time.monotonic() - began
                console.expect(r"exec tftp://\S+/inst type=nos", timeout=60)
                console.expect(r"STALL-NEXT-INSTALLER ran", timeout=30)
                console.expect(r"reboot: Power down", timeout=60)
                transcript = console.transcript
            counters = subprocess.run(ns.exec_argv([nft, "list", "table", "inet", "stall"]),
                                      capture_output=True, text=True, check=True).stdout
        finally:
            subprocess.run(ns.exec_argv([nft, "delete", "table", "inet", "stall"]),
                           capture_output=True, check=False)
            tgt.stop()
    print(f"stall named {named:.1f} s after the copy began; next method {went_on:.1f} s after")
    assert 0 < int(stalled.group(1)) < 100, stalled.group(0)
    # The stalled reader cannot be waited for (its commands fail only after the replacement
    # timeout): discovery names the stall and goes on without it, the LUN let go meanwhile.
    assert went_on < 20, (named, went_on)
    assert "STALL-BIG-INSTALLER" not in transcript
    assert re.search(r"progress iscsi:\S+/onie-installer at \d+ %", transcript), transcript
    dropped = re.search(r"counter packets (\d+)", counters)
    assert dropped and int(dropped.group(1)) > 0, counters  # the cut was real
