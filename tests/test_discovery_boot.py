"""Discovery end to end: the built image boots in QEMU (TCG) inside a network namespace of the
test's own, against real dnsmasq (DHCP, TFTP) and HTTP servers, and installs.

One boot per test; each proves several things where one boot can. The image is
tests/recipes/lab_x86_64.yaml: the shipped qemu_x86_64 with unsigned installers allowed and
poweroff after a successful install (QEMU then exits). NICs are virtio-net: e1000 takes ~3 s
of TCG time to bring its link up.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console, machine_for, qemu_command
from builder.lab.servers import Dnsmasq, HttpServer
from tests.conftest import require_qemu, require_root_netns, require_tool, run_cli
from tests.installers import asking_installer, script_installer, sharch_installer

pytestmark = [pytest.mark.lab, pytest.mark.network]

RECIPE = Path(__file__).resolve().parent / "recipes" / "lab_x86_64.yaml"
PLATFORM = "x86_64-qemu_x86_64-r0"
MAC = "52:54:00:12:34:56"  # QEMU's default for the first NIC
SERIAL = "SN-LAB-0001"
BOOT_TIMEOUT = 180.0
_subnets = itertools.count()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, cache_env: dict[str, str]) -> Path:
    out = tmp_path_factory.mktemp("discovery-out")
    proc = run_cli("build", str(RECIPE), "--out", str(out), "--json", "--no-lock", env=cache_env)
    assert json.loads(proc.stdout)["result"][0]["platform"] == PLATFORM
    return Path(json.loads(proc.stdout)["result"][0]["out"])


@dataclasses.dataclass
class Lab:
    """A namespace with tap0 at <net>.1, where QEMU runs; servers are added by each test."""

    ns: NetNamespace
    net: str
    tmp: Path

    @property
    def server(self) -> str:
        return f"{self.net}.1"

    def dnsmasq(self, **kwargs: object) -> Dnsmasq:
        return Dnsmasq(self.ns, "tap0", self.server, self.tmp / "dnsmasq", **kwargs).start()  # type: ignore[arg-type]

    def boot(self, image: Path, append: str = "", extra: Sequence[str] = ()) -> Console:
        require_qemu("x86_64")
        # No option ROM: SeaBIOS would otherwise run iPXE's before the kernel.
        machine = dataclasses.replace(machine_for("x86_64"), nic="virtio-net-pci,romfile=")
        argv = qemu_command(machine, image / "vmlinuz", image / "initrd.img",
                            f"quiet {append}".strip(), tap="tap0",
                            extra=["-smbios", f"type=1,serial={SERIAL}", *extra])
        return Console.start(argv, log_path=self.tmp / "console.log", netns=self.ns.name)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_root_netns()
    require_tool("dnsmasq", "for the lab's DHCP and TFTP server (dnsmasq-base)")
    net = f"10.200.{20 + (os.getpid() % 20) * 10 + next(_subnets) % 10}"
    with NetNamespace.create("obd") as ns:
        ns.add_tap("tap0", f"{net}.1/24")
        yield Lab(ns, net, tmp_path)


def finish(console: Console) -> str:
    """Wait for the install to end in poweroff; return the cleaned console text."""
    console.expect(r"onie-discovery: done \S+ then poweroff", BOOT_TIMEOUT)
    console.expect(r"reboot: Power down", 60)
    assert console.proc.wait(30) == 0
    return console.tail(400)


def lines(text: str, prefix: str = "onie-discovery: ") -> list[str]:
    """What follows ``prefix`` on each console line (a line may begin with the shell's prompt)."""
    return [line.split(prefix, 1)[1] for line in text.splitlines() if prefix in line]


def index_of(items: list[str], pattern: str) -> int:
    for i, item in enumerate(items):
        if re.search(pattern, item):
            return i
    raise AssertionError(f"no line matches {pattern!r} in:\n" + "\n".join(items))


def check_headers(request_headers: Callable[[str], str | None], operation: str = "os-install") -> None:
    expected = {
        "ONIE-SERIAL-NUMBER": SERIAL, "ONIE-ETH-ADDR": MAC, "ONIE-VENDOR-ID": "42623",
        "ONIE-MACHINE": "qemu_x86_64", "ONIE-MACHINE-REV": "0", "ONIE-ARCH": "x86_64",
        "ONIE-SECURITY-KEY": "", "ONIE-OPERATION": operation, "ONIE-VERSION": "2026.11",
    }
    for name, value in expected.items():
        assert request_headers(name) == value, name
    agent = request_headers("User-Agent") or ""
    assert re.fullmatch(r"onie/1\.0 \(Linux-\S+-amd64; onie-builder-\S+; 2026\.11\)", agent), agent


def test_option_114_with_hostile_options_headers_and_an_onie_sharch(image: Path, lab: Lab) -> None:
    """Exact URL via 114; hostile 125/67/66/12/15 never run; the headers as received; the
    DHCP identity (vendor class, user class, client id from the serial) and the release."""
    www = lab.tmp / "www"
    sharch_installer(www / "onie" / "sharch.bin", "sharch")
    web = HttpServer(lab.ns, www, lab.tmp / "httpd", address=lab.server).start()
    # The client id ONIE derives from the serial number (type 0) earns a reserved address.
    client_id = ":".join(f"{b:02x}" for b in b"\0" + SERIAL.encode())
    dhcp = lab.dnsmasq(extra=[f"--dhcp-host=id:{client_id},{lab.net}.77"], options=[
        f"114,{web.url('onie/sharch.bin')}",
        'vi-encap:42623,1,"$(touch /tmp/pwned)"',
        "67,`touch /tmp/pwned2`;reboot",
        "66,;reboot",
        "12,$(reboot)",
        "15," + "`touch /tmp/pwned3`" * 10,
    ])
    with lab.boot(image) as console:
        text = finish(console)
    said = lines(text)
    assert said[0].startswith(f"start platform={PLATFORM} mode=install interfaces=eth0 ")
    assert any(line.startswith("warning insecure") for line in said)
    rejected = index_of(said, r"^reject option 125 \S*touch\?/tmp/pwned\S* \(not a plain URL\)$")
    ran = index_of(said, rf"^exec {re.escape(web.url('onie/sharch.bin'))} type=nos uptime=")
    assert rejected < ran  # VIVSO comes first, is refused, and discovery goes on to 114
    assert said[-2:] == [f"done {web.url('onie/sharch.bin')} then poweroff", "release eth0"]
    report = lines(text, "TEST-INSTALLER sharch ")
    assert report[0] == "verifying payload checksum"
    assert report[1] == f"sharch install.sh platform_from_machine_conf={PLATFORM}"
    assert report[2].startswith(f"url={web.url('onie/sharch.bin')} platform={PLATFORM} "
                                f"machine=qemu_x86_64 mode=install serial={SERIAL} mac={MAC} "
                                f"ip={lab.net}.77 ")
    assert report[3] == "clean"  # no hostile value ran
    # The server saw ONIE's headers.
    got = web.requests()
    assert [(r.method, r.path, r.status) for r in got] == [("GET", "/onie/sharch.bin", 200)]
    check_headers(got[0].header)
    # The DHCP server saw ONIE's identity, then the release.
    log = dhcp.wait_for_log(r"DHCPRELEASE\(tap0\)").string
    assert f"vendor class: onie_vendor:{PLATFORM}" in log
    assert "user class: onie_dhcp_user_class" in log
    assert f"DHCPRELEASE(tap0) {lab.net}.77 {MAC}" in log


def test_vivso_installer_fails_then_option_114_succeeds(image: Path, lab: Lab) -> None:
    """Exact URL via VIVSO (125, enterprise 42623, sub-option 1); a failing installer moves on."""
    www = lab.tmp / "www"
    script_installer(www / "vivso.sh", "vivso", status=3)
    script_installer(www / "url114.sh", "url114")
    web = HttpServer(lab.ns, www, lab.tmp / "httpd", address=lab.server).start()
    lab.dnsmasq(options=[f"vi-encap:42623,1,{web.url('vivso.sh')}", f"114,{web.url('url114.sh')}"])
    with lab.boot(image) as console:
        text = finish(console)
    said = lines(text)
    first = index_of(said, rf"^exec {re.escape(web.url('vivso.sh'))} type=nos ")
    failed = index_of(said, rf"^fail {re.escape(web.url('vivso.sh'))} installer exit status 3$")
    second = index_of(said, rf"^exec {re.escape(web.url('url114.sh'))} type=nos ")
    assert first < failed < second
    assert lines(text, "TEST-INSTALLER vivso ")[0].startswith(f"url={web.url('vivso.sh')} ")
    assert [r.path for r in web.requests()] == ["/vivso.sh", "/url114.sh"]


def test_installer_gets_the_console_as_stdin_and_controlling_terminal(image: Path, lab: Lab) -> None:
    """An installer discovery runs reads the console, as one started at the console does: it
    asks SONiC's y/n question and the answer typed on the console reaches it (the console's
    shell is ended meanwhile, so nothing else reads it)."""
    www = lab.tmp / "www"
    asking_installer(www / "ask.sh", "ask")
    web = HttpServer(lab.ns, www, lab.tmp / "httpd", address=lab.server).start()
    lab.dnsmasq(options=[f"114,{web.url('ask.sh')}"])
    with lab.boot(image) as console:
        console.expect(r"\[y/n\]: ", BOOT_TIMEOUT)
        console.send("y\r")
        text = finish(console)
    assert lines(text, "TEST-INSTALLER ask ") == ["stdin=/dev/ttyS0 ctty=yes", "answer=y"]
    assert lines(text)[-2] == f"done {web.url('ask.sh')} then poweroff"


def test_http_sweep_waits_for_a_server_and_finds_a_less_specific_name(image: Path, lab: Lab) -> None:
    """No exact URL: the sweep tries every default name on the DHCP server; the server is down
    in the first round (refused), comes up during the backoff, and only a less specific name
    exists there."""
    www = lab.tmp / "www"
    script_installer(www / "onie-installer-x86_64.bin", "sweep")
    web = HttpServer(lab.ns, www, lab.tmp / "httpd", address=lab.server)
    lab.dnsmasq()
    with lab.boot(image) as console:
        console.expect(rf"onie-discovery: fail http://{re.escape(lab.server)}/ no answer on port 80",
                       BOOT_TIMEOUT)
        console.expect(r"onie-discovery: backoff \d+ms before round 2", 60)
        web.start()  # up while the guest waits
        text = finish(console)
    said = lines(text)
    found = index_of(said, rf"^found http://{re.escape(lab.server)}/onie-installer-x86_64\.bin$")
    assert index_of(said, r"^round 2$") < found or index_of(said, r"^round 3$") < found
    names = [f"/onie-installer-{PLATFORM}", "/onie-installer-x86_64-qemu_x86_64",
             "/onie-installer-qemu_x86_64", "/onie-installer-x86_64-qemu", "/onie-installer-x86_64"]
    expected = [n + s for n in names for s in ("", ".bin")]
    got = web.requests()
    assert [r.path for r in got] == expected
    assert [r.status for r in got] == [404] * (len(expected) - 1) + [200]
    for request in got:
        check_headers(request.header)


def test_tftp_boot_file_fails_then_the_waterfall_finds_the_mac_folder(image: Path, lab: Lab) -> None:
    """TFTP with the boot file (67) from siaddr; its installer fails; the waterfall's first
    stop, the MAC folder, holds the installer that succeeds."""
    tftp = lab.tmp / "tftp"
    script_installer(tftp / "boot" / "fail.sh", "bootfile", status=1)
    script_installer(tftp / MAC.replace(":", "-") / f"onie-installer-{PLATFORM}", "waterfall")
    dhcp = lab.dnsmasq(options=["67,boot/fail.sh"], tftp_root=tftp)
    with lab.boot(image) as console:
        text = finish(console)
    said = lines(text)
    boot_url = f"tftp://{lab.server}/boot/fail.sh"
    mac_url = f"tftp://{lab.server}/52-54-00-12-34-56/onie-installer-{PLATFORM}"
    assert index_of(said, rf"^exec {re.escape(boot_url)} type=nos ") < \
        index_of(said, rf"^fail {re.escape(boot_url)} installer exit status 1$") < \
        index_of(said, r"^method waterfall ") < \
        index_of(said, rf"^found {re.escape(mac_url)}$") < \
        index_of(said, rf"^exec {re.escape(mac_url)} type=nos ")
    assert lines(text, "TEST-INSTALLER waterfall ")[0].startswith(f"url={mac_url} ")
    sent = re.findall(r"sent (\S+) to", dhcp.log_text())
    assert sent == [str(tftp / "boot/fail.sh"),
                    str(tftp / "52-54-00-12-34-56" / f"onie-installer-{PLATFORM}")]


def test_install_url_comes_first(image: Path, lab: Lab) -> None:
    """install_url= on the kernel command line wins over an exact DHCP URL."""
    www = lab.tmp / "www"
    script_installer(www / "static" / "custom.sh", "static")
    script_installer(www / "url114.sh", "url114")
    web = HttpServer(lab.ns, www, lab.tmp / "httpd", address=lab.server).start()
    lab.dnsmasq(options=[f"114,{web.url('url114.sh')}"])
    with lab.boot(image, append=f"install_url={web.url('static/custom.sh')}") as console:
        text = finish(console)
    said = lines(text)
    assert index_of(said, r"^method install_url ") < \
        index_of(said, rf"^exec {re.escape(web.url('static/custom.sh'))} type=nos ")
    assert not any("url114" in line for line in said)
    assert [r.path for r in web.requests()] == ["/static/custom.sh"]


def test_usb_stick_without_any_dhcp_server(image: Path, lab: Lab) -> None:
    """A vfat USB stick with the plain default name installs at once, with a NIC on a link
    where no DHCP server answers (ONIE would wait behind its network timeouts)."""
    require_tool("mkfs.vfat", "to make the USB stick image (dosfstools)")
    require_tool("mcopy", "to copy the installer onto it without mounting (mtools)")
    stick = lab.tmp / "stick.img"
    installer = script_installer(lab.tmp / "onie-installer", "usb")
    subprocess.run(["truncate", "-s", "32M", str(stick)], check=True)
    subprocess.run(["mkfs.vfat", "-n", "ONIEUSB", str(stick)], check=True, capture_output=True)
    subprocess.run(["mcopy", "-i", str(stick), str(installer), "::onie-installer"], check=True)
    usb = ["-device", "qemu-xhci,id=xhci", "-drive", f"if=none,id=stick,format=raw,file={stick}",
           "-device", "usb-storage,bus=xhci.0,drive=stick"]
    with lab.boot(image, extra=usb) as console:
        text = finish(console)
    said = lines(text)
    start = float(re.search(r"uptime=([0-9.]+)", said[0]).group(1))  # type: ignore[union-attr]
    ran = said[index_of(said, r"^exec file:///dev/sd[a-z]+1?/onie-installer type=nos ")]
    assert not any(line.startswith("fail dhcp") for line in said)  # nothing waited for DHCP
    assert float(ran.rsplit("uptime=", 1)[1]) - start < 10  # generous: TCG on a busy runner
    assert lines(text, "TEST-INSTALLER usb ")[0].startswith("url=file:///dev/sd")


def test_boot_netns_serves_the_installer_to_the_guest(image: Path, tmp_path: Path,
                                                      cache_env: dict[str, str]) -> None:
    """`onie-builder boot --netns --installer F`: the product's own test bed (a namespace with
    dnsmasq and an HTTP server) boots the image, discovery finds F by option 114 and runs it,
    the guest powers off, and the namespace is gone afterwards."""
    require_root_netns()
    require_qemu("x86_64")
    require_tool("dnsmasq", "for the test bed's DHCP server (dnsmasq-base)")
    installer = script_installer(tmp_path / "inst.sh", "testbed")
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    proc = run_cli("boot", str(image), "--netns", "--installer", str(installer), "--append", "quiet",
                   env=cache_env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert re.search(r"onie-discovery: .*http://10\.213\.0\.1/onie-installer", out), out[-3000:]
    assert re.search(r"TEST-INSTALLER testbed url=http://10\.213\.0\.1/onie-installer "
                     r"platform=x86_64-qemu_x86_64-r0 ", out), out[-3000:]
    assert "TEST-INSTALLER testbed clean" in out
    assert "reboot: Power down" in out
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert [n for n in after.splitlines() if n.startswith("ob-boot-")] == \
        [n for n in before.splitlines() if n.startswith("ob-boot-")]


def test_boot_installer_without_netns_is_refused(image: Path) -> None:
    proc = run_cli("boot", str(image), "--installer", str(image / "vmlinuz"), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: --serve and --installer need --netns "
                                   "(the test bed that serves them)")


def test_forty_unreachable_option_72_servers_each_get_a_whole_line(image: Path, lab: Lab) -> None:
    """Issue #16: with 40 option-72 web servers probed at once, every one of them gets its own
    whole console line (none lost or cut into by another), then the sweep reaches the DHCP
    server, which has the installer."""
    www = lab.tmp / "www"
    script_installer(www / "onie-installer", "sweep40")
    HttpServer(lab.ns, www, lab.tmp / "httpd", address=lab.server).start()
    dead = [f"{lab.net}.{100 + i}" for i in range(40)]  # nothing answers ARP there
    lab.dnsmasq(options=["72," + ",".join(dead)])
    with lab.boot(image) as console:
        text = finish(console)
    said = lines(text)
    failed = [line for line in said if line.startswith("fail http://") and "no answer" in line]
    assert len(failed) == 40, failed
    for ip, line in zip(dead, failed, strict=True):  # in the sweep's order, each one whole
        assert re.fullmatch(rf"fail http://{re.escape(ip)}/ no answer on port 80 within \d+s", line), line
    assert index_of(said, rf"^found http://{re.escape(lab.server)}/onie-installer$") > \
        index_of(said, rf"^fail http://{re.escape(dead[-1])}/ ")
