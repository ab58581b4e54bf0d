"""The recipe's ``transports`` section: HTTPS, iSCSI (RFC 4173) and IPv6 settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from builder.recipe.base import Hex64, Model
from builder.recipe.rootpath import parse_root_path

ISCSI_NAME_RE = re.compile(r"iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9][a-z0-9.:-]*|eui\.[0-9A-Fa-f]{16}"
                           r"|naa\.(?:[0-9A-Fa-f]{16}|[0-9A-Fa-f]{32})")


def _root_path(v: str) -> str:
    parse_root_path(v)  # RootPathError is a ValueError: its message names the field
    return v


def _iscsi_name(v: str) -> str:
    if not ISCSI_NAME_RE.fullmatch(v) or len(v) > 223:
        raise ValueError(f"expected an iSCSI name such as 'iqn.2024-01.com.example:switch', got {v!r}")
    return v


def _clock_floor(v: str) -> str:
    if v not in ("build", "none") and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        raise ValueError(f"expected 'build', 'none' or a date YYYY-MM-DD, got {v!r}")
    return v


def _isns_server(v: str) -> str:
    host, _, port = v.rpartition(":") if ":" in v else (v, "", "")
    if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", host) or (port and not ISNS_PORT_RE.fullmatch(port)):
        raise ValueError(f"expected an IPv4 address or host name, optionally ':port', got {v!r}")
    return v


RootPathText = Annotated[str, AfterValidator(_root_path)]
ISNS_PORT_RE = re.compile(r"[1-9][0-9]{0,4}")


class Https(Model):
    """HTTPS downloads that check the server (docs/transports.md): CA certificates baked in (PEM
    files; none means https:// URLs are refused), optional SubjectPublicKeyInfo sha256 pins,
    the floor for validity dates when the clock is wrong, and how many redirects to follow."""

    ca: list[Path] = []
    pins: list[Hex64] = []
    floor: Annotated[str, AfterValidator(_clock_floor)] = "build"
    redirects: Annotated[int, Field(ge=0, le=10)] = 0


class Iscsi(Model):
    """iSCSI boot per RFC 4173 (docs/transports.md); off unless ``enabled`` (section 8)."""

    enabled: bool = False
    root_paths: list[RootPathText] = []  # tried after netroot= and before DHCP option 17
    initiator: Annotated[str, AfterValidator(_iscsi_name)] | None = None  # default: platform+serial
    chap: Path | None = None  # the CHAP secrets file baked in (never in logs or the manifest)
    isns: list[Annotated[str, AfterValidator(_isns_server)]] = []  # besides DHCP option 83
    tpgt: Annotated[int, Field(ge=0, le=65535)] = 1  # target portal group tag for iscsistart
    timeout: Annotated[int, Field(ge=1, le=300)] = 15  # seconds for a login and the LUN to appear


class Ipv6(Model):
    """IPv6: SLAAC and link-local neighbours for the HTTP sweep, DHCPv6 for option 59."""

    enabled: bool = True
    dhcpv6: bool = False  # needs dhcpcd (Debian's dhcpcd-base, ~400 KB) in the image
    wait: Annotated[float, Field(ge=0, le=60)] = 3.0  # seconds for router advertisements and DAD


class Transports(Model):
    """Network transports beyond plain HTTP and TFTP (docs/transports.md)."""

    https: Https = Https()
    iscsi: Iscsi = Iscsi()
    ipv6: Ipv6 = Ipv6()
