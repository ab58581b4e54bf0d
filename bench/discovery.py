"""Time from kernel start to installer start, in guest time, for three discovery paths.

    python bench/discovery.py [--image out/x86_64-qemu_x86_64-r0] [--runs 3] [--nic virtio-net-pci]

Boots the lab image (tests/recipes/lab_x86_64.yaml, built here unless --image is given) in
QEMU TCG inside a private network namespace, once per path and run:

  option 114   dnsmasq hands out an exact URL; the HTTP server has the installer
  usb          a vfat USB stick holds onie-installer; the NIC's link has no DHCP server
  http sweep   no exact URL; the DHCP server's HTTP server has only onie-installer-x86_64

The guest's clock gives the figures, from the line discovery prints once the installer has
run (``timing init=T start=T exec=T``): ``init`` is when the kernel ran /init (its log line "Run
/init as init process"), ``start`` is when discovery began (with a NIC only, after /init loaded
the network drivers), ``exec`` is when the installer started. Under TCG the guest's clock
follows the host's, so a busy host slows every figure, the kernel's own boot too: report the
host load with them. The targets are for exec - init ("beyond the kernel's own boot"): 1.5 s,
2 s and 3 s. The machine is the lab's q35; ``--machine pc`` boots QEMU's i440FX instead, where
each PCI driver's probe runs the PIIX interrupt-link methods in the kernel's ACPI interpreter
(~0.6 s per driver under TCG; ``--append pci=noacpi`` skips them there). Needs root, qemu,
dnsmasq, dosfstools and mtools. Not run by the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from builder.lab.netns import NetNamespace  # noqa: E402
from builder.lab.qemu import Console, QemuMachine, machine_for, qemu_command  # noqa: E402
from builder.lab.servers import Dnsmasq, HttpServer  # noqa: E402

INSTALLER = "#!/bin/sh\necho bench-installer ran\nexit 0\n"
TARGETS = {"option 114": 1.5, "usb": 2.0, "http sweep": 3.0}
NET = f"10.200.{230 + os.getpid() % 20}"


@dataclasses.dataclass(frozen=True)
class Timing:
    init: float
    start: float
    exec: float


def build(out: Path) -> Path:
    recipe = ROOT / "tests" / "recipes" / "lab_x86_64.yaml"
    proc = subprocess.run([sys.executable, "-m", "builder", "build", "--allow-untrusted",
                           str(recipe), "--out", str(out),
                           "--json", "--no-lock"], cwd=ROOT, check=True, capture_output=True, text=True)
    return Path(json.loads(proc.stdout)["result"][0]["out"])


def lab_machine(nic: str, chipset: str | None) -> QemuMachine:
    """The lab's x86_64 machine with ``nic``, and ``chipset`` as its -M value when given."""
    machine = dataclasses.replace(machine_for("x86_64"), nic=nic)
    if chipset is None:
        return machine
    args = list(machine.args)
    if "-M" in args:
        args[args.index("-M") + 1] = chipset
    else:
        args[:0] = ["-M", chipset]
    return dataclasses.replace(machine, args=tuple(args))


def boot(image: Path, ns: NetNamespace, log: Path, machine: QemuMachine, extra: list[str],
         append: str) -> Timing:
    argv = qemu_command(machine, image / "vmlinuz", image / "initrd.img", f"quiet {append}".strip(),
                        tap="tap0", extra=extra)
    with Console.start(argv, log_path=log, netns=ns.name) as console:
        # Printed once the installer has run, so reading the kernel log delays nothing.
        timing = console.expect(r"onie-discovery: timing init=([0-9.]+) start=([0-9.]+)"
                                r" exec=([0-9.]+)\r?\n", 300)
        console.expect(r"reboot: Power down", 60)
    return Timing(*(float(timing.group(i)) for i in (1, 2, 3)))


def run_path(path: str, image: Path, tmp: Path, machine: QemuMachine, append: str) -> Timing:
    www = tmp / "www"
    www.mkdir(parents=True, exist_ok=True)
    with NetNamespace.create("obb") as ns:
        ns.add_tap("tap0", f"{NET}.1/24")
        extra: list[str] = []
        if path == "option 114":
            (www / "x.sh").write_text(INSTALLER)
            HttpServer(ns, www, tmp / "httpd", address=f"{NET}.1").start()
            Dnsmasq(ns, "tap0", f"{NET}.1", tmp / "dnsmasq",
                    options=[f"114,http://{NET}.1/x.sh"]).start()
        elif path == "http sweep":
            (www / "onie-installer-x86_64").write_text(INSTALLER)
            HttpServer(ns, www, tmp / "httpd", address=f"{NET}.1").start()
            Dnsmasq(ns, "tap0", f"{NET}.1", tmp / "dnsmasq").start()
        else:
            stick, installer = tmp / "stick.img", tmp / "onie-installer"
            installer.write_text(INSTALLER)
            subprocess.run(["truncate", "-s", "32M", str(stick)], check=True)
            subprocess.run(["mkfs.vfat", str(stick)], check=True, capture_output=True)
            subprocess.run(["mcopy", "-o", "-i", str(stick), str(installer), "::onie-installer"],
                           check=True)
            extra = ["-device", "qemu-xhci,id=xhci", "-drive",
                     f"if=none,id=stick,format=raw,file={stick}",
                     "-device", "usb-storage,bus=xhci.0,drive=stick"]
        return boot(image, ns, tmp / "console.log", machine, extra, append)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path, help="a built out/<platform> folder")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--paths", nargs="*", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--append", default="", help="more kernel command line")
    parser.add_argument("--keep", type=Path, help="keep consoles and server logs in this folder")
    parser.add_argument("--nic", default="virtio-net-pci,romfile=",
                        help="QEMU NIC (e1000 brings its link up ~3 s later under TCG)")
    parser.add_argument("--machine", help="QEMU -M value instead of the lab's (q35), e.g. pc")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-discovery-") as tmpdir:
        tmp = args.keep or Path(tmpdir)
        image = args.image or build(tmp / "out")
        machine = lab_machine(args.nic, args.machine)
        rows = []
        for path in args.paths:
            timings = [run_path(path, image, tmp / f"{path}-{i}".replace(" ", "_"), machine, args.append)
                       for i in range(args.runs)]
            rows.append((path, timings))
    print(f"{'path':<12} {'init':>6} {'start':>6} {'exec':>6} {'exec-init':>9} {'target':>6}"
          f" {'exec-start':>10} {'exec-init range':>15}   (guest seconds, median of {args.runs})")
    for path, timings in rows:
        med = {k: statistics.median(getattr(t, k) for t in timings) for k in ("init", "start", "exec")}
        beyond = statistics.median(t.exec - t.init for t in timings)
        own = statistics.median(t.exec - t.start for t in timings)
        spread = [t.exec - t.init for t in timings]
        verdict = "ok" if beyond <= TARGETS[path] else "over"
        print(f"{path:<12} {med['init']:6.2f} {med['start']:6.2f} {med['exec']:6.2f} {beyond:9.2f}"
              f" {TARGETS[path]:6.1f} {own:10.2f} {min(spread):7.2f}-{max(spread):<7.2f}   {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
