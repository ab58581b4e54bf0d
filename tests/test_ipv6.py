"""IPv6 pieces without QEMU: the recipe section, what DHCPv6 adds to the image, dhcpcd's hook
with hostile values, and RFC 6874 zones as BusyBox wget takes them (the boot is in
test_ipv6_boot.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from builder.initramfs.transports import template_values
from builder.recipe.implied import implied_components
from builder.recipe.load import load_recipe
from builder.recipe.model import Method
from builder.render import make_environment, render_template
from tests.conftest import ROOT, require_tool

PLATFORM = ROOT / "recipes" / "platforms" / "qemu_x86_64.yaml"


def recipe_with(tmp_path: Path, block: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(f"extends: {PLATFORM}\ntransports:\n  ipv6:\n{block}")
    return path


def test_defaults_and_dhcpv6_brings_dhcpcd(tmp_path: Path) -> None:
    default = load_recipe(PLATFORM)[0]
    assert default.transports.ipv6.enabled and not default.transports.ipv6.dhcpv6
    assert Method.IPV6 in default.discovery.methods
    assert implied_components(default) == []
    on = load_recipe(recipe_with(tmp_path, "    dhcpv6: true\n"))[0]
    assert [(c.debian, c.binaries) for c in implied_components(on)] == [
        ("dhcpcd-base", ["/usr/sbin/dhcpcd"])]
    assert template_values(on, 0)["ipv6"]["dhcpv6"]
    off = load_recipe(recipe_with(tmp_path, "    enabled: false\n    dhcpv6: true\n"))[0]
    assert implied_components(off) == [] and not template_values(off, 0)["ipv6"]["dhcpv6"]


def render(name: str, tmp_path: Path) -> Path:
    recipe = load_recipe(recipe_with(tmp_path, "    dhcpv6: true\n"))[0]
    values = template_values(recipe, 0)
    values["ipv6"] = {**values["ipv6"], "run": str(tmp_path / "run")}
    out = tmp_path / Path(name).name.removesuffix(".j2")
    out.write_text(render_template(make_environment(), name, {**values, "builder_version": "t"}))
    return out


def test_dhcpcd_hook_keeps_option_59_as_data(tmp_path: Path) -> None:
    busybox = require_tool("busybox", "to run the generated ash (busybox-static)")
    hook = render("guest/lib/dhcpcd.hook.j2", tmp_path)
    conf = render("guest/lib/dhcpcd.conf.j2", tmp_path)
    assert "option dhcp6_bootfile_url\n" in conf.read_text() and "ipv6only\n" in conf.read_text()
    hostile = f"http://[fd00::1]/x$(touch {tmp_path}/pwned)`touch {tmp_path}/pwned2`"
    env = {"PATH": os.environ["PATH"], "reason": "INFORM6", "interface": "eth0",
           "new_dhcp6_bootfile_url": hostile}
    subprocess.run([busybox, "ash", str(hook)], env=env, check=True)
    assert (tmp_path / "run" / "eth0" / "bootfile_url").read_text() == hostile
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
    subprocess.run([busybox, "ash", str(hook)], env={**env, "interface": "../../etc"}, check=True)
    assert not (tmp_path / "etc").exists()  # an odd interface name writes nothing


def test_zones_for_wget(tmp_path: Path) -> None:
    busybox = require_tool("busybox", "to run the generated ash (busybox-static)")
    lib = render("guest/discovery/ipv6.sh.j2", tmp_path)
    script = f'. {lib}; for u in "$@"; do ipv6_url_for_wget "$u"; echo; done'
    out = subprocess.run([busybox, "ash", "-c", script, "x", "http://[fe80::1%25eth0]/a",
                          "http://[fe80::1%eth0]/a", "http://[fd00::1]/a%25b", "http://h/x"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["http://[fe80::1%eth0]/a", "http://[fe80::1%eth0]/a", "http://[fd00::1]/a%25b",
                   "http://h/x"]
