"""Issue #20 item 5: the checks before a build must not slow builds. A package is decompressed
once for its listing and its unpacking (the kernel's lazy one too), the archive's index is
loaded once per run, and a pass of the package checks is recorded for the next build."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from test_deb import make_deb

from builder.components import deb as debmod
from builder.components import kernelproc, lazytree
from builder.components.apt import Archive
from builder.components.cache import Cache
from builder.components.deb import list_contents, unpack_deb
from builder.components.kernelproc import kernel_contents
from builder.components.resolve import Archives, Resolver, find_apt_sources
from builder.errors import BuildError
from builder.preflight import packages
from builder.process import run
from builder.recipe.load import load_recipe
from builder.recipe.search import RecipePath

PLATFORM = ROOT / "recipes" / "platforms" / "qemu_x86_64.yaml"


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every data.tar that unpack_deb, unpack_kernel or list_contents opens, in order."""
    opened: list[Path] = []
    real = debmod.data_tar

    def counted(deb: Path) -> AbstractContextManager[Any]:
        opened.append(deb)
        return real(deb)

    for module in (debmod, lazytree):
        monkeypatch.setattr(module, "data_tar", counted)
    return opened


def in_cache(cache: Cache, deb: Path) -> Path:
    return cache.put_file(deb)[1]


def test_unpacking_lists_the_package_on_the_way(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    deb = make_deb(tmp_path)
    expected = list_contents(deb, Cache(tmp_path / "other"))  # read from the data.tar
    assert expected["usr/bin/hi"] == "l:hello" and expected["usr/share/ro"] == "d"
    opened = count_reads(monkeypatch)
    cache = Cache(tmp_path / "cache")
    blob = in_cache(cache, deb)
    unpack_deb(blob, cache)
    assert list_contents(blob, cache) == expected
    assert opened == [blob]  # the unpacking's pass listed it
    fresh = Cache(tmp_path / "fresh")
    blob = in_cache(fresh, deb)
    assert list_contents(blob, fresh, unpack=True) == expected
    assert (fresh.root / "unpacked" / blob.name / "usr/bin/hello").is_file()
    assert unpack_deb(blob, fresh) == fresh.root / "unpacked" / blob.name
    assert len(opened) == 2 and opened[1] == blob  # one read for both, again


def make_kernel_deb(tmp_path: Path) -> Path:
    """A kernel-shaped package: an image, two modules (one depending on the other), a third."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is needed to build a test package")
    root = tmp_path / "kernel"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        "Package: linux-image-9.9.9-test\nVersion: 1\nArchitecture: all\n"
        "Maintainer: Test <test@example.invalid>\nDescription: a kernel for tests\n")
    (root / "boot").mkdir()
    (root / "boot/vmlinuz-9.9.9-test").write_bytes(b"kernel")
    folder = root / "lib/modules/9.9.9-test/kernel/drivers"
    folder.mkdir(parents=True)
    (folder / "a.ko").write_bytes(b"\0depends=b_dep\0")
    (folder / "b_dep.ko").write_bytes(b"\0depends=\0")
    (folder / "c.ko").write_bytes(b"\0depends=\0")
    (root / "lib/modules/9.9.9-test/build").symlink_to("/usr/src/none")
    out = tmp_path / "kernel.deb"
    run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", root, out])
    return out


def test_the_kernel_package_is_decompressed_once(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    deb = make_kernel_deb(tmp_path)
    expected = list_contents(deb, Cache(tmp_path / "other"))
    assert expected["lib/modules/9.9.9-test/kernel/drivers/c.ko"] == "f"
    assert expected["lib/modules/9.9.9-test/build"] == "l:/usr/src/none"
    opened = count_reads(monkeypatch)
    # in this process, so that its reads are counted (test_the_kernel_is_unpacked_apart)
    monkeypatch.setattr(kernelproc, "unpack_kernel_apart", lazytree.unpack_kernel)
    cache = Cache(tmp_path / "cache")
    blob = in_cache(cache, deb)
    assert kernel_contents(blob, cache, ["a"]) == expected
    tree = cache.root / "unpacked" / f"{blob.name}.lazy"
    drivers = tree / "lib/modules/9.9.9-test/kernel/drivers"
    assert sorted(p.name for p in drivers.iterdir()) == ["a.ko", "b_dep.ko"]  # c.ko left packed
    assert lazytree.unpack_kernel(blob, cache, ["a"]) == tree
    assert kernel_contents(blob, cache, ["a"]) == expected
    assert opened == [blob]


def test_the_kernel_is_unpacked_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel not unpacked yet is unpacked in a process of its own (this one reads nothing
    of it), into the same tree; once made, the tree is found here without a process."""
    deb = make_kernel_deb(tmp_path)
    opened = count_reads(monkeypatch)
    cache = Cache(tmp_path / "cache")
    blob = in_cache(cache, deb)
    tree = kernelproc.unpack_kernel_apart(blob, cache, ["a"])
    assert tree == cache.root / "unpacked" / f"{blob.name}.lazy"
    drivers = tree / "lib/modules/9.9.9-test/kernel/drivers"
    assert sorted(p.name for p in drivers.iterdir()) == ["a.ko", "b_dep.ko"]
    assert opened == []
    monkeypatch.setattr(kernelproc, "ProcessPoolExecutor", None)  # no process the second time
    assert kernelproc.unpack_kernel_apart(blob, cache, ["a"]) == tree
    assert kernel_contents(blob, cache, ["a"])["lib/modules/9.9.9-test/kernel/drivers/c.ko"] == "f"
    assert opened == []


def test_a_failure_in_the_kernels_process_is_a_build_error(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    blob = in_cache(cache, make_kernel_deb(tmp_path))
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    start = data.rindex(b"\xfd7zXZ")  # the data.tar.xz (the control.tar.xz comes first)
    data[start + 40:start + 80] = bytes(40)  # its compressed bytes damaged
    blob.write_bytes(bytes(data))
    with pytest.raises(BuildError, match=r"corrupt|unpacking failed|truncated"):
        kernelproc.unpack_kernel_apart(blob, cache, ["a"])


@pytest.mark.network
def test_package_checks_share_the_index_and_record_a_pass(
        tmp_path: Path, debian_cache: Cache, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[Archive] = []
    real_load = Archive._load

    def load(self: Archive) -> Any:
        loads.append(self)
        return real_load(self)

    monkeypatch.setattr(Archive, "_load", load)
    recipe, merged = load_recipe(PLATFORM, RecipePath())
    sources = find_apt_sources(recipe, None)
    archives: Archives = {}
    first = Resolver(recipe, debian_cache, sources, archives=archives)
    assert packages.check_packages(first, merged) == []
    second = Resolver(recipe, debian_cache, sources, archives=archives)
    assert second.archive is first.archive and len(loads) == 1

    def no_listing(*_: object) -> Iterator[None]:
        raise AssertionError("a recorded pass lists no package")

    with monkeypatch.context() as patch:
        patch.setattr(packages, "list_contents", no_listing)
        patch.setattr(packages, "kernel_contents", no_listing)
        assert packages.check_packages(second, merged) == []
        assert len(loads) == 1  # the build's resolver (the same one) loads nothing again

    # Another question (one binary more) is not answered by that record.
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {PLATFORM}\ninitramfs:\n  components+:\n"
                     "    - debian: busybox-static\n      binaries: [/bin/no-such-binary]\n")
    recipe, merged = load_recipe(child, RecipePath())
    found = packages.check_packages(Resolver(recipe, debian_cache, sources, archives=archives),
                                    merged)
    assert len(found) == 1 and "/bin/no-such-binary is not a file in Debian package " \
        "busybox-static" in found[0], found
    assert len(loads) == 1


def test_a_corrupt_package_fails_its_listing_unpacked_or_not(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    blob = in_cache(cache, make_deb(tmp_path))
    data = bytearray(blob.read_bytes())
    data[-40:] = b"\0" * 40
    broken = tmp_path / "broken.deb"
    broken.write_bytes(bytes(data))
    broken_blob = in_cache(cache, broken)
    for unpack in (False, True):
        with pytest.raises(BuildError, match=r"corrupt|unpacking failed"):
            list_contents(broken_blob, cache, unpack=unpack)
