"""Relative and absolute paths from any working folder (#20): `--out`, `--cache`, `--lock` and
the recipe given relative to a folder that is not the repository, one build per architecture
(arm64 once failed with a relative `--out`: the FIT source lay in a temporary folder and named
the initramfs relatively); the absolute case is every other build test's (`built` fixture).
The x86_64 build also checks the modes of what it writes under umask 022."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The CLI runs under umask 022 (it inherits this process's)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def relative_build(tmp_path: Path, cache_env: dict[str, str], name: str,
                   *extra: str) -> tuple[Path, dict[str, object]]:
    """Build shipped platform NAME from an empty folder, every path relative to it."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    recipe = os.path.relpath(ROOT / "recipes" / "platforms" / f"{name}.yaml", cwd)
    cache = os.path.relpath(cache_env["ONIE_BUILDER_CACHE"], cwd)
    proc = run_cli("--cache", cache, "build", "--allow-untrusted",
                   recipe, "--out", "out", "--json", *extra, cwd=cwd,
                   env={"ONIE_BUILDER_CACHE": "/nonexistent-use-the-cache-option"})
    summary = json.loads(proc.stdout)["result"][0]
    return cwd, summary


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.network
def test_arm64_with_relative_paths(tmp_path: Path, cache_env: dict[str, str]) -> None:
    cwd, summary = relative_build(tmp_path, cache_env, "qemu_arm64", "--no-lock")
    out = cwd / summary["out"]
    assert summary["out"] == "out/arm64-qemu_arm64-r0"
    manifest = json.loads((out / "manifest.json").read_text())
    for name in ("fit/onie.itb", "fit/boot.scr.uimg", "initrd.img", "vmlinuz"):
        assert (out / name).stat().st_size == manifest["outputs"][name]["size"], name
    # The FIT holds this build's initramfs, whole.
    assert (out / "initrd.img").read_bytes() in (out / "fit" / "onie.itb").read_bytes()


@pytest.mark.network
def test_x86_64_with_relative_paths_and_umask_022(tmp_path: Path, cache_env: dict[str, str],
                                                  umask_022: None) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    recipe = os.path.relpath(ROOT / "recipes" / "platforms" / "qemu_x86_64.yaml", cwd)
    cache = os.path.relpath(cache_env["ONIE_BUILDER_CACHE"], cwd)
    env = {"ONIE_BUILDER_CACHE": "/nonexistent-use-the-cache-option"}
    run_cli("--cache", cache, "lock", recipe, "--lock", "site.lock", cwd=cwd, env=env)
    proc = run_cli("--cache", cache, "build", "--allow-untrusted",
                   recipe, "--lock", "site.lock", "--out", "out",
                   "--json", cwd=cwd, env=env)
    out = cwd / json.loads(proc.stdout)["result"][0]["out"]
    assert out == cwd / "out" / "x86_64-qemu_x86_64-r0"
    assert mode(cwd / "site.lock") == 0o644
    assert mode(cwd / "out") == mode(out) == 0o755
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.relative_to(out).as_posix() for p in files} >= {
        "manifest.json", "vmlinuz", "initrd.img", "sbom.spdx.json", "sbom.cdx.json",
        "provenance.intoto.jsonl", "onie-updater-x86_64-qemu_x86_64-r0"}
    modes = {p.relative_to(out).as_posix(): mode(p) for p in files}
    # The updater runs as a program; objcopy makes the UKI (an EFI program) executable too.
    executables = {"onie-updater-x86_64-qemu_x86_64-r0", "uki/onie.efi"}
    assert {n: m for n, m in modes.items() if m != (0o755 if n in executables else 0o644)} == {}
    assert all(mode(p) == 0o755 for p in out.rglob("*") if p.is_dir())
