"""The site model: one factory's subnets, provisioning server, TLS material, status reports, and
which installer each platform and each device (by MAC or serial number) gets, as a frozen
``Site``; ``builder.factory.sitefile`` reads files into it."""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from builder.factory.values import (
    HOSTNAME_RE,
    MAC_RE,
    SERIAL_RE,
    SITE_NAME_RE,
    IPAddress,
    IPNetwork,
    _iscsi_root,
    _safe_text,
    _sexagesimal_mac,
    normalize_mac,
    parse_platform,
)

SILENT_MIN, SILENT_MAX = 10, 7 * 24 * 3600  # status.silent_after, seconds


class Model(BaseModel):
    """Base of every site section: frozen, no unknown keys (as recipes)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Scheme(enum.Enum):
    """The scheme of the URLs handed out by DHCP."""

    HTTP = "http"
    HTTPS = "https"


class Server(Model):
    """Where devices reach the provisioning server, and the ports it listens on."""

    address: ipaddress.IPv4Address
    address6: ipaddress.IPv6Address | None = None
    name: str | None = None
    listen: list[IPAddress] = [ipaddress.IPv4Address("0.0.0.0")]
    http_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    https_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    scheme: Scheme = Scheme.HTTP

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not all(HOSTNAME_RE.match(p) for p in v.split(".")):
            raise ValueError(f"expected a DNS name such as 'onie-server.factory.example', got {v!r}")
        return v

    @model_validator(mode="after")
    def _ports(self) -> Self:
        if self.scheme is Scheme.HTTPS and self.https_port is None:
            raise ValueError("scheme: 'https' needs 'https_port' (and a 'tls' section)")
        if self.https_port is not None and self.https_port == self.http_port:
            raise ValueError(f"https_port: must differ from http_port, got {self.https_port}")
        return self


class Tls(Model):
    """The server's certificate chain and key; ``ca`` is the CA the images trust (published)."""

    cert: Path
    key: Path
    ca: Path | None = None


class Status(Model):
    """Signed status reports (docs/factory.md, "Status protocol"): size limits. There is no
    shared secret: each device signs with its own key, registered on first contact."""

    max_body: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    log_tail: Annotated[int, Field(ge=0, le=1024 * 1024)] = 16 * 1024
    # A device neither waiting nor finished that has said nothing for this long is "silent".
    silent_after: int = 900

    @field_validator("silent_after")
    @classmethod
    def _silent_after(cls, v: int) -> int:
        if not SILENT_MIN <= v <= SILENT_MAX:
            raise ValueError(f"expected whole seconds from {SILENT_MIN} to {SILENT_MAX} (7 days), "
                             f"got {v}: a download's progress reaches the state database every "
                             f"3 s, so a shorter silence would call running downloads silent")
        return v

    @model_validator(mode="before")
    @classmethod
    def _no_token(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("token" in data or "token_file" in data):
            raise ValueError("'token' and 'token_file' are gone: a token baked into the image "
                             "can be downloaded by anyone; devices now sign reports with keys "
                             "of their own (docs/factory.md, \"Status protocol\")")
        return data


class Subnet(Model):
    """A network the DHCP server answers on: a dynamic pool plus the usual options."""

    network: IPNetwork
    pool: tuple[IPAddress, IPAddress]
    router: IPAddress | None = None
    dns: list[IPAddress] = []
    lease_time: Annotated[int, Field(ge=60, le=7 * 24 * 3600)] = 3600
    interface: str | None = None

    @field_validator("interface")
    @classmethod
    def _interface(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,15}", v):
            raise ValueError(f"expected a network interface name like 'eth1', got {v!r}")
        return v

    @model_validator(mode="after")
    def _inside(self) -> Self:
        for what, ip in (("pool", self.pool[0]), ("pool", self.pool[1]), ("router", self.router),
                         *(("dns", d) for d in self.dns if d.version == self.network.version)):
            if ip is not None and ip not in self.network:
                raise ValueError(f"{what}: {ip} is not in {self.network}")
        if self.pool[0] > self.pool[1]:  # type: ignore[operator]
            raise ValueError(f"pool: the first address must not come after the last, got "
                             f"{self.pool[0]} - {self.pool[1]}")
        return self

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.network.version


class Assignment(Model):
    """What a device gets: an installer and an updater (files), an iSCSI root path."""

    installer: Path | None = None
    updater: Path | None = None
    iscsi_root: str | None = None

    @field_validator("iscsi_root")
    @classmethod
    def _root(cls, v: str | None) -> str | None:
        return None if v is None else _iscsi_root(v)


class PlatformEntry(Assignment):
    """The default assignment of every device of one platform."""

    platform: str

    @field_validator("platform")
    @classmethod
    def _platform(cls, v: str) -> str:
        parse_platform(v)
        return v


class Device(Assignment):
    """One switch, known by MAC and/or serial number; overrides its platform's assignment."""

    mac: str | None = None
    serial: str | None = None
    name: str | None = None
    platform: str | None = None
    address: IPAddress | None = None

    @field_validator("mac", mode="before")
    @classmethod
    def _mac(cls, v: Any) -> str | None:
        if isinstance(v, int) and not isinstance(v, bool):
            v = _sexagesimal_mac(v)
        return None if v is None else normalize_mac(v) if isinstance(v, str) else v

    @field_validator("serial", mode="before")
    @classmethod
    def _serial_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("serial")
    @classmethod
    def _serial(cls, v: str | None) -> str | None:
        if v is not None and not SERIAL_RE.match(v):
            raise ValueError(f"expected 1-64 letters, digits, '.', '_' or '-', got {v!r}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not HOSTNAME_RE.match(v):
            raise ValueError(f"expected a host name (letters, digits, '-'), got {v!r}")
        return v

    @field_validator("platform")
    @classmethod
    def _platform(cls, v: str | None) -> str | None:
        if v is not None:
            parse_platform(v)
        return v

    @model_validator(mode="after")
    def _identity(self) -> Self:
        if self.mac is None and self.serial is None:
            raise ValueError("expected 'mac', 'serial' or both to identify the device")
        if self.address is not None and self.mac is None:
            raise ValueError("address: a fixed address needs 'mac' (DHCP knows devices by MAC)")
        return self

    @property
    def key(self) -> str:
        """The name the status store knows this device by: serial, else MAC."""
        return self.serial or self.mac or ""


class Arch(enum.Enum):
    """UEFI HTTP boot client architectures (RFC 4578 option 93, IANA processor types)."""

    X86_64 = "x86_64"
    ARM64 = "arm64"

    @property
    def client_arch(self) -> int:
        """The option 93 value of this architecture's UEFI HTTP boot client."""
        return {"x86_64": 0x10, "arm64": 0x13}[self.value]


class HttpBoot(Model):
    """The UEFI HTTP boot answer for one architecture: the UKI's path inside ``out/``."""

    arch: Arch
    image: str

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        _safe_text(v, "a path inside out/")
        if v.startswith("/") or ".." in v.split("/"):
            raise ValueError(f"expected a relative path inside out/, got {v!r}")
        return v


class Site(Model):
    """A fully validated site file."""

    name: str
    server: Server
    tls: Tls | None = None
    status: Status | None = None
    # The state database's URL (docs/factory.md, "Database"); default: SQLite beside the file.
    database: str | None = None
    subnets: list[Subnet] = []
    platforms: list[PlatformEntry] = []
    devices: list[Device] = []
    http_boot: list[HttpBoot] = []
    # Indexes for the lookups every request makes (a site lists up to thousands of devices):
    # built once, as the Site is made; a Site never changes after (frozen), and serve loads
    # the site file once, so they cannot go stale. The first entry wins, as a scan would.
    _by_serial: dict[str, Device] = PrivateAttr(default_factory=dict)
    _by_mac: dict[str, Device] = PrivateAttr(default_factory=dict)
    _by_platform: dict[str, PlatformEntry] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        """Build the lookup indexes."""
        by_serial: dict[str, Device] = {}
        by_mac: dict[str, Device] = {}
        for device in self.devices:
            if device.serial is not None:
                by_serial.setdefault(device.serial, device)
            if device.mac is not None:
                by_mac.setdefault(device.mac, device)
        by_platform: dict[str, PlatformEntry] = {}
        for entry in self.platforms:
            by_platform.setdefault(entry.platform, entry)
        self._by_serial, self._by_mac, self._by_platform = by_serial, by_mac, by_platform

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy whose indexes match its own devices and platforms (pydantic copies the
        private attributes as they are, which ``update`` could make stale)."""
        copy = super().model_copy(update=update, deep=deep)
        copy.model_post_init(None)
        return copy

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SITE_NAME_RE.match(v):
            raise ValueError("expected 1-64 letters, digits, '.', '_' or '-' (starting with a "
                             f"letter or digit), got {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.server.https_port is not None and self.tls is None:
            raise ValueError("server.https_port needs a 'tls' section (cert and key)")
        return self

    def platform(self, name: str) -> PlatformEntry | None:
        """The entry of platform ``name``, if the site lists it."""
        return self._by_platform.get(name)

    def find_device(self, serial: str | None = None, mac: str | None = None) -> Device | None:
        """The device with this serial number, else with this MAC (normalized), else None."""
        if serial:
            found = self._by_serial.get(serial)
            if found is not None:
                return found
        if mac and MAC_RE.match(mac):
            return self._by_mac.get(normalize_mac(mac))
        return None

    def url(self, path: str, family: int = 4) -> str:
        """The URL devices use for ``path`` (scheme, address or name, port from the site)."""
        server = self.server
        https = server.scheme is Scheme.HTTPS
        port = server.https_port if https else server.http_port
        if family == 6:
            if server.address6 is None:
                raise ValueError("server.address6 is not set")
            host = f"[{server.address6}]"
        else:
            host = server.name or str(server.address)
        default = 443 if https else 80
        netloc = host if port == default else f"{host}:{port}"
        return f"{server.scheme.value}://{netloc}/{path.lstrip('/')}"
