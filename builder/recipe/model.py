"""The recipe model: the frozen ``Recipe`` value and its sections (platform, components,
kernel, initramfs, discovery, images, trust, ssh); ``load`` reads files into it.

Validation goes through pydantic (typed, frozen models with ``extra="forbid"``); every
problem is reported at once as ``file:line: key.path: message, got 'value'``.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from builder.recipe.base import Hex64, Model
from builder.recipe.component import Component, InTreePath, Source
from builder.recipe.eeprom import Eeprom
from builder.recipe.formats import Compression, ImageFormat
from builder.recipe.ssh import Ssh
from builder.recipe.transports import Transports

NAME_RE = re.compile(r"^[a-z0-9]+$")
MACHINE_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")
BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)


class Arch(enum.Enum):
    """A target architecture, named as ONIE names it, with what each tool calls it."""

    X86_64 = "x86_64"
    ARM64 = "arm64"

    @property
    def debian(self) -> str:
        """Debian's name for the architecture."""
        return {"x86_64": "amd64", "arm64": "arm64"}[self.value]

    @property
    def elf_machine(self) -> str:
        """The ELF ``e_machine`` every binary of this architecture must carry."""
        return {"x86_64": "EM_X86_64", "arm64": "EM_AARCH64"}[self.value]


class Console(Model):
    """The serial console the environment talks on."""

    device: str = "ttyS0"
    speed: int = 115200

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"tty[A-Za-z]*[0-9]+", v):
            raise ValueError(f"expected a tty device name like 'ttyS0', got {v!r}")
        return v

    @field_validator("speed")
    @classmethod
    def _speed(cls, v: int) -> int:
        if v not in BAUD_RATES:
            raise ValueError(f"expected one of {', '.join(map(str, BAUD_RATES))}, got {v!r}")
        return v


class UbootEnv(Model):
    """Where u-boot keeps its environment: one line of ``/etc/fw_env.config`` for
    ``fw_printenv``/``fw_setenv`` (device, byte offset, size, erase-block size)."""

    device: Annotated[str, Field(pattern=r"^/dev/[A-Za-z0-9_.:/-]+$")]
    offset: Annotated[int, Field(ge=0, le=2**64 - 1)] = 0
    size: Annotated[int, Field(ge=1, le=2**32 - 1)]
    sector: Annotated[int, Field(ge=1, le=2**32 - 1)] | None = None  # erase size; none for a file or eMMC


class Platform(Model):
    """A platform's identity, named by ONIE's rules (machine is ``<vendor>_<model>``)."""

    vendor: str
    machine: str
    machine_rev: Annotated[int, Field(ge=0, le=255)] = 0
    arch: Arch
    switch_asic: str
    vendor_id: Annotated[int, Field(ge=1, le=4294967295)]
    console: Console = Console()
    description: str = ""
    eeprom: Eeprom = Eeprom()  # the ONIE TlvInfo EEPROM (builder/recipe/eeprom.py)
    uboot_env: UbootEnv | None = None  # u-boot machines: renders /etc/fw_env.config

    @field_validator("vendor")
    @classmethod
    def _vendor(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"expected lower-case letters and digits (ONIE vendor name), got {v!r}")
        return v

    @field_validator("machine", "switch_asic")
    @classmethod
    def _lower_name(cls, v: str) -> str:
        if not MACHINE_RE.match(v):
            raise ValueError(f"expected lower-case letters, digits and '_', got {v!r}")
        return v

    @model_validator(mode="after")
    def _machine_prefix(self) -> Self:
        if not self.machine.startswith(self.vendor + "_"):
            raise ValueError(f"machine: expected '<vendor>_<model>' starting with "
                             f"'{self.vendor}_', got {self.machine!r}")
        return self

    @property
    def platform_string(self) -> str:
        """ONIE's platform string ``<arch>-<machine>-r<rev>``."""
        return f"{self.arch.value}-{self.machine}-r{self.machine_rev}"


class Kernel(Source):
    """The kernel: a Debian kernel package (or metapackage), the modules wanted, the command line."""

    modules: list[str] = []
    cmdline: str = ""


class Initramfs(Model):
    """What goes into the initramfs besides the kernel modules and rendered templates."""

    @model_validator(mode="after")
    def _level(self) -> Self:
        levels = self.compression.levels
        if self.compression_level is not None and self.compression_level not in levels:
            span = f"{levels.start} to {levels.stop - 1}" if levels else "no level"
            raise ValueError(f"compression_level: {self.compression.value} takes {span}, "
                             f"got {self.compression_level}")
        return self

    compression: Compression = Compression.XZ
    compression_level: int | None = None
    components: list[Component] = []
    # The installer toolset (docs/onie-contract.md, T1-T14), by name so that a vendor recipe
    # adds a tool with a new name and drops one by setting its name to null.
    toolset: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.+-]*$")], Component | None] = {}
    discovery_only: bool = False  # true: leave the toolset out (an image that only discovers)
    overlays: list[Path] = []
    # Paths that keep setuid, setgid, sticky or world-writable bits from their package or
    # overlay; every other path loses them (builder/initramfs/tree.py, Tree.host_mode).
    keep_modes: list[InTreePath] = []

    @property
    def tools(self) -> list[tuple[str, Component]]:
        """The toolset's components by name, in recipe order; none in a discovery-only image."""
        if self.discovery_only:
            return []
        return [(name, c) for name, c in self.toolset.items() if c is not None]


class DebianArchive(Model):
    """Which Debian archive packages come from; by default the host's apt sources."""

    mirror: str | None = None
    suites: list[str] = []
    components: list[str] = ["main"]


class Method(enum.Enum):
    """A way discovery looks for an installer; the default order is ONIE's (exact first)."""

    INSTALL_URL = "install_url"  # install_url= on the kernel command line
    LOCAL = "local"  # USB and local partitions holding a default file name
    DHCP_URL = "dhcp_url"  # exact URLs from DHCP: VIVSO (125) sub-option 1/2, then option 114
    ISCSI = "iscsi"  # RFC 4173 root paths (netroot=, recipe, option 17); off unless transports enable it
    HTTP = "http"  # the HTTP sweep over servers named by DHCP, onie-server and neighbours
    TFTP = "tftp"  # TFTP with siaddr/option 66/option 150 and the boot file (67)
    WATERFALL = "waterfall"  # the TFTP waterfall: MAC folder, hex-IP folders, root names
    IPV6 = "ipv6"  # DHCPv6 option 59 (RFC 5970), then HTTP on IPv6 link-local neighbours


class AfterInstall(enum.Enum):
    """What follows an installer that exits 0 (poweroff suits tests: QEMU ends)."""

    REBOOT = "reboot"
    POWEROFF = "poweroff"


class Backoff(Model):
    """The pause between discovery rounds: ``first`` doubling up to ``limit``, plus jitter."""

    first: Annotated[float, Field(ge=0.1, le=3600)] = 2.0
    limit: Annotated[float, Field(ge=0.1, le=3600)] = 60.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.25  # up to this fraction is added at random

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.limit < self.first:
            raise ValueError(f"limit: expected at least first ({self.first:g}), got {self.limit:g}")
        return self


class Timeouts(Model):
    """Bounds in seconds on each network step (BusyBox tools take whole seconds)."""

    dhcp_tries: Annotated[int, Field(ge=1, le=60)] = 4  # DHCPDISCOVERs per round
    dhcp_interval: Annotated[int, Field(ge=1, le=60)] = 1  # seconds between them
    connect: Annotated[int, Field(ge=1, le=300)] = 2  # an HTTP server's liveness probe
    transfer: Annotated[int, Field(ge=1, le=86400)] = 600  # one download attempt, whole
    stall: Annotated[int, Field(ge=1, le=3600)] = 15  # a download that gets no byte this long
    tftp: Annotated[int, Field(ge=1, le=300)] = 3  # a TFTP request with no answer
    local: Annotated[float, Field(ge=0, le=60)] = 3.0  # wait for USB disks being probed


# A DNS name (or an IPv4 address, which has the same form); a log server may add ":PORT"
# (what BusyBox syslogd -R takes).
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
HOST_RE = re.compile(rf"{LABEL}(\.{LABEL})*")


def _ntp_server(v: str) -> str:
    if len(v) > 253 or not HOST_RE.fullmatch(v):
        raise ValueError(f"expected an IPv4 address or a host name, got {v!r}")
    return v


def _log_server(v: str) -> str:
    host, _, port = v.partition(":")
    if (len(host) > 253 or not HOST_RE.fullmatch(host)
            or (port and not (port.isdigit() and not port.startswith("0") and int(port) <= 65535))
            or v.endswith(":")):
        raise ValueError(f"expected HOST or HOST:PORT (port 1-65535), got {v!r}")
    return v


NtpServer = Annotated[str, AfterValidator(_ntp_server)]
LogServer = Annotated[str, AfterValidator(_log_server)]


def _unique_methods(v: list[Method]) -> list[Method]:
    seen = [m for i, m in enumerate(v) if m in v[:i]]
    if seen:
        raise ValueError(f"expected each method once, got {seen[0].value!r} twice")
    return v


class Downloads(Model):
    """Where installers are downloaded to and how often a broken download is resumed."""

    # A folder in the guest (e.g. a disk partition's mount point); used when it exists at
    # download time, else /run/onie (tmpfs) with a console line saying so.
    dir: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._/-]{0,200}$")] = "/run/onie"
    resume: Annotated[int, Field(ge=0, le=100)] = 3  # continuations after a broken transfer
    progress: Annotated[int, Field(ge=1, le=3600)] = 5  # seconds between progress lines


class Discovery(Model):
    """How the environment finds and runs an installer after boot (see docs/discovery.md)."""

    shell: bool = True
    after_install: AfterInstall = AfterInstall.REBOOT
    # Run installers without a signature check (prints a warning on every boot); without it
    # every installer is refused until a verifier is built in.
    insecure: bool = False
    methods: Annotated[list[Method], AfterValidator(_unique_methods)] = list(Method)
    interfaces: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$")]] = []
    backoff: Backoff = Backoff()
    timeouts: Timeouts = Timeouts()
    downloads: Downloads = Downloads()
    # RFC 3927 when DHCP gives no lease, then ONIE's neighbour sweep (docs/discovery.md).
    link_local: bool = True
    ntp: list[NtpServer] = []  # tried after DHCP option 42's, before any HTTPS or signature date
    syslog: list[LogServer] = []  # every discovery line also goes there, beside option 7's


class FitImage(Model):
    """The u-boot FIT: an optional device tree and an optional signing key (see docs/images.md)."""

    key: Path | None = None  # RSA private key (PEM); its file stem is the FIT key-name-hint
    dtb: Path | None = None  # a device tree file
    kernel_dtb: str | None = None  # a device tree from the kernel package, e.g. "marvell/x.dtb"
    load_address: Annotated[int, Field(ge=0, le=2**64 - 1)] = 0x40400000  # kernel load/entry
    fit_address: Annotated[int, Field(ge=0, le=2**64 - 1)] = 0x48000000  # where boot.scr loads it

    @model_validator(mode="after")
    def _one_dtb(self) -> Self:
        if self.dtb is not None and self.kernel_dtb is not None:
            raise ValueError("expected at most one of 'dtb' and 'kernel_dtb'")
        if self.kernel_dtb is not None and (
                not re.fullmatch(r"[\w.,+-]+(/[\w.,+-]+)*\.dtb", self.kernel_dtb)
                or ".." in self.kernel_dtb.split("/")):
            raise ValueError(f"kernel_dtb: expected a relative path ending in .dtb, "
                             f"got {self.kernel_dtb!r}")
        return self


class UkiImage(Model):
    """The UEFI unified kernel image; signed for Secure Boot when given a key and certificate."""

    secureboot_key: Path | None = None  # PEM private key
    secureboot_cert: Path | None = None  # PEM certificate (enrolled in db)

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.secureboot_key is None) != (self.secureboot_cert is None):
            raise ValueError("expected both 'secureboot_key' and 'secureboot_cert', or neither")
        return self


class UpdaterImage(Model):
    """The updater; signed in the signed-installer format when the recipe gives a key."""

    key: Path | None = None  # private key (builder.signing.keys formats); Ed25519 or RSA sign reproducibly


def _unique_formats(v: list[ImageFormat]) -> list[ImageFormat]:
    seen = [f for i, f in enumerate(v) if f in v[:i]]
    if seen:
        raise ValueError(f"expected each format once, got {seen[0].value!r} twice")
    return v


class PartitionType(enum.Enum):
    """The partition table the environment lays out on the switch's disk."""

    GPT = "gpt"
    MSDOS = "msdos"


class Images(Model):
    """Which boot images to build for the platform, and their options (docs/images.md)."""

    formats: Annotated[list[ImageFormat], AfterValidator(_unique_formats)] = []
    fit: FitImage = FitImage()
    uki: UkiImage = UkiImage()
    updater: UpdaterImage = UpdaterImage()
    grub_timeout: Annotated[int, Field(ge=0, le=600)] = 5  # seconds the GRUB menus wait
    boot_size_mib: Annotated[int, Field(ge=16, le=4096)] = 128  # the disk's ONIE-BOOT partition
    # The disk's partition table (docs/images.md): ONIE's GPT layout, or its msdos one (ONIE-BOOT
    # as bootable primary partition 1, GRUB in the MBR gap; BIOS only, x86_64 only).
    partition_type: PartitionType = PartitionType.GPT


class Trust(Model):
    """Which signed installers the environment runs (docs/signed-installer.md): public keys
    (several, for rotation; paths relative to the recipe), revoked key ids, revoked payload
    digests and the lowest version accepted (the rollback floor)."""

    keys: list[Path] = []
    revoked_keys: list[Hex64] = []
    revoked_digests: list[Hex64] = []
    min_version: Annotated[int, Field(ge=0, le=10**18 - 1)] = 0


class Provenance(Model):
    """The signed provenance statement (docs/formats.md): the private key that signs it;
    without one the statement is written unsigned and `verify-provenance` refuses it."""

    key: Path | None = None  # builder.signing.keys formats; Ed25519 or RSA sign reproducibly


class Recipe(Model):
    """A fully resolved platform recipe."""

    name: str
    version: str = "2026.11"
    platform: Platform
    debian: DebianArchive = DebianArchive()
    kernel: Kernel
    initramfs: Initramfs = Initramfs()
    templates: list[Path] = []
    discovery: Discovery = Discovery()
    trust: Trust = Trust()
    images: Images = Images()
    transports: Transports = Transports()
    provenance: Provenance = Provenance()
    ssh: Ssh = Ssh()  # operator access (builder/recipe/ssh.py)

    @field_validator("images")
    @classmethod
    def _formats_for_arch(cls, v: Images, info: ValidationInfo) -> Images:
        platform = info.data.get("platform")
        if platform is None:
            return v
        wrong = [f.value for f in v.formats if platform.arch.value not in f.arches]
        if wrong:
            raise ValueError(f"formats: {', '.join(map(repr, wrong))} cannot be built for "
                             f"{platform.arch.value}")
        if v.partition_type is PartitionType.MSDOS and platform.arch.value != "x86_64":
            raise ValueError("partition_type: 'msdos' is for x86_64 (BIOS) platforms; "
                             f"{platform.arch.value} uses 'gpt'")
        return v

    @property
    def platform_string(self) -> str:
        """ONIE's platform string, e.g. ``x86_64-qemu_x86_64-r0``."""
        return self.platform.platform_string
