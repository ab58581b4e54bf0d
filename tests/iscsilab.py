"""Lab servers for iSCSI boot tests: a tgt target and an open-isns server in a ``NetNamespace``.

::

    with NetNamespace.create() as ns:
        ns.add_tap("tap0", "10.200.7.1/24")
        isns = Isnsd(ns, tmp / "isns", "10.200.7.1").start()
        tgt = Tgt(ns, tmp / "tgt", "10.200.7.1").start()
        tgt.add_target("iqn.2024-01.lab.test:disk", tmp / "disk.img",
                       chap=("onie", "secret-of-12+"), mutual=("target", "other-secret-12"))
        isns.register_target("iqn.2024-01.lab.test:disk", "10.200.7.1")
        ...  # boot QEMU; tgt.stop() deletes the targets first (tgtd ignores SIGTERM otherwise)

Facts from docs/lab.md: tgtd's control socket is shared across namespaces, so each instance gets
its own ``-C`` port; LUN 0 is tgt's controller and the disk is LUN 1.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from pathlib import Path

from builder.errors import BuildError
from builder.lab.netns import LabError, NetNamespace
from builder.lab.qemu import stop_process
from builder.lab.servers import wait_for_text
from builder.process import find_tool, run

ISNS_PORT = 3205
ISCSI_PORT = 3260
_control_ports = itertools.count(4000 + os.getpid() % 2000 * 8)


def find_tgtd() -> str:
    """Return the path of tgtd, or raise saying why it is needed."""
    return find_tool("tgtd", "to serve iSCSI targets in lab boots (Debian package tgt)")


def find_isnsd() -> str:
    """Return the path of isnsd, or raise saying why it is needed."""
    return find_tool("isnsd", "to serve iSNS in lab boots (Debian package open-isns-server)")


class Isnsd:
    """An open-isns server with an in-folder database and a default discovery domain."""

    def __init__(self, namespace: NetNamespace, folder: Path, address: str) -> None:
        self.namespace = namespace
        self.folder = folder
        self.address = address
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        """isnsd.conf: no DSA auth, no expiry, every node in one default discovery domain."""
        f = self.folder
        return "\n".join([
            "SourceName = iqn.2024-01.lab.test:isnsd", f"Database = {f / 'db'}",
            "DefaultDiscoveryDomain = 1", "RegistrationPeriod = 0", "SLPRegister = 0",
            "Security = 0", "ESIRetries = 0", f"PIDFile = {f / 'isnsd.pid'}",
            f"ControlSocket = {f / 'isnsctl'}", ""])

    def start(self) -> Isnsd:
        """Start isnsd and wait until it listens."""
        (self.folder / "db").mkdir(parents=True, exist_ok=True)
        conf = self.folder / "isnsd.conf"
        conf.write_text(self.config())
        self.proc = self.namespace.spawn([find_isnsd(), "--config", str(conf), "--foreground"],
                                         self.folder / "isnsd.log")
        deadline = time.monotonic() + 10
        ss = self.namespace.exec_argv([find_tool("ss", "to see lab servers listen (iproute2)"), "-lnt"])
        while f":{ISNS_PORT} " not in run(ss).stdout.decode():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"isnsd did not start; its log:\n{self.log_text()}")
            time.sleep(0.05)
        return self

    def register_target(self, name: str, address: str, port: int = ISCSI_PORT) -> None:
        """Register target ``name`` at portal ``address:port`` as a storage array would, with
        isnsadm (tgtd's own iSNS client stalls its logins in state-change notifications)."""
        conf = self.folder / "register.conf"
        conf.write_text(f"SourceName = {name}\nServerAddress = {self.address}\nSecurity = 0\n")
        isnsadm = find_tool("isnsadm", "to register lab targets in iSNS (open-isns-utils)")
        run(self.namespace.exec_argv([isnsadm, "--config", str(conf), "--register",
                                      f"entity={name}", f"target,name={name}",
                                      f"portal,addr={address},port={port}"]), timeout=30)

    def log_text(self) -> str:
        """Everything isnsd logged so far."""
        path = self.folder / "isnsd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop this isnsd (its PID only); idempotent."""
        if self.proc is not None:
            stop_process(self.proc)


class Tgt:
    """tgtd on one portal with targets added by ``add_target``; optionally registered in iSNS."""

    def __init__(self, namespace: NetNamespace, folder: Path, address: str, *,
                 port: int = ISCSI_PORT) -> None:
        self.namespace = namespace
        self.folder = folder
        self.address = address
        self.port = port
        self.control = next(_control_ports)
        self.tids: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def adm(self, *args: str) -> str:
        """Run ``tgtadm -C <port> ARGS`` in the namespace."""
        argv = self.namespace.exec_argv([find_tool("tgtadm", "to configure tgt (tgt)"),
                                         "-C", str(self.control), *args])
        return run(argv, timeout=30).stdout.decode()

    def start(self) -> Tgt:
        """Start tgtd and wait until its control socket answers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        portal = f"[{self.address}]" if ":" in self.address else self.address
        self.proc = self.namespace.spawn(
            [find_tgtd(), "-f", "-C", str(self.control), "--iscsi", f"portal={portal}:{self.port}"],
            self.folder / "tgtd.log")
        wait_for_text(self.folder / "tgtd.log", r"bs_init|signalfd", 10, self.proc, "tgtd")
        deadline = time.monotonic() + 10
        while True:
            try:
                self.adm("--op", "show", "--mode", "system")
                break
            except BuildError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return self

    def add_target(self, name: str, image: Path, *, chap: tuple[str, str] | None = None,
                   mutual: tuple[str, str] | None = None) -> int:
        """Serve ``image`` as LUN 1 of target ``name``; ``chap`` (user, secret) requires the
        initiator to log in with it, ``mutual`` is what the target answers with."""
        tid = len(self.tids) + 1
        self.adm("--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", str(tid), "-T", name)
        self.tids.append(tid)
        self.adm("--lld", "iscsi", "--op", "new", "--mode", "logicalunit", "--tid", str(tid),
                 "--lun", "1", "-b", str(image))
        for account, outgoing in ((chap, False), (mutual, True)):
            if account is None:
                continue
            self.adm("--lld", "iscsi", "--op", "new", "--mode", "account", "--user", account[0],
                     "--password", account[1])
            self.adm("--lld", "iscsi", "--op", "bind", "--mode", "account", "--tid", str(tid),
                     "--user", account[0], *(["--outgoing"] if outgoing else []))
        self.adm("--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", str(tid), "-I", "ALL")
        return tid

    def sessions(self) -> str:
        """tgtadm's view of the targets, their LUNs and connected initiators."""
        return self.adm("--lld", "iscsi", "--op", "show", "--mode", "target")

    def stop(self) -> None:
        """Delete every target (tgtd ignores SIGTERM while one exists), then stop tgtd."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            for tid in reversed(self.tids):
                self.adm("--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", str(tid),
                         "--force")
            self.adm("--op", "delete", "--mode", "system")
            self.proc.wait(timeout=10)
        except (BuildError, subprocess.TimeoutExpired):
            pass  # stop_process below ends it by PID
        stop_process(self.proc)
