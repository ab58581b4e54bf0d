#!/usr/bin/env python3
"""Fetch + verify of a large signed installer in the guest, with and without hashing while
downloading (issue #16, "one pass"; target: fetch + verify within 1.1x of the fetch alone).

Usage: .venv/bin/python bench/fetch_verify.py [--size-mib 400] [--runs 3] [--smp 1]
                                              [--rate-mbit 0] [--json]

Builds the lab image trusting a fresh Ed25519 key, signs a SIZE MiB random installer on the
host and serves it from the lab's HTTP server in a private network namespace (tap0; with
--rate-mbit, shaped there by a `tc tbf` qdisc: a network slower than the guest's CPU, as on
a switch, where the link and not the processor bounds a download). The guest boots under QEMU
TCG in rescue mode (discovery off) with 2 GiB of RAM and --smp vCPUs; the bench gives eth0 an
address and sources /bin/onie-discovery as a library. Each run times, from /proc/uptime, with
FILE in /run/onie (tmpfs), interleaved:
- fetch       `fetch URL FILE` with ONEPASS_ON empty: the download alone
- before      the same, then `verify_installer FILE`: the second read hashes the payload
- one pass    `fetch URL FILE` (the payload hashed while it arrives), `onepass_digest FILE`,
              then `verify_installer FILE "" "" "$ONEPASS_DIGEST"`
and says in how many one-pass runs the digest was kept (else verify_installer hashed the file).
Also prints the guest's `openssl speed -evp sha256` rate. Needs root, qemu, tc. Not run by the
tests.
"""

from __future__ import annotations

import argparse
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
from builder.lab.qemu import Console, machine_for, qemu_command  # noqa: E402
from builder.lab.servers import HttpServer  # noqa: E402
from tests.transportlab import LAB_RECIPE, make_key, signed  # noqa: E402

NET = f"10.200.{230 + os.getpid() % 20}"
SERVER = f"{NET}.1"
MIB = 1 << 20


def build(tmp: Path) -> Path:
    key = make_key(tmp / "keys")
    (tmp / "build").mkdir()
    recipe = tmp / "build" / "recipe.yaml"
    recipe.write_text(f"extends: {LAB_RECIPE}\nimages:\n  formats: []\ntrust:\n  keys: [{key}]\n"
                      "discovery:\n  insecure: false\n")
    proc = subprocess.run([sys.executable, "-m", "builder", "-q", "build", str(recipe), "--out",
                           str(tmp / "build" / "out"), "--json", "--no-lock"], cwd=ROOT,
                          check=True, capture_output=True, text=True)
    return Path(json.loads(proc.stdout)[0]["out"])


def make_installer(tmp: Path, size_mib: int) -> Path:
    src = tmp / "src" / "inst.sh"
    src.parent.mkdir()
    with src.open("wb") as f:
        f.write(b"#!/bin/sh\necho bench installer ran\nexit 0\n# ")
        for _ in range(size_mib):
            f.write(os.urandom(MIB))
    (tmp / "www").mkdir()
    return signed(src, tmp / "keys", tmp / "www" / "inst")


def timed(console: Console, command: str) -> tuple[float, str]:
    """Guest seconds ``command`` took (by /proc/uptime) and its output."""
    out = console.run(f"a=$(cut -d' ' -f1 /proc/uptime); {command}; s=$?; "
                      "b=$(cut -d' ' -f1 /proc/uptime); echo \"@@ $a $b $s\"", timeout=1800)
    head, _, tail = out.rpartition("@@ ")
    start, end, status = tail.split()
    if status != "0":
        raise SystemExit(f"guest command failed ({status}): {command}\n{out}")
    return float(end) - float(start), head


def measure(console: Console, runs: int) -> tuple[dict[str, list[float]], int, str]:
    url = f"http://{SERVER}/inst"
    console.run(f"ip addr add {NET}.2/24 dev eth0 && ip link set eth0 up", timeout=30)
    # The library: the discovery script without its last line (the call to main).
    console.run("sed '$d' /bin/onie-discovery > /tmp/lib.sh && . /tmp/lib.sh && run_setup && "
                "MODE=install F=$RUN/bench", timeout=60)
    # The e1000 link takes a few seconds to come up: each ping waits up to 1 s for its answer.
    console.run(f"n=0; until ping -c 1 -W 1 {SERVER} >/dev/null || [ $n -ge 30 ]; do "
                "n=$((n + 1)); done", timeout=60)
    speed = console.run("openssl speed -seconds 3 -bytes 1048576 -evp sha256 2>/dev/null | tail -n 1",
                        timeout=60).split()[-1]
    cases = {
        "fetch": f"ONEPASS_ON= fetch {url} $F; rm -f $F",
        "fetch + verify (before)": f"ONEPASS_ON= fetch {url} $F && verify_installer $F >/dev/null; "
                                   "rm -f $F",
        "fetch + verify (one pass)": f"fetch {url} $F && onepass_digest $F && "
                                     "echo kept=${ONEPASS_DIGEST:+1} && "
                                     "verify_installer $F '' '' \"$ONEPASS_DIGEST\" >/dev/null; "
                                     "rm -f $F",
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    kept = 0
    for run in range(runs):
        for name, command in cases.items():
            seconds, out = timed(console, command)
            results[name].append(seconds)
            kept += "kept=1" in out
            print(f"run {run + 1} {name:26} {seconds:7.2f} s", file=sys.stderr, flush=True)
    return results, kept, speed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smp", type=int, default=1)
    parser.add_argument("--rate-mbit", type=int, default=0, help="shape the link (0: no)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ob-bench-fetch-") as name:
        tmp = Path(name)
        image = build(tmp)
        inst = make_installer(tmp, args.size_mib)
        manifest = json.loads((image / "manifest.json").read_text())
        argv = qemu_command(machine_for("x86_64"), image / "vmlinuz", image / "initrd.img",
                            manifest["kernel"]["cmdline"] + " boot_reason=rescue", tap="tap0",
                            extra=["-m", "2048", "-smp", str(args.smp)])
        with NetNamespace.create("obbfv") as ns:
            ns.add_tap("tap0", f"{SERVER}/24")
            if args.rate_mbit:
                subprocess.run(ns.exec_argv(["tc", "qdisc", "add", "dev", "tap0", "root", "tbf",
                                             "rate", f"{args.rate_mbit}mbit", "burst", "256k",
                                             "latency", "50ms"]), check=True)
            HttpServer(ns, inst.parent, tmp / "http", address=SERVER).start()
            with Console.start(argv, tmp / "console.log", netns=ns.name) as console:
                console.expect(r"onie-discovery: off mode=rescue", timeout=300)
                results, kept, speed = measure(console, args.runs)
    load = f"host load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    medians = {k: statistics.median(v) for k, v in results.items()}
    fetch = results["fetch"]
    # Each run's cases ran back to back: its ratios are the least exposed to host load drift.
    ratios = {k: statistics.median(t / f for t, f in zip(v, fetch, strict=True))
              for k, v in results.items() if k != "fetch"}
    if args.json:
        print(json.dumps({"size_mib": args.size_mib, "smp": args.smp, "rate_mbit": args.rate_mbit,
                          "runs": results, "median": medians, "ratio_to_fetch": ratios,
                          "one_pass_kept": kept, "openssl_sha256_kB_s": speed, "load": load},
                         indent=2))
        return 0
    link = f"link shaped to {args.rate_mbit} Mbit/s" if args.rate_mbit else "link not shaped"
    print(f"{args.size_mib} MiB signed installer over HTTP, QEMU TCG, -smp {args.smp}, {link}, "
          f"{args.runs} runs (guest seconds); guest openssl sha256: {speed} (1 MiB blocks)")
    for name, times in results.items():
        ratio = f"  x{ratios[name]:.2f} of fetch" if name in ratios else ""
        print(f"  {name:26} median {medians[name]:7.2f} s{ratio}   runs "
              + " ".join(f"{t:.2f}" for t in times))
    print(f"one pass kept its digest in {kept} of {args.runs} runs (else the file was hashed); "
          + load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
