"""What a build leaves in out/ besides its own outputs: the images an earlier build made stay
through a `--no-images` build (and its manifest says whose they are), and a build stopped by
SIGINT, SIGTERM or SIGHUP leaves no staging folder and the earlier output as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EPOCH, ROOT, run_cli

PLATFORM = "x86_64-qemu_x86_64-r0"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_no_images_keeps_earlier_images(tmp_path: Path, built: Callable[[str], Path],
                                        cache_env: dict[str, str]) -> None:
    """The images of the earlier build stay, byte for byte; the manifest lists them apart from
    this build's outputs, each with the digest of the initramfs inside it."""
    out = tmp_path / "out"
    shutil.copytree(built("qemu_x86_64"), out / PLATFORM)
    before = json.loads((out / PLATFORM / "manifest.json").read_text())
    images = {n: o for n, o in before["outputs"].items()
              if n not in ("vmlinuz", "initrd.img", "sbom.cdx.json", "sbom.spdx.json")}
    assert {"uki/onie.efi", "netboot/initrd.img", f"onie-updater-{PLATFORM}"} <= set(images)

    build = ("build", "--allow-untrusted", "qemu_x86_64", "--out", str(out), "--no-lock", "--json", "--force")
    result = json.loads(run_cli(*build, "--no-images", env=cache_env).stdout)["result"][0]
    assert not result["skipped"]
    manifest = json.loads((out / PLATFORM / "manifest.json").read_text())
    assert set(manifest["outputs"]) == {"vmlinuz", "initrd.img", "sbom.cdx.json",
                                        "sbom.spdx.json"}
    kept = manifest["kept_images"]
    assert set(kept) == set(images)
    for name, info in kept.items():
        assert digest(out / PLATFORM / name) == info["sha256"] == images[name]["sha256"]
        assert info["initrd_sha256"] == before["outputs"]["initrd.img"]["sha256"]
    # A second --no-images build keeps them with the same (first) initramfs digest.
    run_cli(*build, "--no-images", env=cache_env)
    assert json.loads((out / PLATFORM / "manifest.json").read_text())["kept_images"] == kept
    # A build with images makes them again: none is "kept" any more.
    run_cli(*build, env=cache_env)
    assert "kept_images" not in json.loads((out / PLATFORM / "manifest.json").read_text())


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                              (signal.SIGHUP, 129)])
def test_signal_cleans_staging(tmp_path: Path, built: Callable[[str], Path],
                               cache_env: dict[str, str], signum: int, code: int) -> None:
    """The signal comes while the initramfs is written into the staging folder (the step's
    progress line is the marker): the build exits 128 + signal, no staging or old folder is
    left, and the earlier output is untouched."""
    out = tmp_path / "out"
    shutil.copytree(built("qemu_x86_64"), out / PLATFORM)
    earlier = {p.relative_to(out).as_posix(): digest(p)
               for p in sorted(out.rglob("*")) if p.is_file()}
    env = {**os.environ, **cache_env, "SOURCE_DATE_EPOCH": EPOCH}
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", "build", "--allow-untrusted", "qemu_x86_64", "--out", str(out),
         "--no-lock", "--force"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if "writing the initramfs" in line:
                assert any(p.name.startswith(f".{PLATFORM}.tmp-") for p in out.iterdir())
                proc.send_signal(signum)
                break
        rest = proc.stderr.read()
        assert proc.wait(timeout=120) == code, "".join(seen) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert f"interrupted ({signal.Signals(signum).name})" in rest
    assert sorted(p.name for p in out.iterdir()) == [PLATFORM]
    assert {p.relative_to(out).as_posix(): digest(p)
            for p in sorted(out.rglob("*")) if p.is_file()} == earlier
