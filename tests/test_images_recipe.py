"""The recipe's `images` section: defaults per architecture, paths, and every bad input's message."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import RecipeError
from builder.recipe.formats import ImageFormat
from builder.recipe.load import load_recipe

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
platform:
  vendor: acme
  machine: acme_s1
  arch: {arch}
  switch_asic: bcm
  vendor_id: 4242
kernel:
  debian: linux-image-amd64
"""


def test_defaults_per_arch() -> None:
    x86, _ = load_recipe(ROOT / "recipes" / "platforms" / "qemu_x86_64.yaml")
    assert x86.images.formats == [ImageFormat.NETBOOT, ImageFormat.ISO, ImageFormat.UKI,
                                  ImageFormat.UPDATER]
    arm, _ = load_recipe(ROOT / "recipes" / "platforms" / "accton_as4564_26p.yaml")
    assert arm.images.formats == [ImageFormat.NETBOOT, ImageFormat.FIT, ImageFormat.UPDATER]
    assert arm.images.fit.key is None and arm.images.fit.load_address == 0x40400000


def test_key_paths_are_relative_to_the_recipe(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(GOOD.format(arch="arm64") + "images:\n  formats: [fit]\n"
                                     "  fit:\n    key: keys/dev.key\n  updater:\n    key: u.key\n")
    recipe, _ = load_recipe(tmp_path / "r.yaml")
    assert recipe.images.fit.key == tmp_path / "keys" / "dev.key"
    assert recipe.images.updater.key == tmp_path / "u.key"


BAD = [
    ("x86_64", "images:\n  formats: [iso, dvd]\n", 2,
     "images.formats[1]: expected one of 'netboot', 'fit', 'uki', 'updater' or 'iso', got 'dvd'"),
    ("x86_64", "images:\n  formats: [iso, iso]\n", 2,
     "images.formats: expected each format once, got 'iso' twice"),
    ("x86_64", "images:\n  formats: [fit]\n", 1, "images: formats: 'fit' cannot be built for x86_64"),
    ("arm64", "images:\n  formats: [iso, uki]\n", 1,
     "images: formats: 'iso', 'uki' cannot be built for arm64"),
    ("x86_64", "images:\n  uki:\n    secureboot_key: db.key\n", 2,
     "images.uki: expected both 'secureboot_key' and 'secureboot_cert', or neither"),
    ("arm64", "images:\n  fit:\n    dtb: a.dtb\n    kernel_dtb: b/c.dtb\n", 2,
     "images.fit: expected at most one of 'dtb' and 'kernel_dtb'"),
    ("arm64", "images:\n  fit:\n    kernel_dtb: ../x.dtb\n", 2,
     "images.fit: kernel_dtb: expected a relative path ending in .dtb, got '../x.dtb'"),
    ("x86_64", "images:\n  grub_timeout: -1\n", 2,
     "images.grub_timeout: expected a number >= 0, got -1"),
    ("x86_64", "images:\n  boot_size_mib: 8\n", 2,
     "images.boot_size_mib: expected a number >= 16, got 8"),
    ("arm64", "images:\n  partition_type: msdos\n", 1,
     "images: partition_type: 'msdos' is for x86_64 (BIOS) platforms; arm64 uses 'gpt'"),
    ("x86_64", "images:\n  partition_type: mbr\n", 2,
     "images.partition_type: expected one of 'gpt' or 'msdos', got 'mbr'"),
    ("x86_64", "images:\n  fromats: [iso]\n", 2,
     "images.fromats: unknown key; did you mean 'formats'?"),
]


@pytest.mark.parametrize(("arch", "override", "line", "message"), BAD, ids=[b[3][:40] for b in BAD])
def test_bad_images_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arch: str,
                             override: str, line: int, message: str) -> None:
    (tmp_path / "base.yaml").write_text(GOOD.format(arch=arch))
    (tmp_path / "bad.yaml").write_text("extends: base.yaml\n" + override)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "bad.yaml")
    assert info.value.problems == [f"bad.yaml:{line + 1}: {message}"]


def test_partition_type_defaults_to_gpt_and_takes_msdos(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(GOOD.format(arch="x86_64") + "images:\n  partition_type: msdos\n")
    recipe, _ = load_recipe(tmp_path / "r.yaml")
    assert recipe.images.partition_type.value == "msdos"
    x86, _ = load_recipe(ROOT / "recipes" / "platforms" / "qemu_x86_64.yaml")
    assert x86.images.partition_type.value == "gpt"
