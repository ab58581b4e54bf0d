#!/usr/bin/env python3
"""Scale bench of `onie-builder serve` against nginx: N devices each fetch a large installer.

N simulated devices (default 1000), each listed in a generated site file with its serial
number and MAC, run at once from one asyncio process (aiohttp client, --per-pool devices
share one connection pool). Each device sends a signed report (discovery), fetches the
installer (default 100 MB, random bytes in a temporary folder) with ONIE's headers; every
--cut-every'th device drops its download part way and resumes it with a Range request; then
it sends two more signed reports (install running, done ok). Measured: download throughput
(body bytes received / seconds from the first download's start to the last one's end),
report latency p50/p99, the server's peak RSS (VmHWM of /proc/PID/status).

Then nginx (`apt-get install nginx`) serves the same folder on a free loopback port (generated
configuration, one worker, sendfile on, access log on) to the same downloads, no reports: the
anchor. Prints both and the ratio. Bounded: --devices <= 1000, --deadline s per run, 127.0.0.1.

    python bench/serve_scale.py [--devices 1000] [--size-mb 100] [--per-pool 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # loopback only, by design
ARCH, MACHINE, REV = "x86_64", "bench_switch", "0"
PLATFORM = f"{ARCH}-{MACHINE}-r{REV}"
MAX_DEVICES = 1000
READ = 1 << 20  # bytes per client read
CHECK_EVERY = 100  # every 100th device checks the sha256 of what it received


@dataclass
class Run:
    """What one run measured."""

    received: int = 0
    downloads: int = 0
    resumed: int = 0
    reports: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    first: float = float("inf")  # the first download's start, the last one's end
    last: float = 0.0
    rss_kib: int = 0
    cpu_seconds: float = 0.0  # the server's (user + system)
    served: list[float] = field(default_factory=list)  # report seconds in serve's access log
    batches: dict[str, float] = field(default_factory=dict)  # from serve's /metrics

    @property
    def window(self) -> float:
        """Seconds from the first download's start to the last one's end."""
        return max(0.0, self.last - self.first)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seconds": round(self.seconds, 2), "received_bytes": self.received,
            "downloads": self.downloads, "resumed": self.resumed,
            "download_seconds": round(self.window, 2),
            "mb_per_s": round(self.received / self.window / 1e6, 1) if self.window else 0.0,
            "peak_rss_mib": round(self.rss_kib / 1024, 1), "server_cpu_s": round(self.cpu_seconds, 1),
            "errors": len(self.errors), "error_samples": self.errors[:5], **self.batches}
        for name, values in (("report", self.reports), ("report_server", self.served)):
            if values:
                out[f"{name}_count"] = len(values)
                out[f"{name}_p50_ms"] = round(1000 * statistics.median(values), 2)
                out[f"{name}_p99_ms"] = round(1000 * percentile(values, 99), 2)
        return out


def report_batches(url: str) -> dict[str, float]:
    """The group commits of the run, from serve's /metrics histograms: how many, reports per
    batch, commit seconds (mean, and the bucket bound under which half and 99 % fell)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=30) as answer:
        families = {f.name: f for f in text_string_to_metric_families(answer.read().decode())}
    out: dict[str, float] = {}
    sizes, commits = families["onie_serve_report_batch_size"], families["onie_serve_report_commit_seconds"]
    count = next(s.value for s in sizes.samples if s.name.endswith("_count"))
    total = next(s.value for s in sizes.samples if s.name.endswith("_sum"))
    out["batches"] = count
    out["reports_per_batch"] = round(total / count, 1) if count else 0.0
    buckets = sorted((float(s.labels["le"]), s.value) for s in commits.samples
                     if s.name.endswith("_bucket"))
    spent = next(s.value for s in commits.samples if s.name.endswith("_sum"))
    out["commit_mean_ms"] = round(1000 * spent / count, 1) if count else 0.0
    for q in (50, 99):
        bound = next((le for le, n in buckets if n >= count * q / 100), float("inf"))
        out[f"commit_p{q}_under_ms"] = round(1000 * bound, 1)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def serial_of(n: int) -> str:
    return f"SCALE{n:05d}"


def mac_of(n: int) -> str:
    return f"02:00:00:01:{n >> 8:02x}:{n & 0xff:02x}"


def make_folder(folder: Path, devices: int, size: int) -> tuple[Path, str]:
    """The installer (random bytes) and a site file listing every device; (site, sha256)."""
    digest = hashlib.sha256()
    with (folder / "installer.bin").open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 8 << 20))
            digest.update(block)
            out.write(block)
            left -= len(block)
        # On disk before a run: else the first reports' commits (fsync) wait behind the
        # writeback of this file, which is the bench's setup, not the server's load.
        out.flush()
        os.fsync(out.fileno())
    rows = "".join(f"  - serial: {serial_of(n)}\n    mac: \"{mac_of(n)}\"\n    name: dev{n:05d}\n"
                   f"    platform: {PLATFORM}\n" for n in range(devices))
    site = folder / "site.yaml"
    site.write_text(f"name: scale\nserver:\n  address: {HOST}\n  listen: [{HOST}]\n"
                    f"status:\n  log_tail: 1024\nplatforms:\n  - platform: {PLATFORM}\n"
                    f"    installer: installer.bin\ndevices:\n{rows}")
    return site, digest.hexdigest()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def raise_nofile() -> None:
    """Descriptors for every connection (ours and the server's, which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft == resource.RLIM_INFINITY or soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def wait_listening(port: int, proc: subprocess.Popen[bytes], seconds: float = 20) -> None:
    """Until ``port`` accepts (bounded: 20 s) or the process ended."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the server did not start listening on {HOST}:{port}")


def proc_figures(pids: list[int]) -> tuple[int, float]:
    """(largest VmHWM in kB, user + system CPU seconds in all) of ``pids``, from /proc."""
    peak, ticks = 0, 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        peak = max(peak, int(match.group(1)) if match else 0)
        ticks += int(stat[11]) + int(stat[12])  # utime, stime (fields 14 and 15 of stat)
    return peak, ticks / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Device:
    """One simulated device: its identity, its own Ed25519 key and report counter."""

    def __init__(self, n: int) -> None:
        self.n, self.serial, self.mac = n, serial_of(n), mac_of(n)
        self.key = Ed25519PrivateKey.generate()
        self.public = base64.b64encode(self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
        self.counter = 0
        self.headers = {"ONIE-SERIAL-NUMBER": self.serial, "ONIE-ETH-ADDR": self.mac,
                        "ONIE-ARCH": ARCH, "ONIE-MACHINE": MACHINE, "ONIE-MACHINE-REV": REV,
                        "ONIE-VENDOR-ID": "42623", "ONIE-OPERATION": "os-install",
                        "User-Agent": "onie/bench"}

    def report(self, phase: str, result: str) -> tuple[bytes, str]:
        self.counter += 1
        body = (f"phase={phase}\nresult={result}\nserial={self.serial}\nmac={self.mac}\n"
                f"counter={self.counter}\nkey={self.public}\n\n{phase} {result}\n").encode()
        return body, "ONIE-ED25519 " + base64.b64encode(self.key.sign(body)).decode()


async def fetch(session: aiohttp.ClientSession, url: str, headers: dict[str, str], start: int,
                stop_at: int | None, digest: Any) -> tuple[int, int]:
    """GET ``url`` from byte ``start``; stop reading after ``stop_at`` bytes of body (a drop:
    the connection is closed). Returns (status, body bytes read)."""
    if start:
        headers = {**headers, "Range": f"bytes={start}-"}
    got = 0
    async with session.get(url, headers=headers) as response:
        while chunk := await response.content.read(READ):
            if stop_at is not None and got + len(chunk) >= stop_at:
                chunk = chunk[:stop_at - got]
            got += len(chunk)
            if digest is not None:
                digest.update(chunk)
            if stop_at is not None and got >= stop_at:
                response.close()  # the drop: the connection goes, the rest is fetched again
                break
        return response.status, got


async def one_device(device: Device, base: str, path: str, size: int, sha: str, cut: bool,
                     reports: bool, session: aiohttp.ClientSession, run: Run) -> None:
    url = f"{base}/{path}"
    try:
        if reports:
            await post(device, base, session, run, "discovery", "running")
        digest = hashlib.sha256() if device.n % CHECK_EVERY == 0 else None
        run.first = min(run.first, time.perf_counter())
        stop_at = size * (30 + device.n % 41) // 100 if cut else None
        status, got = await fetch(session, url, device.headers, 0, stop_at, digest)
        run.received += got
        if status != 200:
            raise RuntimeError(f"GET: HTTP {status}")
        if stop_at is not None:
            status, rest = await fetch(session, url, device.headers, got, None, digest)
            run.received += rest
            run.resumed += 1
            if status != 206:
                raise RuntimeError(f"resume: HTTP {status}")
            got += rest
        if got != size:
            raise RuntimeError(f"received {got} of {size} bytes")
        if digest is not None and digest.hexdigest() != sha:
            raise RuntimeError("content differs")
        run.downloads += 1
        run.last = max(run.last, time.perf_counter())
        if reports:
            await post(device, base, session, run, "install", "running")
            await post(device, base, session, run, "done", "ok")
    except (TimeoutError, aiohttp.ClientError, RuntimeError) as exc:
        run.errors.append(f"{device.serial}: {type(exc).__name__}: {exc}")


async def post(device: Device, base: str, session: aiohttp.ClientSession, run: Run, phase: str,
               result: str) -> None:
    body, auth = device.report(phase, result)
    started = time.perf_counter()
    async with session.post(f"{base}/status", data=body, headers={"Authorization": auth}) as response:
        await response.read()
    run.reports.append(time.perf_counter() - started)
    if response.status != 200:
        raise RuntimeError(f"report {phase}: HTTP {response.status}")


async def load(base: str, path: str, devices: list[Device], size: int, sha: str, cut_every: int,
               per_pool: int, reports: bool, deadline: float) -> Run:
    run = Run()
    timeout = aiohttp.ClientTimeout(total=deadline)
    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=per_pool), timeout=timeout)
                for _ in range(0, len(devices), per_pool)]
    try:
        started = time.perf_counter()
        tasks = [one_device(d, base, path, size, sha, cut_every > 0 and d.n % cut_every == 0, reports,
                            sessions[i // per_pool], run) for i, d in enumerate(devices)]
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), deadline)
        except TimeoutError:
            run.errors.append(f"deadline of {deadline} s reached")
        run.seconds = time.perf_counter() - started
    finally:
        for session in sessions:
            await session.close()
    return run


def run_serve(folder: Path, site: Path, args: argparse.Namespace, sha: str) -> Run:
    port = free_port()
    with (folder / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "builder", "serve", "--site", str(site), "--out", str(folder),
             "--listen", HOST, "--http-port", str(port), "--per-address", "0", "--grace", "0"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_listening(port, proc)
        devices = [Device(n) for n in range(args.devices)]
        run = asyncio.run(load(f"http://{HOST}:{port}", f"onie-installer-{PLATFORM}", devices,
                               args.size, sha, args.cut_every, args.per_pool, True, args.deadline))
        run.rss_kib, run.cpu_seconds = proc_figures([proc.pid])
        run.batches = report_batches(f"http://{HOST}:{port}/metrics")
    finally:
        proc.terminate()
        proc.wait(60)
    # The server's own time for each report (request parsed to response written), from its
    # access log: the client's figure adds its own loop's delay, busy with 1000 downloads.
    run.served = [float(m.group(1)) for m in re.finditer(
        r"^\S+ \S+ POST /status 200 \d+ (\d+\.\d+)s$", (folder / "serve.log").read_text(), re.M)]
    return run


NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {tmp}/nginx-body; proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi; uwsgi_temp_path {tmp}/nginx-uwsgi; scgi_temp_path {tmp}/nginx-scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    server {{
        listen {host}:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def run_nginx(folder: Path, args: argparse.Namespace, sha: str) -> Run:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("nginx is not installed (apt-get install nginx); or run with --no-nginx")
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=folder, host=HOST, port=port, root=folder))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(folder)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        devices = [Device(n) for n in range(args.devices)]
        run = asyncio.run(load(f"http://{HOST}:{port}", "installer.bin", devices, args.size, sha,
                               args.cut_every, args.per_pool, False, args.deadline))
        run.rss_kib, run.cpu_seconds = proc_figures([proc.pid, *children(proc.pid)])
    finally:
        proc.terminate()
        proc.wait(60)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--size-mb", type=float, default=100.0, help="installer size in MB (10^6 bytes)")
    parser.add_argument("--per-pool", type=int, default=10, help="devices sharing one connection pool")
    parser.add_argument("--cut-every", type=int, default=4,
                        help="every Nth device drops its download and resumes it with Range (0: none)")
    parser.add_argument("--deadline", type=float, default=1800.0, help="seconds per run at most")
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx anchor")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    args.size = int(args.size_mb * 1e6)
    if not 1 <= args.devices <= MAX_DEVICES or args.size < 1000 or not 0 < args.deadline <= 3600 \
            or args.per_pool < 1 or args.cut_every < 0:
        parser.error(f"--devices 1..{MAX_DEVICES}, --size-mb >= 0.001, --deadline 0..3600, "
                     "--per-pool >= 1, --cut-every >= 0")
    raise_nofile()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="serve-scale-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)  # nginx's worker runs as another user when started by root
        site, sha = make_folder(folder, args.devices, args.size)
        serve = run_serve(folder, site, args, sha)
        nginx = None if args.no_nginx else run_nginx(folder, args, sha)
    result: dict[str, Any] = {
        "devices": args.devices, "installer_bytes": args.size, "per_pool": args.per_pool,
        "cut_every": args.cut_every, "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()], "serve": serve.summary()}
    if nginx is not None:
        result["nginx"] = nginx.summary()
        if result["nginx"]["mb_per_s"]:
            result["ratio"] = round(result["serve"]["mb_per_s"] / result["nginx"]["mb_per_s"], 3)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.devices} devices x {args.size / 1e6:g} MB, {args.per_pool} per pool, "
              f"every {args.cut_every}th cut and resumed; load {result['load_before']} -> "
              f"{result['load_after']} on {result['cpus']} CPUs")
        for name, r in ((n, result[n]) for n in ("serve", "nginx") if n in result):
            line = (f"  {name:<6} {r['mb_per_s']:>8} MB/s  {r['download_seconds']} s "
                    f"({r['seconds']} s in all)  {r['downloads']} downloads ({r['resumed']} resumed)  "
                    f"peak RSS {r['peak_rss_mib']} MiB  CPU {r['server_cpu_s']} s  {r['errors']} errors")
            if "batches" in r:
                line += (f"\n         {r['batches']:.0f} commits, {r['reports_per_batch']} reports each, "
                         f"{r['commit_mean_ms']} ms mean, p50 under {r['commit_p50_under_ms']} ms, "
                         f"p99 under {r['commit_p99_under_ms']} ms")
            if "report_count" in r:
                line += (f"\n         reports {r['report_count']}: p50 {r['report_p50_ms']} ms p99 "
                         f"{r['report_p99_ms']} ms at the client; in serve (its access log) p50 "
                         f"{r.get('report_server_p50_ms')} ms p99 {r.get('report_server_p99_ms')} ms")
            print(line)
            print("".join(f"    error: {e}\n" for e in r["error_samples"]), end="")
        if "ratio" in result:
            print(f"  serve / nginx throughput: {result['ratio']:.3f}")
    return 1 if serve.errors or (nginx is not None and nginx.errors) else 0


if __name__ == "__main__":
    sys.exit(main())
