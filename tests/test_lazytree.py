"""Tests for builder.components.lazytree and xzblocks: a kernel package unpacked without the
modules a recipe does not need, each module written later from the xz blocks that hold it."""

from __future__ import annotations

import io
import lzma
import os
import random
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from builder.components import kernelproc, lazytree, xzblocks
from builder.components.cache import Cache
from builder.components.lazytree import lazy_files, unpack_kernel
from builder.components.xzblocks import read_blocks, read_range
from builder.initramfs.kmod import find_module_closure, index_modules

if TYPE_CHECKING:
    from builder.components.apt import Archive


def xz(data: bytes, *args: str) -> bytes:
    return subprocess.run(["xz", "-c", "-T1", *args], input=data, capture_output=True,
                          check=True).stdout


def test_read_range_decompresses_only_what_it_needs() -> None:
    rng = random.Random(7)
    data = bytes(rng.getrandbits(8) if i % 3 else 65 for i in range(300_000))
    packed = xz(data, "--block-size=65536")
    blocks = read_blocks(packed)
    assert blocks is not None and len(blocks) == 5
    assert [b.offset for b in blocks] == [0, 65536, 131072, 196608, 262144]
    memo: dict[int, bytes] = {}
    for offset, size in [(0, 10), (65530, 20), (100_000, 150_000), (299_990, 10), (5, 0)]:
        assert read_range(packed, blocks, offset, size, memo) == data[offset:offset + size]
    assert list(memo) == [262144]  # one block kept at a time
    with pytest.raises(ValueError, match="does not cover"):
        read_range(packed, blocks, 299_990, 20)


def test_parallel_reader_gives_the_whole_stream_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks decompressed ahead on two threads, each in pieces (CHUNK made small here so a
    block is several), come back as the one stream; a damaged block is an LZMAError."""
    monkeypatch.setattr(xzblocks, "CHUNK", 10_000)
    rng = random.Random(8)
    data = bytes(rng.getrandbits(8) if i % 5 else 66 for i in range(300_000))
    packed = xz(data, "--block-size=65536")
    blocks = read_blocks(packed)
    assert blocks is not None and len(blocks) == 5
    assert xzblocks.decompress_block_chunks(packed, blocks[1])[0] == data[65536:75536]
    with io.BufferedReader(xzblocks.ParallelReader(packed, blocks, workers=2), 4096) as reader:
        assert reader.read() == data
    damaged = bytearray(packed)
    damaged[blocks[2].start + 200] ^= 0xFF
    with pytest.raises(lzma.LZMAError), \
            io.BufferedReader(xzblocks.ParallelReader(bytes(damaged), blocks, workers=2)) as reader:
        reader.read()


def test_read_blocks_refuses_what_it_cannot_index() -> None:
    one = xz(b"a" * 1000)
    assert read_blocks(one + one) is None  # two streams
    assert read_blocks(one[:-1] + b"Q") is None
    damaged = bytearray(one)
    damaged[-13] ^= 1  # the index's CRC32
    assert read_blocks(bytes(damaged)) is None


@pytest.fixture(scope="module")
def kernel_blob(debian_archive: Callable[[str], Archive]) -> Path:
    """The linux-image-6.x-amd64 package that linux-image-amd64 points at, downloaded."""
    archive = debian_archive("amd64")
    meta = archive.find("linux-image-amd64")
    name = next(m[1] for d in meta.depends if (m := re.match(r"(linux-image-[\w.+-]+)", d)))
    return archive.fetch(archive.find(name))


@pytest.mark.network
def test_lazy_kernel_tree(kernel_blob: Path, tmp_path: Path,
                          debian_roots: Callable[..., list[Path]]) -> None:
    """Only the wanted modules and their closure are written, byte for byte as a whole unpack
    has them; the index still knows every module, and writes one when it is first read."""
    cache = Cache(tmp_path / "cache")
    blob = cache.blob_path(kernel_blob.name)
    blob.parent.mkdir(parents=True)
    os.link(kernel_blob, blob)
    tree = unpack_kernel(blob, cache, ["e1000", "virtio-net", "ext4", "usb_storage", "vfat"])
    assert tree.name == f"{kernel_blob.name}.lazy"
    [modules_dir] = (tree / "lib/modules").iterdir()
    written = {p.relative_to(modules_dir).as_posix() for p in modules_dir.rglob("*.ko")}
    index = index_modules(modules_dir)
    assert len(index) > 3000 and len(written) < 60
    closure = find_module_closure(index, ["e1000", "virtio_net", "ext4", "usb_storage", "vfat"])
    assert {m.relpath for m in closure} <= written  # the first pass wrote the whole closure
    assert {"usbcore", "scsi_mod", "jbd2", "fat", "failover"} <= {m.name for m in closure}

    [whole] = debian_roots("amd64", [_package_name(tree)], depends=False)
    whole_dir = whole / "lib/modules" / modules_dir.name
    for module in closure:
        assert module.read() == (whole_dir / module.relpath).read_bytes(), module.relpath
    assert (tree / "boot").is_dir() and sorted(p.name for p in (tree / "boot").iterdir()) == \
        sorted(p.name for p in (whole / "boot").iterdir())

    later = "kernel/fs/btrfs/btrfs.ko"
    assert later in lazy_files(modules_dir) and not (modules_dir / later).exists()
    btrfs = find_module_closure(index, ["btrfs"])
    for module in btrfs:
        assert module.read() == (whole_dir / module.relpath).read_bytes(), module.relpath
    assert (modules_dir / later).stat().st_mode & 0o777 == 0o644


def _package_name(tree: Path) -> str:
    [boot] = [p.name for p in (tree / "boot").iterdir() if p.name.startswith("vmlinuz-")]
    return "linux-image-" + boot.removeprefix("vmlinuz-")


@pytest.mark.network
def test_a_build_that_loses_the_race_to_unpack_finds_its_modules(
        kernel_blob: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two builds unpack the same kernel at once for different modules (`build -j 2` of two
    platforms on a fresh cache). The one that renames its tree into place second keeps the
    winner's tree and listing, and still finds and writes its own modules from it."""
    cache = Cache(tmp_path / "cache")
    blob = cache.blob_path(kernel_blob.name)
    blob.parent.mkdir(parents=True)
    os.link(kernel_blob, blob)
    real = lazytree.extract_tar
    raced: list[Path] = []
    calls: list[int] = []

    def extract_then_lose(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        dropped = real(*args, **kwargs)
        if len(calls) == 1:  # the other build, for another module, finishes while this one unpacks
            raced.append(unpack_kernel(blob, cache, ["e1000"]))
        return dropped

    monkeypatch.setattr(lazytree, "extract_tar", extract_then_lose)
    tree = unpack_kernel(blob, cache, ["igb"])
    assert raced == [tree]
    [modules_dir] = (tree / "lib/modules").iterdir()
    igb = "kernel/drivers/net/ethernet/intel/igb/igb.ko"
    assert not (modules_dir / igb).exists()  # the winner did not need it
    closure = find_module_closure(index_modules(modules_dir), ["igb"])
    assert igb in {m.relpath for m in closure}
    assert (modules_dir / igb).is_file()
    assert [p.name for p in tree.parent.iterdir() if p.name.startswith(".")] == []


def test_one_pass_writes_the_closure_and_no_empty_folders(
        kernel_blob: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default recipe's modules need library modules from far back in the archive
    (sd_mod: t10-pi from block/, the CRCs from crypto/) and recent ones (usb-storage:
    usbcore): the pass keeps both kinds in memory, so no xz block is decompressed a second
    time, and it makes only the folders of the modules it writes."""
    cache = Cache(tmp_path / "cache")
    blob = cache.blob_path(kernel_blob.name)
    blob.parent.mkdir(parents=True)
    os.link(kernel_blob, blob)
    again: list[int] = []
    real = lazytree.read_range

    def counted(*args: Any, **kwargs: Any) -> bytes:
        again.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(lazytree, "read_range", counted)
    wanted = ["e1000", "virtio_pci", "virtio_net", "virtio_blk", "xhci_pci", "ehci_pci",
              "usb_storage", "sd_mod", "vfat", "nls_cp437", "ext4", "qemu_fw_cfg", "efivarfs"]
    tree = unpack_kernel(blob, cache, wanted)
    [modules_dir] = (tree / "lib/modules").iterdir()
    closure = find_module_closure(index_modules(modules_dir), wanted)
    assert {"t10_pi", "crct10dif_common", "usbcore", "scsi_mod"} <= {m.name for m in closure}
    assert all((modules_dir / m.relpath).is_file() for m in closure)
    assert again == []  # nothing read back from the blocks
    empty = [d for d in (modules_dir / "kernel").rglob("*") if d.is_dir() and not any(d.iterdir())]
    assert empty == []


def test_an_unpack_started_early_is_the_one_the_checks_get(
        kernel_blob: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI starts the kernel's unpacking from the lock before the checks
    (``start_unpack_kernel``); the checks' own ``unpack_kernel_apart`` waits for that one
    instead of unpacking again, and nothing is started for a tree already made."""
    cache = Cache(tmp_path / "cache")
    blob = cache.blob_path(kernel_blob.name)
    blob.parent.mkdir(parents=True)
    os.link(kernel_blob, blob)
    spawned: list[list[str]] = []
    real = kernelproc._spawn_unpack

    def counted(deb: Path, in_cache: Cache, wanted: list[str]) -> Path:
        spawned.append(wanted)
        return real(deb, in_cache, wanted)

    monkeypatch.setattr(kernelproc, "_spawn_unpack", counted)
    monkeypatch.setattr(kernelproc, "_started", {})
    kernelproc.start_unpack_kernel(blob, cache, ["virtio_net", "e1000"])
    kernelproc.start_unpack_kernel(blob, cache, ["virtio_net", "e1000"])  # once only
    tree = kernelproc.unpack_kernel_apart(blob, cache, ["e1000", "virtio_net"])
    assert spawned == [["e1000", "virtio_net"]]
    assert tree == cache.root / "unpacked" / f"{kernel_blob.name}.lazy"
    assert list((tree / "lib/modules").glob("*/kernel/drivers/net/ethernet/intel/e1000/e1000.ko"))
    monkeypatch.setattr(kernelproc, "_started", {})
    kernelproc.start_unpack_kernel(blob, cache, ["ext4"])  # the tree is made: nothing to start
    assert kernelproc._started == {} and len(spawned) == 1
