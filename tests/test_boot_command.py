"""`onie-builder boot`: the accelerator choice (unit), then one short boot per way in, each
waiting on a console marker: the hybrid ISO, the UKI under OVMF, an attached disk, and the
network namespace test bed serving a folder; and on a terminal (a pty), a command typed while
discovery prints. The image is the session's default build."""

from __future__ import annotations

import re
import sys
import termios
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.lab import launch
from builder.lab.qemu import Console, machine_for
from builder.lab.testbed import SERVER
from builder.process import run
from tests.conftest import require_qemu, require_root_netns, require_tool
from tests.imagelab import OVMF_DIR, expect_environment, require_file
from tests.ptyterm import Pty, screen

PLATFORM = "x86_64-qemu_x86_64-r0"
PROMPT = r"ONIE:/ # "

# --- unit: KVM or TCG --------------------------------------------------------------------------


def test_kvm_is_chosen_when_the_probe_finds_it_works() -> None:
    assert launch.choose_accel(lambda: None) == launch.Accel("kvm", "KVM works here")
    assert launch.choose_accel(lambda: None, "kvm").name == "kvm"


def test_tcg_is_chosen_when_the_probe_says_why_not() -> None:
    assert launch.choose_accel(lambda: "/dev/kvm: No such file or directory") == launch.Accel(
        "tcg", "KVM does not work here: /dev/kvm: No such file or directory")
    with pytest.raises(BuildError, match=r"^--accel kvm: KVM does not work here: nope$"):
        launch.choose_accel(lambda: "nope", "kvm")


def test_tcg_asked_for_skips_the_probe() -> None:
    def probe() -> str | None:
        raise AssertionError("probed")

    assert launch.choose_accel(probe, "tcg") == launch.Accel("tcg", "asked for with --accel tcg")


def test_kvm_device_checks(tmp_path: Path) -> None:
    assert launch.check_kvm_device(tmp_path / "kvm") == f"{tmp_path / 'kvm'}: No such file or directory"
    assert launch.check_kvm_device(Path("/dev/null")) == (
        "/dev/null: KVM_GET_API_VERSION failed: Inappropriate ioctl for device")


def test_kvm_never_for_another_architecture() -> None:
    host = launch.HOST_ARCH.get(__import__("platform").machine())
    other = "arm64" if host == "x86_64" else "x86_64"
    assert launch.probe_kvm(other, machine_for(other), Path("vmlinuz")) == (
        f"the guest is {other} and this host {host}")


def test_kvm_machine_swaps_the_accelerator() -> None:
    machine = launch.kvm_machine(machine_for("x86_64"))
    assert machine.args == ("-M", "q35", "-accel", "kvm", "-m", "512", "-cpu", "host")


@pytest.mark.parametrize(("args", "message"), [
    (["--iso", "--uki"], "--iso, --uki and --from-disk each choose what boots: give one"),
    (["--iso", "--append", "x=1"], "--append is for kernel boots: the ISO, UKI and disk bring "
                                   "their own command line"),
    (["--from-disk"], "--from-disk needs a --disk to boot from"),
    (["--uefi"], "--uefi is for --iso and --from-disk (--uki is always UEFI)"),
    (["--serve", "."], "--serve and --installer need --netns (the test bed that serves them)"),
])
def test_boot_refuses_meaningless_choices(args: list[str], message: str, tmp_path: Path) -> None:
    proc = run([sys.executable, "-m", "builder", "boot", str(tmp_path), *args], check=False)
    assert proc.returncode != 0
    assert f"error: {message}" in proc.stderr.decode()


# --- lab: one boot per way in ---------------------------------------------------------------------

def boot_cli(image: Path, log: Path, *args: str) -> Console:
    """`onie-builder boot IMAGE ARGS` with its stdio (QEMU's console) on pipes."""
    require_qemu("x86_64")
    return Console.start([sys.executable, "-m", "builder", "boot", str(image), *args],
                         log_path=log)


def stop_and_check(console: Console) -> None:
    """SIGTERM reaches the CLI, which stops its QEMU (by PID) and exits."""
    code = console.stop()
    assert code == 143, console.tail()
    assert not [p for p in Path("/proc").glob("[0-9]*/stat")
                if f" {console.pid} " in _read(p) and "qemu" in _read(p)]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@pytest.mark.lab
@pytest.mark.network
def test_boot_iso(built: Callable[[str], Path], tmp_path: Path) -> None:
    with boot_cli(built("qemu_x86_64"), tmp_path / "console.log", "--iso") as console:
        console.expect(r"boot: accelerator (kvm|tcg) \(", 60)
        assert expect_environment(console, PLATFORM, timeout=240).group(2) == "install"
        stop_and_check(console)


@pytest.mark.lab
@pytest.mark.network
def test_boot_uki(built: Callable[[str], Path], tmp_path: Path) -> None:
    require_file(OVMF_DIR / "OVMF_CODE_4M.fd", "ovmf")
    require_tool("mkfs.vfat", "for the UKI's EFI system partition (dosfstools)")
    with boot_cli(built("qemu_x86_64"), tmp_path / "console.log", "--uki") as console:
        assert expect_environment(console, PLATFORM, timeout=300).group(2) == "install"
        stop_and_check(console)


@pytest.mark.lab
@pytest.mark.network
def test_boot_with_disk(built: Callable[[str], Path], tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"ob-disk-marker\n" + bytes(4 * 1024 * 1024 - 15))
    with boot_cli(built("qemu_x86_64"), tmp_path / "console.log", "--disk", str(disk),
                  "--append", "boot_reason=rescue") as console:
        console.expect(PROMPT, 240)
        assert console.run("head -n 1 /dev/vda", timeout=30) == "ob-disk-marker"
        assert console.run("cat /sys/block/vda/size", timeout=30) == str(8192)
        console.run("echo ob-written-by-guest | dd of=/dev/vda bs=512 seek=1 conv=fsync 2>/dev/null",
                    timeout=30)
        stop_and_check(console)
    assert disk.read_bytes()[512:531] == b"ob-written-by-guest"


@pytest.mark.lab
@pytest.mark.network
def test_boot_netns_serving_a_folder(built: Callable[[str], Path], tmp_path: Path) -> None:
    require_root_netns()
    require_tool("dnsmasq", "for the test bed's DHCP server (dnsmasq-base)")
    www = tmp_path / "www"
    www.mkdir()
    (www / "onie-installer").write_text("#!/bin/sh\necho never run: the image trusts no key\n")
    with boot_cli(built("qemu_x86_64"), tmp_path / "console.log", "--netns", "--serve",
                  str(www)) as console:
        named = console.expect(r"boot: network namespace (\S+): DHCP and http://(\S+)/ serving (\S+)",
                               60)
        assert (named.group(2), named.group(3)) == (SERVER, str(www))
        namespace = named.group(1)
        assert namespace in run(["ip", "netns", "list"]).stdout.decode()
        console.expect(rf"onie-discovery: found http://{re.escape(SERVER)}/onie-installer\s", 300)
        stop_and_check(console)
    assert namespace not in run(["ip", "netns", "list"]).stdout.decode()


@pytest.mark.lab
@pytest.mark.network
def test_boot_on_a_terminal_keeps_the_typed_command_below_discovery(
        built: Callable[[str], Path]) -> None:
    """A user's view: `boot` on a pty, a command half typed when discovery prints a line."""
    require_qemu("x86_64")
    image = built("qemu_x86_64")
    with Pty([sys.executable, "-m", "builder", "boot", str(image)]) as term:
        term.expect(rb"onie-discovery: start platform=", 240)
        # Keys with no "o" nor "[": a key typed as another writer's line begins with that very
        # character (discovery's "onie-discovery:", the kernel's "[") is taken for its echo
        typed_from = type_at_a_fresh_prompt(term, b"expr 6 + 3")
        # discovery's next line (a round or its backoff), printed over the line being typed
        term.expect(rb"\x1b\[Konie-discovery: [^\r\n]*\r\r?\n"
                    + re.escape(PROMPT.encode() + b"expr 6 + 3"), 150)
        assert b"\x1b[6n" not in term.output[typed_from:]  # ash's cursor query: not asked again
        term.send(b"6; expr 2 + 3")
        term.expect(re.escape(b"6; expr 2 + 3"), 30)
        term.send(b"\r")
        term.expect(rb"\n42\r", 30)
        term.expect(rb"\n5\r", 30)
        term.send(b"\x01x")  # Ctrl-A X, as documented, quits QEMU and with it boot
        assert term.proc.wait(30) == 0
        assert termios.tcgetattr(term.slave) == term.saved  # the terminal as it was
    rows = screen(term.output[typed_from:])
    rows = rows[:rows.index("5") + 1]  # (a bare prompt after it is no command being typed)
    command = "ONIE:/ # expr 6 + 36; expr 2 + 3"
    assert command in rows, (rows, term.output[typed_from:])
    discovery = [row for row in rows if "onie-discovery:" in row]
    assert discovery and all(row.startswith("onie-discovery: ") for row in discovery), rows
    after = [row for row in rows[rows.index(command) + 1:] if row not in discovery]
    assert after[:2] == ["42", "5"], rows


def type_at_a_fresh_prompt(term: Pty, keys: bytes) -> int:
    """Type ``keys`` at a new prompt, none of discovery's lines between it and their echo (a
    line before the echo is not yet over a command being typed: it ends that prompt's line);
    the output position after the prompt."""
    for _ in range(5):
        term.send(b"expr 12345 + 1\r")  # a new prompt after this output (no "o", no "[")
        term.expect(rb"\n12346\r", 120)
        # (ash asks where the cursor is after its prompt: a terminal answers, the pty does not)
        start = term.expect(re.escape(PROMPT.encode()) + rb"\x1b\[6n", 30).end()
        term.send(keys)
        echo = term.expect(re.escape(keys), 30)
        if b"onie-discovery:" not in term.output[start:echo.start()]:
            return start
        term.send(b"\x03")  # Ctrl-C: that line was cut; again
    raise AssertionError(f"discovery printed between each prompt and the echo: {term.output!r}")
