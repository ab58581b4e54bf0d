"""Time to installer over plain HTTP, HTTPS (checked certificate) and iSCSI, and what each
transport adds to the image.

    python bench/transports.py [--runs 2] [--size-mib 8]

Builds the lab image with a CA and iSCSI enabled (and, for the size table, the plain lab image
and one with DHCPv6), then boots it in QEMU TCG in a private network namespace once per path
and run; the installer (``--size-mib`` MiB) comes from:

  http    DHCP option 114: http://SERVER/onie-installer
  https   DHCP option 114: https://SERVER:8443/onie-installer (certificate of the baked-in CA)
  iscsi   DHCP option 17: a tgt target whose LUN holds an ext2 filesystem with onie-installer

The figure is guest time (its uptime, so host load distorts it less) from discovery's start to
the installer's exec, which includes the DHCP lease. Needs root, qemu, dnsmasq, tgt, e2fsprogs.
Not run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.lab.netns import NetNamespace  # noqa: E402
from builder.lab.qemu import Console, machine_for, qemu_command  # noqa: E402
from builder.lab.servers import Dnsmasq, HttpServer, TlsFiles  # noqa: E402
from tests.iscsilab import Tgt  # noqa: E402
from tests.transportlab import (  # noqa: E402
    LAB_RECIPE,
    ext2_image,
    make_ca,
    make_server_cert,
)

NET = f"10.200.{210 + os.getpid() % 20}"
SERVER = f"{NET}.1"
TARGET = "iqn.2024-01.lab.test:bench"
UPTIME = re.compile(r"uptime=([0-9.]+)")


def build(recipe_text: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(recipe_text)
    proc = subprocess.run([sys.executable, "-m", "builder", "build", "--allow-untrusted",
                           str(folder / "recipe.yaml"),
                           "--out", str(folder / "out"), "--json", "--no-lock"], cwd=ROOT,
                          check=True, capture_output=True, text=True)
    return Path(json.loads(proc.stdout)["result"][0]["out"])


def recipe(ca: Path | None, iscsi: bool, dhcpv6: bool) -> str:
    lines = [f"extends: {LAB_RECIPE}", "images:", "  formats: []", "discovery:",
             "  methods: [dhcp_url, iscsi]", "transports:", "  https:",
             f"    ca: [{ca}]" if ca else "    ca: []", "  iscsi:", f"    enabled: {str(iscsi).lower()}",
             "  ipv6:", f"    dhcpv6: {str(dhcpv6).lower()}"]
    return "\n".join(lines) + "\n"


def installer(path: Path, size_mib: int) -> Path:
    """A shell installer padded to the size (the shell stops at `exit`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(b"#!/bin/sh\necho bench installer ran\nexit 0\n")
        f.write(os.urandom(size_mib << 20))
    path.chmod(0o755)
    return path


def boot(image: Path, ns: NetNamespace, log: Path) -> float:
    manifest = json.loads((image / "manifest.json").read_text())
    argv = qemu_command(machine_for("x86_64"), image / "vmlinuz", image / "initrd.img",
                        manifest["kernel"]["cmdline"], tap="tap0")
    with Console.start(argv, log, netns=ns.name) as console:
        start = console.expect(r"onie-discovery: start .*uptime=([0-9.]+)", timeout=180)
        done = console.expect(r"onie-discovery: exec \S+ type=\S+ uptime=([0-9.]+)", timeout=300)
        console.expect(r"bench installer ran", timeout=60)
        console.expect(r"reboot: Power down", timeout=60)
    return float(done.group(1)) - float(start.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--size-mib", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-transports-") as tmp_name:
        tmp = Path(tmp_name)
        ca = make_ca(tmp / "certs", "bench ca")
        chain, key = make_server_cert(tmp / "certs", "server", ca, [SERVER])
        sizes = {"plain lab image": build(recipe(None, False, False), tmp / "plain"),
                 "+ https CA": build(recipe(ca[0], False, False), tmp / "https"),
                 "+ https CA + iscsi": build(recipe(ca[0], True, False), tmp / "iscsi"),
                 "+ https CA + iscsi + dhcpv6": build(recipe(ca[0], True, True), tmp / "dhcpv6")}
        print("image                              initrd.img bytes  files")
        for name, out in sizes.items():
            files = len(json.loads((out / "manifest.json").read_text())["initramfs"]["files"])
            print(f"{name:34} {(out / 'initrd.img').stat().st_size:16} {files:6}")
        image = sizes["+ https CA + iscsi"]
        www = tmp / "www"
        installer(www / "onie-installer", args.size_mib)
        fs = tmp / "fs"
        installer(fs / "onie-installer", args.size_mib)
        disk = ext2_image(fs, tmp / "disk.img", args.size_mib + 8)
        paths = {
            "http": [f"114,http://{SERVER}/onie-installer"],
            "https": [f"114,https://{SERVER}:8443/onie-installer"],
            "iscsi": [f"17,iscsi:{SERVER}:::1:{TARGET}"],
        }
        results: dict[str, list[float]] = {name: [] for name in paths}
        for run in range(args.runs):
            for name, options in paths.items():
                with NetNamespace.create("obbench") as ns:
                    ns.add_tap("tap0", f"{SERVER}/24")
                    Dnsmasq(ns, "tap0", SERVER, tmp / f"dnsmasq-{name}-{run}", options=options).start()
                    HttpServer(ns, www, tmp / f"http-{name}-{run}", address=SERVER).start()
                    HttpServer(ns, www, tmp / f"https-{name}-{run}", address=SERVER, port=8443,
                               tls=TlsFiles(chain, key)).start()
                    tgt = Tgt(ns, tmp / f"tgt-{name}-{run}", SERVER).start()
                    try:
                        tgt.add_target(TARGET, disk)
                        results[name].append(boot(image, ns, tmp / f"console-{name}-{run}.log"))
                    finally:
                        tgt.stop()
                print(f"run {run + 1} {name:6} {results[name][-1]:6.2f} s", flush=True)
        print(f"\ntime from discovery start to installer exec ({args.size_mib} MiB installer, "
              "guest seconds, includes the DHCP lease)")
        for name, values in results.items():
            print(f"{name:6} median {statistics.median(values):6.2f} s  runs "
                  + " ".join(f"{v:.2f}" for v in values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
