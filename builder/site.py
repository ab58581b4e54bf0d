"""The site file: one factory's subnets, provisioning server, TLS material, status token, and
which installer each platform and each device (by MAC or serial number) gets.

Loaded like a recipe (``extends:`` works, errors read ``file:line: key.path: message``) into a
frozen ``Site``. Paths are relative to the file that wrote them. ``check_site_files`` is the
separate step that touches the host (installers, certificates and the token file exist).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from builder.document import KeyPath, display_name, format_path
from builder.errors import RecipeError
from builder.merge import Merged, load_merged
from builder.validation import describe_error, resolve_relative

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAC_RE = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$", re.I)
# ONIE's platform string <arch>-<vendor>_<model>-r<rev>: arch and machine carry no '-'.
PLATFORM_RE = re.compile(r"^(?P<arch>[a-z0-9_]+)-(?P<machine>[a-z0-9]+_[a-z0-9_]+)-r(?P<rev>[0-9]+)$")
# Values that end up in DHCP configurations and HTTP headers: printable, no quotes or commas.
SAFE_TEXT_RE = re.compile(r"^[A-Za-z0-9._:/@+=~%\[\]-]+$")
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
SERIAL_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MIN_TOKEN = 16
# One HMAC-SHA256 block: the image's shell HMAC (templates/guest/discovery/lib/report.sh.j2) never
# hashes the key.
MAX_TOKEN = 64


class Model(BaseModel):
    """Base of every site section: frozen, no unknown keys (as recipes)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Scheme(enum.Enum):
    """The scheme of the URLs handed out by DHCP."""

    HTTP = "http"
    HTTPS = "https"


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
    """Authenticated status reports: the shared HMAC token and size limits."""

    token: str | None = None
    token_file: Path | None = None
    max_body: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    log_tail: Annotated[int, Field(ge=0, le=1024 * 1024)] = 16 * 1024

    @field_validator("token")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        if v is not None and (not MIN_TOKEN <= len(v) <= MAX_TOKEN or not v.isprintable()
                              or " " in v or not v.isascii()):
            raise ValueError(f"expected {MIN_TOKEN} to {MAX_TOKEN} printable ASCII characters "
                             "without spaces")
        return v

    @model_validator(mode="after")
    def _one_token(self) -> Self:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("expected exactly one of 'token' or 'token_file'")
        return self


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
    subnets: list[Subnet] = []
    platforms: list[PlatformEntry] = []
    devices: list[Device] = []
    http_boot: list[HttpBoot] = []

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.server.https_port is not None and self.tls is None:
            raise ValueError("server.https_port needs a 'tls' section (cert and key)")
        return self

    def platform(self, name: str) -> PlatformEntry | None:
        """The entry of platform ``name``, if the site lists it."""
        return next((p for p in self.platforms if p.platform == name), None)

    def find_device(self, serial: str | None = None, mac: str | None = None) -> Device | None:
        """The device with this serial number, else with this MAC (normalized), else None."""
        if serial:
            found = next((d for d in self.devices if d.serial == serial), None)
            if found is not None:
                return found
        if mac and MAC_RE.match(mac):
            norm = normalize_mac(mac)
            return next((d for d in self.devices if d.mac == norm), None)
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


PATH_KEYS = ("installer", "updater")


def load_site(path: Path) -> tuple[Site, Merged]:
    """Load and validate a site file; raise RecipeError listing every problem at once."""
    if not path.is_file():
        raise RecipeError([f"{display_name(path)}: no such site file"])
    merged = load_merged(path)
    data = dict(merged.data)
    data.setdefault("name", path.stem)
    _resolve_paths(data, merged)
    try:
        site = Site.model_validate(data)
    except ValidationError as exc:
        raise RecipeError([describe_error(err, merged, Site) for err in exc.errors()]) from None
    problems = _cross_check(site, merged)
    if problems:
        raise RecipeError(problems)
    return site, merged


def _resolve_paths(data: dict[str, Any], merged: Merged) -> None:
    """Make relative paths relative to the site file that wrote them."""

    def resolve(value: Any, where: KeyPath) -> Any:
        return resolve_relative(value, where, merged)

    for section, keys in (("tls", ("cert", "key", "ca")), ("status", ("token_file",))):
        block = data.get(section)
        if isinstance(block, dict):
            for key in keys:
                if key in block:
                    block[key] = resolve(block[key], (section, key))
    for section in ("platforms", "devices"):
        entries = data.get(section)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(entry, dict):
                for key in PATH_KEYS:
                    if key in entry:
                        entry[key] = resolve(entry[key], (section, i, key))


def _cross_check(site: Site, merged: Merged) -> list[str]:
    """Problems between entries: duplicates, addresses outside every subnet."""
    problems: list[str] = []

    def where(*loc: str | int) -> str:
        for n in range(len(loc), -1, -1):
            if (found := merged.origins.get(loc[:n])) is not None:
                return f"{found}: {format_path(loc)}"
        return format_path(loc)

    seen: dict[tuple[str, str], int] = {}
    for i, platform in enumerate(site.platforms):
        if (first := seen.setdefault(("platform", platform.platform), i)) != i:
            problems.append(f"{where('platforms', i, 'platform')}: {platform.platform!r} is "
                            f"already listed at platforms[{first}]")
    for i, device in enumerate(site.devices):
        for key in ("mac", "serial", "name", "address"):
            value = getattr(device, key)
            if value is None:
                continue
            if (first := seen.setdefault((key, str(value)), i)) != i:
                problems.append(f"{where('devices', i, key)}: {str(value)!r} is already used by "
                                f"devices[{first}]")
        if device.address is not None and not any(
                s.family == device.address.version and device.address in s.network
                for s in site.subnets):
            problems.append(f"{where('devices', i, 'address')}: {device.address} is in none of "
                            f"the subnets")
    for i, subnet in enumerate(site.subnets):
        for j, other in enumerate(site.subnets[:i]):
            if subnet.family == other.family and subnet.network.overlaps(other.network):
                problems.append(f"{where('subnets', i, 'network')}: {subnet.network} overlaps "
                                f"subnets[{j}] ({other.network})")
    if any(s.family == 6 for s in site.subnets) and site.server.address6 is None:
        problems.append(f"{where('server')}: an IPv6 subnet needs 'server.address6' for its URLs")
    arches = [h.arch for h in site.http_boot]
    for i, arch in enumerate(arches):
        if arch in arches[:i]:
            problems.append(f"{where('http_boot', i, 'arch')}: {arch.value!r} is listed twice")
    return problems


def read_token(site: Site) -> bytes | None:
    """The status HMAC key: inline, or the first line of ``token_file``; None when not set."""
    if site.status is None:
        return None
    if site.status.token is not None:
        return site.status.token.encode()
    assert site.status.token_file is not None
    lines = site.status.token_file.read_text(encoding="utf-8").splitlines()
    text = lines[0].strip() if lines else ""
    if not MIN_TOKEN <= len(text) <= MAX_TOKEN or not text.isascii() or not text.isprintable() \
            or " " in text:
        raise RecipeError([f"{site.status.token_file}: expected a token of {MIN_TOKEN} to "
                           f"{MAX_TOKEN} printable ASCII characters without spaces on its first line"])
    return text.encode()


def check_site_files(site: Site) -> None:
    """Raise RecipeError naming every file the site needs that does not exist."""
    wanted: list[tuple[str, Path | None]] = []
    if site.tls is not None:
        wanted += [("tls.cert", site.tls.cert), ("tls.key", site.tls.key), ("tls.ca", site.tls.ca)]
    if site.status is not None:
        wanted.append(("status.token_file", site.status.token_file))
    for section, entries in (("platforms", site.platforms), ("devices", site.devices)):
        for i, entry in enumerate(entries):
            for key in PATH_KEYS:
                wanted.append((f"{section}[{i}].{key}", getattr(entry, key)))
    problems = [f"{key}: no such file {str(path)!r}" for key, path in wanted
                if path is not None and not path.is_file()]
    if problems:
        raise RecipeError([f"site {site.name!r}: {p}" for p in problems])
