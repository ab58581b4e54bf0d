"""`build --all -j N`: platforms built in parallel worker processes sharing one cache, a
summary table, and one platform's failure neither stopping the others nor hiding in the
exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from builder.batch import Outcome, render_summary
from builder.result import BuildResult
from tests.conftest import ROOT, digest, run_cli
from tests.test_json import check_envelope

PLATFORM = "x86_64-qemu_x86_64-r0"


def test_summary_table() -> None:
    ok = Outcome(Path("a.yaml"), "x86_64-a-r0", 3.25, result=BuildResult(
        "x86_64-a-r0", Path("out/x86_64-a-r0"), {"vmlinuz": {"size": 2_000_000},
                                                  "initrd.img": {"size": 500_000}}, False, 3.2))
    bad = Outcome(Path("b.yaml"), "arm64-b-r0", 0.5, error="unknown kernel module 'x'\nmore",
                  exit_code=1)
    assert render_summary([ok, bad], 4.0).splitlines() == [
        "platform     result  seconds  outputs  size MB",
        "x86_64-a-r0  built       3.2        2      2.5",
        "arm64-b-r0   FAILED      0.5        -        -",
        "1 of 2 platforms built in 4.0 s; 1 failed:",
        "  arm64-b-r0: unknown kernel module 'x'",
        "    more",
    ]


def make_recipes(work: Path) -> Path:
    """A recipes folder: the default platform, a vendor x86 platform sharing its packages
    (both fetch and unpack the same kernel and BusyBox at once), and a broken platform."""
    recipes = work / "recipes"
    shutil.copytree(ROOT / "recipes" / "base", recipes / "base")
    (recipes / "platforms").mkdir()
    for name in ("qemu_x86_64", "accton_as7726_32x"):
        shutil.copyfile(ROOT / "recipes" / "platforms" / f"{name}.yaml",
                        recipes / "platforms" / f"{name}.yaml")
    (recipes / "platforms" / "broken.yaml").write_text(
        "extends: qemu_x86_64.yaml\nplatform:\n  vendor: qemu\n  machine: qemu_broken\n"
        "kernel:\n  modules+: [no_such_module]\n")
    return recipes


@pytest.mark.network
def test_build_all_in_parallel_with_a_fresh_shared_cache(tmp_path: Path) -> None:
    recipes = make_recipes(tmp_path)
    env = {"ONIE_BUILDER_RECIPES": str(recipes), "ONIE_BUILDER_CACHE": str(tmp_path / "cache")}
    # Named, as --all would also build the shipped platforms the recipe folder is layered over.
    proc = run_cli("build", "--allow-untrusted",
                   "-j", "2", "qemu_x86_64", "accton_as7726_32x", "broken", "--no-lock",
                   "--out", str(tmp_path / "out"), cwd=tmp_path, env=env, check=False)
    assert proc.returncode == 1, proc.stderr
    table = proc.stdout.splitlines()
    assert table[0].split() == ["platform", "result", "seconds", "outputs", "size", "MB"]
    rows = {line.split()[0]: line.split()[1] for line in table[1:4]}
    assert rows == {"x86_64-accton_as7726_32x-r0": "built", "x86_64-qemu_broken-r0": "FAILED",
                    PLATFORM: "built"}
    assert table[4] == f"2 of 3 platforms built in {table[4].split()[6]} s; 1 failed:"
    assert ("x86_64-qemu_broken-r0: recipes/platforms/broken.yaml:6: kernel.modules[14]: "
            "unknown kernel module 'no_such_module'") in proc.stdout
    # Built concurrently from an empty cache, the outputs equal a plain build from the
    # (now warm) cache made right after.
    run_cli("build", "--allow-untrusted",
            "qemu_x86_64", "--no-lock", "--out", str(tmp_path / "plain"), cwd=tmp_path,
            env=env)
    ours, reference = tmp_path / "out" / PLATFORM, tmp_path / "plain" / PLATFORM
    for name in ("vmlinuz", "initrd.img", f"onie-updater-{PLATFORM}", "uki/onie.efi"):
        assert digest(ours / name) == digest(reference / name), name
    assert not (tmp_path / "out" / "x86_64-qemu_broken-r0").exists()


def test_all_refuses_names(tmp_path: Path) -> None:
    proc = run_cli("build", "--allow-untrusted",
                   "--all", "qemu_x86_64", "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: --all builds every platform: name none, or drop --all"


@pytest.mark.network
def test_json_summary_and_up_to_date(tmp_path: Path, cache_env: dict[str, str]) -> None:
    recipes = make_recipes(tmp_path)
    (recipes / "platforms" / "broken.yaml").unlink()
    (recipes / "platforms" / "accton_as7726_32x.yaml").unlink()
    env = {**cache_env, "ONIE_BUILDER_RECIPES": str(recipes)}
    args = ("build", "--allow-untrusted",
            "-j", "2", "qemu_x86_64", "--no-lock", "--json", "--out", str(tmp_path / "out"))
    first = check_envelope(run_cli(*args, cwd=tmp_path, env=env).stdout, "build", True)
    assert [(o["platform"], o["ok"], o["skipped"]) for o in first] == [(PLATFORM, True, False)]
    again = json.loads(run_cli(*args, cwd=tmp_path, env=env).stdout)["result"]
    assert again[0]["skipped"] and again[0]["outputs"] == first[0]["outputs"]
