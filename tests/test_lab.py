"""The lab: QEMU command lines, the serial Console, and network namespaces.

Unit tests need nothing special (a pty-backed BusyBox shell stands in for a guest). Tests
marked ``lab`` boot a tiny BusyBox initramfs with a Debian kernel under QEMU TCG and create
network namespaces (root); when a tool is missing they fail if ``CI`` is set, else skip.
"""

from __future__ import annotations

import gc
import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from builder.components.apt import Archive
from builder.components.cache import Cache
from builder.components.deb import unpack_deb
from builder.errors import BuildError, MissingToolError
from builder.lab import framing
from builder.lab.netns import (
    Console,
    GuestCommandError,
    LabError,
    LabTimeout,
    NetNamespace,
    find_ip,
    find_qemu,
    machine_for,
    qemu_command,
)
from builder.process import find_tool, run
from tests.conftest import require_qemu, require_root_netns, require_tool, wait_for_exec

BANNER = "ob-lab: tiny initramfs up"
BOOT_TIMEOUT = 180.0  # TCG on a busy 2-core runner: the XZ kernel alone takes ~10 s to unpack
INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "{BANNER}"
exec setsid cttyhack sh
"""
# Stands in for a serial console: a pty gives the echo, CR/LF and BusyBox line-editing noise.
PTY_SHELL = "import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)"


# --- unit: command lines -------------------------------------------------------------------


def test_qemu_command_x86_64() -> None:
    argv = qemu_command(machine_for("x86_64"), Path("k/vmlinuz"), Path("initrd.img"), "quiet")
    assert argv == [
        "qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-m", "512",
        "-nographic", "-no-reboot", "-serial", "mon:stdio",
        "-kernel", "k/vmlinuz", "-initrd", "initrd.img",
        "-append", "console=ttyS0,115200 panic=-1 quiet",
        "-netdev", "user,id=n0,restrict=on", "-device", "e1000,netdev=n0",
    ]  # fmt: skip


def test_qemu_command_arm64_tap() -> None:
    argv = qemu_command(
        machine_for("arm64"), Path("Image"), Path("initrd"), "", tap="tap0", extra=["-smp", "2"]
    )
    assert argv == [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-accel", "tcg", "-m", "1024",
        "-nographic", "-no-reboot", "-serial", "mon:stdio",
        "-kernel", "Image", "-initrd", "initrd",
        "-append", "console=ttyAMA0,115200 panic=-1",
        "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device", "virtio-net-pci,netdev=n0",
        "-smp", "2",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("append", "expected"),
    [
        ("console=hvc0 ip=dhcp", "panic=-1 console=hvc0 ip=dhcp"),
        ("panic=10  rdinit=/bin/sh", "console=ttyS0,115200 panic=10 rdinit=/bin/sh"),
        ("console=ttyS0 panic=0", "console=ttyS0 panic=0"),
    ],
)
def test_qemu_command_keeps_console_and_panic(append: str, expected: str) -> None:
    argv = qemu_command(machine_for("x86_64"), Path("k"), Path("i"), append, netdev=None)
    assert argv[argv.index("-append") + 1] == expected
    assert argv[-2:] == ["-nic", "none"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: machine_for("mips"), "unknown architecture 'mips': expected one of arm64, x86_64"),
        (lambda: machine_for("amd64"), "unknown architecture 'amd64': expected one of arm64, x86_64"),
        (lambda: find_qemu("riscv64"), "unknown architecture 'riscv64': expected one of arm64, x86_64"),
        (
            lambda: qemu_command(machine_for("x86_64"), Path("k"), Path("i"), "", netdev="tap"),
            "unknown netdev 'tap': expected 'user' or None (or pass tap=)",
        ),
        (
            lambda: NetNamespace("ob-test", "ip").add_tap("tap0", "10.200.7.1"),
            "tap tap0: expected an address with a prefix length such as '10.200.7.1/24', got '10.200.7.1'",
        ),
    ],
)
def test_bad_input_messages(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(BuildError) as info:
        call()
    assert info.value.message == message


def test_find_qemu_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingToolError) as info:
        find_qemu("arm64")
    assert info.value.message == (
        "Could not find 'qemu-system-aarch64', which is required to boot arm64 images in QEMU"
        " (Debian package qemu-system-arm)"
    )


def test_find_tool_looks_in_this_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`.venv/bin/pytest` runs without the virtualenv on PATH (CI, the README): a tool pip put
    beside onie-builder (virt-fw-vars, from the test extras) is found all the same."""
    monkeypatch.setenv("PATH", str(tmp_path))
    scripts = Path(sysconfig.get_path("scripts"))
    assert find_tool("virt-fw-vars", "to test") == str(scripts / "virt-fw-vars")
    with pytest.raises(MissingToolError):
        find_tool("no-such-tool-anywhere", "to test")


def test_exec_argv_wraps_in_netns() -> None:
    assert NetNamespace("ob-1-1", "/usr/sbin/ip").exec_argv(["dnsmasq", "-k"]) == [
        "/usr/sbin/ip", "netns", "exec", "ob-1-1", "dnsmasq", "-k",
    ]  # fmt: skip


# --- unit: the Console against a pty shell ---------------------------------------------------


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Console]:
    """An interactive shell behind a pty, read and written like a guest's serial console."""
    sh = shutil.which("busybox")
    argv = [sh, "sh", "-i"] if sh else ["/bin/sh", "-i"]
    with Console.start([sys.executable, "-c", PTY_SHELL, *argv], tmp_path / "console.log") as con:
        con.expect(r"[#$] ", timeout=10)
        yield con


@pytest.mark.parametrize(
    ("command", "output"),
    [
        ("echo $((6*7))", "42"),
        ("printf abc", "abc"),  # no newline: the end marker lands on the same line
        ("echo a; echo b  # a comment must not hide the end marker", "a\nb"),
        ("printf '\\033[1;34mblue\\033[m\\n'", "blue"),
        ("echo " + "x" * 150, "x" * 150),  # longer than the 80 columns the line editor wraps at
        ("echo \"it's\" '$HOME'", "it's $HOME"),
        ("true", ""),
    ],
)
def test_run_returns_clean_output(shell: Console, command: str, output: str) -> None:
    assert shell.run(command) == output


def test_run_keeps_shell_state(shell: Console) -> None:
    shell.run("cd /proc && X=5")
    assert shell.run("pwd; echo $X") == "/proc\n5"


def test_run_exit_status(shell: Console) -> None:
    assert shell.run_status("false") == (1, "")
    assert shell.run_status("sh -c 'echo out; exit 7'") == (7, "out")
    assert shell.run("sh -c 'echo out; exit 7'", check=False) == "out"
    with pytest.raises(GuestCommandError) as info:
        shell.run("sh -c 'echo out; exit 7'")
    assert (info.value.status, info.value.output) == (7, "out")
    assert info.value.message == "guest command \"sh -c 'echo out; exit 7'\" exited with status 7:\nout"


def test_run_survives_syntax_error(shell: Console) -> None:
    status, output = shell.run_status("if then")
    assert status == 2 and "syntax error" in output
    assert shell.run("echo still here") == "still here"


def test_run_timeout_then_recovers(shell: Console) -> None:
    with pytest.raises(LabTimeout, match=r"guest command 'sleep 2' \(timeout 0.5 s\): .*timed out"):
        shell.run("sleep 2", timeout=0.5)
    # The next command is typed ahead while sleep still runs; its own markers find its output.
    assert shell.run("echo after", timeout=10) == "after"


def test_expect_timeout_quotes_console_tail(shell: Console) -> None:
    shell.send("seq 1 100\n")
    shell.expect(r"\n100\r?\n", timeout=10)
    with pytest.raises(LabTimeout) as info:
        shell.expect("never printed", timeout=0.3)
    message = info.value.message
    assert re.match(r"python\S* \(pid \d+\): timed out after 0.3 s waiting for 'never printed';", message)
    tail = message.split("last 40 lines of its console:\n", 1)[1].splitlines()
    assert len(tail) == 40 and "100" in tail and "50" not in tail


def test_expect_reports_exit(shell: Console) -> None:
    shell.send("exit 3\n")
    with pytest.raises(LabTimeout, match=r"exited with code 3 waiting for 'nothing'"):
        shell.expect("nothing", timeout=10)
    assert shell.stop() == 3


def test_expect_window_moves_on(shell: Console) -> None:
    shell.send("echo one; echo two\n")
    first = shell.expect(r"(?m)^(one|two)\r?$", timeout=5)
    second = shell.expect(r"(?m)^(one|two)\r?$", timeout=5)
    assert (first.group(1), second.group(1)) == ("one", "two")


def test_run_gets_only_its_own_output_while_others_write(shell: Console) -> None:
    """A writer in the background puts whole and cut lines on the same terminal, as the
    kernel and discovery do on a guest's console: each command still gets exactly its own."""
    shell.run("(while :; do echo 'onie-discovery: round 9'; printf 'clocksource: cut '; "
              "printf 'line\\n'; done) > $(tty) 2>&1 &")
    try:
        for n in range(25):
            expected = "\n".join(f"{n} line {i}" for i in range(20))
            assert shell.run(f"i=0; while [ $i -lt 20 ]; do echo '{n} line' $i; i=$((i+1)); done"
                             ) == expected
            assert shell.run_status(f"echo {n} >&2; exit_with() {{ return $1; }}; exit_with {n % 4}"
                                    ) == (n % 4, str(n))
    finally:
        shell.run("kill %1")
    # The writer did land inside frames (so the test tells something): its partial lines in
    # front of frame lines were read past, and any other cut was printed again.
    assert shell.glued + shell.reprints > 0


def test_run_prints_a_cut_frame_again(shell: Console, tmp_path: Path) -> None:
    """A frame with a line cut by another writer is not taken: the file is printed again."""
    flag = tmp_path / "cut-next"
    # Shadows base64 for the framing: while the flag is there, a kernel-like line lands in the
    # middle of a line of the next frame printed, once.
    shell.run(f"base64() {{ if [ -e {flag} ]; then rm {flag}; command base64 \"$@\" | "
              f"sed '1s/$/[ 1.2] clocksource: cut/'; else command base64 \"$@\"; fi; }}")
    assert shell.reprints == 0
    assert shell.run(f"touch {flag}; seq 1 30") == "\n".join(str(i) for i in range(1, 31))
    assert shell.reprints == 1
    assert shell.run("echo fine") == "fine" and shell.reprints == 1


@pytest.mark.parametrize("window", [
    "__OB_1_2_DaGVsbG8K\r\n",  # intact
    "noise\r\n__OB_1_2_DaGVs\r\n[ 3.1] clocksource: x\r\n__OB_1_2_DbG8K\r\n",  # whole lines between
    "__OB_1_2_DaGVs\r\nclocksource: cut __OB_1_2_DbG8K\r\nline\r\n",  # a partial line in front
])
def test_read_frame_intact(window: str) -> None:
    trailer = framing.Trailer(0, hashlib.md5(b"hello\n").hexdigest())
    assert framing.read_frame(window, "1_2", trailer) == b"hello\n"
    assert framing.glued_lines(window, "1_2") == window.count("cut __OB")


@pytest.mark.parametrize("window", [
    "__OB_1_2_DaGVs[ 3.1] clocksource: x\r\nbG8K\r\n",  # a line cut by the kernel
    "__OB_1_2_DaGVs\r\n__OB_1_3_DbG8K\r\n",  # another run's line
    "__OB_1_2_DaGVs\r\nbG8K\r\n",  # an untagged line that looks like base64
    "__OB_1_2_DaGV\r\n",  # not base64
    "__OB_1_2_DaGVs\r\ncut __OB_1_2_DbG\r\n",  # a partial line in front, and a line cut short
    "__OB_1_2_DaGVs\r\n__OB_11_2_DbG8K\r\n",  # another console's run
])
def test_read_frame_refuses_cut_frames(window: str) -> None:
    trailer = framing.Trailer(0, hashlib.md5(b"hello\n").hexdigest())
    assert framing.read_frame(window, "1_2", trailer) is None


def test_send_escapes_monitor_key(tmp_path: Path) -> None:
    with Console.start(["cat"], tmp_path / "cat.log") as cat:
        cat.send("a\x01b\n")  # -serial mon:stdio: Ctrl-A Ctrl-A reaches the guest as one Ctrl-A
        cat.expect("b\n", timeout=5)
        assert cat.transcript == "a\x01\x01b\n"
    assert (tmp_path / "cat.log").read_bytes() == b"a\x01\x01b\n"


def test_stop_is_idempotent_and_kills_only_its_pid(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        con = Console.start(["sleep", "30"], tmp_path / "sleep.log")
        assert con.stop() == -15
        assert con.stop() == -15
        assert not Path(f"/proc/{con.pid}").exists()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_console_dropped_without_stop_ends_its_process() -> None:
    con = Console.start(["sleep", "30"])
    proc = con.proc
    del con
    gc.collect()
    assert proc.returncode == -15


def test_send_after_exit(tmp_path: Path) -> None:
    con = Console.start(["true"], tmp_path / "true.log")
    with pytest.raises(LabTimeout, match=r"^true \(pid \d+\): exited with code 0 waiting for 'x';"):
        con.expect("x", timeout=10)
    with pytest.raises(LabError, match=r"true \(pid \d+\): cannot send input: it has exited"):
        con.send("x\n")


def test_start_missing_program() -> None:
    with pytest.raises(LabError, match="Could not run 'no-such-qemu-ob': not found"):
        Console.start(["no-such-qemu-ob"])


# --- lab: tools, kernel and initramfs ---------------------------------------------------------


class Kernel(NamedTuple):
    vmlinuz: Path
    e1000: Path  # a module in Debian kernels: the tap test loads it in the guest


@pytest.fixture(scope="session")
def kernel(debian_archive: Callable[[str], Archive], debian_cache: Cache) -> Kernel:
    """The current Debian amd64 kernel and its e1000.ko, through the project's own Debian module."""
    archive = debian_archive("amd64")
    meta = archive.find("linux-image-amd64")
    name = next(d.split()[0] for d in meta.depends if re.match(r"linux-image-\d", d))
    root = unpack_deb(archive.fetch(archive.find(name)), debian_cache)
    (vmlinuz,) = (root / "boot").glob("vmlinuz-*")
    (e1000,) = root.glob("lib/modules/*/kernel/drivers/net/ethernet/intel/e1000/e1000.ko")
    return Kernel(vmlinuz, e1000)


@pytest.fixture(scope="session")
def initramfs(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A newc cpio with the host's static BusyBox, e1000.ko and a 7-line /init (test helper)."""
    busybox = require_tool("busybox", "for the lab's test initramfs (busybox-static)")
    cpio = require_tool("cpio", "to pack the lab's test initramfs")
    tree = tmp_path_factory.mktemp("initramfs")
    for folder in ("bin", "dev", "proc", "sys", "tmp"):
        (tree / folder).mkdir()
    shutil.copy(busybox, tree / "bin" / "busybox")
    shutil.copy(kernel.e1000, tree / "e1000.ko")
    (tree / "init").write_text(INIT)
    (tree / "init").chmod(0o755)
    names = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    image = tree.parent / "initrd.cpio"
    archive = run([cpio, "-o", "-H", "newc", "-R", "0:0", "--quiet"], cwd=tree,
                  input="\n".join(names).encode() + b"\n")  # fmt: skip
    image.write_bytes(archive.stdout)
    return image


def boot(
    kernel: Kernel,
    initrd: Path,
    log: Path,
    *,
    netns: str | None = None,
    netdev: str | None = "user",
    tap: str | None = None,
) -> Console:
    """Start QEMU x86_64 TCG on the tiny initramfs (x86_64 only: the host's busybox is amd64)."""
    require_qemu("x86_64")
    argv = qemu_command(machine_for("x86_64"), kernel.vmlinuz, initrd, "", netdev=netdev, tap=tap)
    return Console.start(argv, log, netns=netns)


class Guest(NamedTuple):
    console: Console
    to_banner: float
    to_answer: float


@pytest.fixture(scope="module")
def guest(kernel: Kernel, initramfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """One booted guest shared by the module's lab tests, with its boot timings."""
    log = tmp_path_factory.mktemp("guest") / "console.log"
    with boot(kernel, initramfs, log) as console:
        console.expect(re.escape(BANNER), BOOT_TIMEOUT)
        to_banner = time.monotonic() - console.started
        answer = console.run("echo $((6*7))", timeout=60)
        to_answer = time.monotonic() - console.started
        assert answer == "42"
        yield Guest(console, to_banner, to_answer)


# --- lab: booting ------------------------------------------------------------------------------


@pytest.mark.lab
@pytest.mark.network
def test_boot_reaches_shell(guest: Guest, record_property: Callable[[str, object], None]) -> None:
    record_property("seconds_to_banner", round(guest.to_banner, 2))
    record_property("seconds_to_first_answer", round(guest.to_answer, 2))
    print(f"\nQEMU start -> banner {guest.to_banner:.2f} s, -> first answer {guest.to_answer:.2f} s")
    assert guest.console.run("echo $((6*7))") == "42"
    assert guest.console.run("uname -m") == "x86_64"


@pytest.mark.lab
@pytest.mark.network
def test_guest_exit_status(guest: Guest) -> None:
    con = guest.console
    assert con.run_status("ls /nonexistent") == (1, "ls: /nonexistent: No such file or directory")
    with pytest.raises(GuestCommandError) as info:
        con.run("cat /proc/cmdline; exit_code() { return 3; }; exit_code")
    assert info.value.status == 3
    assert info.value.output == "console=ttyS0,115200 panic=-1"
    assert con.run("echo ok") == "ok"


@pytest.mark.lab
@pytest.mark.network
def test_guest_command_output_is_its_own_while_kernel_and_others_write(guest: Guest) -> None:
    """The kernel (through /dev/kmsg, printed on the console mid-line if need be) and another
    writer (as discovery) keep writing while commands run: each gets exactly its own lines."""
    con = guest.console
    start = len(con.transcript)
    con.run("(while :; do echo '<3>ob-noise: kernel line' > /dev/kmsg;"
            " echo 'onie-discovery: ob-noise' > /dev/console; usleep 20000; done) &")
    try:
        for n in range(30):
            expected = "\n".join(f"{n}: line {i}" for i in range(12))
            assert con.run(f"for i in 0 1 2 3 4 5 6 7 8 9 10 11; do echo '{n}: line' $i; done",
                           timeout=30) == expected
            assert con.run_status(f"cat /proc/cmdline; echo {n} >&2; false", timeout=30) == (
                1, f"console=ttyS0,115200 panic=-1\n{n}")
    finally:
        con.run("kill %1", timeout=30)
    during = con.transcript[start:]
    assert "ob-noise: kernel line" in during and "onie-discovery: ob-noise" in during


@pytest.mark.lab
@pytest.mark.network
def test_guest_expect_timeout(guest: Guest) -> None:
    with pytest.raises(LabTimeout) as info:
        guest.console.expect("this is never printed", timeout=0.5)
    assert "timed out after 0.5 s waiting for 'this is never printed'" in info.value.message
    assert "__OB_" in info.value.message.split("last 40 lines of its console:\n")[1]
    assert guest.console.run("echo still fine") == "still fine"


@pytest.mark.lab
@pytest.mark.network
def test_stop_leaves_no_qemu(kernel: Kernel, initramfs: Path, tmp_path: Path) -> None:
    con = boot(kernel, initramfs, tmp_path / "console.log", netdev=None)
    try:
        con.expect("Booting from ROM|SeaBIOS", timeout=60)
        wait_for_exec(con.pid, "qemu-system-x86_64")
    finally:
        code = con.stop()
    assert code == 0  # QEMU exits 0 on SIGTERM
    assert con.stop() == code
    assert not Path(f"/proc/{con.pid}").exists()
    assert "terminating on signal 15" in con.transcript
    assert (tmp_path / "console.log").read_text(errors="replace") == con.transcript


# --- lab: network namespaces ----------------------------------------------------------------


@pytest.mark.lab
def test_netns_lifecycle(tmp_path: Path) -> None:
    require_root_netns()
    with NetNamespace.create() as ns:
        assert re.fullmatch(rf"ob-{os.getpid()}-\d+", ns.name)
        assert ns.name in run([find_ip(), "netns", "list"]).stdout.decode().split()
        assert "state UNKNOWN" in ns.ip("link", "show", "lo")
        ns.add_tap("tap0", "10.200.7.1/24")
        assert "inet 10.200.7.1/24" in ns.ip("addr", "show", "tap0")
        assert "tap0" not in run([find_ip(), "link", "show"]).stdout.decode()  # not on the host
        sleeper = ns.spawn([require_tool("sleep", "as a server"), "60"], tmp_path / "sleep.log")
        wait_for_exec(sleeper.pid, "sleep")
        netns_of = os.readlink(f"/proc/{sleeper.pid}/ns/net")
        assert netns_of != os.readlink("/proc/self/ns/net")
    assert ns.name not in run([find_ip(), "netns", "list"]).stdout.decode().split()
    assert sleeper.returncode == -15
    assert not Path(f"/proc/{sleeper.pid}").exists()
    ns.close()  # idempotent


@pytest.mark.lab
def test_netns_forgotten_is_removed() -> None:
    require_root_netns()
    ns = NetNamespace.create("ob-forgotten")
    name = ns.name
    del ns
    gc.collect()
    assert name not in run([find_ip(), "netns", "list"]).stdout.decode().split()


@pytest.mark.lab
@pytest.mark.network
def test_guest_on_tap_in_netns(kernel: Kernel, initramfs: Path, tmp_path: Path) -> None:
    """QEMU runs inside the namespace on its tap; the guest loads e1000 and pings the host side."""
    require_root_netns()
    with NetNamespace.create() as ns:
        ns.add_tap("tap0", "10.200.7.1/24")
        with boot(kernel, initramfs, tmp_path / "console.log", netns=ns.name, tap="tap0") as con:
            wait_for_exec(con.pid, "qemu-system-x86_64")  # ip netns exec did not fork
            con.expect(re.escape(BANNER), BOOT_TIMEOUT)
            con.run("insmod /e1000.ko && ip link set eth0 up && ip addr add 10.200.7.2/24 dev eth0")
            # The first packets are lost while the e1000 link comes up (~3 s).
            con.run("for i in 1 2 3 4 5 6 7 8 9 10; do ping -c 1 -W 1 10.200.7.1 && break; done",
                    timeout=30)  # fmt: skip
            assert "1 packets received" in con.run("ping -c 1 -W 2 10.200.7.1", timeout=10)
        assert not Path(f"/proc/{con.pid}").exists()
