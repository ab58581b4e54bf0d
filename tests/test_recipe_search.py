"""The recipe search path (#20): `--recipes DIR` and $ONIE_BUILDER_RECIPES layered over the
shipped recipes, `extends:` by name, where `recipes list` says each platform comes from, and
the lock hint naming a command that works."""

from __future__ import annotations

import json
import os
from pathlib import Path

from builder.recipe.search import SHIPPED
from tests.conftest import ROOT, run_cli


def folder(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def listed(proc_stdout: str) -> dict[str, tuple[str, str]]:
    """``recipes list`` as {name: (platform string, origin)}."""
    rows = {}
    for line in proc_stdout.splitlines():
        name, platform = line.split()[:2]
        rows[name] = (platform, line.rsplit("(", 1)[1].rstrip(")"))
    return rows


def test_a_user_folder_adds_platforms_and_overrides_one_by_name(tmp_path: Path) -> None:
    user = folder(tmp_path / "vendor", {
        # By name: the shipped default platform and the shipped x86_64 base.
        "platforms/qemu_lab.yaml": "extends: qemu_x86_64\nplatform:\n  machine: qemu_lab\n",
        "platforms/qemu_bare.yaml": "extends: x86_64\nplatform:\n  vendor: qemu\n"
                                    "  machine: qemu_bare\n  switch_asic: qemu\n  vendor_id: 42623\n",
        # Same name as a shipped platform: extending its own name reaches the shipped one.
        "platforms/qemu_x86_64.yaml": "extends: qemu_x86_64\nplatform:\n  description: ours\n",
    })
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    proc = run_cli("--recipes", "../vendor", "recipes", "list", cwd=elsewhere)
    rows = listed(proc.stdout)
    assert rows["qemu_lab"] == ("x86_64-qemu_lab-r0", str(user))
    assert rows["qemu_bare"] == ("x86_64-qemu_bare-r0", str(user))
    assert rows["qemu_x86_64"] == ("x86_64-qemu_x86_64-r0", str(user))
    assert rows["qemu_arm64"] == ("arm64-qemu_arm64-r0", "shipped")
    assert "ours" in proc.stdout
    shown = run_cli("--recipes", str(user), "recipes", "show", "qemu_x86_64", cwd=elsewhere).stdout
    assert shown.splitlines()[0] == ("# x86_64-qemu_x86_64-r0: toolset.yaml -> x86_64.yaml -> "
                                     "qemu_x86_64.yaml -> qemu_x86_64.yaml")
    assert f"description: ours  # {user}/platforms/qemu_x86_64.yaml:3" in shown
    # Without the folder, the shipped platform again.
    plain = listed(run_cli("recipes", "list", cwd=elsewhere).stdout)
    assert "qemu_lab" not in plain and plain["qemu_x86_64"][1] == "shipped"


def test_folders_are_searched_in_order(tmp_path: Path) -> None:
    one = folder(tmp_path / "one", {"platforms/qemu_a.yaml": "extends: qemu_x86_64\nplatform:\n"
                                                             "  machine: qemu_one\n"})
    two = folder(tmp_path / "two", {"platforms/qemu_a.yaml": "extends: qemu_x86_64\nplatform:\n"
                                                             "  machine: qemu_two\n",
                                    "platforms/qemu_b.yaml": "extends: qemu_a\n"})
    env = {"ONIE_BUILDER_RECIPES": os.pathsep.join([str(one), str(two)])}
    rows = listed(run_cli("recipes", "list", env=env, cwd=tmp_path).stdout)
    assert rows["qemu_a"] == ("x86_64-qemu_one-r0", str(one))
    # A name resolves on the whole path, so two's qemu_b extends one's qemu_a.
    assert rows["qemu_b"] == ("x86_64-qemu_one-r0", str(two))
    # --recipes comes before the environment.
    rows = listed(run_cli("--recipes", str(two), "recipes", "list", env=env, cwd=tmp_path).stdout)
    assert rows["qemu_a"] == ("x86_64-qemu_two-r0", str(two))


def test_unknown_names_and_folders_are_errors(tmp_path: Path) -> None:
    user = folder(tmp_path / "u", {"platforms/qemu_c.yaml": "# vendor\nextends: qemu_nothing\n"})
    proc = run_cli("--recipes", str(user), "recipes", "validate", "qemu_c", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {user}/platforms/qemu_c.yaml:2: extends: no recipe named "
                                  f"'qemu_nothing' on the recipe search path ({user}, {SHIPPED})")
    proc = run_cli("--recipes", str(tmp_path / "missing"), "recipes", "list", check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == f"error: {tmp_path / 'missing'}: recipe folder does not exist"
    proc = run_cli("recipes", "list", env={"ONIE_BUILDER_RECIPES": str(tmp_path)}, check=False)
    assert proc.returncode == 2 and "found neither" in proc.stderr


def test_lock_hint_names_the_recipe_and_the_lock_file(tmp_path: Path) -> None:
    lock = tmp_path / "site.lock"
    lock.write_text(json.dumps({"lock-version": 1, "packages": {}, "platforms": {}}))
    recipe = folder(tmp_path / "u", {"platforms/qemu_d.yaml": "extends: qemu_x86_64\nplatform:\n"
                                                              "  machine: qemu_d\n"})
    proc = run_cli("build", "--allow-untrusted",
                   "u/platforms/qemu_d.yaml", "--lock", "site.lock", "--out", "out",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-2:] == [
        "error: the lock file has no entry for x86_64-qemu_d-r0",
        "hint: run 'onie-builder lock u/platforms/qemu_d.yaml --lock site.lock'"]
    assert (recipe / "platforms" / "qemu_d.yaml").is_file()
    # The hinted command is one that works (resolving needs the archive: not run here); its
    # recipe argument is found from the same folder.
    assert run_cli("recipes", "validate", "u/platforms/qemu_d.yaml", cwd=tmp_path).returncode == 0


def test_the_shipped_recipes_are_package_data() -> None:
    assert (ROOT / "recipes").resolve() == SHIPPED
    assert (ROOT / "builder" / "recipes").resolve() == SHIPPED
