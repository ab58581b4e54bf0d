"""Booting images under QEMU TCG and talking to their serial console through pipes."""

from __future__ import annotations

import codecs
import itertools
import logging
import os
import re
import selectors
import shlex
import subprocess
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from builder.errors import BuildError
from builder.lab import framing
from builder.process import find_tool, minimal_env

log = logging.getLogger(__name__)

TAIL_LINES = 40
REPRINTS = 8  # times a command's framed output is printed again before giving up
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL (tgtd, for one, ignores SIGTERM)
# CSI (ESC [ ... final byte), OSC (ESC ] ... BEL/ST) and two-byte escapes such as ESC 7.
ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


class LabError(BuildError):
    """A lab session went wrong: QEMU, the guest or a network namespace."""


class LabTimeout(LabError):
    """The console never showed what was expected (time ran out or QEMU exited)."""


class GuestCommandError(LabError):
    """A command run in the guest's shell exited with a non-zero status."""

    def __init__(self, command: str, status: int, output: str) -> None:
        super().__init__(f"guest command {command!r} exited with status {status}:\n{output}")
        self.command = command
        self.status = status
        self.output = output


@dataclass(frozen=True)
class QemuMachine:
    """How to boot one architecture under TCG: binary, machine options, console and NIC."""

    binary: str
    args: tuple[str, ...]
    console: str
    nic: str


MACHINES: dict[str, QemuMachine] = {
    # q35 (ICH9, PCIe), as on the x86 switch CPUs of the last decade, not the default i440FX:
    # there each PCI driver's probe evaluates the PIIX interrupt-link methods (LNKA-D) in the
    # ACPI interpreter, ~0.6 s under TCG for virtio_pci or xhci_pci; q35 routes to fixed GSIs.
    # e1000 is a module in Debian kernels, so booting with it exercises modprobe in the image.
    "x86_64": QemuMachine(
        "qemu-system-x86_64", ("-M", "q35", "-accel", "tcg", "-m", "512"), "ttyS0", "e1000"
    ),
    "arm64": QemuMachine(
        "qemu-system-aarch64",
        ("-M", "virt", "-cpu", "cortex-a57", "-accel", "tcg", "-m", "1024"),
        "ttyAMA0",
        "virtio-net-pci",
    ),
}

QEMU_PACKAGES = {"x86_64": "qemu-system-x86", "arm64": "qemu-system-arm"}


def machine_for(arch: str) -> QemuMachine:
    """Return how to boot ``arch`` ("x86_64" or "arm64") under QEMU TCG."""
    try:
        return MACHINES[arch]
    except KeyError:
        raise BuildError(
            f"unknown architecture {arch!r}: expected one of {', '.join(sorted(MACHINES))}"
        ) from None


def find_qemu(arch: str) -> str:
    """Return the path of the QEMU emulator for ``arch``, or raise saying why it is needed."""
    machine = machine_for(arch)
    return find_tool(
        machine.binary,
        f"to boot {arch} images in QEMU (Debian package {QEMU_PACKAGES[arch]})",
    )


def render_append(machine: QemuMachine, append: str) -> str:
    """Prefix the kernel command line with the serial console and panic=-1 unless it sets them."""
    words = append.split()
    prefix = []
    if not any(w.startswith("console=") for w in words):
        prefix.append(f"console={machine.console},115200")
    # With -no-reboot, panic=-1 turns a kernel panic into QEMU exiting instead of hanging.
    if not any(w.startswith("panic=") for w in words):
        prefix.append("panic=-1")
    return " ".join([*prefix, *words])


def qemu_command(
    machine: QemuMachine,
    kernel: Path,
    initrd: Path,
    append: str,
    *,
    netdev: str | None = "user",
    tap: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """Return the argv booting ``kernel`` + ``initrd`` with the serial console on stdio.

    The NIC is a tap device when ``tap`` is given (run QEMU inside the namespace that holds it),
    else QEMU's user network when ``netdev`` is "user", else none.
    """
    return [
        machine.binary,
        *machine.args,
        *("-nographic", "-no-reboot", "-serial", "mon:stdio"),
        *("-kernel", os.fspath(kernel), "-initrd", os.fspath(initrd)),
        *("-append", render_append(machine, append)),
        *net_args(machine, netdev, tap),
        *extra,
    ]


def net_args(machine: QemuMachine, netdev: str | None, tap: str | None) -> list[str]:
    """The NIC: on tap device ``tap``, else QEMU's user network for "user", else none."""
    if tap is not None:
        net = ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"]
    elif netdev == "user":
        # restrict=on: the guest gets DHCP from slirp but no packet leaves QEMU for the host.
        net = ["-netdev", "user,id=n0,restrict=on"]
    elif netdev is None:
        net = []
    else:
        raise BuildError(f"unknown netdev {netdev!r}: expected 'user' or None (or pass tap=)")
    return [*net, "-device", f"{machine.nic},netdev=n0"] if net else ["-nic", "none"]


def clean_output(text: str) -> str:
    """Remove terminal noise from console text: escape sequences and carriage returns."""
    return ANSI_RE.sub("", text).replace("\r\n", "\n").replace("\r", "")


class Console:
    """A running QEMU whose serial console is read and written through pipes.

    Reading is non-blocking through a selector, so a chatty guest never stalls QEMU and
    ``expect`` can honour its timeout. Everything read is kept in ``transcript`` and
    written to ``log_path`` as it arrives.
    """

    _markers = itertools.count(1)

    def __init__(self, proc: subprocess.Popen[bytes], log_file: Path | None, program: str = "QEMU") -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.pid = proc.pid
        self.program = program
        self.started = time.monotonic()
        self._stdin = proc.stdin
        self._stdout = proc.stdout
        os.set_blocking(self._stdout.fileno(), False)
        os.set_blocking(self._stdin.fileno(), False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout, selectors.EVENT_READ)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._log = log_file.open("wb") if log_file is not None else None
        self._text = ""
        self._pos = 0  # where the next expect starts looking
        self._eof = False
        self._returncode: int | None = None
        self._output_file = f"{framing.OUTPUT_DIR}/.ob-console-{os.getpid()}-{next(self._markers)}"
        self.reprints = 0  # frames printed again because another writer cut one of their lines
        self.glued = 0  # frame lines read behind another writer's partial line
        # A Console dropped without stop() (or still running at exit) must not leave QEMU behind.
        self._finalizer = weakref.finalize(self, stop_process, proc)

    @classmethod
    def start(cls, argv: list[str], log_path: Path | None = None, netns: str | None = None) -> Console:
        """Start ``argv`` (a QEMU command line), inside network namespace ``netns`` if given."""
        program = Path(argv[0]).name
        if netns is not None:
            # `ip netns exec` execs without forking, so the PID we keep is QEMU's own.
            argv = [
                find_tool("ip", "to run QEMU in a network namespace"),
                "netns",
                "exec",
                netns,
                *argv,
            ]
        log.debug("+ %s", shlex.join(argv))
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=minimal_env(),
                start_new_session=True,  # a Ctrl-C meant for us must not reach QEMU first
            )
        except FileNotFoundError as exc:
            raise LabError(f"Could not run '{argv[0]}': not found") from exc
        return cls(proc, log_path, program)

    @property
    def transcript(self) -> str:
        """Everything read from the console so far."""
        return self._text

    def __enter__(self) -> Console:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def expect(self, pattern: str | re.Pattern[str], timeout: float) -> re.Match[str]:
        """Wait until ``pattern`` matches the output since the last expect; return the match.

        The match is made against that window of raw console text (``match.string``).
        Raises LabTimeout, quoting the console's last lines, on timeout or when QEMU exits.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self._text[self._pos :])
            if match is not None:
                self._pos += match.end()
                return match
            if self._eof:
                code = self._reap()
                raise LabTimeout(self._failure(f"exited with code {code}", regex))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabTimeout(self._failure(f"timed out after {timeout:.3g} s", regex))
            self._read(remaining)

    def send(self, text: str, timeout: float = 10) -> None:
        """Type ``text`` on the console (include the newline), reading output meanwhile."""
        # -serial mon:stdio: Ctrl-A is the monitor escape and Ctrl-A Ctrl-A sends one Ctrl-A.
        data = text.replace("\x01", "\x01\x01").encode()
        if self._eof:
            raise LabError(self._failure("cannot send input: it has exited", None))
        deadline = time.monotonic() + timeout
        self._selector.register(self._stdin, selectors.EVENT_WRITE)
        try:
            while data:
                if self._eof or time.monotonic() > deadline:
                    raise LabError(self._failure("could not send all input", None))
                for key, _ in self._selector.select(deadline - time.monotonic()):
                    if key.fileobj is self._stdout:
                        self._read_ready()
                    else:
                        data = data[self._write(data) :]
        finally:
            self._selector.unregister(self._stdin)

    def run_status(self, command: str, timeout: float = 10) -> tuple[int, str]:
        """Run ``command`` in the guest's interactive shell; return its exit status and output.

        The output is exactly the command's own (stdout and stderr), even while the kernel or
        discovery write to the console: it is framed and checked (``builder.lab.framing``).
        """
        deadline = time.monotonic() + timeout
        token = self._token()
        try:
            self.send(framing.command_line(command, token, self._output_file), timeout)
            trailer, window = self._expect_trailer(token, deadline)
            for attempt in range(REPRINTS + 1):
                data = framing.read_frame(window, token, trailer)
                if data is not None:
                    self.glued += framing.glued_lines(window, token)
                    text = clean_output(data.decode(errors="replace"))
                    return trailer.status, text.removesuffix("\n")
                if attempt == REPRINTS:
                    break
                self.reprints += 1  # another writer cut a line of the frame: print it again
                token = self._token()
                self.send(framing.reprint_line(token, self._output_file),
                          max(deadline - time.monotonic(), 0))
                again, window = self._expect_trailer(token, deadline)
                trailer = framing.Trailer(trailer.status, again.md5)
        except LabTimeout as exc:  # say which command; the guest's shell may still be busy
            raise LabTimeout(f"guest command {command!r} (timeout {timeout:g} s): {exc}") from None
        raise LabError(f"guest command {command!r}: its output was cut on the console"
                       f" {REPRINTS} times in a row; last {TAIL_LINES} lines:\n{self.tail()}")

    def _token(self) -> str:
        return f"{os.getpid()}_{next(self._markers)}"

    def _expect_trailer(self, token: str, deadline: float) -> tuple[framing.Trailer, str]:
        """Wait for run ``token``'s trailer; return it and the console text before it."""
        end = self.expect(framing.trailer_pattern(token), max(deadline - time.monotonic(), 0))
        return framing.Trailer(int(end.group(1)), end.group(2)), end.string[: end.start()]

    def run(self, command: str, timeout: float = 10, *, check: bool = True) -> str:
        """Run ``command`` in the guest's shell and return its output (no echo, no markers).

        Raises GuestCommandError on a non-zero exit status unless ``check`` is false, and
        LabTimeout when the command does not finish within ``timeout`` seconds.
        """
        status, output = self.run_status(command, timeout)
        if check and status != 0:
            raise GuestCommandError(command, status, output)
        return output

    def stop(self, timeout: float = STOP_GRACE) -> int:
        """Terminate QEMU (this PID only), wait for it and return its exit code; idempotent."""
        if self._returncode is not None:
            return self._returncode
        self._finalizer.detach()
        code = stop_process(self.proc, timeout)
        deadline = time.monotonic() + 2
        while not self._eof and time.monotonic() < deadline:  # keep QEMU's last words
            self._read(deadline - time.monotonic())
        self._eof = True
        self._selector.close()
        self._stdin.close()
        self._stdout.close()
        if self._log is not None:
            self._log.close()
        self._returncode = code
        return code

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of the console, cleaned of terminal noise."""
        return "\n".join(clean_output(self._text).splitlines()[-lines:])

    def _read(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for output and append what is there to the transcript."""
        if any(key.fileobj is self._stdout for key, _ in self._selector.select(timeout)):
            self._read_ready()

    def _read_ready(self) -> None:
        try:
            chunk = os.read(self._stdout.fileno(), 65536)
        except BlockingIOError:
            return
        if not chunk:
            self._eof = True
            self._selector.unregister(self._stdout)
        if self._log is not None:
            self._log.write(chunk)
            self._log.flush()
        self._text += self._decoder.decode(chunk, final=not chunk)

    def _write(self, data: bytes) -> int:
        try:
            return os.write(self._stdin.fileno(), data)
        except BlockingIOError:
            return 0
        except BrokenPipeError:
            self._eof = True
            return 0

    def _reap(self) -> int:
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:  # stdout closed yet still running: make sure
            self.proc.kill()
            return self.proc.wait()

    def _failure(self, what: str, regex: re.Pattern[str] | None) -> str:
        waiting = f" waiting for {regex.pattern!r}" if regex is not None else ""
        return (
            f"{self.program} (pid {self.pid}): {what}{waiting}; last {TAIL_LINES} lines"
            f" of its console:\n{self.tail()}"
        )


def stop_process(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> int:
    """SIGTERM ``proc`` (this PID only), SIGKILL it after ``grace`` seconds; reap it."""
    if proc.poll() is None:
        log.debug("stopping pid %d", proc.pid)
        proc.terminate()
        try:
            return proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
