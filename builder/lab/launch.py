"""How ``onie-builder boot`` starts a guest: KVM when it works here, else TCG, and the QEMU
command line for each way in (kernel and initrd, the hybrid ISO, the UKI under OVMF, a disk).

KVM is chosen only after a trial: ``/dev/kvm`` must answer ``KVM_GET_API_VERSION`` and QEMU
must then start the image's own kernel with ``-accel kvm -cpu host`` until it prints its
banner. A device node that opens is not enough: on some machines (nested or sandboxed
virtualisation) it does, and QEMU then aborts on a model-specific register or the guest hangs.
"""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from builder.errors import BuildError
from builder.lab.qemu import Console, LabError, QemuMachine, net_args

KVM_DEVICE = Path("/dev/kvm")
KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO, 0x00)
KVM_API_VERSION = 12  # stable since Linux 2.6.22
KVM_TRIAL_TIMEOUT = 20.0  # seconds for the kernel banner under KVM (well under 1 s when it works)
HOST_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# OVMF tries PXE over IPv4 and IPv6 (about a minute each) before a disk: off (LAB.md).
OVMF_NO_NETBOOT = (
    "-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no",
    "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no",
    "-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=no",
)  # fmt: skip


@dataclass(frozen=True)
class Accel:
    """The accelerator a boot uses and why it was chosen."""

    name: str  # "kvm" or "tcg"
    reason: str


def check_kvm_device(device: Path = KVM_DEVICE) -> str | None:
    """None when ``device`` opens read-write and speaks KVM's API, else why not."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"{device}: {exc.strerror}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as exc:
        return f"{device}: KVM_GET_API_VERSION failed: {exc.strerror}"
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return f"{device}: KVM API version {version}, expected {KVM_API_VERSION}"
    return None


def kvm_machine(machine: QemuMachine) -> QemuMachine:
    """``machine`` with TCG swapped for KVM and the host's CPU model."""
    args = list(machine.args)
    args[args.index("tcg")] = "kvm"
    return replace(machine, args=(*args, "-cpu", "host"))


def try_kvm(machine: QemuMachine, kernel: Path, timeout: float = KVM_TRIAL_TIMEOUT) -> str | None:
    """Start ``kernel`` (no initrd) under ``-accel kvm``; None when its banner comes, else why not."""
    argv = [machine.binary, *kvm_machine(machine).args, "-nographic", "-no-reboot",
            "-serial", "mon:stdio", "-nic", "none", "-kernel", os.fspath(kernel),
            "-append", f"console={machine.console},115200 panic=-1"]
    try:
        with Console.start(argv) as trial:
            trial.expect(r"Linux version \S+", timeout)
    except LabError as exc:
        lines = [line for line in exc.message.splitlines()[1:] if line.strip()]
        return "QEMU with -accel kvm did not start the kernel: " + (
            lines[-1] if lines else exc.message.splitlines()[0])
    return None


def probe_kvm(arch: str, machine: QemuMachine, kernel: Path,
              device: Path = KVM_DEVICE) -> str | None:
    """None when KVM can boot ``kernel`` here, else the reason it cannot."""
    host = HOST_ARCH.get(platform.machine(), platform.machine())
    if host != arch:
        return f"the guest is {arch} and this host {host}"
    return check_kvm_device(device) or try_kvm(machine, kernel)


def choose_accel(probe: Callable[[], str | None], wanted: str = "auto") -> Accel:
    """KVM when ``probe`` finds it works (or ``wanted`` is "kvm": then it must), else TCG."""
    if wanted == "tcg":
        return Accel("tcg", "asked for with --accel tcg")
    why_not = probe()
    if why_not is None:
        return Accel("kvm", "KVM works here")
    if wanted == "kvm":
        raise BuildError(f"--accel kvm: KVM does not work here: {why_not}")
    return Accel("tcg", f"KVM does not work here: {why_not}")


def with_accel(machine: QemuMachine, accel: Accel) -> QemuMachine:
    return kvm_machine(machine) if accel.name == "kvm" else machine


def firmware_command(machine: QemuMachine, boot: Sequence[str], *, netdev: str | None = "user",
                     tap: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The argv of a guest started by its firmware from ``boot`` (a CD, a disk, OVMF...)."""
    net = net_args(machine, netdev, tap)
    return [machine.binary, *machine.args, "-nographic", "-no-reboot", "-serial", "mon:stdio",
            *boot, *net, *extra]


def ovmf_args(folder: Path) -> list[str]:
    """OVMF (4 MiB build) with a copy of its variable store in ``folder``, no network boot."""
    for path in (OVMF_CODE, OVMF_VARS):
        if not path.is_file():
            raise BuildError(f"{path} is missing: UEFI boots need OVMF (Debian package ovmf)")
    store = folder / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, store)
    return ["-m", "1024",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={store}", *OVMF_NO_NETBOOT]


def disk_args(disk: Path, index: int) -> list[str]:
    """A virtio disk (raw, or qcow2 by its name), with discards passed to the file."""
    fmt = "qcow2" if disk.suffix == ".qcow2" else "raw"
    return ["-drive", f"if=none,id=disk{index},file={disk},format={fmt},discard=unmap",
            "-device", f"virtio-blk-pci,drive=disk{index}"]
