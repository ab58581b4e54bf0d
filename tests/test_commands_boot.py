"""ONIE's commands in a booted guest (QEMU, TCG), in a network namespace of the test's own.

Rescue boot of the signed test image (tests/test_verify_guest.py's, trusting keys the tests
make) with a disk that has an ONIE-BOOT ext4 partition: /init mounts it at /mnt/onie-boot,
onie-boot-mode and onie-nos-mode change its grubenv, onie-support writes its tarball onto it,
onie-nos-install refuses an unsigned and a tampered installer from an HTTP server with
discovery's reasons and runs the signed one. The disk is read back on the host after QEMU
has powered off. A second, install-mode boot stops and restarts discovery.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console, clean_output, machine_for, qemu_command
from builder.lab.servers import Dnsmasq, HttpServer
from tests.conftest import require_qemu, require_root_netns, require_tool, run_cli
from tests.tamper import Keys, flip, make_keys, signed
from tests.test_commands_install import host_line, installer
from tests.test_verify_guest import signed_image

pytestmark = [pytest.mark.lab, pytest.mark.network]

__all__ = ["signed_image"]  # the fixture, shared with the verifier's boot tests

MIB = 1024 * 1024
PART_START, PART_SECTORS = 2048, 120832  # ONIE-BOOT: 59 MiB at 1 MiB on a 64 MiB disk
ONIE_BOOT_TYPE = "7412F7D5-A156-4B13-81DC-867174929325"
PROMPT = r"ONIE:\S* # "
LAB_RECIPE = Path(__file__).resolve().parent / "recipes" / "lab_x86_64.yaml"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


def make_onie_disk(folder: Path) -> Path:
    """A GPT disk whose partition 1 is ONIE-BOOT (GPT name and ext4 label) holding a grubenv
    with onie_mode=install, made without mounting (sfdisk, mke2fs -d)."""
    sfdisk = require_tool("sfdisk", "to partition the test disk (fdisk)")
    mke2fs = require_tool("mke2fs", "to make ONIE-BOOT's file system (e2fsprogs)")
    editenv = require_tool("grub-editenv", "to write ONIE-BOOT's grubenv (grub-common)")
    root = folder / "onie-boot"
    (root / "grub").mkdir(parents=True)
    grubenv = root / "grub" / "grubenv"
    subprocess.run([editenv, grubenv, "create"], check=True)
    subprocess.run([editenv, grubenv, "set", "onie_mode=install", "onie_test=kept"], check=True)
    disk = folder / "disk.img"
    with disk.open("wb") as f:
        f.truncate(64 * MIB)
    table = (f'label: gpt\nstart={PART_START}, size={PART_SECTORS}, type={ONIE_BOOT_TYPE},'
             ' name="ONIE-BOOT"\n')
    subprocess.run([sfdisk, "-q", disk], input=table.encode(), check=True, capture_output=True)
    subprocess.run([mke2fs, "-q", "-F", "-t", "ext4", "-L", "ONIE-BOOT", "-E",
                    f"offset={PART_START * 512}", "-d", root, disk, f"{PART_SECTORS // 2}k"],
                   check=True, capture_output=True)
    return disk


def read_partition(disk: Path, folder: Path) -> Path:
    """ONIE-BOOT's file system cut out of the disk, checked clean by e2fsck (no repair)."""
    part = folder / "onie-boot.ext4"
    with disk.open("rb") as f:
        f.seek(PART_START * 512)
        part.write_bytes(f.read(PART_SECTORS * 512))
    check = subprocess.run([require_tool("e2fsck", "to check ONIE-BOOT (e2fsprogs)"), "-fn", part],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    return part


def debugfs_cat(part: Path, path: str) -> bytes:
    debugfs = require_tool("debugfs", "to read ONIE-BOOT without mounting it (e2fsprogs)")
    return subprocess.run([debugfs, "-R", f"cat {path}", part], check=True,
                          capture_output=True).stdout


@dataclasses.dataclass
class Lab:
    """A namespace with tap0 at <net>.1, dnsmasq and an HTTP server serving ``www``."""

    ns: NetNamespace
    net: str
    tmp: Path
    web: HttpServer
    dhcp: Dnsmasq

    def boot(self, image: Path, append: str, disk: Path | None = None) -> Console:
        require_qemu("x86_64")
        machine = dataclasses.replace(machine_for("x86_64"), nic="virtio-net-pci,romfile=")
        drives = ["-drive", f"file={disk},if=virtio,format=raw"] if disk else []
        argv = qemu_command(machine, image / "vmlinuz", image / "initrd.img",
                            f"quiet {append}", tap="tap0", extra=drives)
        return Console.start(argv, log_path=self.tmp / "console.log", netns=self.ns.name)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_root_netns()
    require_tool("dnsmasq", "for the lab's DHCP server (dnsmasq-base)")
    net = f"10.200.{30 + os.getpid() % 200}"
    with NetNamespace.create("obc") as ns:
        ns.add_tap("tap0", f"{net}.1/24")
        (tmp_path / "www").mkdir()
        web = HttpServer(ns, tmp_path / "www", tmp_path / "httpd", address=f"{net}.1").start()
        dhcp = Dnsmasq(ns, "tap0", f"{net}.1", tmp_path / "dnsmasq").start()
        yield Lab(ns, net, tmp_path, web, dhcp)


def seen_or_expect(console: Console, since: int, pattern: str, timeout: float) -> None:
    """A discovery line already on the console since offset ``since`` of its transcript (it
    may have come while a command ran), else the next one."""
    if not re.search(pattern, console.transcript[since:]):
        console.expect(pattern, timeout)


def pid_of_discovery(console: Console) -> int:
    return int(console.run("cat /run/onie/discovery.pid"))


def test_rescue_boot_onie_boot_modes_support_and_nos_install(
        signed_image: Path, keys: Keys, lab: Lab) -> None:
    www = lab.tmp / "www"
    good = signed(installer("good"), keys.b)
    (www / "unsigned").write_bytes(installer("unsigned"))
    (www / "tampered").write_bytes(flip(signed(installer("tampered"), keys.a), 20))
    (www / "good").write_bytes(good)
    disk = make_onie_disk(lab.tmp / "disk")
    with lab.boot(signed_image, "boot_reason=rescue", disk) as console:
        console.expect(r"onie: ONIE-BOOT \(/dev/vda1, ext4\) mounted at /mnt/onie-boot", 180)
        console.expect(PROMPT, 60)
        assert console.run("grep ' /mnt/onie-boot ' /proc/mounts").startswith(
            "/dev/vda1 /mnt/onie-boot ext4 rw,")
        assert console.run("onie-boot-mode") == "Default boot: ONIE mode: install"
        assert console.run("onie-nos-mode -s && onie-nos-mode -v") == "Current NOS mode: yes"
        assert console.run("onie-boot-mode -v -o rescue") == "Setting ONIE mode to: rescue"
        assert console.run("onie-boot-mode -l") == "Default boot: ONIE mode: rescue"
        assert console.run("onie-support", timeout=120) == (
            "Success: Support tarball created: /tmp/onie-support-qemu_x86_64.tar.bz2")
        console.run("cp /tmp/onie-support-qemu_x86_64.tar.bz2 /mnt/onie-boot/ && "
                    "umount /mnt/onie-boot", timeout=60)
        for name in ("unsigned", "tampered"):
            status, output = console.run_status(f"onie-nos-install {lab.web.url(name)}", 120)
            assert status == 1
            refusal = host_line(www / name, keys, "install")
            assert refusal in clean_output(output).splitlines(), output
        console.send(f"onie-nos-install {lab.web.url('good')}\n")
        console.expect(r"TEST-RAN good mode=rescue url=\S+", 120)
        console.expect(rf"onie-discovery: done {re.escape(lab.web.url('good'))} then poweroff", 60)
        console.expect(r"reboot: Power down", 60)
        assert console.proc.wait(30) == 0
        text = clean_output(console.transcript)
    assert "TEST-RAN unsigned" not in text and "TEST-RAN tampered" not in text
    requests = lab.web.requests()
    assert [(r.path, r.header("ONIE-OPERATION")) for r in requests] == [
        ("/unsigned", "os-install"), ("/tampered", "os-install"), ("/good", "os-install")]
    # What the commands left on the disk, read on the host.
    part = read_partition(disk, lab.tmp)
    env = debugfs_cat(part, "/grub/grubenv").decode()
    assert sorted(re.findall(r"^(\w+)=(.*)$", env, re.M)) == [
        ("onie_mode", "rescue"), ("onie_nos_mode", "yes"), ("onie_test", "kept")]
    assert len(env) == 1024  # still a GRUB environment block
    tarball = debugfs_cat(part, "/onie-support-qemu_x86_64.tar.bz2")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:bz2") as tar:
        members = {m.name: m for m in tar.getmembers()}

        def read(name: str) -> str:
            f = tar.extractfile(members[f"onie-support-qemu_x86_64/{name}"])
            assert f is not None
            return f.read().decode()

        assert {"kernel_cmdline.txt", "dmesg.txt", "machine.conf", "mounts.txt", "interfaces.txt",
                "runtime-process.txt", "runtime-set-env.txt", "log/onie-discovery.log"} <= {
            name.split("/", 1)[1] for name in members if "/" in name}
        assert "boot_reason=rescue" in read("kernel_cmdline.txt")
        assert "onie_platform=x86_64-qemu_x86_64-r0" in read("machine.conf")
        assert "Linux version" in read("dmesg.txt")
        assert "/dev/vda1 /mnt/onie-boot ext4" in read("mounts.txt")
        assert "onie-discovery: off mode=rescue" in read("log/onie-discovery.log")


@pytest.fixture(scope="module")
def lab_image(tmp_path_factory: pytest.TempPathFactory, cache_env: dict[str, str]) -> Path:
    out = tmp_path_factory.mktemp("lab-out")
    proc = run_cli("build", str(LAB_RECIPE), "--out", str(out), "--json", "--no-lock", env=cache_env)
    return Path(json.loads(proc.stdout)["result"][0]["out"])


def test_discovery_stop_and_start(lab_image: Path, lab: Lab) -> None:
    """Discovery searching (nothing to find): stopped, it and its session are gone and it says
    nothing more; started again, it begins a new round; onie-stop stops it too."""
    with lab.boot(lab_image, "") as console:
        console.expect(r"onie-discovery: round 1\r?\n", 180)
        pid = pid_of_discovery(console)
        assert console.run("onie-discovery-stop", 30) == "Stopping: onie-discovery... done."
        console.run("test ! -e /run/onie/discovery.pid")
        assert console.run(f"test -d /proc/{pid} || echo gone") == "gone"
        assert console.run("ps -o pid,args | grep -e onie-discover[y] -e udhcp[c]",
                           check=False) == ""
        # Stopped means silent: a guest-side window longer than the image's backoff limit (4 s).
        quiet_from = len(console.transcript)
        assert console.run("sleep 6; echo window-over", 30) == "window-over"
        assert "onie-discovery:" not in console.transcript[quiet_from:]
        started_at = len(console.transcript)
        assert console.run("onie-discovery-start", 30) == "Starting: onie-discovery... done."
        seen_or_expect(console, started_at,
                       r"onie-discovery: start platform=x86_64-qemu_x86_64-r0 mode=install ", 60)
        seen_or_expect(console, started_at, r"onie-discovery: round 1\r?\n", 120)
        new = pid_of_discovery(console)
        assert new != pid
        assert console.run("onie-stop", 30) == "Stopping: onie-discovery... done."
        assert console.run(f"test -d /proc/{new} || echo gone") == "gone"
