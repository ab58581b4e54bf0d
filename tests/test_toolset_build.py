"""The installer toolset in built images (real Debian packages): what the default image holds,
the manifest's per-component sizes, and the discovery-only switch."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.initramfs.applets import PATH_DIRS
from builder.recipe.load import load_recipe
from tests.conftest import ROOT, run_cli, unpack_initramfs

pytestmark = pytest.mark.network

PLATFORMS = ROOT / "recipes" / "platforms"


def manifest(image: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((image / "manifest.json").read_text())


def test_default_image_holds_the_toolset(built: Callable[[str], Path], tmp_path: Path) -> None:
    image = built("qemu_x86_64")
    doc = manifest(image)
    files = {f["path"]: f for f in doc["initramfs"]["files"]}
    recipe = load_recipe(PLATFORMS / "qemu_x86_64.yaml")[0]
    for name, component in recipe.initramfs.tools:
        for binary in component.binaries:
            path = component.dest or binary
            assert files[path]["component"] == name, path
    assert files["/bin/sh"]["target"] == files["/bin/ash"]["target"] == "/usr/lib/onie/busybox"
    assert files["/usr/lib/onie/busybox"]["origin"].startswith("debian:busybox=")
    assert files["/bin/busybox"]["origin"].startswith("debian:busybox-static=")
    assert files["/etc/mke2fs.conf"]["component"] == "e2fsprogs"
    assert any(p.endswith("/efivarfs.ko") for p in files)
    root = unpack_initramfs(image, tmp_path / "root")
    for folder in ("i386-pc", "x86_64-efi"):
        grub = root / "usr/lib/grub" / folder
        modules = {p.stem for p in grub.glob("*.mod")}
        listed = {line.split(":")[0] for line in (grub / "moddep.lst").read_text().splitlines()}
        assert listed == modules and {"normal", "linux", "part_gpt", "ext2"} <= modules
        assert (grub / "kernel.img").is_file() and (grub / "modinfo.sh").is_file()
        assert not (grub / "monolithic").exists() and len(modules) < 60
    # /init removes the applet links that would stand beside a real tool (partprobe's applet
    # lives in /usr/sbin, the real one in /sbin).
    init = (root / "init").read_text()
    assert "/usr/lib/onie/busybox --install -s\n/bin/busybox --install -s\n" in init
    removal = init.index("\nrm -f \\\n")
    assert init.index("/bin/busybox --install -s\n") < removal < init.index("/usr/sbin/partprobe ")
    assert (root / "bin/onie-discovery").read_text().startswith("#!/bin/busybox sh\n")


def test_manifest_gives_each_components_compressed_size(built: Callable[[str], Path]) -> None:
    doc = manifest(built("qemu_x86_64"))
    sizes = doc["initramfs"]["components"]
    names = [s["name"] for s in sizes]
    assert names[:2] == ["debian:busybox-static", "debian:openssl"]
    assert names[-2:] == ["kernel modules", "environment"]
    assert {"shell", "gdisk", "grub-bios", "grub-uefi", "efibootmgr"} <= set(names)
    assert sum(s["entries"] for s in sizes) == len(doc["initramfs"]["files"])
    for size in sizes:
        assert size["compressed"] > 0 and (size["bytes"] == 0 or size["compressed"] < size["bytes"])
    # Each group compressed alone shares no matches with the others: the sum is a little more
    # than the image (docs/formats.md, "Sizes").
    image = doc["outputs"]["initrd.img"]["size"]
    assert image < sum(s["compressed"] for s in sizes) < 1.3 * image


def test_discovery_only_image(built: Callable[[str], Path], tmp_path: Path,
                              cache_env: dict[str, str]) -> None:
    recipe = tmp_path / "discovery_only.yaml"
    recipe.write_text(f"extends: {PLATFORMS / 'qemu_x86_64.yaml'}\n"
                      "initramfs:\n  discovery_only: true\n")
    proc = run_cli("build", "--allow-untrusted",
                   str(recipe), "--out", str(tmp_path / "out"), "--json", "--no-lock",
                   "--no-images", env=cache_env)
    result = json.loads(proc.stdout)["result"][0]
    small = manifest(Path(result["out"]))
    files = {f["path"] for f in small["initramfs"]["files"]}
    assert not {"/bin/sh", "/usr/lib/onie/busybox", "/sbin/sgdisk", "/usr/sbin/grub-install"} & files
    assert not [p for p in files if p.endswith("/efivarfs.ko")]
    assert [c["name"] for c in result["components"]] == [
        "debian:busybox-static", "debian:openssl", "debian:rdate", "kernel modules", "environment"]
    full = manifest(built("qemu_x86_64"))
    assert small["outputs"]["initrd.img"]["size"] < full["outputs"]["initrd.img"]["size"] - 2_000_000


def test_arm64_image_has_the_uboot_and_flash_tools(built: Callable[[str], Path]) -> None:
    files = {f["path"]: f for f in manifest(built("qemu_arm64"))["initramfs"]["files"]}
    assert files["/usr/bin/fw_printenv"]["component"] == "uboot-env"
    assert files["/usr/sbin/flashcp"]["component"] == "mtd-utils"
    assert files["/etc/fw_env.config"]["origin"] == "template:fw_env.config.j2"
    assert not [p for p in files if p.startswith("/usr/lib/grub")]
    assert all(f"{d}/sgdisk" not in files for d in PATH_DIRS if d != "/sbin")
