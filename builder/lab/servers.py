"""Lab servers to run inside a ``NetNamespace``: dnsmasq (DHCP, TFTP, DNS) and an HTTP(S) server.

Both are reusable fixtures for boot tests::

    with NetNamespace.create() as ns:
        ns.add_tap("tap0", "10.200.7.1/24")
        dhcp = Dnsmasq(ns, "tap0", "10.200.7.1", tmp / "dnsmasq",
                       options=["114,http://10.200.7.1/onie-installer"]).start()
        web = HttpServer(ns, tmp / "www", tmp / "httpd", address="10.200.7.1").start()
        ...  # boot QEMU in ns with tap="tap0"
        assert web.requests()[0].header("ONIE-MACHINE") == "qemu_x86_64"

Each server is a process spawned through the namespace (so ``NetNamespace.close`` stops it by
PID even when a test fails) and can also be stopped on its own with ``stop()``.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.lab import httpd
from builder.lab.netns import LabError, NetNamespace
from builder.lab.qemu import stop_process
from builder.process import find_tool

READY_TIMEOUT = 10.0
POLL = 0.05


def find_dnsmasq() -> str:
    """Return the path of dnsmasq, or raise saying why it is needed."""
    return find_tool("dnsmasq", "to serve DHCP and TFTP in lab boots (Debian package dnsmasq-base)")


def wait_for_text(path: Path, pattern: str, timeout: float, proc: subprocess.Popen[bytes],
                  what: str) -> re.Match[str]:
    """Wait until the text of ``path`` matches ``pattern``; raise LabError if ``proc`` dies first."""
    regex = re.compile(pattern, re.M)
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if (match := regex.search(text)) is not None:
            return match
        if proc.poll() is not None or time.monotonic() > deadline:
            state = f"exited with code {proc.returncode}" if proc.poll() is not None else "timed out"
            raise LabError(f"{what} (pid {proc.pid}) {state} waiting for {pattern!r}; its log:\n"
                           + "\n".join(text.splitlines()[-20:]))
        time.sleep(POLL)


class Dnsmasq:
    """dnsmasq answering DHCP (and optionally TFTP and DNS) on one tap device of a namespace.

    ``address`` is the tap's own address: leases come from ``first``..``last`` of its /24
    unless given. ``options`` are ``--dhcp-option`` values (``"114,http://..."``,
    ``"vi-encap:42623,1,http://..."``), ``force_options`` are ``--dhcp-option-force`` values,
    ``extra`` are raw arguments (``--dhcp-boot=...``). ``hosts`` maps names to addresses and
    turns DNS on (port 53, answering only those names; give clients option 6 yourself).
    The log (``--log-dhcp``) is ``folder/dnsmasq.log``; leases are in ``folder/leases``.
    ``ping_check`` keeps dnsmasq's check that a new address is free: it holds the first OFFER
    to a new client for about 3 s, so the lab turns it off unless asked.
    """

    def __init__(
        self,
        namespace: NetNamespace,
        interface: str,
        address: str,
        folder: Path,
        *,
        first: int = 50,
        last: int = 60,
        options: Sequence[str] = (),
        force_options: Sequence[str] = (),
        tftp_root: Path | None = None,
        hosts: Mapping[str, str] | None = None,
        extra: Sequence[str] = (),
        lease_time: str = "1h",
        ping_check: bool = False,
    ) -> None:
        self.namespace = namespace
        self.interface = interface
        self.address = address
        self.folder = folder
        net = ipaddress.ip_network(f"{address}/24", strict=False)
        self.range = (str(net[first]), str(net[last]))
        self.options = list(options)
        self.force_options = list(force_options)
        self.tftp_root = tftp_root
        self.hosts = dict(hosts or {})
        for arg in extra:
            if not arg.startswith("--"):
                raise LabError(f"dnsmasq extra argument: expected '--name[=value]', got {arg!r}")
        self.extra = list(extra)
        self.lease_time = lease_time
        self.ping_check = ping_check
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.folder / "dnsmasq.log"

    @property
    def lease_path(self) -> Path:
        return self.folder / "leases"

    def argv(self) -> list[str]:
        """The dnsmasq command line (no daemon, no config file, only this interface)."""
        argv = [
            find_dnsmasq(), "--no-daemon", "--conf-file=/dev/null", "--log-dhcp",
            f"--interface={self.interface}", "--bind-interfaces", "--except-interface=lo",
            # Root keeps access to the test's private folders (tftp root, lease file).
            "--user=root", "--group=root",
            f"--pid-file={self.folder / 'dnsmasq.pid'}",
            f"--dhcp-leasefile={self.lease_path}",
            f"--dhcp-range={self.range[0]},{self.range[1]},255.255.255.0,{self.lease_time}",
        ]
        if not self.ping_check:
            argv.append("--no-ping")
        if self.hosts:
            argv += ["--port=53", "--no-resolv", "--no-hosts"]
            argv += [f"--host-record={name},{ip}" for name, ip in sorted(self.hosts.items())]
        else:
            argv.append("--port=0")
        if self.tftp_root is not None:
            argv += ["--enable-tftp", f"--tftp-root={self.tftp_root}"]
        argv += [f"--dhcp-option={o}" for o in self.options]
        argv += [f"--dhcp-option-force={o}" for o in self.force_options]
        return argv + self.extra

    def start(self) -> Dnsmasq:
        """Start dnsmasq and wait until it has bound its sockets."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = self.namespace.spawn(self.argv(), self.log_path)
        wait_for_text(self.log_path, r"^dnsmasq(-dhcp)?: DHCP, IP range", READY_TIMEOUT,
                      self.proc, "dnsmasq")
        return self

    def stop(self) -> None:
        """Stop this dnsmasq (its PID only); idempotent."""
        if self.proc is not None:
            stop_process(self.proc)

    def log_text(self) -> str:
        """Everything dnsmasq logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until the log matches ``pattern`` (e.g. ``DHCPRELEASE``); return the match."""
        assert self.proc is not None, "start() first"
        return wait_for_text(self.log_path, pattern, timeout, self.proc, "dnsmasq")


@dataclass(frozen=True)
class HttpRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    client: str
    status: int
    time: float

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate for HTTPS; ``dh_params`` and ``ciphers`` for DHE-only clients (OVMF)."""

    cert: Path
    key: Path
    dh_params: Path | None = None
    ciphers: str | None = None


class HttpServer:
    """A Python HTTP(S) server process serving ``root`` inside a namespace.

    ``errors`` maps request paths to status codes to answer instead (``{"/x": 500}``).
    ``up_after`` keeps the port closed for that many seconds after ``start()`` (connections
    are refused), so a test can show a client retrying until the server comes up. Every
    request is appended to ``folder/requests.jsonl``; read them with ``requests()``.
    """

    def __init__(
        self,
        namespace: NetNamespace,
        root: Path,
        folder: Path,
        *,
        address: str = "0.0.0.0",
        port: int = 80,
        errors: Mapping[str, int] | None = None,
        up_after: float = 0.0,
        tls: TlsFiles | None = None,
    ) -> None:
        self.namespace = namespace
        self.root = root
        self.folder = folder
        self.address = address
        self.port = port
        self.errors = dict(errors or {})
        self.up_after = up_after
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.folder / "httpd.log"

    @property
    def request_log(self) -> Path:
        return self.folder / "requests.jsonl"

    def url(self, path: str = "/") -> str:
        """The URL of ``path`` on this server, as a client in the namespace reaches it."""
        scheme = "https" if self.tls else "http"
        host = f"[{self.address}]" if ":" in self.address else self.address
        default = 443 if self.tls else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{scheme}://{host}{port}/{path.lstrip('/')}"

    def start(self) -> HttpServer:
        """Start the server; wait until it listens unless ``up_after`` delays it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "root": str(self.root), "address": self.address, "port": self.port,
            "errors": self.errors, "up_after": self.up_after, "log": str(self.request_log),
            "tls": None if self.tls is None else {
                "cert": str(self.tls.cert), "key": str(self.tls.key),
                "dh_params": str(self.tls.dh_params) if self.tls.dh_params else None,
                "ciphers": self.tls.ciphers,
            },
        }
        config_path = self.folder / "httpd.json"
        config_path.write_text(json.dumps(config))
        script = Path(httpd.__file__)
        self.proc = self.namespace.spawn([sys.executable, "-u", str(script), str(config_path)],
                                         self.log_path)
        if self.up_after <= 0:
            self.wait_up()
        return self

    def wait_up(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the server listens (after ``up_after``, if any)."""
        assert self.proc is not None, "start() first"
        wait_for_text(self.log_path, "^" + re.escape(httpd.READY), timeout + self.up_after,
                      self.proc, "httpd")

    def stop(self) -> None:
        """Stop this server (its PID only); idempotent."""
        if self.proc is not None:
            stop_process(self.proc)

    def requests(self) -> list[HttpRequest]:
        """The requests received so far, in order."""
        if not self.request_log.exists():
            return []
        out = []
        for line in self.request_log.read_text().splitlines():
            entry = json.loads(line)
            out.append(HttpRequest(entry["method"], entry["path"],
                                   tuple((k, v) for k, v in entry["headers"]),
                                   entry["client"], entry["status"], entry["time"]))
        return out
