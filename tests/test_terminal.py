"""The console relay of `onie-builder boot` on a terminal (builder/lab/terminal.py): byte streams
through the LineKeeper, drawn on a small screen model, then the relay itself under a pty with
a stand-in guest (a Python program that prompts, echoes and writes a line of its own)."""

from __future__ import annotations

import re
import subprocess
import sys
import termios

from builder.lab.terminal import ERASE_LINE, LineKeeper
from tests.ptyterm import ROOT, Pty, screen

PROMPT = b"ONIE:/ # "
DISCOVERY = b"onie-discovery: round 2 uptime=12.34\r\n"


def test_a_line_arriving_while_typing_goes_above_the_prompt() -> None:
    keeper = LineKeeper()
    shown = keeper.shown(b"[    2.1] Run /init as init process\r\n" + PROMPT)
    keeper.typed(b"ech")
    shown += keeper.shown(b"e") + keeper.shown(b"ch")
    before = len(shown)
    shown += keeper.shown(DISCOVERY[:10])  # the serial port brings it in pieces
    assert len(shown) == before  # held until it is whole
    redraw = keeper.shown(DISCOVERY[10:])
    assert redraw == ERASE_LINE + DISCOVERY + PROMPT + b"ech"
    shown += redraw
    keeper.typed(b"o hi\r")
    shown += keeper.shown(b"o hi\r\nhi\r\n" + PROMPT)
    assert screen(shown) == ["[    2.1] Run /init as init process",
                             DISCOVERY.decode().strip(), "ONIE:/ # echo hi", "hi", "ONIE:/ #"]


def test_a_line_arriving_before_the_echo_of_a_key_is_drawn_above_it() -> None:
    keeper = LineKeeper()
    shown = keeper.shown(PROMPT)
    keeper.typed(b"l")
    shown += keeper.shown(b"l")
    keeper.typed(b"s")  # its echo comes after the other line, which the guest wrote first
    shown += keeper.shown(b"[   12.7] clocksource: Switched to clocksource tsc\r\ns")
    assert screen(shown) == ["[   12.7] clocksource: Switched to clocksource tsc", "ONIE:/ # ls"]


def test_output_passes_unchanged_when_nothing_is_typed() -> None:
    keeper = LineKeeper()
    stream = (b"\x1b[2J\x1b[HSeaBIOS\r\nLinux version 6.1\r\n" + PROMPT + DISCOVERY
              + b"progress 10%\rprogress 20%\r")
    assert b"".join(keeper.shown(stream[i:i + 7]) for i in range(0, len(stream), 7)) == stream


def test_after_enter_the_command_output_is_not_held() -> None:
    keeper = LineKeeper()
    keeper.shown(PROMPT)
    keeper.typed(b"ls")
    keeper.shown(b"ls")
    keeper.typed(b"\r")
    assert keeper.shown(b"\r\nbin  etc\r\n" + PROMPT) == b"\r\nbin  etc\r\n" + PROMPT


def test_a_line_arriving_between_enter_and_its_newline_goes_above_the_command() -> None:
    """(A clean CI run caught discovery's line printed after the command, before its newline.)"""
    keeper = LineKeeper()
    shown = keeper.shown(PROMPT)
    keeper.typed(b"echo hi")
    shown += keeper.shown(b"echo hi")
    keeper.typed(b"\r")
    shown += keeper.shown(DISCOVERY[:9])
    shown += keeper.shown(DISCOVERY[9:] + b"\r\nhi\r\n" + PROMPT)
    assert screen(shown) == [DISCOVERY.decode().strip(), "ONIE:/ # echo hi", "hi", "ONIE:/ #"]


def test_after_enter_on_a_line_with_the_cursor_moved_output_is_not_held() -> None:
    keeper = LineKeeper()
    keeper.shown(PROMPT)
    keeper.typed(b"ech hi")
    keeper.shown(b"ech hi")
    keeper.typed(b"\x1b[D\x1b[D\x1b[D")  # left arrow x3: the cursor after "ech"
    keeper.shown(b"\b\b\b")
    keeper.typed(b"o")
    keeper.shown(b"o hi\b\b\b")
    keeper.typed(b"\r")  # BusyBox answers with the line's rest, then the newline
    assert keeper.shown(b" hi\r\nhi\r\n") == b" hi\r\nhi\r\n"


def test_a_cursor_report_between_keys_leaves_enter_waiting_for_its_newline() -> None:
    keeper = LineKeeper()
    keeper.shown(PROMPT)
    keeper.typed(b"\x1b[24;10R")  # the terminal's answer to the shell's query: no key
    keeper.typed(b"ls")
    keeper.shown(b"ls")
    keeper.typed(b"\r")
    assert keeper.shown(DISCOVERY) == ERASE_LINE + DISCOVERY + PROMPT + b"ls"


def test_the_answer_to_an_editing_key_is_shown_at_once() -> None:
    keeper = LineKeeper()
    keeper.shown(PROMPT)
    keeper.typed(b"lsx")
    keeper.shown(b"lsx")
    keeper.typed(b"\x7f")  # backspace: BusyBox answers "\b \b" (or "\b\x1b[K")
    assert keeper.shown(b"\b \b") == b"\b \b"
    keeper.typed(b"\x1b[A")  # up arrow: the history's line, drawn after a CR
    assert keeper.shown(b"\r" + PROMPT + b"cat x") == b"\r" + PROMPT + b"cat x"
    keeper.typed(b"y")
    shown = keeper.shown(b"y" + DISCOVERY)
    assert screen(PROMPT + b"lsx\b \b\r" + PROMPT + b"cat x" + shown) == [
        DISCOVERY.decode().strip(), "ONIE:/ # cat xy"]


def test_held_text_is_shown_in_place_once_keys_typed_since_are_not_echoed() -> None:
    keeper = LineKeeper()
    keeper.shown(PROMPT)
    keeper.typed(b"c")
    keeper.shown(b"c")
    assert keeper.shown(b"ompletion ") == b""  # text, not the echo: held...
    for key in b"defg":  # typed one by one
        keeper.typed(bytes((key,)))
    assert keeper.shown(b"d") == b""  # (an echo does not end a held line: it may be its text)
    keeper.typed(b"h")  # ...until keys were typed more times than a line's time allows
    assert keeper.shown(b"efgh") == b"ompletion defgh"
    assert keeper.finish() == b"\r\n"


def test_a_paste_while_a_line_is_held_does_not_release_it() -> None:
    """(A clean CI run: 22 keys sent at once released discovery's line where it came.)"""
    keeper = LineKeeper()
    shown = keeper.shown(PROMPT)
    keeper.typed(b"echo a")
    shown += keeper.shown(b"echo a")
    shown += keeper.shown(DISCOVERY[:20])
    keeper.typed(b"bc; echo ob-$((6 * 7))")
    shown += keeper.shown(DISCOVERY[20:] + b"bc; echo ob-$((6 * 7))")
    assert screen(shown) == [DISCOVERY.decode().strip(), "ONIE:/ # echo abc; echo ob-$((6 * 7))"]
    assert keeper.finish() == b"\r\n"


def test_escape_sequences_from_the_guest_are_not_held() -> None:
    keeper = LineKeeper()
    keeper.shown(PROMPT)
    keeper.typed(b"ab")
    keeper.shown(b"a")
    assert keeper.shown(b"\x1b[J") == b"\x1b[J"


def test_keys_never_echoed_are_not_expected_after_a_new_line() -> None:
    keeper = LineKeeper()
    keeper.typed(b"ls")  # before the shell runs: nothing echoes them
    assert keeper.shown(b"[    1.90] Freeing unused kernel memory\r\n") == (
        b"[    1.90] Freeing unused kernel memory\r\n")
    assert keeper.pending == b""
    assert keeper.shown(b"[    1.93] Run /init as init process\r\n") == (
        b"[    1.93] Run /init as init process\r\n")


def test_an_escape_sequence_cut_between_reads_is_not_held() -> None:
    keeper = LineKeeper()
    assert keeper.shown(PROMPT + b"\x1b[") == PROMPT + b"\x1b["
    keeper.typed(b"x")
    assert keeper.shown(b"6nx") == b"6nx"  # "6n" ends the sequence; "x" is the echo
    assert keeper.shown(b"\x1b") == b"\x1b"
    assert keeper.shown(b"[K") == b"[K"


def test_the_shells_cursor_query_is_not_asked_again_and_its_answer_is_no_key() -> None:
    keeper = LineKeeper()
    keeper.shown(PROMPT + b"\x1b[6n")  # BusyBox ash asks where its prompt ended
    keeper.typed(b"\x1b[24;10R")  # the terminal answers, through the relay
    keeper.typed(b"ls")
    keeper.shown(b"ls")
    keeper.typed(b"\x1b[24;12R")  # (an answer coming late, after typing began)
    assert keeper.shown(DISCOVERY) == ERASE_LINE + DISCOVERY + PROMPT + b"ls"


def test_keys_for_qemu_are_not_expected_back() -> None:
    keeper = LineKeeper()
    keeper.typed(b"\x01c")  # Ctrl-A C: QEMU's monitor, not the guest
    assert keeper.pending == b""
    keeper.typed(b"\x01\x01a")  # Ctrl-A Ctrl-A: one Ctrl-A for the guest, then a key
    assert keeper.pending == b"a"


def test_finish_prints_what_was_held() -> None:
    keeper = LineKeeper()
    keeper.shown(PROMPT)
    keeper.typed(b"x")
    keeper.shown(b"x")
    keeper.shown(b"onie-discovery: cut")
    assert keeper.finish() == b"onie-discovery: cut\r\n"


def test_qemus_own_lines_go_above_the_line_being_typed() -> None:
    keeper = LineKeeper()
    shown = keeper.shown(PROMPT)
    keeper.typed(b"ls")
    shown += keeper.shown(b"ls")
    warning = b"qemu-system-x86_64: warning: TCG doesn't support requested feature\n"
    assert keeper.aside(warning[:20]) == b""  # a part waits for the rest of its line
    redraw = keeper.aside(warning[20:])
    assert redraw == ERASE_LINE + warning.rstrip() + b"\r\n" + PROMPT + b"ls"
    shown += redraw
    keeper.typed(b"\r")
    shown += keeper.shown(b"\r\n")
    assert screen(shown) == [warning.decode().strip(), "ONIE:/ # ls", ""]
    assert keeper.aside(b"qemu: terminating on signal 15") == b""
    assert keeper.finish() == b"qemu: terminating on signal 15\r\n"


# --- the relay under a pty, with a stand-in guest --------------------------------------------

GUEST = r"""
import os, sys
os.write(1, b"ONIE:/ # ")
typed = b""
while True:
    key = os.read(0, 1)
    if not key:
        sys.exit(9)
    if key == b"\r":
        os.write(1, b"\r\nran " + typed + b"\r\n")
        sys.exit(3)
    typed += key
    os.write(1, key)
    if len(typed) == 3:
        os.write(1, b"onie-discovery: round 2 uptime=12.34\r\n")
    if len(typed) == 2 and len(sys.argv) > 1:  # as QEMU: a message on its own stderr
        os.write(2, b"qemu-system-x86_64: warning: ")
        os.write(2, b"host lacks a feature\n")
"""

RELAY = r"""
import sys
from builder.lab.terminal import run_guest
from builder.lab.testbed import Stopped, stop_on_signals
with stop_on_signals():
    try:
        code = run_guest(sys.argv[1:])
    except Stopped as exc:
        code = exc.exit_code
print(f"\nguest exit {code}")
sys.exit(code)
"""


def test_relay_keeps_the_typed_line_and_restores_the_terminal() -> None:
    with Pty([sys.executable, "-c", RELAY, sys.executable, "-c", GUEST]) as term:
        term.expect(re.escape(PROMPT))
        term.send(b"abc")
        term.expect(rb"round 2 uptime=12\.34\r\r?\n" + re.escape(PROMPT + b"abc"))
        term.send(b"d\r")
        term.expect(rb"guest exit 3\r?\n")
        assert term.proc.wait(20) == 3
        assert screen(term.output)[:3] == [
            "onie-discovery: round 2 uptime=12.34", "ONIE:/ # abcd", "ran abcd"]
        assert termios.tcgetattr(term.slave) == term.saved  # cooked mode again


def test_relay_puts_qemus_stderr_above_the_typed_line() -> None:
    with Pty([sys.executable, "-c", RELAY, sys.executable, "-c", GUEST, "warn"]) as term:
        term.expect(re.escape(PROMPT))
        term.send(b"ab")
        term.expect(rb"host lacks a feature\r\r?\n" + re.escape(PROMPT + b"ab"))
        term.send(b"c")
        term.expect(rb"round 2 uptime=12\.34\r\r?\n" + re.escape(PROMPT + b"abc"))
        term.send(b"\r")
        term.expect(rb"guest exit 3\r?\n")
        assert term.proc.wait(20) == 3
        assert screen(term.output)[:4] == [
            "qemu-system-x86_64: warning: host lacks a feature",
            "onie-discovery: round 2 uptime=12.34", "ONIE:/ # abc", "ran abc"]


def test_relay_restores_the_terminal_when_told_to_stop() -> None:
    with Pty([sys.executable, "-c", RELAY, sys.executable, "-c", GUEST]) as term:
        term.expect(re.escape(PROMPT))
        raw = termios.tcgetattr(term.slave)
        assert not raw[3] & termios.ICANON  # the relay put the terminal in raw mode
        term.proc.terminate()
        term.expect(rb"guest exit 143")
        assert term.proc.wait(20) == 143
        assert termios.tcgetattr(term.slave) == term.saved


def test_without_a_terminal_the_guest_keeps_stdio() -> None:
    proc = subprocess.run([sys.executable, "-c", RELAY, sys.executable, "-c", GUEST],
                          input=b"abcd\r", capture_output=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 3
    # no relay: the stand-in's bytes, in its order, with nothing held or drawn again
    assert proc.stdout == (PROMPT + b"abconie-discovery: round 2 uptime=12.34\r\nd\r\nran abcd\r\n"
                           + b"\nguest exit 3\n")
