"""SSH into a booted environment (QEMU, TCG) from the host's OpenSSH client, inside a network
namespace of the test's own (issue #18, item 1).

One image with one operator key, booted twice in rescue mode from the same disk (ONIE-BOOT, as
tests/test_commands_boot.py makes it): the operator's key runs ``onie-sysinfo -a`` and sees the
banner; a password login, a keyboard-interactive one and an unknown key are refused (the server
offers publickey alone, and its log shows no other login); telnet is closed; the host key printed on the
console, recorded by ssh on the first boot, is on ONIE-BOOT and is the same on the second.
The same image booted with no disk at all makes its host key in RAM, says so, and takes logins.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console, machine_for, qemu_command
from tests.conftest import ROOT, require_qemu, require_root_netns, require_tool, run_cli
from tests.test_commands_boot import PROMPT, debugfs_cat, make_onie_disk, read_partition

pytestmark = [pytest.mark.lab, pytest.mark.network]

LAB_RECIPE = ROOT / "tests" / "recipes" / "lab_x86_64.yaml"
KEY_LINE = re.compile(r"onie: ssh: listening on port 22, key-only; host key \((\S+)\): "
                      r"(ssh-ed25519 [A-Za-z0-9+/=]+)\r?\n")
BANNER = "ONIE environment 2026.11 on x86_64-qemu_x86_64-r0 (onie-builder "
REFUSED = "Permission denied (publickey)."


@dataclasses.dataclass(frozen=True)
class Keys:
    operator: Path  # in the image's authorized_keys
    stranger: Path  # not


def make_key(path: Path) -> Path:
    keygen = require_tool("ssh-keygen", "to make the test's SSH keys (openssh-client)")
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", path],
                   check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("ssh-keys")
    return Keys(make_key(folder / "operator"), make_key(folder / "stranger"))


@pytest.fixture(scope="module")
def ssh_image(tmp_path_factory: pytest.TempPathFactory, keys: Keys,
              cache_env: dict[str, str]) -> Path:
    """The lab platform with the operator's public key authorized (kernel and initrd only)."""
    tmp = tmp_path_factory.mktemp("ssh-image")
    recipe = tmp / "ssh.yaml"
    recipe.write_text(f"extends: {LAB_RECIPE}\n" + yaml.safe_dump(
        {"ssh": {"authorized_keys": [str(keys.operator.with_suffix(".pub"))]}}))
    proc = run_cli("build", "--allow-untrusted",
                   str(recipe), "--out", str(tmp / "out"), "--json", "--no-lock",
                   "--no-images", env=cache_env)
    return Path(json.loads(proc.stdout)["result"][0]["out"])


class Client:
    """The host's ssh, run inside the namespace, never prompting (BatchMode)."""

    def __init__(self, ns: NetNamespace, host: str, known_hosts: Path) -> None:
        self.ssh = require_tool("ssh", "to log into the guest (openssh-client)")
        self.ns = ns
        self.host = host
        self.known_hosts = known_hosts

    def run(self, command: str, key: Path | None, *options: str,
            strict: str = "yes") -> subprocess.CompletedProcess[str]:
        argv = [self.ssh, "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o",
                f"StrictHostKeyChecking={strict}", "-o", "IdentitiesOnly=yes",
                *(("-i", str(key)) if key else ()), *options, f"root@{self.host}", command]
        return subprocess.run(self.ns.exec_argv(argv), capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)


def boot(image: Path, disk: Path | None, ns: NetNamespace, log: Path) -> Console:
    require_qemu("x86_64")
    machine = dataclasses.replace(machine_for("x86_64"), nic="virtio-net-pci,romfile=")
    drive = ["-drive", f"file={disk},if=virtio,format=raw"] if disk else []
    argv = qemu_command(machine, image / "vmlinuz", image / "initrd.img",
                        "quiet boot_reason=rescue", tap="tap0", extra=drive)
    return Console.start(argv, log_path=log, netns=ns.name)


def telnet_open(ns: NetNamespace, host: str) -> bool:
    """A TCP connection to port 23 is accepted (bash's /dev/tcp, no telnet client needed)."""
    bash = require_tool("bash", "to try the guest's telnet port")
    probe = subprocess.run(ns.exec_argv([bash, "-c", f"exec 3<>/dev/tcp/{host}/23"]),
                           capture_output=True, timeout=60)
    return probe.returncode == 0


def test_ssh_key_only_and_host_key_kept_on_onie_boot(ssh_image: Path, keys: Keys,
                                                      tmp_path: Path) -> None:
    require_root_netns()
    net = f"10.200.{30 + (os.getpid() + 97) % 200}"
    guest = f"{net}.2"
    disk = make_onie_disk(tmp_path / "disk")
    known = tmp_path / "known_hosts"
    host_keys: list[str] = []
    with NetNamespace.create("obssh") as ns:
        ns.add_tap("tap0", f"{net}.1/24")
        client = Client(ns, guest, known)
        for n in (1, 2):
            with boot(ssh_image, disk, ns, tmp_path / f"console-{n}.log") as console:
                line = console.expect(KEY_LINE, 180)
                assert line.group(1) == "ONIE-BOOT"
                host_keys.append(line.group(2))
                console.expect(PROMPT, 60)
                console.run(f"ip addr add {guest}/24 dev eth0 && ip link set eth0 up")
                if n == 1:
                    # The first login records the host key; the second boot must match it.
                    ok = client.run("onie-sysinfo -a", keys.operator, strict="accept-new")
                    assert ok.returncode == 0, ok.stderr
                    assert ok.stdout.strip() == console.run("onie-sysinfo -a").strip()
                    assert BANNER in ok.stderr
                    for method in ("password", "keyboard-interactive"):
                        refused = client.run("true", None, "-o", f"PreferredAuthentications={method}",
                                             "-o", "PubkeyAuthentication=no")
                        assert refused.returncode == 255 and REFUSED in refused.stderr, refused.stderr
                    stranger = client.run("true", keys.stranger)
                    assert stranger.returncode == 255 and REFUSED in stranger.stderr, stranger.stderr
                    assert not telnet_open(ns, guest)
                    log = console.run("cat /var/log/dropbear.log")
                    # The server's side: one login (the operator's), three ended before auth.
                    assert log.count("auth succeeded") == 1, log
                    assert "Pubkey auth succeeded for 'root' with ssh-ed25519 key" in log, log
                    assert log.count("Exit before auth") == 3, log
                else:
                    # StrictHostKeyChecking=yes: a changed host key fails the login.
                    again = client.run("onie-sysinfo -p", keys.operator)
                    assert again.returncode == 0, again.stderr
                    assert again.stdout.strip() == "x86_64-qemu_x86_64-r0"
                console.run("sync")
    assert host_keys[0] == host_keys[1]
    recorded = known.read_text().split()
    assert recorded == [guest, *host_keys[0].split()]
    part = read_partition(disk, tmp_path)
    assert debugfs_cat(part, "/onie/config/ssh/dropbear_ed25519_host_key")


def test_ssh_without_a_disk_keeps_the_host_key_in_ram(ssh_image: Path, keys: Keys,
                                                       tmp_path: Path) -> None:
    require_root_netns()
    net = f"10.200.{30 + (os.getpid() + 131) % 200}"
    guest = f"{net}.2"
    with NetNamespace.create("obsshram") as ns:
        ns.add_tap("tap0", f"{net}.1/24")
        client = Client(ns, guest, tmp_path / "known_hosts")
        with boot(ssh_image, None, ns, tmp_path / "console.log") as console:
            line = console.expect(KEY_LINE, 180)
            console.expect(r"onie: ssh: no ONIE-BOOT mounted read-write: the host key is in RAM "
                           r"only \(/run/onie/ssh\), on no disk, and new at every boot", 30)
            console.expect(PROMPT, 60)
            console.run(f"ip addr add {guest}/24 dev eth0 && ip link set eth0 up")
            ok = client.run("onie-sysinfo -a", keys.operator, strict="accept-new")
            assert ok.returncode == 0, ok.stderr
            assert ok.stdout.strip() == console.run("onie-sysinfo -a").strip()
            # The key's folder is on a RAM file system; no block device is there to write to
            # and none is mounted.
            fs = console.run("stat -f -c %T /run/onie/ssh")
            assert re.search(r"\b(tmpfs|ramfs)\b", fs), fs
            assert console.run("ls /sys/block | grep -Ev '^(loop|ram)' || true") == ""
            assert "/dev/" not in console.run("cut -d' ' -f1 /proc/mounts")
            public = console.run("dropbearkey -y -f /run/onie/ssh/dropbear_ed25519_host_key")
    assert line.group(1) == "RAM"
    assert line.group(2) in public
    assert (tmp_path / "known_hosts").read_text().split()[1:] == line.group(2).split()
