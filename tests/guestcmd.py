"""ONIE's guest commands (templates/guest/commands/) rendered for a host folder and run under
the host's BusyBox ash, with a guest-like PATH: BusyBox's applets, openssl, grub-editenv, the
rendered commands and any fakes a test adds. Every run drops CAP_SYS_BOOT (setpriv), so a
reboot or poweroff that a bug reached could never stop this machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from builder.initramfs.assemble import TEMPLATES, Context
from builder.recipe.load import load_recipe
from builder.recipe.model import Recipe
from builder.render import make_environment, render_template
from tests.conftest import ROOT, require_tool

KERNEL = "6.1.0-test-amd64"
COMMANDS = {dest.rsplit("/", 1)[1]: name for name, dest, _ in TEMPLATES
            if name.startswith("guest/commands/") and dest.startswith("/bin/")}


def platform_recipe(name: str) -> Recipe:
    """A shipped platform's recipe (qemu_x86_64, qemu_arm64)."""
    return load_recipe(ROOT / "recipes" / "platforms" / f"{name}.yaml")[0]


class Guest:
    """A folder standing in for the guest: run/, var/log/, etc/, a fake ONIE-BOOT and bin/."""

    def __init__(self, root: Path, recipe: Recipe, **values: Any) -> None:
        self.root = root
        self.recipe = recipe
        self.bin = root / "bin"
        self.run_dir = root / "run"
        self.log_dir = root / "var" / "log"
        self.onie_boot = root / "mnt" / "onie-boot"
        self.mounts = root / "mounts"
        for folder in (self.bin, self.run_dir, self.log_dir, self.onie_boot, root / "etc"):
            folder.mkdir(parents=True, exist_ok=True)
        self.cmdline = root / "cmdline"
        self.cmdline.write_text("console=ttyS0 boot_reason=rescue\n")
        self.machine_conf = root / "etc" / "machine.conf"
        self.mounts.write_text(f"/dev/vda2 {self.onie_boot} ext4 rw 0 0\n")
        self.extra = values
        self._link_tools()
        self.values = self._values()
        self.machine_conf.write_text(self.render("guest/etc/machine.conf.j2"))
        for command, template in COMMANDS.items():
            self.install(command, self.render(template))

    def _values(self) -> dict[str, Any]:
        resolution: Any = SimpleNamespace(kernel=SimpleNamespace(release=KERNEL))
        out = Context(self.recipe, resolution, 0).template_values()
        out["paths"] = {**out["paths"], "run": str(self.run_dir),
                        "log": str(self.log_dir / "onie-discovery.log"),
                        "installer_log": str(self.log_dir / "onie-installer.log"),
                        "cmdline": str(self.cmdline), "machine_conf": str(self.machine_conf),
                        "script": str(self.bin / "onie-discovery"),
                        "console": str(self.root / "console"),
                        "modules": str(self.run_dir / "modules"),
                        "console_shell": str(self.run_dir / "console.shell"),
                        "console_held": str(self.run_dir / "console.held")}
        out.update(onie_boot=str(self.onie_boot), proc_mounts=str(self.mounts), **self.extra)
        return out

    def _link_tools(self) -> None:
        busybox = require_tool("busybox", "to run the guest's commands under BusyBox ash")
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
        for name in applets.stdout.split():
            os.symlink(busybox, self.bin / name)
        for tool, why in (("openssl", "to verify installers as the guest does"),
                          ("grub-editenv", "to edit grubenv as the guest does (grub-common)")):
            os.symlink(require_tool(tool, why), self.bin / tool)
        self.setpriv = require_tool("setpriv", "to run the guest's commands without CAP_SYS_BOOT"
                                               " (util-linux)")

    def render(self, template: str) -> str:
        """A template rendered with this guest's paths."""
        return render_template(make_environment(self.recipe.templates), template, self.values)

    def install(self, name: str, text: str) -> Path:
        """Put an executable script on the guest's PATH (a command or a fake)."""
        path = self.bin / name
        path.unlink(missing_ok=True)
        path.write_text(text)
        path.chmod(0o755)
        return path

    def sh(self, command: str, *args: str | Path, timeout: float = 60,
           stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``command`` under BusyBox ash (``args`` are $1...), with this guest's PATH."""
        argv = [self.setpriv, "--bounding-set", "-sys_boot", "--", str(self.bin / "ash"), "-c",
                command, "ash", *map(str, args)]
        return subprocess.run(argv, input=stdin.decode() if stdin is not None else "",
                              capture_output=True, text=True, timeout=timeout, cwd=self.root,
                              env={"PATH": str(self.bin), "HOME": str(self.root)})

    def command(self, name: str, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run one of the rendered commands with ``args``."""
        return self.sh(f'exec {name} "$@"', *args, timeout=timeout)
