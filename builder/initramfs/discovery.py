"""The discovery plan: everything the installer search needs that is known at build time.

``make_plan`` turns a recipe into a frozen ``Plan`` (method order, file names, DHCP request,
HTTP headers, timeouts, backoff); ``templates/guest/discovery.sh.j2`` (with its pieces in
``templates/guest/discovery/``) renders it into the BusyBox ``ash`` script ``/bin/onie-discovery``
as data. Only what depends on the machine or the
network (serial number, MAC, leased address, DHCP answers) is left to the script.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from builder.errors import BuildError
from builder.onie.waterfall import INSTALLER, UPDATER, default_names
from builder.recipe.model import AfterInstall, Method, Recipe

ONIE_ENTERPRISE = 42623  # IANA enterprise number of the ONIE project (VIVSO, option 125)
USER_CLASS = "onie_dhcp_user_class"  # option 77, as ONIE sends it
# The options ONIE's DHCP client asks for, plus 150 (TFTP server addresses, RFC 5859), 17 (the
# iSCSI root path, RFC 4173), 83 (iSNS servers, RFC 4174) and 42 (NTP servers, RFC 2132).
REQUEST_OPTIONS = (7, 17, 42, 43, 54, 66, 67, 72, 83, 114, 125, 150)
# Sub-options of the VIVSO option a client sends: 3 machine, 4 arch, 5 machine revision.
VIVSO_MACHINE, VIVSO_ARCH, VIVSO_REV = 3, 4, 5
NETWORK_METHODS = frozenset({Method.DHCP_URL, Method.ISCSI, Method.HTTP, Method.TFTP,
                             Method.WATERFALL})
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
WELL_KNOWN_SERVER = "onie-server"  # ONIE's default server name for the HTTP sweep
# How long after the USB drivers load the local method still expects a stick to show up: the
# hub driver debounces a port for 100 ms, then resets and addresses the device (docs/discovery.md).
USB_SETTLE_MS = 1000
# Where the script and its helpers live in the image, and what they read; tests render the
# templates with other paths to run them on the host.
PATHS = {
    "script": "/bin/onie-discovery",
    "udhcpc": "/lib/onie/udhcpc.script",
    "run": "/run/onie",
    "log": "/var/log/onie-discovery.log",
    "installer_log": "/var/log/onie-installer.log",
    "machine_conf": "/etc/machine.conf",
    "cmdline": "/proc/cmdline",
    "modules": "/run/onie/modules",  # /init marks each module group done here (guest/init.j2)
    "console_shell": "/run/onie/console.shell",  # the PID of /init's console shell
    "console_held": "/run/onie/console.held",  # an installer has the console: no shell starts
    "resolv": "/etc/resolv.conf",
    "console": "/dev/console",  # where a discovery started by onie-discovery-start writes
}
# (template, path key, mode): the discovery part of the image (see initramfs.TEMPLATES).
TEMPLATES = (("guest/discovery.sh.j2", "script", 0o755), ("guest/lib/udhcpc.sh.j2", "udhcpc", 0o755))
# udhcpc's environment variables the event script keeps (each becomes onie_disco_<name> for
# installers); unknown options arrive as optNNN in hex (BusyBox 1.35).
DHCP_FIELDS = ("interface", "ip", "mask", "subnet", "router", "dns", "domain", "hostname",
               "serverid", "siaddr", "sname", "boot_file", "bootfile", "tftp", "lease",
               "broadcast", "opt72", "opt114", "opt125", "opt150",
               "rootpath", "opt83",  # option 17 (RFC 4173 root path) and 83 (iSNS, RFC 4174)
               "ntpsrv", "opt7")  # options 42 (NTP) and 7 (logs; udhcpc has no name for it)


@dataclass(frozen=True)
class Headers:
    """HTTP request headers known at build time (serial, MAC, key and operation come later)."""

    vendor_id: str
    machine: str
    machine_rev: str
    arch: str
    version: str
    user_agent: str


@dataclass(frozen=True)
class Plan:
    """The discovery plan for one platform."""

    platform: str
    methods: tuple[Method, ...]
    install_names: tuple[str, ...]
    update_names: tuple[str, ...]
    vendor_class: str
    user_class_hex: str
    vivso_hex: str
    request_options: tuple[int, ...]
    headers: Headers
    interfaces: tuple[str, ...]
    dhcp_tries: int
    dhcp_interval: int
    connect_timeout: int
    transfer_timeout: int
    stall_timeout: int
    tftp_timeout: int
    download_dir: str
    resume_count: int
    progress_interval: int
    local_wait_ms: int
    backoff_first_ms: int
    backoff_limit_ms: int
    backoff_jitter_pct: int
    after_install: AfterInstall
    insecure: bool
    server_name: str = WELL_KNOWN_SERVER
    usb_settle_ms: int = USB_SETTLE_MS

    @property
    def uses_network(self) -> bool:
        """True when a method needs a DHCP lease (the install URL may too, decided at run time)."""
        return any(m in NETWORK_METHODS for m in self.methods)

    def names(self, update: bool = False) -> tuple[str, ...]:
        """The default file names of a boot mode, most specific first."""
        return self.update_names if update else self.install_names


def template_values(recipe: Recipe, kernel_release: str, builder_version: str,
                    paths: Mapping[str, str] | None = None, library: bool = False) -> dict[str, Any]:
    """The variables the discovery templates use (``library`` leaves out the call to main)."""
    return {
        "discovery": make_plan(recipe, kernel_release, builder_version),
        "paths": {**PATHS, **(paths or {})},
        "dhcp_fields": DHCP_FIELDS,
        "onie_enterprise": ONIE_ENTERPRISE,
        "library": library,
        "builder_version": builder_version,
    }


def make_plan(recipe: Recipe, kernel_release: str, builder_version: str) -> Plan:
    """Compute the plan from a validated recipe and the kernel it boots."""
    p = recipe.platform
    arch = p.arch.value
    names = [default_names(prefix, p.platform_string, arch, p.machine, p.switch_asic)
             for prefix in (INSTALLER, UPDATER)]
    d = recipe.discovery
    t = d.timeouts
    plan = Plan(
        platform=p.platform_string,
        methods=tuple(d.methods),
        install_names=names[0],
        update_names=names[1],
        vendor_class=f"onie_vendor:{p.platform_string}",
        user_class_hex=USER_CLASS.encode().hex(),
        vivso_hex=encode_vivso(ONIE_ENTERPRISE, [
            (VIVSO_MACHINE, p.machine), (VIVSO_ARCH, arch), (VIVSO_REV, str(p.machine_rev)),
        ]),
        request_options=REQUEST_OPTIONS,
        headers=Headers(
            vendor_id=str(p.vendor_id),
            machine=p.machine,
            machine_rev=str(p.machine_rev),
            arch=arch,
            version=recipe.version,
            user_agent=user_agent(recipe.version, kernel_release, builder_version),
        ),
        interfaces=tuple(d.interfaces),
        dhcp_tries=t.dhcp_tries,
        dhcp_interval=t.dhcp_interval,
        connect_timeout=t.connect,
        transfer_timeout=t.transfer,
        stall_timeout=t.stall,
        tftp_timeout=t.tftp,
        # Empty for the default: the run folder, whichever it is (tests run the script elsewhere).
        download_dir="" if d.downloads.dir == PATHS["run"] else d.downloads.dir,
        resume_count=d.downloads.resume,
        progress_interval=d.downloads.progress,
        local_wait_ms=round(t.local * 1000),
        usb_settle_ms=min(USB_SETTLE_MS, round(t.local * 1000)),
        backoff_first_ms=round(d.backoff.first * 1000),
        backoff_limit_ms=round(d.backoff.limit * 1000),
        backoff_jitter_pct=round(d.backoff.jitter * 100),
        after_install=d.after_install,
        insecure=d.insecure,
    )
    check_plan(plan)
    return plan


def encode_vivso(enterprise: int, suboptions: list[tuple[int, str]]) -> str:
    """Option 125 data (RFC 3925): enterprise, length, then code/length/value sub-options; hex."""
    payload = b"".join(bytes([code, len(v.encode())]) + v.encode() for code, v in suboptions)
    if len(payload) > 255:
        raise ValueError(f"VIVSO payload of {len(payload)} bytes does not fit in one option")
    return (enterprise.to_bytes(4, "big") + bytes([len(payload)]) + payload).hex()


def user_agent(version: str, kernel_release: str, builder_version: str) -> str:
    """The User-Agent: ONIE's ``onie/1.0`` product token, then what is running."""
    return f"onie/1.0 (Linux-{kernel_release}; onie-builder-{builder_version}; {version})"


def check_plan(plan: Plan) -> None:
    """Refuse names that could not be written into the script as plain words."""
    for name in (*plan.install_names, *plan.update_names, *plan.interfaces, plan.vendor_class):
        if not SAFE_NAME_RE.match(name.replace(":", "")):
            raise BuildError(f"discovery: unsafe file or interface name {name!r}")
