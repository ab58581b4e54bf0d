"""Recipe validation: the shipped recipes are valid; every bad input has its exact message."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import RecipeError
from builder.recipe.formats import Compression
from builder.recipe.load import load_recipe
from builder.recipe.model import Arch, Recipe

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = sorted((ROOT / "recipes" / "platforms").glob("*.yaml"))

GOOD = """\
platform:
  vendor: acme
  machine: acme_s1
  arch: x86_64
  switch_asic: bcm
  vendor_id: 4242
kernel:
  debian: linux-image-amd64
"""


@pytest.mark.parametrize("path", PLATFORMS, ids=lambda p: p.stem)
def test_shipped_platforms_are_valid(path: Path) -> None:
    recipe, merged = load_recipe(path)
    assert recipe.platform_string == (f"{recipe.platform.arch.value}-{recipe.platform.machine}"
                                      f"-r{recipe.platform.machine_rev}")
    assert merged.files[0].parent.name == "base"


def test_default_platform_string() -> None:
    recipe, _ = load_recipe(ROOT / "recipes" / "platforms" / "qemu_x86_64.yaml")
    assert recipe.platform_string == "x86_64-qemu_x86_64-r0"
    assert recipe.platform.arch is Arch.X86_64
    assert recipe.initramfs.compression is Compression.XZ
    assert recipe.name == "qemu_x86_64"


def test_vendor_recipe_appends_to_base() -> None:
    recipe, _ = load_recipe(ROOT / "recipes" / "platforms" / "accton_as7726_32x.yaml")
    base, _ = load_recipe(ROOT / "recipes" / "platforms" / "qemu_x86_64.yaml")
    assert recipe.kernel.modules == [*base.kernel.modules, "igb", "ixgbe"]
    assert [c.debian for c in recipe.initramfs.components] == [
        *(c.debian for c in base.initramfs.components), "ethtool"]
    assert [c.debian for c in base.initramfs.components][:2] == ["busybox-static", "openssl"]


def test_paths_are_relative_to_the_file_that_wrote_them(tmp_path: Path) -> None:
    (tmp_path / "vendor" / "overlay").mkdir(parents=True)
    (tmp_path / "base.yaml").write_text(GOOD + "templates: [tpl]\n")
    (tmp_path / "vendor" / "p.yaml").write_text(
        "extends: ../base.yaml\ninitramfs:\n  overlays: [overlay]\n")
    recipe, _ = load_recipe(tmp_path / "vendor" / "p.yaml")
    assert recipe.templates == [tmp_path / "tpl"]
    assert recipe.initramfs.overlays == [tmp_path / "vendor" / "overlay"]


BAD = [
    ("platform:\n  vendor: Acme\n", 2,
     "platform.vendor: expected lower-case letters and digits (ONIE vendor name), got 'Acme'"),
    ("platform:\n  machine: other_s1\n", 1,
     "platform: machine: expected '<vendor>_<model>' starting with 'acme_', got 'other_s1'"),
    ("platform:\n  machine: Acme-S1\n", 2,
     "platform.machine: expected lower-case letters, digits and '_', got 'Acme-S1'"),
    ("platform:\n  arch: amd64\n", 2,
     "platform.arch: expected one of 'x86_64' or 'arm64', got 'amd64'"),
    ("platform:\n  vendor_id: abc\n", 2, "platform.vendor_id: expected an integer, got 'abc'"),
    ("platform:\n  vendor_id: 0\n", 2, "platform.vendor_id: expected a number >= 1, got 0"),
    ("platform:\n  machine_rev: -1\n", 2, "platform.machine_rev: expected a number >= 0, got -1"),
    ("platform:\n  consol: {}\n", 2, "platform.consol: unknown key; did you mean 'console'?"),
    ("platform:\n  console:\n    speed: 1234\n", 3,
     "platform.console.speed: expected one of 9600, 19200, 38400, 57600, 115200, 230400, "
     "460800, 921600, got 1234"),
    ("platform:\n  console:\n    device: com1\n", 3,
     "platform.console.device: expected a tty device name like 'ttyS0', got 'com1'"),
    ("kernel:\n  modulez: [e1000]\n", 2, "kernel.modulez: unknown key; did you mean 'modules'?"),
    ("kernel:\n  modules: e1000\n", 2, "kernel.modules: expected a list, got 'e1000'"),
    ("kernel:\n  url: https://example.invalid/k.deb\n", 1,
     "kernel: expected exactly one of 'debian', 'url' or 'path', got debian and url"),
    ("initramfs:\n  compression: lz4\n", 2,
     "initramfs.compression: expected one of 'none', 'gzip', 'xz' or 'zstd', got 'lz4'"),
    ("initramfs:\n  components:\n    - url: https://example.invalid/x\n      dest: /x\n", 3,
     "initramfs.components[0]: a 'url' source needs 'sha256' to pin its content"),
    ("initramfs:\n  components:\n    - url: https://example.invalid/x\n      sha256: abc\n"
     "      dest: /x\n", 4, "initramfs.components[0].sha256: expected 64 lower-case hex digits, "
     "got 'abc'"),
    ("initramfs:\n  components:\n    - debian: ethtool\n", 3,
     "initramfs.components[0]: a package component needs 'binaries', 'files' or 'grub' to install"),
    ("initramfs:\n  components:\n    - path: tool\n", 3,
     "initramfs.components[0]: a single-file component needs 'dest'"),
    ("initramfs:\n  components:\n    - debian: ethtool\n      binaries: [usr/sbin/ethtool]\n", 4,
     "initramfs.components[0].binaries[0]: expected an absolute path inside the image, "
     "got 'usr/sbin/ethtool'"),
    ("initramfs:\n  components:\n    - debian: ethtool\n      files: [/etc/../../x]\n", 4,
     "initramfs.components[0].files[0]: expected an absolute path inside the image, "
     "got '/etc/../../x'"),
    ("frobnicate: 1\n", 1, "frobnicate: unknown key; expected one of "
     + ", ".join(sorted(Recipe.model_fields))),
    ("kernl: {}\n", 1, "kernl: unknown key; did you mean 'kernel'?"),
]




@pytest.mark.parametrize(("override", "line", "message"), BAD, ids=[b[2][:40] for b in BAD])
def test_bad_recipe_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             override: str, line: int, message: str) -> None:
    (tmp_path / "base.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text("extends: base.yaml\n" + override)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "bad.yaml")
    assert info.value.problems == [f"bad.yaml:{line + 1}: {message}"]
    assert info.value.exit_code == 2


def test_missing_required_keys_are_listed_together(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "r.yaml").write_text("platform:\n  vendor: acme\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "r.yaml")
    # Sorted by file and line (#20), then by text on the same line.
    assert info.value.problems == [
        "r.yaml:1: kernel: required key missing",
        "r.yaml:1: platform.arch: required key missing",
        "r.yaml:1: platform.machine: required key missing",
        "r.yaml:1: platform.switch_asic: required key missing",
        "r.yaml:1: platform.vendor_id: required key missing",
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "base.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(
        "extends: base.yaml\nplatform:\n  vendor_id: x\nkernel:\n  modulez: []\n"
        "initramfs:\n  compression: lz4\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "bad.yaml")
    assert [p.split(": ")[0] for p in info.value.problems] == ["bad.yaml:3", "bad.yaml:5",
                                                               "bad.yaml:7"]
