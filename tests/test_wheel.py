"""The wheel is the tool (#20): built from the checkout, installed into a clean virtualenv (no
system site-packages, so nothing of the checkout can stand in for missing package data), and
run from an empty folder, it builds the default platform byte for byte as the checkout does.
One wheel build and one install per session (about a minute, most of it pip)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EPOCH, ROOT, digest

PLATFORM = "x86_64-qemu_x86_64-r0"


@pytest.mark.network
def test_wheel_builds_the_default_platform_from_an_empty_folder(
        tmp_path: Path, cache_env: dict[str, str], built: Callable[[str], Path]) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True, timeout=600)
    [wheel] = dist.glob("onie_builder-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    shipped = {p.relative_to(ROOT).as_posix() for d in ("recipes", "templates")
               for p in (ROOT / d).rglob("*") if p.is_file()}
    assert {f"builder/{n}" for n in shipped} <= names
    migrations = {p.relative_to(ROOT).as_posix()
                  for p in (ROOT / "builder/factory/db/migrations").rglob("*.py")}
    assert len(migrations) >= 3 and migrations <= names  # the state database's (#19)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata.splitlines()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=900)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {**cache_env, "SOURCE_DATE_EPOCH": EPOCH}
    where = subprocess.run([venv / "bin" / "python", "-c", "import builder; print(builder.__file__)"],
                           cwd=empty, env=env, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(venv)
    # The installed wheel migrates a state database from its own scripts (package data).
    migrate = ("import sys; from builder.factory.db.engine import Database; "
               "from builder.factory.db import migrate; db = Database(sys.argv[1]); "
               "migrate.upgrade(db); print(migrate.current(db))")
    state = subprocess.run([venv / "bin" / "python", "-c", migrate, f"sqlite:///{tmp_path / 's.db'}"],
                           cwd=empty, env=env, capture_output=True, text=True, check=True).stdout
    assert state.strip() == "0002"
    proc = subprocess.run([venv / "bin" / "onie-builder", "build", "--allow-untrusted",
                          "--no-lock", "--json"], cwd=empty,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    out = empty / json.loads(proc.stdout)["result"][0]["out"]
    assert out == empty / "out" / PLATFORM
    reference = built("qemu_x86_64")
    for name in ("vmlinuz", "initrd.img", f"onie-updater-{PLATFORM}", "uki/onie.efi"):
        assert digest(out / name) == digest(reference / name), name
    listed = subprocess.run([venv / "bin" / "onie-builder", "recipes", "list"], cwd=empty, env=env,
                            capture_output=True, text=True, check=True).stdout
    assert f"qemu_x86_64              {PLATFORM}" in listed and "(shipped)" in listed
