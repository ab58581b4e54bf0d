"""`boot`: run a built image folder in QEMU, from its kernel, its ISO, its UKI or a disk."""

from __future__ import annotations

import json
import shlex
import tempfile
from pathlib import Path

import click

from builder.cli.common import handle_errors
from builder.errors import BuildError

ESP_NAME = "EFI/BOOT/BOOTX64.EFI"  # the removable-media path OVMF boots without a boot entry


def say(message: str) -> None:
    click.echo(f"boot: {message}", err=True)


@click.command()
@click.argument("image", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--append", default="", help="Extra kernel command-line arguments (kernel boots).")
@click.option("--iso", is_flag=True, help="Boot the image's hybrid ISO as a CD (BIOS; --uefi: OVMF).")
@click.option("--uki", is_flag=True,
              help="Boot the image's UKI under OVMF, from a small EFI system partition.")
@click.option("--disk", "disks", multiple=True,
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Attach a disk image (raw, or qcow2 by its name) as virtio; repeatable.")
@click.option("--from-disk", is_flag=True,
              help="Boot from the first --disk (BIOS; --uefi: OVMF), e.g. a NOS installed there.")
@click.option("--uefi", is_flag=True, help="With --iso or --from-disk: OVMF instead of BIOS.")
@click.option("--netns", is_flag=True,
              help="Boot in a network namespace of its own with a DHCP server (dnsmasq) and an "
                   "HTTP server on its address; needs root.")
@click.option("--serve", type=click.Path(path_type=Path, exists=True, file_okay=False),
              default=None, help="With --netns: the folder the HTTP server serves (discovery "
                                 "finds an installer there under ONIE's default names).")
@click.option("--installer", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help="With --netns: serve this file as `onie-installer`, named by "
                                 "DHCP option 114.")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto",
              show_default=True, help="KVM when it works here (auto tries it), else TCG.")
@click.option("--dry-run", is_flag=True, help="Print the QEMU command instead of running it.")
@handle_errors
def boot(image: Path, append: str, iso: bool, uki: bool, disks: tuple[Path, ...],
         from_disk: bool, uefi: bool, netns: bool, serve: Path | None, installer: Path | None,
         accel: str, dry_run: bool) -> None:
    """Boot a built IMAGE folder (out/<platform>) in QEMU with the serial console on stdio.

    By default the kernel and initramfs are booted directly; --iso, --uki and --from-disk go
    through firmware instead. KVM is used when it works here (the choice is printed), else
    TCG. Leave QEMU with Ctrl-A X. On a terminal, console lines that arrive while you type a
    command (discovery's, the kernel's) are printed above the prompt, which is drawn again
    with what you typed. QEMU's user-mode network is attached unless --netns: then
    the guest gets a quick local install test bed (DHCP plus an HTTP server serving --serve
    DIR or --installer), all inside a namespace that is deleted when QEMU exits.
    """
    from builder.lab import launch
    from builder.lab.qemu import find_qemu, machine_for, qemu_command

    check_choices(append, iso, uki, disks, from_disk, uefi, netns, serve, installer)
    try:
        manifest = json.loads((image / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise BuildError(f"{image}: not a built image folder ({exc})") from None
    arch = manifest["arch"]
    base = machine_for(arch)
    kernel, initrd = image / "vmlinuz", image / "initrd.img"
    find_qemu(arch)
    chosen = launch.choose_accel(lambda: launch.probe_kvm(arch, base, kernel), accel)
    say(f"accelerator {chosen.name} ({chosen.reason})")
    machine = launch.with_accel(base, chosen)
    cmdline = " ".join(x for x in (manifest["kernel"]["cmdline"], append) if x)
    with tempfile.TemporaryDirectory(prefix="onie-boot-") as tmp:
        folder = Path(tmp)
        extra = [arg for n, disk in enumerate(disks) for arg in launch.disk_args(disk.resolve(), n)]
        if iso or uki or from_disk:
            firmware = boot_source(image, arch, folder, iso=iso, uki=uki, uefi=uefi)
            if from_disk:  # the first disk is the boot disk: BIOS and OVMF try it first
                extra[extra.index("virtio-blk-pci,drive=disk0")] += ",bootindex=0"

            def argv_for(tap: str | None) -> list[str]:
                return launch.firmware_command(machine, firmware, tap=tap, extra=extra)
        else:
            def argv_for(tap: str | None) -> list[str]:
                return qemu_command(machine, kernel, initrd, cmdline, tap=tap, extra=extra)

        if dry_run:
            from builder.lab.testbed import TAP

            click.echo(shlex.join(argv_for(TAP if netns else None)))
            return
        if netns:
            from builder.lab.testbed import run_testbed

            raise SystemExit(run_testbed(argv_for, serve, installer, say))
        from builder.lab.terminal import run_guest
        from builder.lab.testbed import Stopped, stop_on_signals

        with stop_on_signals():
            try:
                code = run_guest(argv_for(None))
            except (Stopped, KeyboardInterrupt) as exc:  # run_guest has stopped QEMU
                code = exc.exit_code if isinstance(exc, Stopped) else 130
        raise SystemExit(code)


def check_choices(append: str, iso: bool, uki: bool, disks: tuple[Path, ...], from_disk: bool,
                  uefi: bool, netns: bool, serve: Path | None, installer: Path | None) -> None:
    """Refuse option combinations that cannot mean anything, before any work."""
    if sum((iso, uki, from_disk)) > 1:
        raise BuildError("--iso, --uki and --from-disk each choose what boots: give one")
    if append and (iso or uki or from_disk):
        raise BuildError("--append is for kernel boots: the ISO, UKI and disk bring their own "
                         "command line")
    if from_disk and not disks:
        raise BuildError("--from-disk needs a --disk to boot from")
    if uefi and not (iso or from_disk):
        raise BuildError("--uefi is for --iso and --from-disk (--uki is always UEFI)")
    if (serve or installer) and not netns:
        raise BuildError("--serve and --installer need --netns (the test bed that serves them)")
    if serve and installer:
        raise BuildError("--serve DIR or --installer FILE, not both (put the installer in DIR "
                         "under one of ONIE's default names)")


def boot_source(image: Path, arch: str, folder: Path, *, iso: bool, uki: bool,
                uefi: bool) -> list[str]:
    """The firmware and the medium it boots: the ISO as a CD, the UKI on an ESP, or a disk."""
    from builder.lab import launch

    if arch != "x86_64" and (iso or uki or uefi):
        raise BuildError(f"--iso, --uki and --uefi boot x86_64 images; this one is {arch}")
    firmware = launch.ovmf_args(folder) if (uki or uefi) else []
    if iso:
        found = sorted(image.glob("*.iso"))
        if not found:
            raise BuildError(f"{image}: no ISO here (the recipe's images do not include iso)")
        return [*firmware, "-cdrom", str(found[0].resolve())]
    if uki:
        from builder.images.fat import make_vfat

        efi = image / "uki" / "onie.efi"
        if not efi.is_file():
            raise BuildError(f"{efi}: no UKI here (the recipe's images do not include uki)")
        esp = make_vfat(folder / "esp.img", {ESP_NAME: efi}, "ONIE-UKI", "onie-boot-uki", 0)
        return [*firmware, "-drive", f"if=none,id=esp,file={esp},format=raw",
                "-device", "virtio-blk-pci,drive=esp,bootindex=0"]
    return firmware
