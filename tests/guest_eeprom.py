"""Render the guest's EEPROM commands (onie-syseeprom, onie-sysinfo) and discovery's identity
functions with every path moved into a test folder, and run them under the host's BusyBox ash
(Debian's busybox-static, the build the image ships)."""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from builder.initramfs.assemble import Context
from builder.recipe.load import load_recipe
from builder.recipe.model import Recipe
from builder.render import make_environment, render_template
from tests.conftest import require_tool

RECIPES = Path(__file__).resolve().parent / "recipes"
PLATFORMS = Path(__file__).resolve().parent.parent / "recipes" / "platforms"
KERNEL = "6.1.0-test-amd64"


def recipe_from(text: str, tmp: Path, base: Path = PLATFORMS / "qemu_x86_64.yaml") -> Recipe:
    """A recipe extending ``base`` with ``text``."""
    path = tmp / "recipe.yaml"
    path.write_text(f"extends: {base}\n{text}")
    return load_recipe(path)[0]


@dataclass
class Guest:
    """A folder standing in for the guest: the EEPROM files, /proc, /sys and /etc pieces."""

    root: Path
    recipe: Recipe

    def path(self, name: str) -> Path:
        return self.root / name

    def values(self) -> dict[str, Any]:
        resolution: Any = SimpleNamespace(kernel=SimpleNamespace(release=KERNEL))
        out = Context(self.recipe, resolution, 1700000000).template_values()
        eeprom = out["eeprom"]
        moved = {k: str(self.root / k) for k in ("builtin", "fw_cfg", "ram", "mounts", "dmi", "net")}
        eeprom = {**eeprom, "paths": {**eeprom["paths"], **moved,
                                      "onie_boot": str(self.root / "onie-boot"),
                                      "saved": str(self.root / "onie-boot/onie/config/eeprom.bin")}}
        if eeprom["file"].startswith("/mnt/onie-boot/"):
            eeprom["file"] = str(self.root / "onie-boot" / eeprom["file"].removeprefix("/mnt/onie-boot/"))
        elif eeprom["file"]:
            eeprom["file"] = str(self.root / "device")
        paths = {**out["paths"], "machine_conf": str(self.root / "machine.conf"),
                 "cmdline": str(self.root / "cmdline"), "run": str(self.root / "run"),
                 "log": str(self.root / "log"), "installer_log": str(self.root / "installer.log")}
        return {**out, "eeprom": eeprom, "paths": paths, "library": True}

    def render(self, name: str) -> str:
        return render_template(make_environment(self.recipe.templates), name, self.values())

    def install(self) -> Guest:
        """Write the scripts, machine.conf, an empty mount table and command line."""
        require_tool("busybox", "to run the generated shell (busybox-static)")
        self.root.mkdir(parents=True, exist_ok=True)
        for name, dest in (("guest/commands/onie-syseeprom.sh.j2", "onie-syseeprom"),
                           ("guest/commands/onie-sysinfo.sh.j2", "onie-sysinfo"),
                           ("guest/discovery.sh.j2", "discovery-lib.sh"),
                           ("guest/etc/machine.conf.j2", "machine.conf")):
            self.path(dest).write_text(self.render(name))
        self.path("mounts").write_text("")
        self.path("cmdline").write_text("quiet\n")
        (self.root / "run").mkdir(exist_ok=True)
        return self

    def run(self, command: str, *args: str, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[bytes]:
        """Run one of the commands (``onie-syseeprom``, ``onie-sysinfo``) under busybox ash."""
        return subprocess.run(["busybox", "ash", str(self.path(command)), *args],
                              capture_output=True, timeout=60, cwd=self.root,
                              env={"PATH": os.environ["PATH"], **(env or {})})

    def text(self, command: str, *args: str) -> str:
        proc = self.run(command, *args)
        assert proc.returncode == 0, proc.stderr.decode()
        return proc.stdout.decode("latin-1")

    def ash(self, body: str) -> subprocess.CompletedProcess[str]:
        """Run ``body`` after loading discovery's functions (no main)."""
        lib = shlex.quote(str(self.path("discovery-lib.sh")))
        return subprocess.run(["busybox", "ash", "-c", f". {lib}\n{body}"], capture_output=True,
                              text=True, timeout=60, cwd=self.root,
                              env={"PATH": os.environ["PATH"]})


def guest(tmp: Path, recipe: Recipe | None = None) -> Guest:
    """A guest folder under ``tmp`` for ``recipe`` (default: the shipped qemu_x86_64)."""
    return Guest(tmp / "guest", recipe or load_recipe(PLATFORMS / "qemu_x86_64.yaml")[0]).install()
