"""Shared fixtures: real Debian packages for the network-marked tests."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from builder.errors import MissingToolError
from builder.lab.qemu import find_qemu
from builder.process import find_tool

if TYPE_CHECKING:
    from builder.components.apt import Archive
    from builder.components.cache import Cache


@pytest.fixture(scope="session")
def debian_cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    """The download cache: ``$ONIE_BUILDER_CACHE`` when set (CI keeps it), else a session folder."""
    from builder.components.cache import Cache

    explicit = os.environ.get("ONIE_BUILDER_CACHE")
    if explicit:
        return Cache(Path(explicit))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # One cache for the session's workers (their temp folders share this parent): a
        # package is downloaded once; the cache's writes are atomic renames.
        return Cache(tmp_path_factory.getbasetemp().parent / "cache")
    return Cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def debian_archive(debian_cache: Cache) -> Callable[[str], Archive]:
    """A function giving the host's Debian archive for one architecture (one per arch)."""
    from builder.components.apt import Archive
    from builder.components.mirror import find_host_sources

    archives: dict[str, Archive] = {}

    def archive(arch: str) -> Archive:
        if arch not in archives:
            archives[arch] = Archive(find_host_sources(), arch, debian_cache)
        return archives[arch]

    return archive


@pytest.fixture(scope="session")
def debian_roots(
    debian_archive: Callable[[str], Archive], debian_cache: Cache
) -> Callable[..., list[Path]]:
    """A function (arch, names, depends=True) -> unpacked package folders, one per package;
    with ``depends`` the packages' Depends closure is included."""
    from builder.components.deb import unpack_deb

    def roots(arch: str, names: list[str], depends: bool = True) -> list[Path]:
        archive = debian_archive(arch)
        pkgs = archive.closure(names) if depends else [archive.find(n) for n in names]
        return [unpack_deb(archive.fetch(p), debian_cache) for p in pkgs]

    return roots


ROOT = Path(__file__).resolve().parent.parent
EPOCH = "1700000000"


def digest(path: Path) -> str:
    """A file's sha256, for comparing outputs: a failed assert then names two digests instead
    of diffing megabytes (pytest's difflib took the worker's whole timeout on one image)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``python -m builder`` as users do; the cache is shared with the other fixtures."""
    full_env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "builder", *args], cwd=cwd or ROOT,
                          env=full_env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        pytest.fail(f"onie-builder {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def cache_env(debian_cache: Cache) -> dict[str, str]:
    """Environment that points the CLI at the session's download cache."""
    return {"ONIE_BUILDER_CACHE": str(debian_cache.root)}


class Built:
    """Builds a shipped platform once per session: ``built(name)`` returns out/<platform>;
    ``built.output[out]`` keeps that build's stdout and stderr (tests/test_docs.py compares the
    README's sample output with them)."""

    def __init__(self, out: Path, cache_env: dict[str, str]) -> None:
        self.out, self.cache_env = out, cache_env
        self.output: dict[Path, subprocess.CompletedProcess[str]] = {}
        self.done: dict[str, Path] = {}

    def __call__(self, name: str) -> Path:
        if name not in self.done:
            # One --out per recipe: recipes of one platform string (lab_x86_64 extends
            # qemu_x86_64) would otherwise overwrite each other's out/<platform>.
            proc = run_cli("build", "--allow-untrusted", name, "--out", str(self.out / name), "--json",
                           "--no-lock", env=self.cache_env)
            self.done[name] = Path(json.loads(proc.stdout)["result"][0]["out"])
            self.output[self.done[name]] = proc
        return self.done[name]


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, cache_env: dict[str, str]) -> Built:
    """Shipped platforms built once per session (``Built``)."""
    return Built(tmp_path_factory.mktemp("out"), cache_env)


def unpack_initramfs(image: Path, dest: Path) -> Path:
    """Extract out/<platform>/initrd.img with the host's decompressors and GNU cpio (independent
    readers): layer by layer, at the offsets the manifest gives, which must tile the file."""
    dest.mkdir(parents=True, exist_ok=True)
    blob = (image / "initrd.img").read_bytes()
    initramfs = json.loads((image / "manifest.json").read_text())["initramfs"]
    layers = initramfs["layers"]
    assert [layer["offset"] for layer in layers] == [0, *itertools.accumulate(
        layer["size"] for layer in layers[:-1])]
    assert sum(layer["size"] for layer in layers) == len(blob)
    tool = {"xz": ["xz", "-dc"], "gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dc"],
            "none": ["cat"]}[initramfs["compression"]]
    for layer in layers:
        part = blob[layer["offset"]:layer["offset"] + layer["size"]]
        archive = subprocess.run(tool, input=part, check=True, capture_output=True).stdout
        subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=archive,
                       cwd=dest, check=True, capture_output=True)
    return dest


# --- lab tools: missing ones fail in CI (where the lab must run) and skip elsewhere -----------


def fail_or_skip(reason: str) -> NoReturn:
    """Skip when the lab cannot run here; fail loudly instead in CI, where it must run."""
    if os.environ.get("CI"):
        pytest.fail(f"lab test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, why: str) -> str:
    try:
        return find_tool(name, why)
    except MissingToolError as exc:
        fail_or_skip(exc.message)


def require_qemu(arch: str) -> str:
    try:
        return find_qemu(arch)
    except MissingToolError as exc:
        fail_or_skip(exc.message)


def wait_for_exec(pid: int, program: str) -> None:
    """Wait until ``pid`` runs ``program``: right after Popen it may still be Python or ``ip``."""
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/comm").read_text().strip() != program[:15]:
        assert time.monotonic() < deadline, f"pid {pid} never became {program}"
        time.sleep(0.02)


def require_root_netns() -> None:
    require_tool("ip", "to create network namespaces (iproute2)")
    if os.geteuid() != 0:
        fail_or_skip("network namespaces need root")
