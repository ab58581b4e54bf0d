"""A guest command's own output, read over a console that others write to as well.

The serial console is shared: the kernel prints there (straight to the UART, in the middle of
a line if it must) and so does discovery. So the command's output never crosses the console
raw. The shell line ``command_line`` types runs the command with stdout and stderr in a file
of the guest, then prints that file in base64, every line tagged with the run's token, and a
trailer (twice) with the exit status and the file's MD5. ``read_frame`` keeps only whole
tagged lines, and the result counts only when its MD5 is the guest's: a line that another
writer cut is dropped, the sum then differs, and the caller asks for the file again
(``reprint_line``) instead of returning someone else's text. Another writer's text in front of
a tagged line (a partial line it had printed before ours began) is not part of the line: the
tag says where ours starts, and the MD5 still checks what follows. Needs ``base64``, ``md5sum`` and
``sed`` in the guest (BusyBox has them all).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import shlex
from dataclasses import dataclass

# Where the guest keeps the last command's output: one file per Console, overwritten per run.
OUTPUT_DIR = "/tmp"


@dataclass(frozen=True)
class Trailer:
    """What the guest said of a run: its exit status and the MD5 of its output file."""

    status: int
    md5: str


def trailer_pattern(token: str) -> re.Pattern[str]:
    """The trailer line of run ``token``: ``__OB_<token>_E<status>_<md5>``."""
    return re.compile(rf"__OB_{token}_E(\d+)_([0-9a-f]{{32}})\b")


def _print_part(token: str, path: str) -> str:
    # The tag and trailer are split by quotes so the shell's echo of this line never matches.
    q = shlex.quote(path)
    return (f"base64 {q} | sed 's/^/__OB_{token}_''D/'; "
            f"__ob_t=\"__OB_{token}_\"\"E${{__ob_s}}_$(md5sum < {q} | cut -c1-32)\"; "
            'echo "$__ob_t"; echo "$__ob_t"')


def command_line(command: str, token: str, path: str) -> str:
    """The shell line that runs ``command`` with its output in ``path`` and prints that framed.

    ``command eval`` keeps a comment, a trailing & or a syntax error in ``command`` from
    eating the rest of the line, and runs in the shell itself, so ``cd`` and variables stay.
    """
    return (f"command eval {shlex.quote(command)} > {shlex.quote(path)} 2>&1; __ob_s=$?; "
            f"{_print_part(token, path)}\n")


def reprint_line(token: str, path: str) -> str:
    """The shell line that prints the output file of the last run again, under ``token``."""
    return f"{_print_part(token, path)}\n"


def _tagged(token: str) -> re.Pattern[str]:
    return re.compile(rf"__OB_{token}_D([A-Za-z0-9+/=]*)$")


def read_frame(window: str, token: str, trailer: Trailer) -> bytes | None:
    """The output bytes framed under ``token`` in ``window``, or None when another writer cut
    one of its lines (the caller then asks for a reprint)."""
    tagged = _tagged(token)
    text = "".join(m.group(1) for line in window.replace("\r", "").split("\n")
                   if (m := tagged.search(line)))
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if hashlib.md5(data, usedforsecurity=False).hexdigest() == trailer.md5 else None


def glued_lines(window: str, token: str) -> int:
    """How many tagged lines of ``token`` in ``window`` had another writer's text in front."""
    tagged = _tagged(token)
    return sum(1 for line in window.replace("\r", "").split("\n")
               if (m := tagged.search(line)) and m.start() > 0)
