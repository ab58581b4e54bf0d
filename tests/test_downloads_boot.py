"""Downloads against misbehaving servers in QEMU (issue #16). One image with short timeouts
(stall 3 s, one attempt 20 s) trusting a test key; every installer served is signed.

Boot 1: each round tries option 114 (an HTTPS server that never ends its handshake), then
install_url= on a fault server whose Nth answer is the Nth fault: a body that stops at 90 %
and hangs, a 10 GiB Content-Length, one byte per second, a short body under a longer
Content-Length, a redirect loop, a 503, and finally a reset at 50 % that the guest resumes by
Range and installs. Each fault ends in a console line naming its cause, within its bound.

Boot 2: a small installer over TFTP (option 67) behind 20 % packet loss in the test's namespace
(a lost block costs a retransmission timeout; a round whose transfer stalls says so and the
next round tries again),
made with nftables' numgen: this host kernel has no sch_netem (CONFIG_NET_SCH_NETEM is not
set: `tc qdisc add ... netem` fails with "unknown qdisc"), while CONFIG_NFT_NUMGEN=y.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console, machine_for, qemu_command
from builder.lab.servers import Dnsmasq, wait_for_text
from tests import faultserver
from tests.conftest import require_qemu, require_root_netns, require_tool
from tests.transportlab import (
    LAB_RECIPE,
    build_image,
    installer,
    make_ca,
    make_key,
    signed,
    subnet,
)

pytestmark = [pytest.mark.lab, pytest.mark.network]

SEQUENCE = ("hang", "huge", "slow", "short", "loop", "busy", "reset")
STALL, TRANSFER = 3, 20


@pytest.fixture(scope="module")
def lab_image(tmp_path_factory: pytest.TempPathFactory, cache_env: dict[str, str]
              ) -> Iterator[tuple[Path, Path, Path]]:
    """(image folder, signed installer, CA certificate), built once for both boots."""
    require_root_netns()
    require_qemu("x86_64")
    require_tool("dnsmasq", "for the lab's DHCP and TFTP server (dnsmasq-base)")
    tmp = tmp_path_factory.mktemp("downloads")
    key = make_key(tmp / "keys")
    ca, _ = make_ca(tmp / "certs", "lab ca")
    recipe = f"""extends: {LAB_RECIPE}
images:
  formats: []
trust:
  keys: [{key}]
discovery:
  insecure: false
  methods: [dhcp_url, install_url, tftp]
  timeouts:
    stall: {STALL}
    transfer: {TRANSFER}
  downloads:
    resume: 2
    progress: 5
transports:
  https:
    ca: [{ca}]
"""
    image = build_image(recipe, tmp / "build", cache_env)
    # A 2 MiB body so a stop at 90 % or a reset at 50 % falls well inside the data.
    plain = installer(tmp / "src", "inst.sh", "DOWNLOADS-INSTALLER ran", 0)
    plain.write_text(plain.read_text() + "# " + "x" * (2 << 20) + "\n")
    www = tmp / "www"
    www.mkdir()
    # TFTP moves one block per round trip: under loss it runs at a few KiB/s, so its installer
    # is the unpadded one (a few blocks).
    small = installer(tmp / "src", "small.sh", "DOWNLOADS-INSTALLER ran", 0)
    signed(small, tmp / "keys", tmp / "small")
    yield image, signed(plain, tmp / "keys", www / "inst"), ca


def start_faults(ns: NetNamespace, www: Path, folder: Path, address: str) -> Path:
    """The fault server in the namespace (port 8080, TLS stall on 8443); its request log."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "requests.jsonl"
    config = folder / "faults.json"
    config.write_text(json.dumps({"root": str(www), "address": address, "port": 8080,
                                  "log": str(log), "tls_stall_port": 8443,
                                  "sequence": list(SEQUENCE)}))
    proc = ns.spawn([sys.executable, "-u", faultserver.__file__, str(config)], folder / "out.log")
    wait_for_text(folder / "out.log", "^" + re.escape(faultserver.READY), 20, proc, "faultserver")
    return log


def boot(image: Path, extra: str) -> list[str]:
    manifest = json.loads((image / "manifest.json").read_text())
    return qemu_command(machine_for("x86_64"), image / "vmlinuz", image / "initrd.img",
                        f"{manifest['kernel']['cmdline']} {extra}".strip(), tap="tap0")


def test_faults_are_named_and_the_resumed_installer_runs(
        lab_image: tuple[Path, Path, Path], tmp_path: Path) -> None:
    image, inst, _ = lab_image
    net = subnet(16)
    server = f"{net}.1"
    stall_url = f"https://{server}:8443/onie-installer"
    url = f"http://{server}:8080/seq/inst"
    with NetNamespace.create("obdl") as ns:
        ns.add_tap("tap0", f"{server}/24")
        Dnsmasq(ns, "tap0", server, tmp_path / "dnsmasq", options=[f"114,{stall_url}"]).start()
        log = start_faults(ns, inst.parent, tmp_path / "faults", server)
        with Console.start(boot(image, f"install_url={url}"), tmp_path / "console.log",
                           netns=ns.name) as console:
            u = re.escape(url)
            reasons = [
                rf"fail {u} stalled {STALL} s at [89]\d %",
                rf"fail {u} Content-Length 10 GiB > [\d.]+ [MG]iB free in /run/onie",
                rf"fail {u} timed out after {TRANSFER} s at 0 %",
                rf"fail {u} connection closed at [\d.]+ MiB of [\d.]+ MiB at 99 %",
                rf"fail {u} too many redirections",
                rf"fail {u} HTTP 503 Service Unavailable",
            ]
            # Every fault costs a round: its own bound, the TLS stall's, DHCP and back-off.
            console.expect(rf"resume {u} at [\d.]+ [KM]iB \(", timeout=len(reasons) * (TRANSFER + 30))
            console.expect(rf"exec {u} type=nos", timeout=120)
            console.expect(r"DOWNLOADS-INSTALLER ran", timeout=60)
            console.expect(r"reboot: Power down", timeout=60)
            transcript = console.transcript
    stalls = re.findall(rf"fail {re.escape(stall_url)} TLS: no answer within {STALL} s", transcript)
    assert len(stalls) == len(reasons) + 1, transcript
    at = 0
    for reason in reasons:  # in the server's order, one per round
        found = re.compile(reason + r"\r?\n").search(transcript, at)
        assert found, f"{reason!r} not found after offset {at}:\n{transcript}"
        at = found.end()
    assert "refused" not in transcript  # every fault was caught before the verifier
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    gets = [(e["path"], e["range"]) for e in entries if e["method"] == "GET"]
    assert gets[-2][1] is None and re.fullmatch(r"bytes=[1-9]\d*-", gets[-1][1] or ""), gets
    assert any(e["method"] == "TLS" for e in entries)


def test_tftp_behind_packet_loss_installs(lab_image: tuple[Path, Path, Path],
                                          tmp_path: Path) -> None:
    image, inst, _ = lab_image
    nft = require_tool("nft", "to drop 20 % of the lab's TFTP packets (Debian package nftables)")
    net = subnet(17)
    server = f"{net}.1"
    tftp = tmp_path / "tftp"
    tftp.mkdir()
    (tftp / "inst").write_bytes((inst.parent.parent / "small").read_bytes())
    with NetNamespace.create("obdlt") as ns:
        ns.add_tap("tap0", f"{server}/24")
        # DHCP (67/68) and DNS pass; every fifth other UDP packet, each way, is dropped
        # (numgen inc: exactly 20 %, so even a short transfer loses packets; random drops
        # left a 10-packet transfer untouched about one run in ten).
        rules = ("add table inet loss\n"
                 "add chain inet loss in { type filter hook input priority 0; }\n"
                 "add chain inet loss out { type filter hook output priority 0; }\n"
                 "add rule inet loss in udp dport != { 53, 67, 68 } numgen inc mod 5 == 0 counter drop\n"
                 "add rule inet loss out udp sport != { 53, 67, 68 } numgen inc mod 5 == 0 "
                 "counter drop\n")
        subprocess.run(ns.exec_argv([nft, "-f", "-"]), input=rules, text=True, check=True)
        Dnsmasq(ns, "tap0", server, tmp_path / "dnsmasq", tftp_root=tftp,
                extra=["--dhcp-boot=inst"]).start()
        with Console.start(boot(image, ""), tmp_path / "console.log", netns=ns.name) as console:
            console.expect(r"exec tftp://\S+/inst type=nos", timeout=240)
            console.expect(r"DOWNLOADS-INSTALLER ran", timeout=60)
            console.expect(r"reboot: Power down", timeout=60)
        counters = subprocess.run(ns.exec_argv([nft, "list", "table", "inet", "loss"]),
                                  capture_output=True, text=True, check=True).stdout
    dropped = [int(n) for n in re.findall(r"counter packets (\d+)", counters)]
    assert len(dropped) == 2 and sum(dropped) > 0, counters  # the loss was real
