"""Tests for builder.initramfs.cpio: newc archives read back by GNU cpio, determinism and compression."""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import zstandard

from builder.errors import BuildError
from builder.initramfs.cpio import Layer, compress, make_initramfs, render_cpio, render_layers
from builder.initramfs.tree import Kind, Tree
from builder.recipe.formats import Compression

MTIME = 1_700_000_000  # 2023-11-14 22:13:20 UTC
ROOT = os.geteuid() == 0


def need(tool: str) -> str:
    """The tool's path; CI fails without it, a developer's machine skips."""
    path = shutil.which(tool)
    if path is None:
        message = f"'{tool}' is not installed (apt-get install {tool})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def tool(*argv: str, data: bytes = b"") -> str:
    """Run a host tool on ``data`` in UTC and return its output."""
    proc = subprocess.run([need(argv[0]), *argv[1:]], input=data, capture_output=True,
                          check=True, env={"PATH": os.environ["PATH"], "TZ": "UTC", "LC_ALL": "C"})
    return proc.stdout.decode()


def sample_tree(devices: bool = True) -> Tree:
    tree = Tree()
    tree.add_dir("/tmp", mode=0o1777)
    tree.add_file("/etc/motd", data=b"welcome to onie\n", origin="test")
    tree.add_file("/bin/tool", data=b"#!/bin/sh\necho hi\n", mode=0o755, origin="test")
    tree.add_symlink("/bin/sh", "busybox", origin="test")
    if devices:
        tree.add_device("/dev/console", Kind.CHAR, 5, 1, origin="test")
        tree.add_device("/dev/sda", Kind.BLOCK, 8, 0, mode=0o660, origin="test")
    return tree


def parse_newc(archive: bytes) -> list[tuple[str, list[int], bytes]]:
    """Each member as (name, the 13 header fields, data), checking the 4-byte alignment."""
    members = []
    offset = 0
    while True:
        assert offset % 4 == 0
        assert archive[offset:offset + 6] == b"070701"
        fields = [int(archive[offset + 6 + 8 * i:offset + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_end = offset + 110 + namesize
        assert archive[name_end - 1] == 0
        name = archive[offset + 110:name_end - 1].decode()
        data_start = name_end + (-name_end % 4)
        assert archive[name_end:data_start].strip(b"\0") == b""
        data = archive[data_start:data_start + filesize]
        members.append((name, fields, data))
        offset = data_start + filesize + (-filesize % 4)
        if name == "TRAILER!!!":
            assert offset == len(archive)
            return members


# mode, uid, gid, size or "major, minor", name and symlink target as `cpio -itvn` shows them
LISTING = [
    ("drwxr-xr-x", "0", "0", "0", "."),
    ("drwxr-xr-x", "0", "0", "0", "bin"),
    ("lrwxrwxrwx", "0", "0", "7", "bin/sh -> busybox"),
    ("-rwxr-xr-x", "0", "0", "18", "bin/tool"),
    ("drwxr-xr-x", "0", "0", "0", "dev"),
    ("crw-------", "0", "0", "5, 1", "dev/console"),
    ("brw-rw----", "0", "0", "8, 0", "dev/sda"),
    ("drwxr-xr-x", "0", "0", "0", "etc"),
    ("-rw-r--r--", "0", "0", "16", "etc/motd"),
    ("drwxrwxrwt", "0", "0", "0", "tmp"),
]


def test_gnu_cpio_lists_names_modes_devices_and_owners() -> None:
    listing = tool("cpio", "-itvn", "--quiet", data=render_cpio(sample_tree(), MTIME))
    rows = []
    for line in listing.splitlines():
        mode, _nlink, uid, gid, *rest = line.split()
        size_words = 2 if mode[0] in "cb" else 1  # devices show "major, minor"
        size, date, name = rest[:size_words], rest[size_words:size_words + 3], rest[size_words + 3:]
        assert date == ["Nov", "14", "2023"], line
        rows.append((mode, uid, gid, " ".join(size), " ".join(name)))
    assert rows == LISTING


def test_gnu_cpio_extracts_content_modes_and_links(tmp_path: Path) -> None:
    tree = sample_tree(devices=ROOT)  # mknod needs root; the listing test covers devices
    tool("cpio", "-idm", "--quiet", "--no-absolute-filenames", "-D", str(tmp_path),
         data=render_cpio(tree, MTIME))
    for entry in list(tree.entries())[1:]:  # cpio leaves the -D folder itself alone
        host = tmp_path / entry.path.lstrip("/")
        st = host.lstat()
        assert stat.S_IFMT(st.st_mode) == entry.kind.value, entry.path
        assert stat.S_IMODE(st.st_mode) == entry.mode, entry.path
        if entry.kind is Kind.FILE:
            assert host.read_bytes() == entry.content()
        if entry.kind is Kind.SYMLINK:
            assert os.readlink(host) == entry.target
        if entry.kind in (Kind.CHAR, Kind.BLOCK):
            assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == entry.rdev
        if entry.kind not in (Kind.DIR, Kind.SYMLINK):  # cpio -m skips those
            assert st.st_mtime == MTIME, entry.path


def test_header_fields() -> None:
    members = parse_newc(render_cpio(sample_tree(), MTIME))
    assert [m[0] for m in members] == [
        ".", "bin", "bin/sh", "bin/tool", "dev", "dev/console", "dev/sda", "etc", "etc/motd",
        "tmp", "TRAILER!!!",
    ]
    for ino, (name, fields, _data) in enumerate(members[:-1], start=1):
        _, mode, uid, gid, nlink, mtime, _, devmaj, devmin, _, _, _, check = fields
        assert (fields[0], uid, gid, mtime, devmaj, devmin, check) == (ino, 0, 0, MTIME, 0, 0, 0)
        assert nlink == (2 if stat.S_ISDIR(mode) else 1), name
    console = dict((m[0], m[1]) for m in members)["dev/console"]
    assert (console[1], console[9], console[10]) == (0o020600, 5, 1)
    assert members[-1][1] == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0]


def test_same_tree_gives_same_bytes() -> None:
    assert render_cpio(sample_tree(), MTIME) == render_cpio(sample_tree(), MTIME)


def test_insertion_order_does_not_matter() -> None:
    backwards = Tree()
    backwards.add_device("/dev/sda", Kind.BLOCK, 8, 0, mode=0o660, origin="test")
    backwards.add_device("/dev/console", Kind.CHAR, 5, 1, origin="test")
    backwards.add_symlink("/bin/sh", "busybox", origin="test")
    backwards.add_file("/bin/tool", data=b"#!/bin/sh\necho hi\n", mode=0o755, origin="test")
    backwards.add_file("/etc/motd", data=b"welcome to onie\n", origin="test")
    backwards.add_dir("/tmp", mode=0o1777)
    assert render_cpio(backwards, MTIME) == render_cpio(sample_tree(), MTIME)


def test_mtime_changes_only_with_source_date_epoch() -> None:
    assert render_cpio(sample_tree(), MTIME) != render_cpio(sample_tree(), MTIME + 1)


@pytest.mark.parametrize("mtime", [-1, 1 << 32])
def test_mtime_outside_32_bits_is_refused(mtime: int) -> None:
    with pytest.raises(BuildError) as info:
        render_cpio(sample_tree(), mtime)
    assert info.value.message == (
        f"SOURCE_DATE_EPOCH {mtime} does not fit the cpio's 32-bit mtime")


def test_every_name_and_size_length_mod_4_round_trips(tmp_path: Path) -> None:
    tree = Tree()
    for name_len in range(1, 9):
        for size in range(9):
            name = f"{size}" + "n" * (name_len - 1)
            tree.add_file(f"/p/{name}", data=bytes(range(1, size + 1)), origin="test")
    archive = render_cpio(tree, MTIME)
    parsed = {name: data for name, _, data in parse_newc(archive)}
    tool("cpio", "-idm", "--quiet", "--no-absolute-filenames", "-D", str(tmp_path), data=archive)
    for entry in tree.entries():
        if entry.kind is Kind.FILE:
            assert parsed[entry.path[1:]] == entry.content(), entry.path
            assert (tmp_path / entry.path[1:]).read_bytes() == entry.content(), entry.path


def xz_check(blob: bytes, tmp_path: Path) -> str:
    path = tmp_path / "archive.xz"
    path.write_bytes(blob)
    tool("xz", "-t", str(path))
    for line in tool("xz", "--robot", "-lv", str(path)).splitlines():
        if line.startswith("stream\t"):
            return line.split("\t")[8]  # the check column (xz(1), "Robot mode")
    raise AssertionError("no stream line in xz --robot -lv")


@pytest.mark.parametrize("compression", [Compression.XZ, Compression.GZIP, Compression.ZSTD])
def test_compression_round_trips_and_is_reproducible(compression: Compression,
                                                     tmp_path: Path) -> None:
    raw = render_cpio(sample_tree(), MTIME)
    blob = compress(raw, compression)
    assert blob == compress(raw, compression)
    if compression is Compression.XZ:
        # The kernel's xz decoder knows CRC32 but not xz's default CRC64.
        assert xz_check(blob, tmp_path) == "CRC32"
        assert lzma.decompress(blob) == raw
    elif compression is Compression.GZIP:
        tool("gzip", "-t", data=blob)
        assert blob[3] == 0 and blob[4:8] == b"\0\0\0\0"  # no name, no mtime
        assert gzip.decompress(blob) == raw
    else:
        tool("zstd", "-t", data=blob)
        assert zstandard.ZstdDecompressor().decompress(blob) == raw
    assert tool("cpio", "-it", "--quiet", data=raw) == tool(
        "cpio", "-it", "--quiet", data=tool_decompress(compression, blob))


def tool_decompress(compression: Compression, blob: bytes) -> bytes:
    """Decompress with the host tool, as an independent reader."""
    argv = {Compression.XZ: "xz", Compression.GZIP: "gzip", Compression.ZSTD: "zstd"}
    return subprocess.run([need(argv[compression]), "-dc"], input=blob, capture_output=True,
                          check=True).stdout


def test_xz_level_is_passed_on() -> None:
    raw = render_cpio(sample_tree(), MTIME) * 50
    assert compress(raw, Compression.XZ, 0) != compress(raw, Compression.XZ, 6)


def test_none_leaves_data_alone() -> None:
    raw = render_cpio(sample_tree(), MTIME)
    assert compress(raw, Compression.NONE) is raw


@pytest.mark.parametrize(("compression", "level", "message"), [
    (Compression.XZ, 10, "xz level 10 is out of range: expected 0 to 9"),
    (Compression.GZIP, 0, "gzip level 0 is out of range: expected 1 to 9"),
    (Compression.ZSTD, 22, "zstd level 22 is out of range: expected 1 to 19"),
])
def test_bad_level_is_refused(compression: Compression, level: int, message: str) -> None:
    with pytest.raises(BuildError) as info:
        compress(b"data", compression, level)
    assert info.value.message == message


def layered_tree() -> Tree:
    """A tree with an entry for each layer: recipe files, a component's program, a module."""
    tree = sample_tree()
    tree.add_file("/usr/bin/openssl", data=b"\x7fELF" + bytes(range(256)) * 8, mode=0o755,
                  origin="debian:openssl=3.0.22-1")
    tree.add_file("/lib/modules/6.1.0-1-amd64/kernel/fs/ext4/ext4.ko", data=b"\x7fELF module",
                  origin="debian:linux-image-6.1.0-1-amd64=6.1.1-1")
    tree.add_file("/lib/modules/6.1.0-1-amd64/modules.dep", data=b"kernel/fs/ext4/ext4.ko:\n",
                  origin="debian:linux-image-6.1.0-1-amd64=6.1.1-1")
    tree.add_file("/usr/share/keys/k.pub", data=b"key", origin="trust:k.pub")
    return tree


def test_layers_split_by_origin_with_folders_first() -> None:
    segments = render_layers(layered_tree(), MTIME)
    assert [s.layer for s in segments] == [Layer.FILES, Layer.PROGRAMS, Layer.MODULES]
    names = {s.layer: [m[0] for m in parse_newc(s.archive)] for s in segments}
    assert names[Layer.PROGRAMS] == ["usr/bin/openssl", "TRAILER!!!"]
    assert names[Layer.MODULES] == ["lib/modules/6.1.0-1-amd64/kernel/fs/ext4/ext4.ko",
                                    "lib/modules/6.1.0-1-amd64/modules.dep", "TRAILER!!!"]
    # Every folder, link and device is in the first layer, before any file that needs it.
    assert "lib/modules/6.1.0-1-amd64/kernel/fs/ext4" in names[Layer.FILES]
    assert {"bin/sh", "dev/console", "usr/share/keys/k.pub", "etc/motd"} <= set(names[Layer.FILES])
    assert [s.entries for s in segments] == [len(names[s.layer]) - 1 for s in segments]


def test_a_layer_does_not_change_when_another_does() -> None:
    before = {s.layer: s.archive for s in render_layers(layered_tree(), MTIME)}
    tree = layered_tree()
    tree.add_file("/etc/aaa-first-by-name", data=b"new", origin="template:extra.j2")
    after = {s.layer: s.archive for s in render_layers(tree, MTIME)}
    assert after[Layer.FILES] != before[Layer.FILES]
    assert after[Layer.PROGRAMS] == before[Layer.PROGRAMS]
    assert after[Layer.MODULES] == before[Layer.MODULES]


def test_inode_numbers_are_unique_across_layers() -> None:
    inodes = [m[1][0] for s in render_layers(layered_tree(), MTIME)
              for m in parse_newc(s.archive) if m[0] != "TRAILER!!!"]
    assert len(inodes) == len(set(inodes)) == len(layered_tree())


def test_layers_read_back_by_gnu_cpio_give_the_whole_tree(tmp_path: Path) -> None:
    need("cpio")
    whole = tool("cpio", "-itvn", "--quiet", data=render_cpio(layered_tree(), MTIME)).splitlines()
    parts = [line for s in render_layers(layered_tree(), MTIME)
             for line in tool("cpio", "-itvn", "--quiet", data=s.archive).splitlines()]
    assert sorted(parts) == sorted(whole)


@pytest.mark.parametrize("compression", list(Compression))
def test_make_initramfs_writes_layers_each_compressed(tmp_path: Path,
                                                      compression: Compression) -> None:
    out = tmp_path / "initrd.img"
    layers = make_initramfs(layered_tree(), out, MTIME, compression, x86=True, jobs=2)
    blob = out.read_bytes()
    assert [w.layer for w in layers] == [Layer.FILES, Layer.PROGRAMS, Layer.MODULES]
    assert layers[0].offset == 0 and layers[-1].offset + layers[-1].size == len(blob)
    decompress = {Compression.XZ: lzma.decompress, Compression.GZIP: gzip.decompress,
                  Compression.ZSTD: zstandard.ZstdDecompressor().decompress,
                  Compression.NONE: bytes}[compression]
    for w, segment in zip(layers, render_layers(layered_tree(), MTIME), strict=True):
        part = blob[w.offset:w.offset + w.size]
        assert w.offset + w.size <= len(blob) and w.sha256 == hashlib.sha256(part).hexdigest()
        assert decompress(part) == segment.archive
        assert w.archive_sha256 == hashlib.sha256(segment.archive).hexdigest()
        assert w.entries == segment.entries
    assert sorted(p.name for p in tmp_path.iterdir()) == ["initrd.img"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_only_the_programs_layer_gets_the_x86_filter(tmp_path: Path) -> None:
    seen: list[tuple[bytes, bool]] = []

    def record(data: bytes, compression: Compression, level: int | None, x86: bool) -> bytes:
        seen.append((data, x86))
        return compress(data, compression, level, x86=x86)

    make_initramfs(layered_tree(), tmp_path / "i", MTIME, Compression.XZ, x86=True, compressor=record)
    assert [x86 for _, x86 in seen] == [False, True, False]
    seen.clear()
    make_initramfs(layered_tree(), tmp_path / "i", MTIME, Compression.XZ, x86=False, compressor=record)
    assert [x86 for _, x86 in seen] == [False, False, False]


def test_make_initramfs_keeps_previous_file_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "initrd.gz"
    out.write_bytes(b"previous build")
    source = tmp_path / "vanishing"
    source.write_bytes(b"here for now")
    tree = sample_tree()
    tree.add_file("/bin/gone", source=source, origin="overlay acme")
    source.unlink()
    with pytest.raises(BuildError) as info:
        make_initramfs(tree, out, MTIME, Compression.GZIP)
    assert info.value.message == (
        f"cannot read {source} for /bin/gone (from overlay acme): No such file or directory")
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert out.read_bytes() == b"previous build"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["initrd.gz"]


def test_make_initramfs_cleans_up_when_the_write_fails(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "initrd.zst"
    out.write_bytes(b"previous build")

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        make_initramfs(sample_tree(), out, MTIME, Compression.ZSTD)
    assert out.read_bytes() == b"previous build"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["initrd.zst"]


def test_xz_x86_filter_is_recorded_in_the_stream(tmp_path: Path) -> None:
    raw = b"\xe8\x00\x00\x00\x00" * 4096 + bytes(range(256)) * 64
    plain, x86 = compress(raw, Compression.XZ), compress(raw, Compression.XZ, x86=True)
    assert plain != x86
    for blob in (plain, x86):
        (tmp_path / "a.xz").write_bytes(blob)
        listing = subprocess.run(["xz", "--robot", "-lvv", str(tmp_path / "a.xz")],
                                 capture_output=True, text=True, check=True).stdout
        assert "CRC32" in listing
        assert ("--x86 " in listing) is (blob is x86)
        assert lzma.decompress(blob) == raw
