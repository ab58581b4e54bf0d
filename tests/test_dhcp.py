"""DHCP configurations: option bytes, classes, hosts, and every output checked by its daemon."""

from __future__ import annotations

import json
import os
import re
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from builder.errors import BuildError
from builder.factory.dhcp import DhcpFormat, encode_vivso, render_dhcp_config
from builder.factory.site import Site
from builder.factory.sitefile import load_site
from builder.process import run
from tests.conftest import run_cli
from tests.serving import require_daemon

SITE = """\
name: dhcp-test
server:
  address: 10.200.41.1
  address6: fd00:200:41::1
  http_port: 8080
subnets:
  - network: 10.200.41.0/24
    pool: [10.200.41.100, 10.200.41.150]
    router: 10.200.41.1
    dns: [10.200.41.1]
    lease_time: 600
  - network: fd00:200:41::/64
    pool: ["fd00:200:41::100", "fd00:200:41::1ff"]
    dns: ["fd00:200:41::1"]
platforms:
  - platform: x86_64-acme_s1-r1
    iscsi_root: "iscsi:10.200.41.1::3260:1:iqn.2024-01.test.acme:s1"
devices:
  - mac: "52:54:00:41:00:01"
    name: leaf1
    address: 10.200.41.11
    iscsi_root: "iscsi:10.200.41.1::3260:2:iqn.2024-01.test.acme:leaf1"
  - mac: "52:54:00:41:00:02"
  - serial: ONLY-SERIAL
http_boot:
  - arch: x86_64
    image: x86_64-acme_s1-r1/onie.efi
  - arch: arm64
    image: arm64-acme_s2-r0/onie.efi
"""
PLATFORMS = ["x86_64-acme_s1-r10", "arm64-acme_s2-r0", "x86_64-qemu_x86_64-r0"]
ALL = sorted({*PLATFORMS, "x86_64-acme_s1-r1"})


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    path = tmp_path_factory.mktemp("dhcp") / "site.yaml"
    path.write_text(SITE)
    return load_site(path)[0]


def url(platform: str, kind: str = "installer") -> str:
    return f"http://10.200.41.1:8080/onie-{kind}-{platform}"


def parse_vivso(data: bytes) -> dict[int, dict[int, bytes]]:
    """RFC 3925 section 4 read back independently: enterprise (4), data-len (1), then TLVs."""
    out: dict[int, dict[int, bytes]] = {}
    while data:
        enterprise, length = struct.unpack("!IB", data[:5])
        body, data = data[5:5 + length], data[5 + length:]
        assert len(body) == length
        subs: dict[int, bytes] = {}
        while body:
            code, size = body[0], body[1]
            subs[code] = body[2:2 + size]
            assert len(subs[code]) == size
            body = body[2 + size:]
        out[enterprise] = subs
    return out


def test_vivso_encoding_byte_by_byte() -> None:
    data = encode_vivso(42623, [(1, b"http://a/i"), (2, b"http://a/u")])
    assert data[:4] == bytes([0x00, 0x00, 0xA6, 0x7F])  # 42623, network order
    assert data[4] == 2 + 10 + 2 + 10  # data-len covers the sub-options only
    assert data[5:17] == b"\x01\x0ahttp://a/i"
    assert data[17:] == b"\x02\x0ahttp://a/u"
    assert parse_vivso(data) == {42623: {1: b"http://a/i", 2: b"http://a/u"}}


def test_vivso_that_cannot_fit_is_refused() -> None:
    with pytest.raises(BuildError, match="value of 256 bytes does not fit"):
        encode_vivso(42623, [(1, b"x" * 256)])
    with pytest.raises(BuildError, match="251 bytes of sub-options do not fit"):
        encode_vivso(42623, [(1, b"x" * 200), (2, b"y" * 47)])


def expected_vivso(platform: str) -> bytes:
    return encode_vivso(42623, [(1, url(platform).encode()), (2, url(platform, "updater").encode())])


def test_dnsmasq_classes_options_and_hosts(site: Site) -> None:
    text = render_dhcp_config(site, PLATFORMS, DhcpFormat.DNSMASQ)
    tags = dict(re.findall(r"^dhcp-vendorclass=set:(onie\d+),onie_vendor:(\S+)$", text, re.M))
    assert sorted(tags.values()) == ALL
    tag_of = {platform: tag for tag, platform in tags.items()}
    for platform in ALL:
        tag = tag_of[platform]
        when = f"tag:{tag}"
        if platform == "x86_64-acme_s1-r1":  # a substring of ...-r10's vendor class
            when += f",tag:!{tag_of['x86_64-acme_s1-r10']}"
        assert f'dhcp-option-force={when},114,"{url(platform)}"\n' in text
        hexed = re.search(rf"^dhcp-option-force={re.escape(when)},125,([0-9a-f:]+)$", text, re.M)
        assert hexed is not None
        assert bytes.fromhex(hexed.group(1).replace(":", "")) == expected_vivso(platform)
        assert parse_vivso(expected_vivso(platform))[42623][1] == url(platform).encode()
    r1 = tag_of["x86_64-acme_s1-r1"]
    # The device's own root path beats its platform's: the platform's excludes the host's tag.
    assert (f'dhcp-option-force=tag:{r1},tag:!{tag_of["x86_64-acme_s1-r10"]},tag:!host0,17,'
            f'"iscsi:10.200.41.1::3260:1:iqn.2024-01.test.acme:s1"') in text
    assert "dhcp-host=52:54:00:41:00:01,set:host0,10.200.41.11,leaf1\n" in text
    assert 'dhcp-option-force=tag:host0,17,"iscsi:10.200.41.1::3260:2:iqn.2024-01.test.acme:leaf1"' in text
    assert "dhcp-host=52:54:00:41:00:02,set:host1\n" in text
    assert "ONLY-SERIAL" not in text  # DHCP knows devices by MAC only
    assert "dhcp-range=set:net0,10.200.41.100,10.200.41.150,255.255.255.0,600" in text
    assert 'dhcp-option-force=tag:net6_0,option6:59,"http://[fd00:200:41::1]:8080/onie-installer"' in text
    # UEFI HTTP boot: option 60 echoed, the UKI URL per client architecture (RFC 4578 option 93)
    assert "dhcp-vendorclass=set:efihttp,HTTPClient\ndhcp-option-force=tag:efihttp,60,HTTPClient" in text
    assert "dhcp-match=set:efihttp_x86_64,option:client-arch,16\n" in text
    assert "dhcp-match=set:efihttp_arm64,option:client-arch,19\n" in text
    assert ("dhcp-boot=tag:efihttp,tag:efihttp_x86_64,"
            "http://10.200.41.1:8080/x86_64-acme_s1-r1/onie.efi") in text
    assert not re.search(r"^[^#].*(captive|default-url)", text, re.M)  # by number, not by name


def test_kea4_classes_options_and_hosts(site: Site) -> None:
    config = json.loads(render_dhcp_config(site, PLATFORMS, DhcpFormat.KEA, 4))["Dhcp4"]
    classes = {c["name"]: c for c in config["client-classes"]}
    for platform in ALL:
        cls = classes[f"onie-{platform}"]
        assert cls["test"] == f"option[60].text == 'onie_vendor:{platform}'"  # exact match
        options = {o["code"]: o for o in cls["option-data"]}
        assert options[114]["data"] == url(platform) and "name" not in options[114]
        assert bytes.fromhex(options[125]["data"]) == expected_vivso(platform)
        assert options[125]["csv-format"] is False and options[125]["always-send"] is True
    assert {o["code"]: o["data"] for o in classes["onie-x86_64-acme_s1-r1"]["option-data"]}[17] == \
        "iscsi:10.200.41.1::3260:1:iqn.2024-01.test.acme:s1"
    uefi = classes["uefi-http-x86_64"]
    assert uefi["test"] == "substring(option[60].text,0,10) == 'HTTPClient' and option[93].hex == 0x0010"
    assert uefi["boot-file-name"] == "http://10.200.41.1:8080/x86_64-acme_s1-r1/onie.efi"
    assert uefi["option-data"][0]["code"] == 60 and uefi["option-data"][0]["data"] == "HTTPClient"
    [subnet] = config["subnet4"]
    assert subnet["pools"] == [{"pool": "10.200.41.100 - 10.200.41.150"}]
    assert subnet["reservations"][0] == {
        "hw-address": "52:54:00:41:00:01", "ip-address": "10.200.41.11", "hostname": "leaf1",
        "option-data": [{"code": 17, "data": "iscsi:10.200.41.1::3260:2:iqn.2024-01.test.acme:leaf1",
                         "always-send": True}]}


def test_kea6_and_isc6_hand_out_option_59(site: Site) -> None:
    config = json.loads(render_dhcp_config(site, PLATFORMS, DhcpFormat.KEA, 6))["Dhcp6"]
    [subnet] = config["subnet6"]
    assert {"code": 59, "data": "http://[fd00:200:41::1]:8080/onie-installer",
            "always-send": True} in subnet["option-data"]
    text = render_dhcp_config(site, PLATFORMS, DhcpFormat.ISC, 6)
    assert 'option dhcp6.bootfile-url "http://[fd00:200:41::1]:8080/onie-installer";' in text


def test_isc4_classes_options_and_hosts(site: Site) -> None:
    text = render_dhcp_config(site, PLATFORMS, DhcpFormat.ISC, 4)
    assert "option onie-default-url code 114 = text;" in text
    for platform in ALL:
        block = re.search(r'class "onie\d+" \{\n  # ' + re.escape(platform) + r"\n(.*?)\n\}", text, re.S)
        assert block is not None, platform
        body = block.group(1)
        assert f'match if option vendor-class-identifier = "onie_vendor:{platform}";' in body
        assert f'option onie-default-url "{url(platform)}";' in body
        hexed = re.search(r"option onie-vivso ([0-9a-f:]+);", body)
        assert hexed is not None
        assert bytes.fromhex(hexed.group(1).replace(":", "")) == expected_vivso(platform)
    assert "host host0 {\n  hardware ethernet 52:54:00:41:00:01;\n  fixed-address 10.200.41.11;" in text
    assert "and option onie-client-arch = 00:10;" in text and "and option onie-client-arch = 00:13;" in text


def test_quoting_of_config_strings() -> None:
    from builder.factory.dhcp import dhcpquote

    assert dhcpquote('a"b\\c') == '"a\\"b\\\\c"'
    with pytest.raises(BuildError, match="control character"):
        dhcpquote("a\nb")


def test_a_family_without_subnets_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("name: v4only\nserver:\n  address: 10.200.42.1\nsubnets:\n"
                    "  - network: 10.200.42.0/24\n    pool: [10.200.42.10, 10.200.42.20]\n")
    site = load_site(path)[0]
    with pytest.raises(BuildError, match="site 'v4only' has no IPv6 subnet for kea"):
        render_dhcp_config(site, [], DhcpFormat.KEA, 6)


# --- each output accepted by the daemon's own check ---------------------------------------------

CHECKS = [
    (DhcpFormat.DNSMASQ, 4, "dnsmasq", ["--test", "--conf-file={}"]),
    (DhcpFormat.KEA, 4, "kea-dhcp4", ["-t", "{}"]),
    (DhcpFormat.KEA, 6, "kea-dhcp6", ["-t", "{}"]),
    (DhcpFormat.ISC, 4, "dhcpd", ["-t", "-cf", "{}"]),
    (DhcpFormat.ISC, 6, "dhcpd", ["-6", "-t", "-cf", "{}"]),
]


@pytest.mark.parametrize(("fmt", "family", "daemon", "args"), CHECKS,
                         ids=[f"{c[0].value}{c[1]}" for c in CHECKS])
def test_the_daemon_accepts_the_configuration(site: Site, tmp_path: Path, fmt: DhcpFormat,
                                              family: int, daemon: str, args: list[str]) -> None:
    tool = require_daemon(daemon)
    config = tmp_path / f"{daemon}.conf"
    config.write_text(render_dhcp_config(site, PLATFORMS, fmt, family))
    proc = run([tool, *(a.format(config) for a in args)], check=False)
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode == 0, output


def test_the_example_site_passes_the_checks(tmp_path: Path) -> None:
    proc = run_cli("dhcp-config", "--site", "examples/site.yaml", "--format", "dnsmasq",
                   "-o", str(tmp_path / "dnsmasq.conf"))
    assert proc.stdout == "" and "wrote" in proc.stderr
    text = (tmp_path / "dnsmasq.conf").read_text()
    assert "dhcp-vendorclass=set:onie0,onie_vendor:arm64-accton_as4564_26p-r0" in text
    assert "onie_vendor:x86_64-qemu_x86_64-r0" in text  # from the shipped recipes
    dnsmasq = require_daemon("dnsmasq")
    # The example binds to eth1: check syntax only (dnsmasq --test does not open sockets).
    assert run([dnsmasq, "--test", f"--conf-file={tmp_path / 'dnsmasq.conf'}"], check=False).returncode == 0
    kea = run_cli("dhcp-config", "qemu_x86_64", "--site", "examples/site.yaml", "--format", "kea")
    names = [c["name"] for c in json.loads(kea.stdout)["Dhcp4"]["client-classes"]]
    assert names == ["onie-arm64-accton_as4564_26p-r0", "onie-x86_64-accton_as7726_32x-r0",
                     "onie-x86_64-qemu_x86_64-r0", "uefi-http-x86_64"]


def test_cli_errors(tmp_path: Path) -> None:
    proc = run_cli("dhcp-config", "--site", str(tmp_path / "none.yaml"), check=False)
    assert proc.returncode == 2 and "no such site file" in proc.stderr
    proc = run_cli("dhcp-config", "--site", "examples/site.yaml", "--format", "bind", check=False)
    assert proc.returncode == 2 and "'bind' is not one of 'dnsmasq', 'kea', 'isc'" in proc.stderr
    out = tmp_path / "kea6.json"
    proc = run_cli("dhcp-config", "--site", "examples/site.yaml", "--format", "isc", "--family", "6",
                   "-o", str(out))
    assert "subnet6 2001:db8:0:1::/64" in out.read_text()


# --- each daemon really answers: a DISCOVER from another namespace, the OFFER read back ---------

LIVE_NET = f"10.200.{120 + os.getpid() % 40}"
LIVE_SITE = f"""\
name: dhcp-live
server:
  address: {LIVE_NET}.1
subnets:
  - network: {LIVE_NET}.0/24
    pool: [{LIVE_NET}.100, {LIVE_NET}.150]
    router: {LIVE_NET}.1
    interface: srv0
platforms:
  - platform: x86_64-acme_s1-r1
    iscsi_root: "iscsi:{LIVE_NET}.1::3260:1:iqn.2024-01.test.acme:s1"
devices:
  - mac: "52:54:00:41:00:01"
    address: {LIVE_NET}.11
    iscsi_root: "iscsi:{LIVE_NET}.1::3260:2:iqn.2024-01.test.acme:leaf1"
http_boot:
  - arch: x86_64
    image: x86_64-acme_s1-r1/onie.efi
"""


def daemon_argv(daemon: str, fmt: DhcpFormat, site: Site, folder: Path) -> tuple[list[str], str]:
    """The command running ``daemon`` on the generated configuration, and its ready line."""
    text = render_dhcp_config(site, PLATFORMS, fmt, 4)
    conf = folder / f"{daemon}.conf"
    if daemon == "dnsmasq":
        conf.write_text(text)
        return [require_daemon("dnsmasq"), "--no-daemon", f"--conf-file={conf}", "--port=0",
                "--log-dhcp", f"--dhcp-leasefile={folder / 'leases'}", "--user=root", "--group=root",
                f"--pid-file={folder / 'dnsmasq.pid'}"], r"DHCP, IP range"
    if daemon == "kea-dhcp4":
        config = json.loads(text)
        config["Dhcp4"]["lease-database"] = {"type": "memfile", "persist": False}
        conf.write_text(json.dumps(config))
        return ["env", f"KEA_LOCKFILE_DIR={folder}", f"KEA_PIDFILE_DIR={folder}",
                require_daemon("kea-dhcp4"), "-c", str(conf)], r"DHCP4_STARTED"
    conf.write_text(text)
    (folder / "dhcpd.leases").write_text("")
    return [require_daemon("dhcpd"), "-4", "-f", "-d", "-cf", str(conf), "-lf",
            str(folder / "dhcpd.leases"), "-pf", str(folder / "dhcpd.pid"), "srv0"], r"Sending on"


LIVE = [("dnsmasq", DhcpFormat.DNSMASQ), ("kea-dhcp4", DhcpFormat.KEA), ("dhcpd", DhcpFormat.ISC)]


@pytest.mark.lab
@pytest.mark.parametrize(("daemon", "fmt"), LIVE, ids=[d for d, _ in LIVE])
def test_the_daemon_answers_with_the_onie_options(tmp_path: Path, daemon: str, fmt: DhcpFormat) -> None:
    from builder.lab.netns import NetNamespace
    from builder.lab.servers import wait_for_text
    from tests.conftest import require_root_netns

    require_root_netns()
    (tmp_path / "site.yaml").write_text(LIVE_SITE)
    site = load_site(tmp_path / "site.yaml")[0]
    argv, ready = daemon_argv(daemon, fmt, site, tmp_path)
    with NetNamespace.create("obdhs") as server, NetNamespace.create("obdhc") as client:
        server.ip("link", "add", "srv0", "type", "veth", "peer", "name", "cli0", "netns", client.name)
        server.ip("addr", "add", f"{LIVE_NET}.1/24", "dev", "srv0")
        server.ip("link", "set", "srv0", "up")
        client.ip("link", "set", "cli0", "up")
        proc = server.spawn(argv, tmp_path / "daemon.log")
        wait_for_text(tmp_path / "daemon.log", ready, 20, proc, daemon)

        def offer(mac: str, vendor_class: str, arch: int | None = None) -> dict[str, Any]:
            probe = [sys.executable, str(Path(__file__).parent / "dhcp_probe.py"), "cli0", mac,
                     vendor_class, *([str(arch)] if arch is not None else [])]
            out = run(client.exec_argv(probe), check=False, timeout=60)
            text = out.stdout.decode()
            assert out.returncode == 0, text + (tmp_path / "daemon.log").read_text()[-3000:]
            answer: dict[str, Any] = json.loads(text)
            answer["options"] = {int(k): bytes.fromhex(v) for k, v in answer["options"].items()}
            return answer

        live_url = f"http://{LIVE_NET}.1:8080"
        # A device of a known platform: 114 and 125 carry its installer URL.
        anyone = offer("52:54:00:41:00:99", "onie_vendor:arm64-acme_s2-r0")
        assert anyone["yiaddr"].startswith(f"{LIVE_NET}.")
        assert anyone["options"][114] == f"{live_url}/onie-installer-arm64-acme_s2-r0".encode()
        assert parse_vivso(anyone["options"][125]) == {42623: {
            1: f"{live_url}/onie-installer-arm64-acme_s2-r0".encode(),
            2: f"{live_url}/onie-updater-arm64-acme_s2-r0".encode()}}
        # r1 and r10: each gets its own URL, whatever the daemon's matching.
        r10 = offer("52:54:00:41:00:98", "onie_vendor:x86_64-acme_s1-r10")
        assert r10["options"][114] == f"{live_url}/onie-installer-x86_64-acme_s1-r10".encode()
        assert 17 not in r10["options"]
        r1 = offer("52:54:00:41:00:97", "onie_vendor:x86_64-acme_s1-r1")
        assert r1["options"][114] == f"{live_url}/onie-installer-x86_64-acme_s1-r1".encode()
        assert r1["options"][17] == f"iscsi:{LIVE_NET}.1::3260:1:iqn.2024-01.test.acme:s1".encode()
        # The known device: its fixed address and its own root path.
        host = offer("52:54:00:41:00:01", "onie_vendor:x86_64-acme_s1-r1")
        assert host["yiaddr"] == f"{LIVE_NET}.11"
        assert host["options"][17] == f"iscsi:{LIVE_NET}.1::3260:2:iqn.2024-01.test.acme:leaf1".encode()
        # UEFI HTTP boot: option 60 echoed, the UKI as the boot file.
        uefi = offer("52:54:00:41:00:96", "HTTPClient:Arch:00016:UNDI:003001", arch=16)
        assert uefi["options"][60] == b"HTTPClient"
        boot_url = f"{live_url}/x86_64-acme_s1-r1/onie.efi"
        # The boot file: the BOOTP file field, or option 67 (dnsmasq, NUL-terminated).
        assert boot_url in (uefi["file"], uefi["options"].get(67, b"").rstrip(b"\0").decode())
        assert 114 not in uefi["options"]
