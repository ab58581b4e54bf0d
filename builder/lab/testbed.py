"""A test bed for a quick local install: one QEMU guest in a network namespace of its own, with
dnsmasq handing out addresses and option 114 pointing at an HTTP server that serves the
installer under ONIE's default name. What ``onie-builder boot --netns`` runs.

Nothing leaves the namespace: the guest's only link is a tap device inside it, and the
namespace, its servers (stopped by PID) and its files are removed when QEMU exits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from builder.errors import BuildError
from builder.lab.netns import NetNamespace
from builder.lab.qemu import QemuMachine, qemu_command
from builder.lab.servers import Dnsmasq, HttpServer
from builder.onie.waterfall import INSTALLER

# Private addresses, used only inside the namespace this module creates.
SERVER = "10.213.0.1"
TAP = "tap0"


def installer_url() -> str:
    """The URL option 114 hands the guest."""
    return f"http://{SERVER}/{INSTALLER}"


def run_testbed(machine: QemuMachine, kernel: Path, initrd: Path, cmdline: str,
                installer: Path | None) -> int:
    """Boot the guest in a fresh namespace against DHCP + HTTP; return QEMU's exit status.

    The console stays on this process's stdio. Without ``installer`` the HTTP server serves
    an empty folder, so discovery keeps looking (useful for rescue work over the network).
    """
    if os.geteuid() != 0:
        raise BuildError("boot --netns needs root: it creates a network namespace and a tap device")
    with tempfile.TemporaryDirectory(prefix="onie-testbed-") as tmp, \
            NetNamespace.create("ob-boot") as ns:
        folder = Path(tmp)
        www = folder / "www"
        www.mkdir()
        if installer is not None:
            shutil.copyfile(installer, www / INSTALLER)
        ns.add_tap(TAP, f"{SERVER}/24")
        HttpServer(ns, www, folder / "httpd", address=SERVER).start()
        Dnsmasq(ns, TAP, SERVER, folder / "dnsmasq", options=[f"114,{installer_url()}"]).start()
        argv = qemu_command(machine, kernel, initrd, cmdline, tap=TAP)
        return subprocess.call(ns.exec_argv(argv))
