"""The iSCSI root path of RFC 4173 section 5: ``iscsi:<servername>:<protocol>:<port>:<LUN>:<targetname>``.

``parse_root_path`` turns the text into a frozen ``RootPath`` or raises ``RootPathError`` with
one exact message; ``format_root_path`` writes the canonical text back. The same grammar, with
the same messages, is written in BusyBox ``ash`` in
``templates/guest/discovery/lib/rootpath.sh.j2`` for the guest;
``tests/data/rootpath_vectors.json`` is the one table both are tested against.

The grammar, field by field (RFC 4173 section 5):
- servername: optional; a DNS host name (RFC 2396 section 3.2.2: labels of letters, digits and
  '-', the last one starting with a letter), a dotted IPv4 address, or an IPv6 address in
  brackets (RFC 2732; no zone index). Blank means: resolve the target name (section 6, iSNS).
- protocol: optional; decimal; only 6 (TCP) is approved for iSCSI.
- port: optional; decimal 1-65535 without leading zeros; blank means 3260.
- LUN: optional; up to four groups of 1-4 hex digits (at most three leading zeros of a group
  omitted, missing trailing groups are zero), separated by '-' or, as printed in the RFC's
  examples, by single spaces; blank means LUN 0. No other shorthand.
- targetname: mandatory; the rest of the text, colons included; an iSCSI name (RFC 3720
  section 3.2.6.3): ``iqn.yyyy-mm.<reversed domain>[:<anything>]``, ``eui.`` + 16 hex digits
  or ``naa.`` + 16 or 32 hex digits. We accept the ASCII part of the iSCSI string profile
  (RFC 3722) only: lower-case letters, digits, '.', '-' and ':' (hex in either case).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

PREFIX = "iscsi:"
DEFAULT_PORT = 3260
TCP = 6
MAX_LENGTH = 1024
MAX_TARGET = 223  # RFC 3720 section 3.2.6.1: at most 223 bytes
LUN_GROUPS = 4
SHAPE = "expected iscsi:<servername>:<protocol>:<port>:<LUN>:<targetname>"
TARGET_SHAPE = ("expected an iSCSI name (iqn.yyyy-mm.naming-authority[:unique], eui. and 16 hex "
                "digits, or naa. and 16 or 32 hex digits)")

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_TOP = r"[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
HOST_RE = re.compile(rf"(?:{_LABEL}\.)*{_TOP}\.?")
IPV4_RE = re.compile(r"[0-9.]+")
IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+")
DECIMAL_RE = re.compile(r"0|[1-9][0-9]{0,4}")
HEX_GROUP_RE = re.compile(r"[0-9A-Fa-f]{1,4}")
TARGET_RE = re.compile(r"(?:iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9][a-z0-9.:-]*"
                       r"|eui\.[0-9A-Fa-f]{16}|naa\.(?:[0-9A-Fa-f]{16}|[0-9A-Fa-f]{32}))")


class RootPathError(ValueError):
    """A root path that does not follow RFC 4173; the message names the field."""


class ServerKind(enum.Enum):
    """What the servername field holds."""

    NAME = "name"
    IPV4 = "ipv4"
    IPV6 = "ipv6"


@dataclass(frozen=True)
class RootPath:
    """A parsed root path. ``server`` is None when blank (resolve ``target`` through iSNS);
    an IPv6 server is kept without its brackets. ``port`` is None when blank."""

    target: str
    server: str | None = None
    server_kind: ServerKind | None = None
    port: int | None = None
    lun: tuple[int, int, int, int] = (0, 0, 0, 0)
    protocol: int = TCP

    @property
    def effective_port(self) -> int:
        """The port to connect to: the given one, else iSCSI's well-known 3260."""
        return DEFAULT_PORT if self.port is None else self.port

    @property
    def lun_text(self) -> str:
        """The LUN as four lower-case groups of four hex digits, e.g. ``0001-0000-0000-0000``."""
        return "-".join(f"{g:04x}" for g in self.lun)

    @property
    def linux_lun(self) -> int:
        """The LUN as Linux numbers it in sysfs (``scsilun_to_int``: group 1 is the low 16 bits)."""
        return sum(g << (16 * i) for i, g in enumerate(self.lun))

    def __str__(self) -> str:
        return format_root_path(self)


def parse_root_path(text: str) -> RootPath:
    """Parse ``iscsi:...`` text; raise RootPathError with the exact message on any deviation."""
    if any(not " " <= c <= "~" for c in text):
        raise RootPathError("expected printable ASCII characters only")
    if len(text) > MAX_LENGTH:
        raise RootPathError(f"longer than {MAX_LENGTH} characters")
    if not text.startswith(PREFIX):
        raise RootPathError("expected 'iscsi:' at the start")
    server, bracketed, rest = _split_server(text[len(PREFIX):])
    fields = rest.split(":", 3)
    if len(fields) < 4:
        raise RootPathError(f"missing fields: {SHAPE}")
    kind = ServerKind.IPV6 if bracketed else _server_kind(server) if server else None
    protocol = _protocol(fields[0])
    port = _port(fields[1])
    lun = parse_lun(fields[2])
    target = _target(fields[3])
    return RootPath(target=target, server=server or None, server_kind=kind, port=port, lun=lun,
                    protocol=protocol)


def _split_server(rest: str) -> tuple[str, bool, str]:
    """The servername (without brackets), whether it was bracketed, and the text after it."""
    if not rest.startswith("["):
        server, sep, after = rest.partition(":")
        if not sep:
            raise RootPathError(f"missing fields: {SHAPE}")
        return server, False, after
    close = rest.find("]")
    if close < 0:
        raise RootPathError("servername: '[' without a closing ']'")
    if rest[close + 1:close + 2] != ":":
        raise RootPathError("servername: expected ':' after ']'")
    literal = rest[1:close]
    if not IPV6_RE.fullmatch(literal) or not _is_ipv6(literal):
        raise RootPathError(f"servername: expected an IPv6 address inside the brackets, got '{literal}'")
    return literal, True, rest[close + 2:]


def _server_kind(server: str) -> ServerKind:
    if IPV4_RE.fullmatch(server) and _is_ipv4(server):
        return ServerKind.IPV4
    if len(server) <= 253 and HOST_RE.fullmatch(server) and all(len(x) <= 63 for x in server.split(".")):
        return ServerKind.NAME
    raise RootPathError("servername: expected a host name, an IPv4 address or a bracketed IPv6 "
                        f"address, got '{server}'")


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _protocol(text: str) -> int:
    if text in ("", str(TCP)):
        return TCP
    raise RootPathError(f"protocol: expected 6 (TCP, the only transport approved for iSCSI) or "
                        f"blank, got '{text}'")


def _port(text: str) -> int | None:
    if text == "":
        return None
    if not DECIMAL_RE.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise RootPathError(f"port: expected a decimal number from 1 to 65535 or blank, got '{text}'")
    return int(text)


def parse_lun(text: str) -> tuple[int, int, int, int]:
    """The LUN field: up to four hex groups separated by '-' or ' ' (blank is LUN 0)."""
    if text == "":
        return (0, 0, 0, 0)
    if "-" in text and " " in text:
        raise RootPathError(f"LUN: expected one kind of separator, '-' or ' ', got '{text}'")
    groups = text.split("-" if "-" in text else " ")
    if len(groups) > LUN_GROUPS:
        raise RootPathError(f"LUN: expected at most 4 groups, got '{text}'")
    for group in groups:
        if not HEX_GROUP_RE.fullmatch(group):
            raise RootPathError(f"LUN: expected groups of 1 to 4 hex digits, got '{text}'")
    values = [int(g, 16) for g in groups] + [0] * (LUN_GROUPS - len(groups))
    return (values[0], values[1], values[2], values[3])


def _target(text: str) -> str:
    if text == "":
        raise RootPathError("targetname: required (RFC 4173: it MUST be provided)")
    if len(text) > MAX_TARGET:
        raise RootPathError(f"targetname: longer than {MAX_TARGET} characters")
    if not TARGET_RE.fullmatch(text):
        raise RootPathError(f"targetname: {TARGET_SHAPE}, got '{text}'")
    return text


def format_root_path(path: RootPath) -> str:
    """The canonical text: blank defaults, bracketed IPv6, the LUN as four groups."""
    server = path.server or ""
    if path.server_kind is ServerKind.IPV6:
        server = f"[{server}]"
    port = "" if path.port is None else str(path.port)
    lun = "" if path.lun == (0, 0, 0, 0) else path.lun_text
    return f"{PREFIX}{server}::{port}:{lun}:{path.target}"
