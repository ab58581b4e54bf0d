"""Tests for builder.components.deb: unpacking .deb files into cached trees, and refusing hostile ones."""

from __future__ import annotations

import gzip
import io
import lzma
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from builder.components import deb as debmod
from builder.components.cache import Cache, sha256_file
from builder.components.deb import unpack_deb
from builder.components.unpacked import package_mode
from builder.errors import BuildError
from builder.process import run

CONTROL = """\
Package: hello
Version: 1.0
Architecture: all
Maintainer: Test <test@example.invalid>
Description: a tiny package for tests
"""


def make_deb(tmp_path: Path, compression: str = "xz") -> Path:
    """Build a .deb with dpkg-deb: files, modes, symlinks, a hard link, a read-only folder."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is needed to build a test package")
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN").chmod(0o755)
    (root / "DEBIAN/control").write_text(CONTROL)
    for folder in ("usr/bin", "usr/sbin", "etc", "bin", "usr/share/ro"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "usr/bin/hello").write_bytes(b"#!/bin/sh\necho hello\n")
    (root / "usr/bin/hello").chmod(0o755)
    os.link(root / "usr/bin/hello", root / "usr/bin/hello-hard")
    (root / "usr/sbin/suid").write_bytes(b"x")
    (root / "usr/sbin/suid").chmod(0o4755)
    (root / "etc/hello.conf").write_text("greeting=hi\n")
    (root / "etc/hello.conf").chmod(0o640)
    (root / "usr/bin/hi").symlink_to("hello")
    (root / "bin/abs").symlink_to("/usr/bin/hello")
    (root / "usr/share/ro/file").write_text("inside a read-only folder\n")
    (root / "usr/share/ro").chmod(0o555)
    out = tmp_path / f"hello_{compression}.deb"
    run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", root, out])
    return out


def make_ar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """Write an ar archive by hand (man 5 ar), so members dpkg-deb refuses can be tested."""
    data = b"!<arch>\n"
    for name, content in members:
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{0o100644:<8o}{len(content):<10}`\n"
        data += header.encode() + content + (b"\n" if len(content) % 2 else b"")
    path.write_bytes(data)
    return path


def make_tar(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for entry in entries:
            info, content = entry if isinstance(entry, tuple) else (entry, b"")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644,
         linkname: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.mode, member.linkname = kind, mode, linkname
    return member


def raw_deb(tmp_path: Path, entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]],
            name: str = "data.tar.gz") -> Path:
    data = make_tar(entries)
    data = gzip.compress(data) if name.endswith(".gz") else data
    return make_ar(tmp_path / "hand.deb", [("debian-binary", b"2.0\n"),
                                           ("control.tar.gz", gzip.compress(make_tar([]))),
                                           (name, data)])


@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd", "none"])
def test_unpack_deb(tmp_path: Path, compression: str) -> None:
    deb = make_deb(tmp_path, compression)
    cache = Cache(tmp_path / "cache")
    tree = unpack_deb(deb, cache)
    assert tree == cache.root / "unpacked" / sha256_file(deb)
    assert (tree / "usr/bin/hello").read_bytes() == b"#!/bin/sh\necho hello\n"
    assert stat.S_IMODE((tree / "usr/bin/hello").stat().st_mode) == 0o755
    # The cache keeps no setuid file; the package's mode is written down beside the tree.
    assert stat.S_IMODE((tree / "usr/sbin/suid").stat().st_mode) == 0o755
    assert package_mode(tree, tree / "usr/sbin/suid") == 0o4755
    assert package_mode(tree, tree / "usr/bin/hello") == 0o755
    assert stat.S_IMODE((tree / "etc/hello.conf").stat().st_mode) == 0o640
    assert stat.S_IMODE((tree / "usr/share/ro").stat().st_mode) == 0o555
    assert (tree / "usr/share/ro/file").is_file()
    assert os.readlink(tree / "usr/bin/hi") == "hello"
    assert os.readlink(tree / "bin/abs") == "/usr/bin/hello"  # kept as is, never followed
    assert (tree / "usr/bin/hello-hard").stat().st_ino == (tree / "usr/bin/hello").stat().st_ino
    assert not (tree / "DEBIAN").exists()
    # No temporary left; the modes file beside the tree.
    assert sorted(p.name for p in tree.parent.iterdir()) == [tree.name, f"{tree.name}.modes.json"]


def test_unpack_deb_second_call_is_a_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deb = make_deb(tmp_path)
    cache = Cache(tmp_path / "cache")
    tree = unpack_deb(deb, cache)

    def fail(*args: object) -> None:
        raise AssertionError("extracted twice")

    monkeypatch.setattr(debmod, "extract_tar", fail)
    assert unpack_deb(deb, cache) == tree


def test_unpack_cached_blob_is_not_hashed_again(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    deb = make_deb(tmp_path)
    cache = Cache(tmp_path / "cache")
    digest, blob = cache.put_file(deb)
    monkeypatch.setattr(debmod, "sha256_file", lambda path: pytest.fail(f"hashed {path}"))
    assert unpack_deb(blob, cache) == cache.root / "unpacked" / digest


def test_unpack_deb_lost_race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When another build renames its tree in first, that tree is used and ours is removed."""
    deb = make_deb(tmp_path)
    cache = Cache(tmp_path / "cache")
    final = cache.root / "unpacked" / sha256_file(deb)
    extract = debmod.extract_tar

    def extract_then_lose(tar: tarfile.TarFile, root: Path, path: Path,
                          **options: Any) -> None:
        extract(tar, root, path, **options)
        final.mkdir()
        (final / "theirs").write_text("")

    monkeypatch.setattr(debmod, "extract_tar", extract_then_lose)
    assert unpack_deb(deb, cache) == final
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]
    assert (final / "theirs").exists()


@pytest.mark.parametrize(("member", "shown"), [
    ("../evil", "'../evil'"),
    ("./usr/../../evil", "'./usr/../../evil'"),
    ("/etc/evil", "'/etc/evil'"),
])
def test_unpack_refuses_escapes(tmp_path: Path, member: str, shown: str) -> None:
    deb = raw_deb(tmp_path, [info("./", tarfile.DIRTYPE, 0o755), (info(member), b"pwned")])
    cache = Cache(tmp_path / "cache")
    with pytest.raises(BuildError) as exc:
        unpack_deb(deb, cache)
    assert exc.value.message == (
        f"{deb}: refusing to unpack {shown}: absolute paths and '..' are not allowed")
    assert not (tmp_path / "evil").exists()
    assert list((cache.root / "unpacked").iterdir()) == []


def test_unpack_refuses_writing_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    deb = raw_deb(tmp_path, [info("./lnk", tarfile.SYMTYPE, 0o777, str(outside)),
                             (info("./lnk/evil"), b"pwned")])
    with pytest.raises(BuildError) as exc:
        unpack_deb(deb, Cache(tmp_path / "cache"))
    assert exc.value.message == (
        f"{deb}: refusing to unpack './lnk/evil': it lies below the symlink 'lnk'")
    assert list(outside.iterdir()) == []


def test_unpack_refuses_a_folder_over_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    deb = raw_deb(tmp_path, [info("./lnk", tarfile.SYMTYPE, 0o777, str(outside)),
                             info("./lnk/", tarfile.DIRTYPE, 0o777)])
    with pytest.raises(BuildError) as exc:
        unpack_deb(deb, Cache(tmp_path / "cache"))
    assert exc.value.message == (
        f"{deb}: refusing to unpack './lnk': a folder over the symlink of the same name")
    assert stat.S_IMODE(outside.stat().st_mode) == 0o755


def test_unpack_refuses_hard_link_out_of_the_tree(tmp_path: Path) -> None:
    deb = raw_deb(tmp_path, [info("./passwd", tarfile.LNKTYPE, linkname="../../etc/passwd")])
    with pytest.raises(BuildError, match=r"refusing to unpack '\.\./\.\./etc/passwd'"):
        unpack_deb(deb, Cache(tmp_path / "cache"))


def test_unpack_skips_device_nodes(tmp_path: Path) -> None:
    deb = raw_deb(tmp_path, [info("./dev/", tarfile.DIRTYPE, 0o755),
                             info("./dev/null", tarfile.CHRTYPE, 0o666),
                             info("./dev/fifo", tarfile.FIFOTYPE, 0o600),
                             (info("./dev/README"), b"no nodes here\n")],
                  name="data.tar")
    tree = unpack_deb(deb, Cache(tmp_path / "cache"))
    assert sorted(p.name for p in (tree / "dev").iterdir()) == ["README"]
    assert stat.S_IMODE(tree.stat().st_mode) == 0o755


@pytest.mark.parametrize(("content", "message"), [
    (b"PK\x03\x04 not an ar archive", "not a Debian package (no ar archive header)"),
    (None, "not a Debian package (no data.tar member)"),
])
def test_unpack_not_a_deb(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "x.deb"
    if content is None:
        make_ar(path, [("debian-binary", b"2.0\n")])
    else:
        path.write_bytes(content)
    with pytest.raises(BuildError) as exc:
        unpack_deb(path, Cache(tmp_path / "cache"))
    assert exc.value.message == f"{path}: {message}"


def test_unpack_corrupt_data(tmp_path: Path) -> None:
    data = lzma.compress(make_tar([(info("./a"), b"a" * 10000)]))
    deb = make_ar(tmp_path / "bad.deb", [("debian-binary", b"2.0\n"),
                                         ("data.tar.xz", data[: len(data) // 2])])
    cache = Cache(tmp_path / "cache")
    with pytest.raises(BuildError, match=r"bad\.deb: corrupt data\.tar\.xz: "):
        unpack_deb(deb, cache)
    assert list((cache.root / "unpacked").iterdir()) == []


def test_a_kept_listing_read_again_is_marked_used(tmp_path: Path) -> None:
    """`cache prune` removes the least recently used entries first: a package listing that a
    build reads must count as used, or a size bound would drop it before idle ones."""
    cache = Cache(tmp_path / "cache")
    digest = "ab" * 32
    debmod.save_contents(cache, digest, {"usr/bin/x": "f"})
    [saved] = (tmp_path / "cache").rglob(f"*{digest}*")
    os.utime(saved, (1_000_000, 1_000_000))
    assert debmod.cached_contents(cache, digest) == {"usr/bin/x": "f"}
    assert saved.stat().st_mtime > 1_000_000
