"""The guest's serial console on the user's terminal, with the line being typed kept whole.

When ``onie-builder boot`` runs on a terminal, QEMU's serial console (its stdio, multiplexed
with the monitor: Ctrl-A X quits, Ctrl-A C is the monitor) is on pipes and this module relays
it: the terminal in raw mode (restored on every way out), keys to QEMU as typed, and the
guest's output to the terminal through a ``LineKeeper``. While the user is typing a command at
the guest's prompt, a line that someone else writes to the console (discovery, the kernel)
is held until it is whole, then printed above the prompt, and the prompt with the partial
command is drawn again under it. Without a terminal (pipes, CI) QEMU keeps the caller's stdio.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import termios
import tty
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress

from builder.lab.qemu import LabError, stop_process

CR, LF, ESC = 0x0D, 0x0A, 0x1B
CTRL_A, CTRL_C, CTRL_D, DEL = 0x01, 0x03, 0x04, 0x7F
ERASE_LINE = b"\r\x1b[K"
LINE_ENDS = frozenset((CR, LF, CTRL_C, CTRL_D))  # keys after which the shell starts a new line
ENTER = frozenset((CR, LF))  # of those, the keys the shell answers with only a newline
BS, TAB = 0x08, 0x09
AT_END_KEYS = frozenset((BS, TAB, DEL))  # editing keys that leave the cursor at the line's end
MAX_LINE = 4096  # bytes of the current line kept for redrawing (a prompt plus a command)
# Times keys were typed while a line is held (a read of the terminal: one key, or a whole
# paste): more and the held text was no line (a line on a 115200-baud serial console takes
# milliseconds, less than typing so many keys; a paste is one read, however long).
PATIENCE = 4
# A prompt ends in one of these (ash's "ONIE:/ # ", "$ ", "> ", "login: "): a key's echo
# there starts a command; elsewhere the same letter may be the kernel's or discovery's.
PROMPT_ENDS = (b"# ", b"$ ", b"> ", b": ")
ANSI_BYTES_RE = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
QUERY_RE = re.compile(rb"\x1b\[[0-9]*n")  # device status and cursor position requests
ESCAPE_TAIL_RE = re.compile(rb"\x1b([\[O][\x20-\x3f]*)?\Z")  # output ending inside an escape


def printable(byte: int) -> bool:
    """A byte a shell echoes as itself: ASCII text or part of a UTF-8 character."""
    return byte >= 0x20 and byte != DEL


class LineKeeper:
    """Keeps the guest's current line (its prompt and the echo of what is typed) at the bottom.

    ``typed`` is told each key sent to the guest, ``shown`` turns the guest's output into what
    the terminal should print. A typed text key is expected back as its echo; once the echo of
    typed text follows a prompt (``PROMPT_ENDS``) on the current line, that line is a prompt
    being edited, and output that is
    not the echo and starts with text is someone else's line: it is held until its newline
    (echo included: a line from the kernel or discovery is one write the echo cannot cut),
    then printed after erasing the current line, which is drawn again below it. Held text that
    turns out not to be a line (keys typed ``PATIENCE`` times since it came) is shown
    where it came. After an editing key (backspace, Tab, arrows) the guest's answer is shown
    as it comes, and nothing is held until the next text key; once a key may have moved the
    cursor off the line's end (left, right, Home...), nothing is held until the line ends, as
    the echo of a key then redraws the rest of the line. Enter with the cursor at the end is
    answered by the shell with a newline alone: until it comes, the line is still the prompt
    being edited, and a line from someone else that comes first goes above it, not after the
    command. One case stays ambiguous: a key typed just as another writer's line begins with
    that very character (discovery's lines begin with "o", the kernel's with "[") is taken for
    its echo; that line is then drawn one character short, and the command once more below.
    """

    def __init__(self) -> None:
        self.line = bytearray()  # the guest's current incomplete line, as shown
        self.pending = bytearray()  # typed text keys whose echo has not come yet
        self.held = bytearray()  # another writer's line, held until its newline
        self.editing = False  # the current line holds echoed typing: a prompt being edited
        self.answering = False  # the last key was an editing key: its answer is unforeseeable
        self.moved = False  # an editing key since the last line end: the cursor may be anywhere
        self.typed_while_held = 0  # times keys were typed since ``held`` began
        self._monitor_key = False  # Ctrl-A was typed: the next key is for QEMU's mux
        self._key_escape = 0  # inside a typed escape sequence (arrow keys): 1 after ESC, 2 in CSI
        self._answering_before = (False, False)  # ``answering`` and ``moved`` before it
        self._guest_escape = 0  # inside an escape sequence from the guest (same states)
        self.aside_part = bytearray()  # QEMU's own message (stderr), held until its newline

    def typed(self, data: bytes) -> None:
        """Note keys the user sent to the guest (one read of the terminal)."""
        if self.held:
            self.typed_while_held += 1
        for byte in data:
            self._key(byte)

    def _key(self, byte: int) -> None:
        if self._monitor_key:
            self._monitor_key = False
            if byte != CTRL_A:  # Ctrl-A Ctrl-A sends one Ctrl-A to the guest; others are QEMU's
                return
        elif byte == CTRL_A:
            self._monitor_key = True
            return
        if self._key_escape:
            in_sequence = self._key_escape == 2
            self._key_escape = escape_state(self._key_escape, byte)
            if not self._key_escape and byte == ord("R"):  # the terminal's cursor report: no key
                self.answering, self.moved = self._answering_before
            elif not self._key_escape and in_sequence and byte in b"AB":
                self.moved = False  # up, down: a line from the history, the cursor at its end
            return
        if byte in ENTER and not self.moved:
            # The cursor at the end: the shell answers with the echoes still to come and a
            # newline, nothing else, so the line stays the one being edited until ``_show``
            # sees that newline (a line that comes first is someone else's)
            self.answering = False
        elif byte in LINE_ENDS:
            self.pending.clear()
            self.editing = self.answering = self.moved = False
        elif byte == ESC:
            self._key_escape = 1
            self._answering_before = (self.answering, self.moved)
            self.answering = self.moved = True
        elif printable(byte):
            # after the cursor moved, a key's echo redraws the rest of the line: unforeseeable
            self.answering = self.moved
            if len(self.pending) < MAX_LINE:
                self.pending.append(byte)
        else:  # backspace, Tab...: the shell redraws in its own way
            self.answering = True
            self.moved = self.moved or byte not in AT_END_KEYS

    def shown(self, data: bytes) -> bytes:
        """What the terminal should print for ``data``, output of the guest."""
        out = bytearray()
        if not (self.held or self.pending or self.editing):  # nothing typed: as it comes
            self._show(data, out)
            tail = ESCAPE_TAIL_RE.search(data)
            self._guest_escape = 0 if tail is None else 1 + bool(tail.group(1))
            return bytes(out)
        for byte in data:
            if self.held:
                if self.typed_while_held <= PATIENCE:
                    self.held.append(byte)
                    if byte == LF:
                        out += self._foreign_line()
                    continue
                self._show_held(out)  # keys typed since were not echoed: it was no line
            if self.pending and byte == self.pending[0] and (self.editing or self._at_prompt()):
                del self.pending[0]
                self.editing = True
                self._show(bytes((byte,)), out)
            elif (self.editing and not self.answering and not self._guest_escape
                  and printable(byte)):
                self.held.append(byte)
            else:
                self._guest_escape = (escape_state(self._guest_escape, byte) if self._guest_escape
                                      else int(byte == ESC))
                self._show(bytes((byte,)), out)
        return bytes(out)

    def aside(self, data: bytes) -> bytes:
        """What the terminal should print for ``data``, QEMU's own output (its stderr: a
        warning, an error): each whole line above the guest's current line, which is drawn
        again below it; a part of a line waits for the rest."""
        self.aside_part += data
        end = self.aside_part.rfind(b"\n")
        if end < 0:
            if len(self.aside_part) <= MAX_LINE:
                return b""
            end = len(self.aside_part) - 1  # no line: shown as it is
        lines = bytes(self.aside_part[:end + 1])
        del self.aside_part[:end + 1]
        text = b"\r\n".join(line.rstrip(b"\r") for line in lines.rstrip(b"\n").split(b"\n"))
        return ERASE_LINE + text + b"\r\n" + QUERY_RE.sub(b"", bytes(self.line))

    def finish(self) -> bytes:
        """What is left to print when the guest is gone: held text and a final newline, and
        QEMU's last message if it had no newline."""
        rest = self._release()
        out = rest + b"\r\n" if rest or self.line else rest
        if self.aside_part:
            out += bytes(self.aside_part).rstrip(b"\r") + b"\r\n"
            self.aside_part.clear()
        return out

    def _show(self, data: bytes, out: bytearray) -> None:
        out += data
        end = data.rfind(b"\n")
        if end < 0:
            self.line += data
        else:  # a new line: what was typed before it is not coming back as its echo
            self.line[:] = data[end + 1:]
            self.editing = False
            self.pending.clear()
        if len(self.line) > MAX_LINE:
            del self.line[: len(self.line) - MAX_LINE]

    def _at_prompt(self) -> bool:
        """Whether the current line ends like a prompt: there, an echo begins a command."""
        shown = ANSI_BYTES_RE.sub(b"", bytes(self.line)).rpartition(b"\r")[2]
        return shown.endswith(PROMPT_ENDS)

    def _show_held(self, out: bytearray) -> None:
        """Show the held text where it came, taking the echoes it holds off ``pending``."""
        for byte in self.held:
            if self.pending and byte == self.pending[0] and (self.editing or self._at_prompt()):
                del self.pending[0]
        self._show(self._release(), out)

    def _release(self) -> bytes:
        held = bytes(self.held)
        self.held.clear()
        self.typed_while_held = 0
        return held

    def _foreign_line(self) -> bytes:
        """Erase the line being edited, print the held line, draw the edited line again."""
        text = self._release().rstrip(b"\r\n")
        # Without the shell's queries (ash asks where the cursor is after its prompt): asked
        # again, the terminal would answer again, to the shell, in the middle of the command.
        return ERASE_LINE + text + b"\r\n" + QUERY_RE.sub(b"", bytes(self.line))


def escape_state(state: int, byte: int) -> int:
    """The next state of an escape sequence (1: after ESC, 2: in CSI or SS3); 0 when done."""
    if state == 1:
        return 2 if byte in b"[O" else 0
    return 0 if 0x40 <= byte <= 0x7E else 2


@contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The terminal ``fd`` in raw mode (keys, Ctrl-C included, go to the guest) until the end.

    Output processing stays on, so a line QEMU writes to stderr still starts at the left.
    """
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        attrs = termios.tcgetattr(fd)
        attrs[1] |= termios.OPOST
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        yield
    finally:
        with suppress(termios.error):  # the terminal hung up (SIGHUP): nothing to restore
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def relay(guest_out: int, guest_in: int, term_in: int, term_out: int,
          qemu_err: int | None = None) -> None:
    """Copy keys to the guest and its output to the terminal until the guest's output ends;
    QEMU's own messages (``qemu_err``) go above the guest's current line."""
    keeper = LineKeeper()
    with selectors.DefaultSelector() as selector:
        selector.register(guest_out, selectors.EVENT_READ)
        selector.register(term_in, selectors.EVENT_READ)
        if qemu_err is not None:
            selector.register(qemu_err, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                data = read_some(key.fd)
                if key.fd == qemu_err:
                    if data:
                        write_all(term_out, keeper.aside(data))
                    else:
                        selector.unregister(qemu_err)
                elif key.fd == guest_out:
                    if not data:
                        if qemu_err is not None and qemu_err in selector.get_map():
                            # what QEMU says as it exits, after its console closed
                            write_all(term_out, keeper.aside(read_rest(qemu_err)))
                        write_all(term_out, keeper.finish())
                        return
                    write_all(term_out, keeper.shown(data))
                elif not data:  # the terminal's input ended: keep showing the guest
                    selector.unregister(term_in)
                else:
                    keeper.typed(data)
                    try:
                        write_all(guest_in, data)
                    except BrokenPipeError:  # QEMU is going: its output ends soon
                        selector.unregister(term_in)


def read_some(fd: int) -> bytes:
    """What is there to read on ``fd``; nothing at its end or when it failed (a hang-up)."""
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""


def read_rest(fd: int) -> bytes:
    """Everything left on pipe ``fd`` until its writer closes it."""
    out = bytearray()
    while data := read_some(fd):
        out += data
    return bytes(out)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BrokenPipeError:
            raise
        except OSError as exc:  # the terminal went away: QEMU is stopped on the way out
            raise LabError(f"cannot write to the terminal: {exc.strerror}") from None


def on_terminal() -> bool:
    """True when both stdin and stdout are a terminal: then the console is relayed."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def run_guest(argv: Sequence[str]) -> int:
    """Run QEMU with its serial console on this process's terminal; return its exit status.

    On a terminal the console is relayed (``relay``), else QEMU gets this process's stdio.
    QEMU is stopped (this PID) when this returns early: an exception such as a signal's.
    """
    sys.stdout.flush()
    if not on_terminal():
        qemu = subprocess.Popen(argv)
        try:
            return qemu.wait()
        finally:
            stop_process(qemu)
    qemu = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert qemu.stdin is not None and qemu.stdout is not None and qemu.stderr is not None
    try:
        with raw_terminal(sys.stdin.fileno()):
            relay(qemu.stdout.fileno(), qemu.stdin.fileno(), sys.stdin.fileno(),
                  sys.stdout.fileno(), qemu.stderr.fileno())
        return qemu.wait()
    finally:
        stop_process(qemu)
        qemu.stdin.close()
        qemu.stdout.close()
        qemu.stderr.close()
