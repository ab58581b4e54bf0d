"""ONIE's installer file names and TFTP waterfall paths, computed from the platform's identity.

These are facts ONIE users rely on (a server laid out for ONIE works unchanged): the default
names run from the most to the least specific, each followed by its ``.bin`` twin; the
waterfall tries the MAC folder, then the leased IPv4 address in hex shortened one digit at
a time, then the plain names. The discovery script computes the runtime parts (MAC, IP) with
the same rules; tests check both against these functions.
"""

from __future__ import annotations

import ipaddress
import re

INSTALLER = "onie-installer"
UPDATER = "onie-updater"
SUFFIXES = ("", ".bin")
MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


def base_names(prefix: str, platform: str, arch: str, machine: str, switch_asic: str) -> tuple[str, ...]:
    """ONIE's six names, most specific first (``<prefix>-<platform>`` ... ``<prefix>``)."""
    return (
        f"{prefix}-{platform}",
        f"{prefix}-{arch}-{machine}",
        f"{prefix}-{machine}",
        f"{prefix}-{arch}-{switch_asic}",
        f"{prefix}-{arch}",
        prefix,
    )


def default_names(prefix: str, platform: str, arch: str, machine: str,
                  switch_asic: str) -> tuple[str, ...]:
    """The default file names: each base name followed by its ``.bin`` twin."""
    return tuple(name + suffix
                 for name in base_names(prefix, platform, arch, machine, switch_asic)
                 for suffix in SUFFIXES)


def mac_folder(mac: str) -> str:
    """``52:54:00:12:34:56`` -> ``52-54-00-12-34-56`` (ONIE keeps the case it was given)."""
    if not MAC_RE.match(mac):
        raise ValueError(f"expected a MAC address like '52:54:00:12:34:56', got {mac!r}")
    return mac.replace(":", "-")


def hex_prefixes(ip: str) -> tuple[str, ...]:
    """``192.168.1.178`` -> ``C0A801B2``, ``C0A801B``, ... ``C`` (upper-case hex, 8 to 1 digits)."""
    full = f"{int(ipaddress.IPv4Address(ip)):08X}"
    return tuple(full[:n] for n in range(8, 0, -1))


def waterfall_paths(names: tuple[str, ...], mac: str | None, ip: str | None) -> tuple[str, ...]:
    """The TFTP waterfall for one server: folders hold only the most specific name."""
    first = names[0]
    paths: list[str] = []
    if mac:
        paths.append(f"{mac_folder(mac)}/{first}")
    if ip:
        paths.extend(f"{prefix}/{first}" for prefix in hex_prefixes(ip))
    paths.extend(names)
    return tuple(paths)
