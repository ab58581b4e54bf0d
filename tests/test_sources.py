"""Source packages: a binary's Source and Built-Using fields, the signed Sources index, and
`onie-builder sources` downloading every source of the default platform, each file checked."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from debian.deb822 import Dsc

from builder.components.apt import Archive
from builder.components.cache import Cache, sha256_file
from builder.components.sources import (
    BinarySources,
    SourceIndex,
    SourceRef,
    fetch_source,
    parse_binary_sources,
)
from builder.errors import BuildError
from tests.conftest import ROOT, run_cli

CONTROLS = [
    ({"Package": "openssl", "Version": "3.0.22-1"},
     BinarySources(SourceRef("openssl", "3.0.22-1"), ())),
    ({"Package": "libssl3", "Version": "3.0.22-1", "Source": "openssl"},
     BinarySources(SourceRef("openssl", "3.0.22-1"), ())),
    ({"Package": "busybox-static", "Version": "1:1.35.0-4+b1", "Source": "busybox (1:1.35.0-4)",
      "Built-Using": "glibc (= 2.36-9+deb12u14)"},
     BinarySources(SourceRef("busybox", "1:1.35.0-4"), (SourceRef("glibc", "2.36-9+deb12u14"),))),
    ({"Package": "linux-image-6.1.0-57-amd64", "Version": "6.1.192-3",
      "Source": "linux-signed-amd64 (6.1.192+3)", "Built-Using": "linux (= 6.1.192-3), linux (= 6.1.192-3)"},
     BinarySources(SourceRef("linux-signed-amd64", "6.1.192+3"), (SourceRef("linux", "6.1.192-3"),))),
]


@pytest.mark.parametrize(("control", "expected"), CONTROLS, ids=[c[0]["Package"] for c in CONTROLS])
def test_a_binary_names_its_sources(control: dict[str, str], expected: BinarySources) -> None:
    assert parse_binary_sources(control) == expected


@pytest.mark.parametrize(("field", "value", "message"), [
    ("Source", "busybox (1.0) junk", "Debian package x 1: bad Source field 'busybox (1.0) junk'"),
    ("Built-Using", "glibc (>= 2.36)", "Debian package x: bad Built-Using entry 'glibc (>= 2.36)'"),
])
def test_bad_fields_are_named(field: str, value: str, message: str) -> None:
    with pytest.raises(BuildError) as err:
        parse_binary_sources({"Package": "x", "Version": "1", field: value})
    assert err.value.message == message


def stanza(name: str, version: str, files: dict[str, bytes]) -> str:
    listed = "".join(f" {hashlib.sha256(d).hexdigest()} {len(d)} {n}\n" for n, d in files.items())
    return (f"Package: {name}\nBinary: {name}\nVersion: {version}\n"
            f"Directory: pool/main/{name[0]}/{name}\nChecksums-Sha256:\n{listed}\n")


def index_over(text: str, cache: Cache) -> SourceIndex:
    index = SourceIndex(Archive.from_packages_text("", "amd64", cache))
    index._indexes = [(index.archive.sources[0], text.encode())]
    return index


def test_the_index_finds_the_exact_version_and_fetches_checked_files(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache", offline=True)
    files = {"demo_1.0-2.dsc": b"dsc", "demo_1.0.orig.tar.xz": b"orig"}
    for data in files.values():
        cache.put_bytes(data)
    index = index_over(stanza("demo", "1.0-1", {"demo_1.0-1.dsc": b"old"})
                       + stanza("demo-extra", "1.0-2", {}) + stanza("demo", "1.0-2", files), cache)
    package = index.find(SourceRef("demo", "1.0-2"))
    assert package.url(package.files[0]) == "http://archive.invalid/debian/pool/main/d/demo/demo_1.0-2.dsc"
    out = tmp_path / "out"
    (out).mkdir()
    (out / "demo_1.0-2.dsc").write_bytes(b"stale")  # replaced: its digest is wrong
    written = fetch_source(package, cache, out)
    assert {p.name: p.read_bytes() for p in written} == files
    with pytest.raises(BuildError) as err:
        index.find(SourceRef("demo", "9"))
    assert err.value.message == ("Debian source package demo 9 is not in the Sources index of "
                                 "local; the index has 1.0-1, 1.0-2")


# --- the default platform, from the archive -------------------------------------------------


def point_args(lock: Path) -> list[str]:
    """The recipe and lock arguments of the point-release variant."""
    return [str(lock.with_name("point.yaml")), "--lock", str(lock)]


@pytest.fixture(scope="module")
def point_release_lock(tmp_path_factory: pytest.TempPathFactory, cache_env: dict[str, str]) -> Path:
    """A lock of the default platform's discovery-only variant (busybox, linux, glibc, gcc,
    openssl: the GPL sources the issue names) made from the point release alone (suite bookworm).

    The archive this machine reaches serves the sources of the point release, but not yet
    those of the newest security updates, nor every original tarball the installer toolset's
    sources name (dmidecode_3.4.orig.tar.xz answers 404); pinning the point release and leaving
    the toolset out keeps the test about our code, with every source really downloadable."""
    work = tmp_path_factory.mktemp("point")
    (work / "point.yaml").write_text(f"extends: {ROOT}/recipes/platforms/qemu_x86_64.yaml\n"
                                     "debian:\n  suites: [bookworm]\n"
                                     "initramfs:\n  discovery_only: true\n")
    run_cli("lock", str(work / "point.yaml"), "--lock", str(work / "point.lock"), env=cache_env)
    return work / "point.lock"


@pytest.mark.network
def test_sources_of_the_default_platform(tmp_path: Path, point_release_lock: Path,
                                         cache_env: dict[str, str],
                                         debian_archive: Callable[[str], Archive]) -> None:
    out = tmp_path / "sources"
    proc = run_cli("sources", *point_args(point_release_lock), "--out", str(out),
                   env=cache_env)
    listing = json.loads((out / "sources.json").read_text())
    assert listing["platform"] == "x86_64-qemu_x86_64-r0"
    names = {s["name"]: s for s in listing["sources"]}
    # BusyBox and the kernel (GPL-2), and glibc, which the static BusyBox has built in.
    assert {"busybox", "linux", "linux-signed-amd64", "glibc", "openssl", "gcc-12"} <= set(names)
    assert "busybox-static" in names["busybox"]["binaries"]
    assert any(b.startswith("linux-image-") for b in names["linux"]["binaries"])
    index = SourceIndex(debian_archive("amd64"))
    for source in listing["sources"]:
        package = index.find(SourceRef(source["name"], source["version"]))
        assert [f.name for f in package.files] == [f["name"] for f in source["files"]]
        for file in package.files:
            assert sha256_file(out / file.name) == file.sha256, file.name
        # Debian's own chain: the .dsc's checksums cover the other files.
        dsc = next(f.name for f in package.files if f.name.endswith(".dsc"))
        for entry in Dsc((out / dsc).read_text())["Checksums-Sha256"]:
            assert sha256_file(out / entry["name"]) == entry["sha256"], entry["name"]
        assert f"{source['name']} {source['version']}: {len(package.files)} files" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["sources.json", *(f["name"] for s in listing["sources"] for f in s["files"])])


@pytest.mark.network
def test_sources_of_one_package_and_an_unknown_one(tmp_path: Path, point_release_lock: Path,
                                                   cache_env: dict[str, str]) -> None:
    out = tmp_path / "sources"
    run_cli("sources", *point_args(point_release_lock), "--out", str(out),
            "--package", "busybox", env=cache_env)
    assert [s["name"] for s in json.loads((out / "sources.json").read_text())["sources"]] == ["busybox"]
    proc = run_cli("sources", *point_args(point_release_lock), "--out", str(out),
                   "--package", "bash", env=cache_env, check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == "error: x86_64-qemu_x86_64-r0 uses no source package 'bash'"
    assert proc.stderr.splitlines()[1].startswith("hint: its sources: busybox, gcc-12, glibc, libbsd, "
                                                  "libmd, linux,")
