"""Boot the built default image in QEMU (TCG) and talk to it over the serial console."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.lab.qemu import Console, machine_for, qemu_command
from tests.conftest import require_qemu

pytestmark = [pytest.mark.lab, pytest.mark.network]


def boot(image: Path, log: Path) -> Console:
    manifest = json.loads((image / "manifest.json").read_text())
    require_qemu(manifest["arch"])
    argv = qemu_command(machine_for(manifest["arch"]), image / "vmlinuz", image / "initrd.img",
                        # Rescue mode: discovery stays quiet while the test talks to the shell.
                        manifest["kernel"]["cmdline"] + " boot_reason=rescue")
    return Console.start(argv, log_path=log)


def test_qemu_x86_64_boots_to_a_shell(built: Callable[[str], Path], tmp_path: Path) -> None:
    image = built("qemu_x86_64")
    with boot(image, tmp_path / "console.log") as console:
        banner = console.expect(r"ONIE environment (\S+) for (\S+)\r?\n", timeout=120)
        assert banner.group(2) == "x86_64-qemu_x86_64-r0"  # read from /etc/machine.conf by /init
        console.expect(r"ONIE:/ # ", timeout=30)
        # The platform string the shell reads back from /etc/machine.conf.
        assert console.run(". /etc/machine.conf; echo $onie_platform") == "x86_64-qemu_x86_64-r0"
        assert console.run("echo $((6 * 7))") == "42"
        # e1000 is a module in Debian's kernel: /init loaded it with modprobe via our modules.dep.
        assert re.search(r"^e1000\s", console.run("lsmod"), re.M)
        assert console.run("basename $(readlink /sys/class/net/eth0/device/driver)") == "e1000"
        # modprobe resolves dependencies from the generated modules.dep.
        chain = console.run("modprobe -D virtio_net | sed 's@.*/@@'").split()
        assert set(chain) == {"failover.ko", "net_failover.ko", "virtio.ko", "virtio_ring.ko",
                              "virtio_net.ko"}
        assert chain[-1] == "virtio_net.ko"
        assert console.run("uname -m") == "x86_64"
