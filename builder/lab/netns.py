"""The lab: QEMU guests on a serial console and private network namespaces to boot them in.

QEMU machines, command lines and the ``Console`` live in ``builder.lab.qemu`` and are re-exported
here; this module adds ``NetNamespace``, a throwaway namespace with tap devices and servers.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import shlex
import subprocess
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from builder.lab.qemu import (
    Console,
    GuestCommandError,
    LabError,
    LabTimeout,
    QemuMachine,
    find_qemu,
    machine_for,
    qemu_command,
    stop_process,
)
from builder.process import find_tool, minimal_env, run

__all__ = [
    "Console",
    "GuestCommandError",
    "LabError",
    "LabTimeout",
    "NetNamespace",
    "QemuMachine",
    "find_ip",
    "find_qemu",
    "machine_for",
    "qemu_command",
]

log = logging.getLogger(__name__)

_names = itertools.count(1)


def find_ip() -> str:
    """Return the path of iproute2's ``ip``, or raise saying why it is needed."""
    return find_tool("ip", "to create network namespaces for lab boots (Debian package iproute2)")


class NetNamespace:
    """A network namespace of our own, with tap devices and servers; deleted on close().

    Only processes started through ``spawn`` are stopped, each by its PID, and only a
    namespace made by ``create`` is deleted.
    """

    def __init__(self, name: str, ip: str) -> None:
        self.name = name
        self._ip = ip
        self._spawned: list[subprocess.Popen[bytes]] = []
        self._finalizer: Callable[[], object] | None = None

    @classmethod
    def create(cls, prefix: str = "ob") -> NetNamespace:
        """Create a namespace named ``<prefix>-<pid>-<n>`` with its loopback up."""
        ip = find_ip()
        name = f"{prefix}-{os.getpid()}-{next(_names)}"
        run([ip, "netns", "add", name])
        namespace = cls(name, ip)
        # Runs once: on close(), or at interpreter exit if a caller forgot (no stale namespaces).
        namespace._finalizer = weakref.finalize(namespace, remove_namespace, ip, name, namespace._spawned)
        try:
            namespace.ip("link", "set", "lo", "up")
        except BaseException:
            namespace.close()
            raise
        return namespace

    def __enter__(self) -> NetNamespace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def ip(self, *args: str) -> str:
        """Run ``ip -n <name> ARGS`` and return its output."""
        return run([self._ip, "-n", self.name, *args]).stdout.decode()

    def add_tap(self, name: str, address: str) -> None:
        """Add tap device ``name`` with ``address`` (CIDR, e.g. "10.200.7.1/24") and bring it up."""
        _check_cidr(f"tap {name}", address)
        self.ip("tuntap", "add", "dev", name, "mode", "tap")
        self.ip("addr", "add", address, "dev", name)
        self.ip("link", "set", name, "up")

    def add_veth(self, name: str, address: str, peer: NetNamespace, peer_name: str,
                 peer_address: str | None = None) -> None:
        """Link this namespace to ``peer`` with a veth pair (``name`` here, ``peer_name`` there).

        Unlike a tap, a veth has a carrier without QEMU: host tools (busybox udhcpc, wget) run
        in ``peer`` as the client of servers here. Addresses are CIDR; ``peer_address`` is optional.
        """
        for where in (address, peer_address):
            if where is not None:
                _check_cidr(f"veth {name}", where)
        self.ip("link", "add", name, "type", "veth", "peer", "name", peer_name, "netns", peer.name)
        self.ip("addr", "add", address, "dev", name)
        self.ip("link", "set", name, "up")
        if peer_address is not None:
            peer.ip("addr", "add", peer_address, "dev", peer_name)
        peer.ip("link", "set", peer_name, "up")

    def exec_argv(self, argv: list[str]) -> list[str]:
        """Return ``argv`` wrapped to run inside this namespace."""
        return [self._ip, "netns", "exec", self.name, *argv]

    def spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        """Start a server (dnsmasq, an HTTP server...) in the namespace, output to ``log_path``."""
        full = self.exec_argv([os.fspath(a) for a in argv])
        log.debug("+ %s", shlex.join(full))
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=minimal_env(),
                start_new_session=True,
            )
        self._spawned.append(proc)
        return proc

    def close(self) -> None:
        """Stop the processes spawned here (by PID), then delete the namespace; idempotent."""
        if self._finalizer is not None:
            self._finalizer()
        else:
            for proc in self._spawned:
                stop_process(proc)


def _check_cidr(what: str, address: str) -> None:
    try:
        ipaddress.ip_interface(address)
        valid = "/" in address
    except ValueError:
        valid = False
    if not valid:
        raise LabError(
            f"{what}: expected an address with a prefix length such as"
            f" '10.200.7.1/24', got {address!r}"
        )


def remove_namespace(ip: str, name: str, spawned: list[subprocess.Popen[bytes]]) -> None:
    """Stop ``spawned`` (each by PID, children of ours only), then delete namespace ``name``."""
    for proc in spawned:
        stop_process(proc)
    run([ip, "netns", "del", name])
