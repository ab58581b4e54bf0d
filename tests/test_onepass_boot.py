"""One pass in QEMU (issue #16, lib/onepass.sh.j2): an installer hashed while it downloads is
verified with that digest and runs; a tampered one (a payload byte changed, its signed
statement kept) hashed the same way is refused. Option 114 serves the tampered installer over
HTTP, install_url= the good one over HTTPS, so both transports take the one-pass path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console, machine_for, qemu_command
from builder.lab.servers import Dnsmasq, HttpServer, TlsFiles
from tests.conftest import require_qemu, require_root_netns, require_tool
from tests.transportlab import (
    LAB_RECIPE,
    build_image,
    installer,
    make_ca,
    make_key,
    make_server_cert,
    signed,
    subnet,
)

pytestmark = [pytest.mark.lab, pytest.mark.network]


def test_one_pass_digest_verifies_and_refuses_a_tampered_payload(
        tmp_path: Path, cache_env: dict[str, str]) -> None:
    require_root_netns()
    require_qemu("x86_64")
    require_tool("dnsmasq", "for the lab's DHCP server (dnsmasq-base)")
    net = subnet(19)
    server = f"{net}.1"
    key = make_key(tmp_path / "keys")
    ca = make_ca(tmp_path / "certs", "onepass ca")
    chain, tls_key = make_server_cert(tmp_path / "certs", "server", ca, [server])
    image = build_image(f"""extends: {LAB_RECIPE}
images:
  formats: []
trust:
  keys: [{key}]
discovery:
  insecure: false
  methods: [dhcp_url, install_url]
transports:
  https:
    ca: [{ca[0]}]
""", tmp_path / "build", cache_env)
    # Past 1 MiB, so the follower hashes in more than one step.
    plain = installer(tmp_path / "src", "inst.sh", "ONEPASS-INSTALLER ran", 0)
    plain.write_text(plain.read_text() + "# " + "x" * (3 << 20) + "\n")
    www = tmp_path / "www"
    www.mkdir()
    good = signed(plain, tmp_path / "keys", www / "good")
    data = bytearray(good.read_bytes())
    data[1 << 20] ^= 1  # in the payload: the block and its statement are untouched
    (www / "tampered").write_bytes(bytes(data))
    bad_url = f"http://{server}/tampered"
    good_url = f"https://{server}:8443/good"
    manifest = json.loads((image / "manifest.json").read_text())
    argv = qemu_command(machine_for("x86_64"), image / "vmlinuz", image / "initrd.img",
                        f"{manifest['kernel']['cmdline']} install_url={good_url}", tap="tap0")
    with NetNamespace.create("obop") as ns:
        ns.add_tap("tap0", f"{server}/24")
        Dnsmasq(ns, "tap0", server, tmp_path / "dnsmasq", options=[f"114,{bad_url}"]).start()
        HttpServer(ns, www, tmp_path / "http", address=server).start()
        HttpServer(ns, www, tmp_path / "https", address=server, port=8443,
                   tls=TlsFiles(chain, tls_key)).start()
        with Console.start(argv, tmp_path / "console.log", netns=ns.name) as console:
            console.expect(rf"onepass {re.escape(bad_url)} payload hashed while downloading",
                           timeout=240)
            console.expect(rf"fail {re.escape(bad_url)} refused: digest-mismatch", timeout=60)
            console.expect(rf"onepass {re.escape(good_url)} payload hashed while downloading",
                           timeout=120)
            console.expect(rf"exec {re.escape(good_url)} type=nos", timeout=60)
            console.expect(r"ONEPASS-INSTALLER ran", timeout=60)
            console.expect(r"reboot: Power down", timeout=60)
