"""iSCSI boot per RFC 4173 in QEMU against tgt and open-isns, in one boot that tries, in order:

1. netroot= (kernel command line): a CHAP target whose secret in the image is wrong: refused;
2. netroot=: a CHAP target whose LUN holds a signed installer from its first byte (raw);
3. the recipe's targetname-only root path with port 3261: resolved through iSNS (server from
   DHCP option 83), 3261 refused, iSNS's 3260 used (RFC 4173 section 6: try both ports);
4. DHCP option 17: a mutual-CHAP target with an MBR partition holding onie-installer.

Installers 2 and 3 exit 1 so discovery goes on; 4 exits 0 and the guest powers off. The CHAP
secrets must appear nowhere but in the initramfs: not on the console, not in the manifest.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console, machine_for, qemu_command
from builder.lab.servers import Dnsmasq
from tests.conftest import require_qemu, require_root_netns, require_tool
from tests.iscsilab import Isnsd, Tgt
from tests.transportlab import (
    LAB_RECIPE,
    build_image,
    ext2_image,
    installer,
    make_key,
    partitioned_image,
    raw_image,
    signed,
    subnet,
)

pytestmark = [pytest.mark.lab, pytest.mark.network]

IQN = "iqn.2024-01.lab.test"
CHAP_FILE = f"""# the lab's CHAP secrets: target user secret [target-user target-secret]
{IQN}:chap-wrong wrong not-the-real-one-1
{IQN}:chap onie chap-secret-0123
{IQN}:mutual mutual mutual-in-secret-1 tgt mutual-out-secret-2
"""
SECRETS = ("not-the-real-one-1", "chap-secret-0123", "mutual-in-secret-1", "mutual-out-secret-2",
           "the-real-secret-9")


def recipe(key: Path, chap: Path) -> str:
    return f"""extends: {LAB_RECIPE}
images:
  formats: []
discovery:
  methods: [iscsi]
trust:
  keys: [{key}]
transports:
  iscsi:
    enabled: true
    root_paths: ["iscsi:::3261:1:{IQN}:isns"]
    chap: {chap}
"""


def disks(tmp: Path, key_folder: Path) -> dict[str, Path]:
    raw = signed(installer(tmp / "raw", "raw.sh", "ISCSI-RAW-INSTALLER ran", 1), key_folder,
                 tmp / "raw" / "raw.signed")
    installer(tmp / "isns-fs", "onie-installer", "ISCSI-ISNS-INSTALLER ran", 1)
    installer(tmp / "mutual-fs", "onie-installer", "ISCSI-MUTUAL-INSTALLER ran", 0)
    return {
        "chap-wrong": raw_image(raw, tmp / "wrong.img"),
        "chap": raw_image(raw, tmp / "raw.img"),
        "isns": ext2_image(tmp / "isns-fs", tmp / "isns.img"),
        "mutual": partitioned_image(tmp / "mutual-fs", tmp / "mutual.img"),
    }


def test_iscsi_boot(cache_env: dict[str, str], tmp_path: Path) -> None:
    require_root_netns()
    require_qemu("x86_64")
    require_tool("tgtd", "for the lab's iSCSI target (tgt)")
    require_tool("isnsd", "for the lab's iSNS server (open-isns-server)")
    require_tool("dnsmasq", "for the lab's DHCP server (dnsmasq-base)")
    net = subnet(1)
    server = f"{net}.1"
    key = make_key(tmp_path / "keys")
    chap = tmp_path / "chap.txt"
    chap.write_text(CHAP_FILE)
    image = build_image(recipe(key, chap), tmp_path / "build", cache_env)
    manifest_text = (image / "manifest.json").read_text()
    manifest = json.loads(manifest_text)
    entry = next(f for f in manifest["initramfs"]["files"] if f["path"] == "/etc/onie/iscsi/chap")
    assert entry["mode"] == "0600" and entry.get("secret") is True and "sha256" not in entry
    images = disks(tmp_path / "disks", tmp_path / "keys")
    option17 = f"iscsi:{server}:::1:{IQN}:mutual"
    option83 = ":".join(["00"] * 10 + [f"{int(b):02x}" for b in server.split(".")])
    with NetNamespace.create("obisc") as ns:
        ns.add_tap("tap0", f"{server}/24")
        Dnsmasq(ns, "tap0", server, tmp_path / "dnsmasq",
                options=[f"17,{option17}", f"83,{option83}"]).start()
        isns = Isnsd(ns, tmp_path / "isns", server).start()
        tgt = Tgt(ns, tmp_path / "tgt", server).start()
        try:
            tgt.add_target(f"{IQN}:chap-wrong", images["chap-wrong"], chap=("wrong", "the-real-secret-9"))
            tgt.add_target(f"{IQN}:chap", images["chap"], chap=("onie", "chap-secret-0123"))
            tgt.add_target(f"{IQN}:isns", images["isns"])
            tgt.add_target(f"{IQN}:mutual", images["mutual"], chap=("mutual", "mutual-in-secret-1"),
                           mutual=("tgt", "mutual-out-secret-2"))
            isns.register_target(f"{IQN}:isns", server)
            cmdline = (f"{manifest['kernel']['cmdline']} netroot=iscsi:{server}:::1:{IQN}:chap-wrong"
                       f" netroot=iscsi:{server}:::1:{IQN}:chap serial_num=LAB0042")
            argv = qemu_command(machine_for("x86_64"), image / "vmlinuz", image / "initrd.img",
                                cmdline, tap="tap0")
            with Console.start(argv, tmp_path / "console.log", netns=ns.name) as console:
                console.expect(r"dhcp lease", timeout=120)
                console.expect(rf"login to {re.escape(server)} port 3260 refused: .*authoriz", timeout=60)
                console.expect(r"try iscsi:\S+:chap from netroot= initiator="
                               r"iqn\.2024-01\.org\.onie-builder:qemu-x86-64:lab0042", timeout=30)
                console.expect(r"\(raw, \d+ bytes\)", timeout=30)
                console.expect(r"ISCSI-RAW-INSTALLER ran", timeout=30)
                console.expect(r"installer exit status 1", timeout=30)
                console.expect(rf"isns {re.escape(server)} \S+:isns -> 1 portal", timeout=30)
                console.expect(r"login to \S+ port 3261 refused", timeout=30)
                console.expect(r"iscsi login \S+ port 3260", timeout=30)
                console.expect(r"ISCSI-ISNS-INSTALLER ran", timeout=30)
                console.expect(r"try iscsi:\S+:mutual from option-17", timeout=60)
                console.expect(r"ISCSI-MUTUAL-INSTALLER ran", timeout=30)
                console.expect(r"done \S+mutual\S* then poweroff", timeout=30)
                console.expect(r"reboot: Power down", timeout=60)
        finally:
            tgt.stop()
    log = (tmp_path / "console.log").read_text(errors="replace")
    for secret in SECRETS:
        assert secret not in log and secret not in manifest_text
