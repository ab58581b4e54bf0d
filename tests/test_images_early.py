"""The boot loaders a build starts early (builder.images.start_early): GRUB's core images and
the FAT images holding them, made while the initramfs is assembled, are the bytes the image
builders would make in place, and the builders take them instead of running GRUB again."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from builder.images import iso, start_early, updater
from builder.images.context import ImageContext
from builder.images.disk import make_layout
from builder.recipe.formats import ImageFormat
from builder.recipe.load import load_recipe
from tests.conftest import ROOT

EPOCH = 1700000000


def recipe(name: str) -> Any:
    return load_recipe(ROOT / "recipes" / "platforms" / f"{name}.yaml")[0]


def test_early_boot_loaders_are_the_ones_made_in_place(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    x86 = recipe("qemu_x86_64")
    assert {ImageFormat.ISO, ImageFormat.UPDATER} <= set(x86.images.formats)
    with ThreadPoolExecutor(max_workers=2) as pool:
        early = start_early(x86, EPOCH, pool)
        made = {fmt: future.result() for fmt, future in early.items()}
    assert set(made) == {ImageFormat.ISO, ImageFormat.UPDATER}
    assert sorted(made[ImageFormat.ISO]) == ["bios.img", "efi.img"]
    assert sorted(made[ImageFormat.UPDATER]) == ["core.img", "esp.img"]
    assert made[ImageFormat.ISO] == iso.make_boot_loaders(x86, EPOCH)
    assert made[ImageFormat.UPDATER] == updater.make_boot_loaders(x86, EPOCH)

    # Given them, the updater's pieces come from them: GRUB is not run again.
    def no_grub(*args: object, **kwargs: object) -> Path:
        raise AssertionError("grub-mkimage ran although the boot loaders were made early")

    monkeypatch.setattr(updater, "make_core", no_grub)
    monkeypatch.setattr(iso, "make_core", no_grub)
    context = ImageContext(kernel=tmp_path / "vmlinuz", initramfs=tmp_path / "initrd.img",
                           cmdline="quiet", kernel_release="6.1", os_release="",
                           source_date_epoch=EPOCH, early=early)
    layout = make_layout("x86_64", x86.images.boot_size_mib)
    head = bytes(1 << 20)
    new_head, pieces = updater.make_x86_pieces(x86, context, layout, head)
    esp = next(p for p in pieces if p.file == "esp.img")
    assert esp.data == made[ImageFormat.UPDATER]["esp.img"]
    assert new_head[:440] != head[:440]  # GRUB's boot code went in


def test_arm64_has_no_early_boot_loaders() -> None:
    """Its updater's ONIE-BOOT holds the FIT, which needs the kernel and the initramfs."""
    arm = recipe("qemu_arm64")
    with ThreadPoolExecutor(max_workers=2) as pool:
        early = start_early(arm, EPOCH, pool)
        assert all(future.result() == {} for future in early.values())
