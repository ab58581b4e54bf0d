"""A test bed for a quick local install: one QEMU guest in a network namespace of its own, with
dnsmasq handing out addresses and an HTTP server on the DHCP server's address. What
``onie-builder boot --netns`` runs.

The HTTP server serves a folder (``--serve DIR``): discovery finds an installer there under
ONIE's default names (its HTTP sweep asks the DHCP server's address), or, given one installer
file, serves it as ``onie-installer`` with option 114 pointing at it. Nothing leaves the
namespace: the guest's only link is a tap device inside it, and the namespace, its servers
(stopped by PID) and its files are removed when QEMU exits or this process is told to stop
(SIGINT, SIGTERM, SIGHUP).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from builder.errors import BuildError
from builder.lab.netns import NetNamespace
from builder.lab.servers import Dnsmasq, HttpServer
from builder.lab.terminal import run_guest
from builder.onie.waterfall import INSTALLER

# Private addresses, used only inside the namespace this module creates.
SERVER = "10.213.0.1"
TAP = "tap0"


def installer_url() -> str:
    """The URL option 114 hands the guest."""
    return f"http://{SERVER}/{INSTALLER}"


class Stopped(Exception):
    """This process was asked to stop (SIGTERM or SIGHUP) while the test bed ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into ``Stopped`` so the namespace is cleaned up on the way out."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_testbed(argv_for_tap: Callable[[str], list[str]], serve: Path | None,
                installer: Path | None, say: Callable[[str], None]) -> int:
    """Boot the guest in a fresh namespace against DHCP + HTTP; return QEMU's exit status.

    The console is this process's terminal (relayed by ``terminal.run_guest``) or stdio. With
    neither ``serve`` nor ``installer`` the HTTP server serves an empty folder, so discovery
    keeps looking.
    """
    if os.geteuid() != 0:
        raise BuildError("boot --netns needs root: it creates a network namespace and a tap device")
    with tempfile.TemporaryDirectory(prefix="onie-testbed-") as tmp, stop_on_signals(), \
            NetNamespace.create("ob-boot") as ns:
        folder = Path(tmp)
        www = serve if serve is not None else folder / "www"
        www.mkdir(exist_ok=True)
        options = []
        if installer is not None:
            shutil.copyfile(installer, www / INSTALLER)
            options.append(f"114,{installer_url()}")
        ns.add_tap(TAP, f"{SERVER}/24")
        HttpServer(ns, www, folder / "httpd", address=SERVER).start()
        Dnsmasq(ns, TAP, SERVER, folder / "dnsmasq", options=options).start()
        say(f"network namespace {ns.name}: DHCP and http://{SERVER}/ serving {www}"
            + (f" (option 114: {installer_url()})" if options else ""))
        try:
            return run_guest(ns.exec_argv(argv_for_tap(TAP)))
        except (Stopped, KeyboardInterrupt) as exc:  # run_guest has stopped QEMU
            say(f"stopped QEMU; removing {ns.name} ({exc!r})")
            return exc.exit_code if isinstance(exc, Stopped) else 128 + signal.SIGINT
        finally:
            sys.stdout.flush()
