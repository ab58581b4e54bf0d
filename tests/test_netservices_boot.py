"""Issue #18 items 2-5 in QEMU, against one image: a guest with no DHCP server claims an IPv4
link-local address (RFC 3927) and sweeps its neighbours, IPv4 and IPv6, finding the installer on
a server at an fe80:: address; a host that takes the guest's address is defended against once,
then the guest moves to another and still reaches the installer on a server at 169.254.x.x; a
guest whose RTC reads 2001 sets its clock from the NTP server DHCP names (option 42), saves it to
the RTC, installs over HTTPS and sends its discovery lines and the installer's output to the log
server of option 7; the same guest without NTP refuses the certificate naming the clock as the
cause, then finds the installer through the TFTP waterfall on `onie-server`, which DNS points at
a TFTP-only server."""

from __future__ import annotations

import dataclasses
import datetime
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console, machine_for, qemu_command
from builder.lab.servers import Dnsmasq, HttpServer, TlsFiles, find_dnsmasq, wait_for_text
from tests.conftest import ROOT, require_qemu, require_root_netns, require_tool
from tests.transportlab import LAB_RECIPE, build_image, installer, make_ca, make_server_cert, subnet

pytestmark = [pytest.mark.lab, pytest.mark.network]

NAME = "onie.lab"  # the HTTPS server's DNS name
SERVICES = ROOT / "tests" / "netservices.py"
LINK_SERVER = "169.254.77.1"
LINK6_SERVER = "fe80::77"  # the namespace's only IPv6 address on the guest's link


@dataclasses.dataclass(frozen=True)
class Image:
    out: Path
    ca: tuple[Path, object]
    certs: Path


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, cache_env: dict[str, str]) -> Image:
    tmp = tmp_path_factory.mktemp("netservices")
    ca = make_ca(tmp / "certs", "lab ca")
    recipe = f"""extends: {LAB_RECIPE}
images:
  formats: []
discovery:
  methods: [install_url, dhcp_url, http, tftp, waterfall]
  timeouts: {{dhcp_tries: 2, tftp: 2}}
transports:
  https:
    ca: [{ca[0]}]
"""
    return Image(build_image(recipe, tmp / "build", cache_env), ca, tmp / "certs")  # type: ignore[arg-type]


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[NetNamespace]:
    require_root_netns()
    require_qemu("x86_64")
    require_tool("dnsmasq", "for the lab's DHCP, DNS and TFTP servers (dnsmasq-base)")
    require_tool("sysctl", "to let the lab server answer broadcast pings (procps)")
    with NetNamespace.create("obnet") as namespace:
        yield namespace


def boot(ns: NetNamespace, image: Image, tmp: Path, extra: tuple[str, ...] = ()) -> Console:
    machine = dataclasses.replace(machine_for("x86_64"), nic="virtio-net-pci,romfile=")
    manifest_cmdline = "quiet"
    argv = qemu_command(machine, image.out / "vmlinuz", image.out / "initrd.img", manifest_cmdline,
                        tap="tap0", extra=list(extra))
    return Console.start(argv, log_path=tmp / "console.log", netns=ns.name)


def service(ns: NetNamespace, kind: str, address: str, port: int, tmp: Path) -> Path:
    """Start tests/netservices.py's NTP responder or syslog listener; returns its log."""
    log = tmp / f"{kind}.log"
    proc = ns.spawn([sys.executable, str(SERVICES), kind, address, str(port), str(log)],
                    tmp / f"{kind}.out")
    wait_for_text(log, r"^ready$", 30, proc, kind)
    return log


def link_local_lab(ns: NetNamespace) -> None:
    """The namespace's side of a link without DHCP: LINK_SERVER, answering broadcast pings."""
    ns.add_tap("tap0", f"{LINK_SERVER}/16")
    # ONIE's sweep pings the broadcast address: a Linux server answers only when told to.
    subprocess.run(ns.exec_argv(["sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_broadcasts=0"]),
                   check=True)


def test_link_local_sweep_finds_an_ipv6_neighbour(ns: NetNamespace, image: Image,
                                                  tmp_path: Path) -> None:
    link_local_lab(ns)
    # The tap's only IPv6 address is LINK6_SERVER (no address made from its MAC): the server
    # the sweep must find answers there and nowhere else; LINK_SERVER has no web server.
    ns.ip("link", "set", "tap0", "addrgenmode", "none")
    ns.ip("-6", "addr", "add", f"{LINK6_SERVER}/64", "dev", "tap0", "nodad")
    www = tmp_path / "www"
    installer(www, "onie-installer", "LINK-LOCAL-V6-INSTALLER ran", 0)
    server = HttpServer(ns, www, tmp_path / "httpd", address=f"{LINK6_SERVER}%tap0", port=80).start()
    url = rf"http://\[{LINK6_SERVER}%25eth0\]/onie-installer"
    with boot(ns, image, tmp_path) as console:
        console.expect(r"fail dhcp no lease", timeout=120)
        got = console.expect(r"linklocal (169\.254\.\d+\.\d+) on eth0 \(RFC 3927", timeout=60)
        console.expect(rf"linklocal neighbours on eth0: {re.escape(LINK_SERVER)}; "
                       rf"IPv6: {re.escape(LINK6_SERVER)}\r?\n", timeout=30)
        console.expect(rf"fail http://{re.escape(LINK_SERVER)}/ no answer on port 80", timeout=30)
        console.expect(rf"exec {url}", timeout=60)
        console.expect(r"LINK-LOCAL-V6-INSTALLER ran", timeout=30)
        console.expect(r"reboot: Power down", timeout=60)
    guest = got.group(1)
    c = int(guest.split(".")[2])
    assert 1 <= c <= 254 and guest != LINK_SERVER
    requests = server.requests()
    assert all(r.client.startswith("fe80:") for r in requests)  # the guest's own link-local
    assert [r.path for r in requests if r.status == 200] == ["/onie-installer"]


def test_link_local_address_defended_then_given_up(ns: NetNamespace, image: Image,
                                                  tmp_path: Path) -> None:
    busybox = require_tool("busybox", "for the conflicting host's gratuitous ARP (busybox arping)")
    link_local_lab(ns)
    www = tmp_path / "www"
    installer(www, "onie-installer", "LINK-LOCAL-INSTALLER ran", 0)
    server = HttpServer(ns, www, tmp_path / "httpd", address=LINK_SERVER, port=80)
    host_mac = re.search(r"link/ether ([0-9a-f:]{17})", ns.ip("-o", "link", "show", "tap0"))
    assert host_mac is not None
    with boot(ns, image, tmp_path) as console:
        console.expect(r"fail dhcp no lease", timeout=120)
        taken = console.expect(r"linklocal (169\.254\.\d+\.\d+) on eth0 \(RFC 3927", 60).group(1)
        # Another host on the link takes the address and says so (gratuitous ARP).
        ns.ip("addr", "add", f"{taken}/16", "dev", "tap0")
        subprocess.run(ns.exec_argv([busybox, "arping", "-q", "-U", "-c", "1", "-I", "tap0",
                                     "-s", taken, taken]), check=True, timeout=30)
        seen = console.expect(rf"linklocal conflict {re.escape(taken)} on eth0 with (\S+): "
                              r"defending it \(one announcement\)", timeout=60)
        console.expect(rf"linklocal conflict {re.escape(taken)} on eth0 with \S+ again within "
                       r"10s: giving it up", timeout=30)
        moved = console.expect(rf"linklocal (169\.254\.\d+\.\d+) on eth0 \(RFC 3927, instead of "
                               rf"{re.escape(taken)}\)", timeout=60).group(1)
        server.start()  # the installer only now: it must be reached from the new address
        console.expect(rf"exec http://{re.escape(LINK_SERVER)}/onie-installer", timeout=120)
        console.expect(r"LINK-LOCAL-INSTALLER ran", timeout=30)
        console.expect(r"reboot: Power down", timeout=60)
    assert moved != taken
    assert [int(x, 16) for x in seen.group(1).split(":")] == \
        [int(x, 16) for x in host_mac.group(1).split(":")]
    assert {r.client for r in server.requests()} == {moved}


def test_ntp_sets_the_clock_before_https_and_syslog_gets_the_lines(
        ns: NetNamespace, image: Image, tmp_path: Path) -> None:
    net = subnet(5)
    addr = f"{net}.1"
    ns.add_tap("tap0", f"{addr}/24")
    ntp = service(ns, "ntp", addr, 123, tmp_path)
    syslog = service(ns, "syslog", addr, 514, tmp_path)
    www = tmp_path / "www"
    installer(www, "onie-installer", "HTTPS-AFTER-NTP ran", 0)
    # The installer also reads the hardware clock back (hwclock -r), after discovery saved it.
    script = www / "onie-installer"
    script.write_text(script.read_text().replace("exit 0", 'echo "RTC reads $(hwclock -r -u)"\nexit 0'))
    chain, key = make_server_cert(image.certs, f"good-{net}", image.ca, [NAME])  # type: ignore[arg-type]
    HttpServer(ns, www, tmp_path / "httpd", address=addr, port=8443, tls=TlsFiles(chain, key)).start()
    url = f"https://{NAME}:8443/onie-installer"
    Dnsmasq(ns, "tap0", addr, tmp_path / "dnsmasq", hosts={NAME: addr},
            options=[f"6,{addr}", f"42,{addr}", f"7,{addr}", f"114,{url}"]).start()
    with boot(ns, image, tmp_path, ("-rtc", "base=2001-01-01")) as console:
        console.expect(rf"clock set by ntp {re.escape(addr)}: was 2001-01-01T", timeout=120)
        console.expect(r"clock saved to the hardware clock \(hwclock -w -u\)", timeout=30)
        console.expect(rf"syslog to {re.escape(addr)}\r?\n", timeout=30)
        console.expect(rf"exec {re.escape(url)}", timeout=60)
        console.expect(r"HTTPS-AFTER-NTP ran", timeout=30)
        rtc = console.expect(r"RTC reads ([^\r\n]*)\r?\n", timeout=30).group(1)
        console.expect(r"reboot: Power down", timeout=60)
    assert "answered" in ntp.read_text()
    year = datetime.datetime.now(datetime.UTC).year
    assert re.search(rf"\b{year}\b", rtc), rtc  # was 2001 (-rtc base=2001-01-01)
    # The installer's output, tagged os-install, from the guest's address.
    installer_lines = [line for line in syslog.read_text().splitlines() if " os-install: " in line]
    assert [line.split(" os-install: ", 1)[1] for line in installer_lines] == [
        "HTTPS-AFTER-NTP ran", f"RTC reads {rtc}"]
    assert all(line.startswith(f"{net}.") for line in installer_lines)
    lines = [line for line in syslog.read_text().splitlines() if "onie-discovery:" in line]
    said = [line.split("onie-discovery: ", 1)[1] for line in lines]
    # Every line from the first (said before the lease, sent once syslogd started) to the exec.
    assert said[0].startswith("start platform=") and any(s.startswith("dhcp lease ") for s in said)
    assert any(s.startswith(f"clock set by ntp {addr}") for s in said)
    assert any(s.startswith(f"exec {url}") for s in said)
    assert all(line.startswith(f"{net}.") for line in lines)
    assert not any(s.startswith("onie-discovery:") for s in said)  # the tag once, as logger adds it


def test_without_ntp_the_clock_is_named_then_onie_server_over_tftp(
        ns: NetNamespace, image: Image, tmp_path: Path) -> None:
    net = subnet(6)
    addr, tftp_addr = f"{net}.1", f"{net}.2"
    ns.add_tap("tap0", f"{addr}/24")
    ns.ip("addr", "add", f"{tftp_addr}/24", "dev", "tap0")
    chain, key = make_server_cert(image.certs, f"good-{net}", image.ca, [NAME])  # type: ignore[arg-type]
    www = tmp_path / "www"
    installer(www, "onie-installer", "NOT REACHED", 0)
    HttpServer(ns, www, tmp_path / "httpd", address=addr, port=8443, tls=TlsFiles(chain, key)).start()
    tftp_root = tmp_path / "tftp"
    installer(tftp_root, "onie-installer", "ONIE-SERVER-TFTP-INSTALLER ran", 0)
    # The TFTP-only server: no DHCP, no DNS, on its own address; DNS names it onie-server.
    (tmp_path / "tftpd").mkdir()
    ns.spawn([find_dnsmasq(), "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
              "--group=root", f"--listen-address={tftp_addr}", "--bind-interfaces",
              f"--pid-file={tmp_path / 'tftpd' / 'pid'}", "--enable-tftp",
              f"--tftp-root={tftp_root}"], tmp_path / "tftpd" / "log")
    url = f"https://{NAME}:8443/onie-installer"
    Dnsmasq(ns, "tap0", addr, tmp_path / "dnsmasq", hosts={NAME: addr, "onie-server": tftp_addr},
            options=[f"6,{addr}", f"114,{url}"]).start()
    with boot(ns, image, tmp_path, ("-rtc", "base=2001-01-01")) as console:
        console.expect(rf"onie-server is {re.escape(tftp_addr)}\r?\n", timeout=120)
        console.expect(rf"fail {re.escape(url)} certificate refused: certificate is not yet valid "
                       r"\(the clock is the cause: it reads 2001-01-0\d, before this image was built "
                       r"on 2023-11-14, and no NTP server set it", timeout=60)
        console.expect(rf"found tftp://{re.escape(tftp_addr)}/onie-installer\r?\n", timeout=120)
        console.expect(r"ONIE-SERVER-TFTP-INSTALLER ran", timeout=30)
        console.expect(r"reboot: Power down", timeout=60)
    assert re.search(r"dnsmasq-tftp: sent \S+/onie-installer to", (tmp_path / "tftpd" / "log").read_text())
