#!/usr/bin/env python3
"""Signed-installer verification in the guest: `verify_installer` on a 256 MiB installer
against plain `sha256sum` of the same file in the same guest (target: at most 1.2 times).

Usage: .venv/bin/python bench/verify.py [--size-mib 256] [--runs 5] [--extras] [--json]

Builds the default platform trusting a fresh Ed25519 key (tests/recipes/signed_x86_64.yaml),
boots it under QEMU TCG with 2 GiB of RAM (tmpfs: 1 GiB) in rescue mode (discovery off) and
a small disk holding the 4096-byte signature block of a SIZE MiB all-zero installer signed on
the host. In the guest the installer is made in tmpfs (dd from /dev/zero, then the block
appended), and each run times, from /proc/uptime:
- sha256sum FILE                            the baseline
- verify_installer FILE FILE install        the real check: block, statement, signature,
                                            policy, payload hash, strip (the block is put back
                                            after each run)
- verify_installer with DIGEST              the payload hashed while downloading (the download
                                            pipe pays for the hash), so only the rest remains
- openssl dgst -sha256 FILE                 how verify_installer hashes the payload
With --extras, also:
- head -c N FILE | sha256sum                hashing the payload region through a pipe
- cat FILE > COPY, and cat FILE | verify_save_and_hash COPY: what hashing while downloading
  adds to a download (a "download" from tmpfs to tmpfs)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from builder.lab.qemu import Console, machine_for, qemu_command
from builder.signing.format import ImageType, Statement, render_block
from builder.signing.keys import KeyType, load_private_key, make_key_pair

ROOT = Path(__file__).resolve().parent.parent
PLATFORM = "x86_64-qemu_x86_64-r0"
MIB = 1 << 20


def build_image(tmp: Path) -> tuple[Path, Path]:
    """Build the signed test image trusting a new key; return (image folder, private key)."""
    make_key_pair(KeyType.ED25519, tmp / "bench")
    recipe = tmp / "bench.yaml"
    recipe.write_text(f"extends: {ROOT}/tests/recipes/signed_x86_64.yaml\n"
                      f"trust:\n  keys: [{tmp}/bench.pub]\n")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    proc = subprocess.run([sys.executable, "-m", "builder", "-q", "build", "--allow-untrusted",
                           str(recipe), "--out",
                           str(tmp / "out"), "--json", "--no-lock"], cwd=ROOT, env=env,
                          check=True, capture_output=True, text=True)
    return Path(json.loads(proc.stdout)["result"][0]["out"]), tmp / "bench.key"


def make_block_disk(tmp: Path, key_path: Path, size: int) -> Path:
    """An ext2 disk holding the signature block of a ``size``-byte all-zero installer."""
    digest = hashlib.sha256()
    zeros = bytes(MIB)
    for _ in range(size // MIB):
        digest.update(zeros)
    key = load_private_key(key_path)
    statement = Statement(ImageType.INSTALLER, 1, (PLATFORM,), size, digest.hexdigest(),
                          key.public.key_id).render()
    (tmp / "disk").mkdir()
    (tmp / "disk" / "block").write_bytes(render_block(statement, key.sign(statement)))
    (tmp / "disk" / "sha256").write_text(digest.hexdigest() + "\n")
    image = tmp / "disk.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-d", tmp / "disk", image, "2048k"],
                   check=True, capture_output=True)
    return image


def timed(console: Console, command: str, timeout: float = 900) -> float:
    """Seconds ``command`` took in the guest, by the guest's /proc/uptime."""
    out = console.run(f"a=$(cut -d' ' -f1 /proc/uptime); {{ {command}; }} >/dev/null; s=$?; "
                      "b=$(cut -d' ' -f1 /proc/uptime); echo $a $b $s", timeout=timeout)
    start, end, status = out.split()[-3:]
    if status != "0":
        raise SystemExit(f"guest command failed ({status}): {command}\n{out}")
    return float(end) - float(start)


def measure(console: Console, size: int, runs: int, extras: bool) -> dict[str, list[float]]:
    """Run every timed case ``runs`` times, interleaved so drift hits them alike."""
    console.run("mkdir -p /tmp/m && mount -o ro /dev/vda /tmp/m && . /lib/onie/verify.sh",
                timeout=60)
    console.run(f"dd if=/dev/zero of=/tmp/inst bs=1M count={size // MIB} 2>/dev/null && "
                "cat /tmp/m/block >> /tmp/inst", timeout=600)
    digest = console.run("cat /tmp/m/sha256").strip()
    cases = {
        "sha256sum FILE": "sha256sum /tmp/inst",
        "verify_installer": "verify_installer /tmp/inst /tmp/inst install && "
                            "cat /tmp/m/block >> /tmp/inst",
        "verify_installer DIGEST": f"verify_installer /tmp/inst /tmp/inst install {digest} && "
                                   "cat /tmp/m/block >> /tmp/inst",
        "openssl dgst -sha256": "openssl dgst -sha256 /tmp/inst",
    }
    if extras:
        cases |= {
            "head -c N | sha256sum": f"head -c {size} /tmp/inst | sha256sum",
            "cat FILE > COPY": "cat /tmp/inst > /tmp/copy && rm /tmp/copy",
            "cat FILE | verify_save_and_hash": "cat /tmp/inst | verify_save_and_hash /tmp/copy"
                                               " && rm /tmp/copy",
        }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, command in cases.items():
            results[name].append(timed(console, command))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--extras", action="store_true",
                        help="also time hashing through pipes (slow: minutes per run)")
    args = parser.parse_args()
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="ob-bench-verify-") as name:
        tmp = Path(name)
        image, key = build_image(tmp)
        disk = make_block_disk(tmp, key, size)
        manifest = json.loads((image / "manifest.json").read_text())
        argv = qemu_command(machine_for("x86_64"), image / "vmlinuz", image / "initrd.img",
                            manifest["kernel"]["cmdline"] + " boot_reason=rescue", netdev=None,
                            extra=["-m", "2048", "-drive", f"file={disk},if=virtio,format=raw"])
        with Console.start(argv, log_path=tmp / "console.log") as console:
            console.expect(r"onie-discovery: off mode=rescue", timeout=300)
            results = measure(console, size, args.runs, args.extras)
    medians = {k: statistics.median(v) for k, v in results.items()}
    # Each run's pair ran back to back, so its ratio is the least exposed to host load drift.
    ratio = statistics.median(v / s for v, s in zip(results["verify_installer"],
                                                     results["sha256sum FILE"], strict=True))
    vs_openssl = statistics.median(v / s for v, s in zip(results["verify_installer"],
                                                          results["openssl dgst -sha256"],
                                                          strict=True))
    if args.json:
        print(json.dumps({"size_mib": args.size_mib, "runs": results, "median": medians,
                          "ratio": ratio, "ratio_vs_openssl_dgst": vs_openssl}, indent=2))
        return
    print(f"{args.size_mib} MiB installer in the guest's tmpfs (QEMU TCG), {args.runs} runs:")
    for name, times in results.items():
        print(f"  {name:<34} median {medians[name]:7.2f} s   runs "
              + " ".join(f"{t:.2f}" for t in times))
    print(f"verify_installer / sha256sum = {ratio:.3f}, median of the runs' ratios "
          "(target <= 1.2)")
    print(f"verify_installer / openssl dgst -sha256 = {vs_openssl:.3f} (the same hash code)")


if __name__ == "__main__":
    main()
