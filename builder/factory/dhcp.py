"""DHCP server configurations for a site: dnsmasq, Kea (JSON) and ISC dhcpd, IPv4 and IPv6.

Every platform gets a class matched on ONIE's vendor class ``onie_vendor:<platform>`` (option
60) that answers with the installer URL twice: option 114 by number (RFC 8910 renamed 114
``captive-portal``, so configurations that say ``default-url`` by name break) and VIVSO (option
125, RFC 3925) for ONIE's enterprise 42623, sub-option 1 installer and 2 updater URL. Devices
with a MAC get host entries (fixed address, host name, option 17 iSCSI root path, RFC 4173);
IPv6 subnets hand out option 59 (RFC 5970 boot-file URL); UEFI HTTP boot clients (vendor class
``HTTPClient``) get option 60 echoed and the UKI's URL. The option bytes come from one encoder
(``encode_vivso``), so all three formats send the same bytes.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from builder.errors import BuildError
from builder.factory.site import Site, Subnet
from builder.factory.values import SAFE_TEXT_RE
from builder.render import make_environment, render_template

ONIE_ENTERPRISE = 42623  # IANA enterprise number of the ONIE project
VIVSO_INSTALLER = 1
VIVSO_UPDATER = 2
OPTION_DEFAULT_URL = 114
OPTION_VIVSO = 125
OPTION_ROOT_PATH = 17
OPTION6_BOOTFILE_URL = 59
HTTP_CLIENT = "HTTPClient"  # UEFI HTTP boot vendor class prefix (UEFI spec 2.5+, section 24.7)


class DhcpFormat(enum.Enum):
    """A DHCP server whose configuration we write."""

    DNSMASQ = "dnsmasq"
    KEA = "kea"
    ISC = "isc"


def encode_vivso(enterprise: int, suboptions: Sequence[tuple[int, bytes]]) -> bytes:
    """Option 125's data for one enterprise: number (4 bytes), data length, code/len/value each."""
    data = b""
    for code, value in suboptions:
        if not 0 < code < 256 or len(value) > 255:
            raise BuildError(f"VIVSO sub-option {code}: value of {len(value)} bytes does not fit "
                             f"(at most 255)")
        data += bytes([code, len(value)]) + value
    if len(data) > 255 - 5:
        raise BuildError(f"VIVSO for enterprise {enterprise}: {len(data)} bytes of sub-options do "
                         f"not fit in one option (at most 250): shorten the server name or paths")
    return struct.pack("!IB", enterprise, len(data)) + data


@dataclass(frozen=True)
class PlatformClass:
    """One ``onie_vendor:<platform>`` class and what it answers."""

    tag: str
    platform: str
    vendor_class: str
    installer_url: str
    vivso: bytes
    root_path: str | None
    excluded: tuple[str, ...]  # tags of classes whose vendor class contains this one's

    @property
    def vivso_colon(self) -> str:
        """The VIVSO bytes as ``00:00:a6:7f:...`` (dnsmasq and ISC hex syntax)."""
        return self.vivso.hex(":")


@dataclass(frozen=True)
class HostEntry:
    """A device known by MAC."""

    tag: str
    mac: str
    address: str | None
    name: str | None
    root_path: str | None


@dataclass(frozen=True)
class BootEntry:
    """A UEFI HTTP boot answer for one client architecture."""

    tag: str
    arch: str
    client_arch: int
    url: str

    @property
    def client_arch_hex(self) -> str:
        """Option 93's two bytes as ``00:10`` (ISC compares option data, not numbers)."""
        return self.client_arch.to_bytes(2, "big").hex(":")


@dataclass(frozen=True)
class SubnetView:
    """A subnet as the templates need it."""

    tag: str
    network: str
    address: str
    netmask: str
    prefixlen: int
    start: str
    end: str
    router: str | None
    dns: tuple[str, ...]
    lease_time: int
    interface: str | None


def render_dhcp_config(site: Site, platforms: Sequence[str], fmt: DhcpFormat, family: int = 4) -> str:
    """The configuration text of ``fmt`` for ``site`` and the ONIE ``platforms`` (sorted, merged
    with the site's). Kea and ISC run one daemon per family: ``family`` picks it; dnsmasq
    serves both from one file."""
    if fmt is not DhcpFormat.DNSMASQ and not any(s.family == family for s in site.subnets):
        raise BuildError(f"site {site.name!r} has no IPv{family} subnet for {fmt.value}",
                         hint="add one under 'subnets', or pick the other --family")
    if fmt is DhcpFormat.DNSMASQ and not site.subnets:
        raise BuildError(f"site {site.name!r} has no subnets for dnsmasq")
    context = _context(site, platforms)
    check_words(context)
    if fmt is DhcpFormat.KEA:
        config = render_kea4(site, context) if family == 4 else render_kea6(site, context)
        return json.dumps(config, indent=2) + "\n"
    env = make_environment()
    env.filters["dhcpquote"] = dhcpquote
    if fmt is DhcpFormat.DNSMASQ:
        return render_template(env, "dhcp/dnsmasq.conf.j2", context)
    name = "dhcp/dhcpd.conf.j2" if family == 4 else "dhcp/dhcpd6.conf.j2"
    return render_template(env, name, context)


def dhcpquote(value: object) -> str:
    """A double-quoted string for dnsmasq and ISC configurations (backslash escapes)."""
    text = str(value)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise BuildError(f"control character in a DHCP configuration value: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_words(value: Any, where: str = "") -> None:
    """Refuse any text in the template context that is not one plain word (``SAFE_TEXT_RE``:
    no spaces, quotes, commas, '#' or line breaks), whatever model it came from: the second
    line of defence behind the site model, for all three formats."""
    if isinstance(value, str):
        if not SAFE_TEXT_RE.match(value):
            raise BuildError(f"{where or 'a value'}: {value!r} cannot go into a DHCP "
                             "configuration (expected letters, digits and ._:/@+=~%[]-)")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_words(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_words(item, f"{where}[{i}]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            check_words(getattr(value, item.name), f"{where}.{item.name}")


def _context(site: Site, platforms: Sequence[str]) -> dict[str, Any]:
    names = sorted(set(platforms) | {p.platform for p in site.platforms})
    classes = [_platform_class(site, i, name) for i, name in enumerate(names)]
    classes = [_with_exclusions(c, classes) for c in classes]
    v4 = [s for s in site.subnets if s.family == 4]
    v6 = [s for s in site.subnets if s.family == 6]
    hosts = [HostEntry(f"host{i}", d.mac, str(d.address) if d.address else None, d.name,
                       d.iscsi_root)
             for i, d in enumerate(site.devices) if d.mac is not None]
    boots = [BootEntry(f"efihttp_{b.arch.value}", b.arch.value, b.arch.client_arch,
                       site.url(b.image)) for b in site.http_boot]
    interfaces = sorted({s.interface for s in site.subnets if s.interface})
    return {
        "site": site.name,
        "classes": classes,
        "hosts": hosts,
        "hosts4": [h for h in hosts if h.address is None or ":" not in h.address],
        "boots": boots,
        "subnets4": [_subnet_view(f"net{i}", s) for i, s in enumerate(v4)],
        "subnets6": [_subnet_view(f"net6_{i}", s) for i, s in enumerate(v6)],
        "url6": site.url("onie-installer", family=6) if v6 else None,
        "interfaces": interfaces,
        "http_client": HTTP_CLIENT,
        "lease_time": max((s.lease_time for s in site.subnets), default=3600),
    }


def _platform_class(site: Site, index: int, platform: str) -> PlatformClass:
    installer = site.url(f"onie-installer-{platform}")
    updater = site.url(f"onie-updater-{platform}")
    vivso = encode_vivso(ONIE_ENTERPRISE, [(VIVSO_INSTALLER, installer.encode()),
                                           (VIVSO_UPDATER, updater.encode())])
    entry = site.platform(platform)
    return PlatformClass(f"onie{index}", platform, f"onie_vendor:{platform}", installer, vivso,
                         entry.iscsi_root if entry else None, ())


def _with_exclusions(cls: PlatformClass, classes: Sequence[PlatformClass]) -> PlatformClass:
    # dnsmasq matches vendor classes as substrings: 'onie_vendor:x86_64-acme_a-r1' also
    # matches a client of 'x86_64-acme_a-r10', so that class must exclude the longer one's tag.
    others = tuple(o.tag for o in classes if o is not cls and cls.vendor_class in o.vendor_class)
    return PlatformClass(cls.tag, cls.platform, cls.vendor_class, cls.installer_url, cls.vivso,
                         cls.root_path, others)


def _subnet_view(tag: str, subnet: Subnet) -> SubnetView:
    net = subnet.network
    return SubnetView(tag, str(net), str(net.network_address), str(net.netmask), net.prefixlen,
                      str(subnet.pool[0]), str(subnet.pool[1]),
                      str(subnet.router) if subnet.router else None,
                      tuple(str(d) for d in subnet.dns if d.version == net.version),
                      subnet.lease_time, subnet.interface)


# --- Kea: built as data and dumped as JSON, so no value can break the syntax --------------------


def _kea_option(code: int, data: str, *, binary: bool = False) -> dict[str, Any]:
    option: dict[str, Any] = {"code": code, "data": data, "always-send": True}
    if binary:
        option["csv-format"] = False
    return option


def _kea_common(site: Site, context: dict[str, Any], family: int) -> dict[str, Any]:
    subnets = context["subnets4" if family == 4 else "subnets6"]
    interfaces = sorted({s.interface for s in subnets if s.interface}) or ["*"]
    return {
        "interfaces-config": {"interfaces": interfaces},
        "lease-database": {"type": "memfile", "lfc-interval": 3600},
        "valid-lifetime": context["lease_time"],
    }


def render_kea4(site: Site, context: dict[str, Any]) -> dict[str, Any]:
    """The ``Dhcp4`` configuration as data."""
    classes: list[dict[str, Any]] = []
    for cls in context["classes"]:
        options = [_kea_option(OPTION_DEFAULT_URL, cls.installer_url),
                   _kea_option(OPTION_VIVSO, cls.vivso.hex().upper(), binary=True)]
        if cls.root_path:
            options.append(_kea_option(OPTION_ROOT_PATH, cls.root_path))
        # Kea compares option 60 exactly: no substring problem as with dnsmasq.
        classes.append({"name": f"onie-{cls.platform}", "option-data": options,
                        "test": f"option[60].text == '{cls.vendor_class}'"})
    for boot in context["boots"]:
        classes.append({
            "name": f"uefi-http-{boot.arch}",
            "test": f"substring(option[60].text,0,{len(HTTP_CLIENT)}) == '{HTTP_CLIENT}' "
                    f"and option[93].hex == 0x{boot.client_arch:04x}",
            "option-data": [_kea_option(60, HTTP_CLIENT)],
            "boot-file-name": boot.url,
        })
    subnets = []
    for i, view in enumerate(context["subnets4"], start=1):
        subnet: dict[str, Any] = {"id": i, "subnet": view.network,
                                  "pools": [{"pool": f"{view.start} - {view.end}"}],
                                  "valid-lifetime": view.lease_time, "option-data": []}
        if view.interface:
            subnet["interface"] = view.interface
        if view.router:
            subnet["option-data"].append({"name": "routers", "data": view.router})
        if view.dns:
            subnet["option-data"].append({"name": "domain-name-servers", "data": ", ".join(view.dns)})
        net = ipaddress.ip_network(view.network)
        # Kea refuses a reservation that reserves nothing: a bare MAC needs none.
        subnet["reservations"] = [_kea_host(h) for h in context["hosts4"]
                                  if (h.address or h.name or h.root_path)
                                  and (h.address is None or ipaddress.ip_address(h.address) in net)]
        subnets.append(subnet)
    config = _kea_common(site, context, 4)
    config.update({"client-classes": classes, "subnet4": subnets})
    return {"Dhcp4": config}


def _kea_host(host: HostEntry) -> dict[str, Any]:
    entry: dict[str, Any] = {"hw-address": host.mac}
    if host.address:
        entry["ip-address"] = host.address
    if host.name:
        entry["hostname"] = host.name
    if host.root_path:
        entry["option-data"] = [_kea_option(OPTION_ROOT_PATH, host.root_path)]
    return entry


def render_kea6(site: Site, context: dict[str, Any]) -> dict[str, Any]:
    """The ``Dhcp6`` configuration as data: option 59 carries the installer URL."""
    subnets = []
    for i, view in enumerate(context["subnets6"], start=1):
        subnet: dict[str, Any] = {"id": i, "subnet": view.network,
                                  "pools": [{"pool": f"{view.start} - {view.end}"}],
                                  "valid-lifetime": view.lease_time,
                                  "option-data": [_kea_option(OPTION6_BOOTFILE_URL, context["url6"])]}
        if view.interface:
            subnet["interface"] = view.interface
        if view.dns:
            subnet["option-data"].append({"name": "dns-servers", "data": ", ".join(view.dns)})
        subnets.append(subnet)
    config = _kea_common(site, context, 6)
    config["subnet6"] = subnets
    return {"Dhcp6": config}
