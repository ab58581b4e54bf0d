#!/usr/bin/env python3
"""Load test of `onie-builder serve`: N simulated ONIE devices at once on loopback.

Each device, all of them concurrently: the update check (ONIE's onie-updater names, none
assigned: 404 each), the installer waterfall with ONIE's headers (first name answers), the
installer in two Range requests (as a download resumed after a drop) checked against its
sha256, then three signed status reports. Bounded: at most --devices (<= 1000) devices and
--deadline seconds; traffic only to 127.0.0.1.

    python bench/serve_load.py --devices 200 --size 1048576 [--json]

Prints throughput, latency percentiles per request kind and every error; exit 1 on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
PLATFORM = ("x86_64", "bench_switch", "0")
MAX_DEVICES = 1000
HOST = "127.0.0.1"  # loopback only, by design


@dataclass
class Results:
    """Latencies (seconds) per request kind, errors, bytes received."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    received: int = 0

    def add(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)


def make_site(folder: Path, devices: int, size: int) -> tuple[Path, str]:
    """A site with one platform installer of ``size`` bytes; returns (site file, its sha256)."""
    installer = folder / "installer.bin"
    data = os.urandom(size)
    installer.write_bytes(data)
    arch, machine, rev = PLATFORM
    site = folder / "site.yaml"
    site.write_text(
        "name: bench\nserver:\n  address: 127.0.0.1\n  listen: [127.0.0.1]\n"
        "status:\n  log_tail: 1024\n"
        f"platforms:\n  - platform: {arch}-{machine}-r{rev}\n    installer: installer.bin\n")
    return site, hashlib.sha256(data).hexdigest()


def start_server(site: Path, out: Path) -> tuple[subprocess.Popen[str], str]:
    """`onie-builder serve` as its own process on a free loopback port; returns (process, URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", "-q", "serve", "--site", str(site), "--out", str(out),
         "--listen", HOST, "--http-port", "0", "--per-address", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
    if match is None:
        proc.kill()
        raise SystemExit(f"serve did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    return proc, match.group(1)


def waterfall(prefix: str) -> list[str]:
    """ONIE's default names, most specific first, each with its .bin twin."""
    arch, machine, rev = PLATFORM
    names = [f"{arch}-{machine}-r{rev}", f"{arch}-{machine}", machine, f"{arch}-bench", arch, ""]
    out = []
    for name in names:
        base = f"{prefix}-{name}" if name else prefix
        out += [base, base + ".bin"]
    return out


async def timed(results: Results, kind: str, session: aiohttp.ClientSession, method: str,
                url: str, **kwargs: Any) -> tuple[int, bytes]:
    started = time.perf_counter()
    async with session.request(method, url, **kwargs) as response:
        body = await response.read()
    results.add(kind, time.perf_counter() - started)
    results.received += len(body)
    return response.status, body


async def device(n: int, base: str, size: int, digest: str, session: aiohttp.ClientSession,
                 results: Results) -> None:
    """One simulated device from update check to the final report."""
    arch, machine, rev = PLATFORM
    serial = f"BENCH{n:05d}"
    mac = f"02:00:00:00:{n >> 8:02x}:{n & 0xff:02x}"
    headers = {"ONIE-SERIAL-NUMBER": serial, "ONIE-ETH-ADDR": mac, "ONIE-ARCH": arch,
               "ONIE-MACHINE": machine, "ONIE-MACHINE-REV": rev, "ONIE-VENDOR-ID": "42623",
               "ONIE-OPERATION": "os-install", "ONIE-VERSION": "bench", "User-Agent": "onie/bench"}
    try:
        for name in waterfall("onie-updater"):
            status, _ = await timed(results, "waterfall-404", session, "GET", f"{base}/{name}",
                                    headers=headers)
            if status != 404:
                raise RuntimeError(f"{name}: expected 404, got {status}")
        found = None
        for name in waterfall("onie-installer"):
            status, _ = await timed(results, "waterfall-probe", session, "HEAD", f"{base}/{name}",
                                    headers=headers)
            if status == 200:
                found = name
                break
        if found is None:
            raise RuntimeError("no installer name answered")
        half = size // 2
        status1, first = await timed(results, "download-range", session, "GET", f"{base}/{found}",
                                     headers={**headers, "Range": f"bytes=0-{half - 1}"})
        status2, rest = await timed(results, "download-range", session, "GET", f"{base}/{found}",
                                    headers={**headers, "Range": f"bytes={half}-"})
        if (status1, status2) != (206, 206) or hashlib.sha256(first + rest).hexdigest() != digest:
            raise RuntimeError(f"download: statuses {status1}/{status2}, {len(first) + len(rest)} bytes, "
                               "content differs" if (status1, status2) == (206, 206) else "")
        key = Ed25519PrivateKey.generate()  # the device's own key, as the image makes it
        public = base64.b64encode(key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
        for counter, (phase, result) in enumerate((("verify", "ok"), ("install", "running"),
                                                   ("done", "ok")), start=1):
            body = (f"phase={phase}\nresult={result}\nserial={serial}\nmac={mac}\n"
                    f"counter={counter}\nkey={public}\n\n{phase} log line of {serial}\n").encode()
            auth = "ONIE-ED25519 " + base64.b64encode(key.sign(body)).decode()
            status, answer = await timed(results, "status-post", session, "POST", f"{base}/status",
                                         data=body, headers={"Authorization": auth})
            if status != 200:
                raise RuntimeError(f"status {phase}: HTTP {status}: {answer[:80]!r}")
    except (TimeoutError, aiohttp.ClientError, RuntimeError) as exc:
        results.errors.append(f"{serial}: {type(exc).__name__}: {exc}")


async def load(base: str, devices: int, size: int, digest: str, deadline: float) -> tuple[Results, float]:
    results = Results()
    connector = aiohttp.TCPConnector(limit=0)  # one connection per device, all at once
    timeout = aiohttp.ClientTimeout(total=deadline)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        tasks = [device(n, base, size, digest, session, results) for n in range(devices)]
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), deadline)
        except TimeoutError:
            results.errors.append(f"deadline of {deadline} s reached")
        elapsed = time.perf_counter() - started
        async with session.get(f"{base}/status.json") as response:
            snapshot = await response.json()
    done = sum(1 for d in snapshot["devices"] if d["state"] == "installed")
    if done != devices:
        results.errors.append(f"server shows {done} of {devices} devices installed")
    return results, elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summarize(results: Results, elapsed: float, devices: int, size: int) -> dict[str, Any]:
    requests = sum(len(v) for v in results.latencies.values())
    kinds = {
        kind: {"count": len(v), "p50_ms": round(1000 * statistics.median(v), 2),
               "p90_ms": round(1000 * percentile(v, 90), 2), "p99_ms": round(1000 * percentile(v, 99), 2),
               "max_ms": round(1000 * max(v), 2)}
        for kind, v in sorted(results.latencies.items())
    }
    return {"devices": devices, "installer_bytes": size, "seconds": round(elapsed, 3),
            "requests": requests, "requests_per_s": round(requests / elapsed, 1),
            "received_mb_per_s": round(results.received / elapsed / 1e6, 2),
            "devices_per_s": round(devices / elapsed, 1), "errors": len(results.errors),
            "error_samples": results.errors[:10], "kinds": kinds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024 * 1024, help="installer size in bytes")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds for the whole run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.devices <= MAX_DEVICES or args.size < 2 or not 0 < args.deadline <= 600:
        parser.error(f"--devices 1..{MAX_DEVICES}, --size >= 2, --deadline 0..600")
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        site, digest = make_site(Path(tmp), args.devices, args.size)
        proc, base = start_server(site, Path(tmp))
        try:
            results, elapsed = asyncio.run(load(base, args.devices, args.size, digest, args.deadline))
        finally:
            proc.terminate()
            proc.wait(10)
    summary = summarize(results, elapsed, args.devices, args.size)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.devices} devices, installer {args.size} bytes: {summary['seconds']} s, "
              f"{summary['requests']} requests ({summary['requests_per_s']}/s), "
              f"{summary['received_mb_per_s']} MB/s, {summary['errors']} errors")
        for kind, k in summary["kinds"].items():
            print(f"  {kind:<16} n={k['count']:<5} p50 {k['p50_ms']} ms  p90 {k['p90_ms']} ms  "
                  f"p99 {k['p99_ms']} ms  max {k['max_ms']} ms")
        for error in summary["error_samples"]:
            print(f"  error: {error}")
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
