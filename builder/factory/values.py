"""The values a site file, a DHCP configuration and a device's report carry: MAC addresses,
serial numbers, ONIE platform strings, and text safe to put in a configuration or a header."""

from __future__ import annotations

import ipaddress
import re

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAC_RE = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$", re.I)
# ONIE's platform string <arch>-<vendor>_<model>-r<rev>: arch and machine carry no '-'.
PLATFORM_RE = re.compile(r"^(?P<arch>[a-z0-9_]+)-(?P<machine>[a-z0-9]+_[a-z0-9_]+)-r(?P<rev>[0-9]+)$")
# Values that end up in DHCP configurations and HTTP headers: printable, no quotes or commas.
SAFE_TEXT_RE = re.compile(r"^[A-Za-z0-9._:/@+=~%\[\]-]+$")
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
SERIAL_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# A site's name: written into DHCP configurations (comments) and the status page.
SITE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def normalize_mac(value: str) -> str:
    """``52-54-00-12-34-56`` or upper case -> ``52:54:00:12:34:56``; ValueError when not a MAC."""
    if not MAC_RE.match(value):
        raise ValueError(f"expected a MAC address like '52:54:00:12:34:56', got {value!r}")
    return value.lower().replace("-", ":")


def _sexagesimal_mac(value: int) -> str:
    """Undo YAML 1.1 reading an unquoted ``52:54:00:12:34:56`` as a base-60 integer."""
    groups = []
    while value:
        value, digit = divmod(value, 60)
        groups.append(f"{digit:02d}")
    if len(groups) != 6:
        raise ValueError("expected a MAC address like '52:54:00:12:34:56' (quote it)")
    return ":".join(reversed(groups))


def parse_platform(value: str) -> tuple[str, str, int]:
    """Split ONIE's platform string into (arch, machine, revision); ValueError when malformed."""
    match = PLATFORM_RE.match(value)
    if match is None:
        raise ValueError(f"expected an ONIE platform string '<arch>-<vendor>_<model>-r<rev>' "
                         f"such as 'x86_64-qemu_x86_64-r0', got {value!r}")
    return match["arch"], match["machine"], int(match["rev"])


def _safe_text(value: str, what: str) -> str:
    if not SAFE_TEXT_RE.match(value):
        raise ValueError(f"expected {what} without spaces, quotes or commas, got {value!r}")
    return value


def _iscsi_root(value: str) -> str:
    # RFC 4173: iscsi:<servername>:<protocol>:<port>:<LUN>:<targetname>; the target is mandatory.
    _safe_text(value, "an iSCSI root path")
    if not value.startswith("iscsi:") or value.count(":") < 5 or value.rsplit(":", 1)[-1] == "":
        raise ValueError("expected an RFC 4173 root path 'iscsi:<server>:<protocol>:<port>:<LUN>:"
                         f"<target>', got {value!r}")
    return value
