"""Every image format is reproducible: two builds, a wall-clock second apart, give equal bytes;
signed images too (osslsigncode with a fixed signing time, RSA FIT signatures, Ed25519)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.signing.keys import KeyType, make_key_pair
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.network

# Each format's files in out/<platform>/, by name prefix.
PREFIXES = {"netboot": "netboot/", "iso": "onie-recovery-", "uki": "uki/", "updater": "onie-updater-",
            "fit": "fit/"}
CASES = [("qemu_x86_64", f) for f in ("netboot", "iso", "uki", "updater")] + [
    ("qemu_arm64", f) for f in ("netboot", "fit", "updater")]


def files(folder: Path, prefix: str = "") -> dict[str, bytes]:
    found = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
             if p.is_file()}
    return {name: data for name, data in found.items() if name.startswith(prefix)}


def build(recipe: str | Path, out: Path, env: dict[str, str]) -> Path:
    proc = run_cli("build", "--allow-untrusted",
                   str(recipe), "--out", str(out), "--json", "--no-lock", "--force", env=env)
    return Path(json.loads(proc.stdout)["result"][0]["out"])


@pytest.fixture(scope="module")
def twice(tmp_path_factory: pytest.TempPathFactory,
          cache_env: dict[str, str]) -> Callable[[str], tuple[Path, Path]]:
    """Two builds of a platform, back to back, a wall-clock second apart."""
    out = tmp_path_factory.mktemp("twice")
    done: dict[str, tuple[Path, Path]] = {}

    def builds(name: str) -> tuple[Path, Path]:
        if name not in done:
            first = build(name, out / "one", cache_env)
            time.sleep(1.1)  # another wall-clock second must not matter
            done[name] = (first, build(name, out / "two", cache_env))
        return done[name]

    return builds


@pytest.mark.parametrize(("platform", "fmt"), CASES, ids=[f"{p}-{f}" for p, f in CASES])
def test_format_is_reproducible(twice: Callable[[str], tuple[Path, Path]], platform: str,
                                fmt: str) -> None:
    one, two = twice(platform)
    first, second = files(one, PREFIXES[fmt]), files(two, PREFIXES[fmt])
    assert first, f"{platform} has no {fmt} output"
    assert sorted(first) == sorted(second)
    for name in first:
        assert first[name] == second[name], name


def test_signed_images_are_reproducible(tmp_path: Path, cache_env: dict[str, str]) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    make_key_pair(KeyType.ED25519, keys / "updater")
    subprocess.run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-subj", "/CN=db", "-days", "30", "-keyout", str(keys / "db.key"),
                    "-out", str(keys / "db.crt")], check=True, capture_output=True)
    subprocess.run(["openssl", "genrsa", "-out", str(keys / "dev.key"), "2048"], check=True,
                   capture_output=True)
    recipes = {
        "x86.yaml": f"extends: {ROOT}/recipes/platforms/qemu_x86_64.yaml\nimages:\n"
                    "  formats: [uki, updater]\n  uki:\n    secureboot_key: keys/db.key\n"
                    "    secureboot_cert: keys/db.crt\n  updater:\n    key: keys/updater.key\n",
        "arm.yaml": f"extends: {ROOT}/recipes/platforms/qemu_arm64.yaml\nimages:\n"
                    "  formats: [fit]\n  fit:\n    key: keys/dev.key\n",
    }
    for name, text in recipes.items():
        (tmp_path / name).write_text(text)
        first = files(build(tmp_path / name, tmp_path / "one", cache_env))
        time.sleep(1.1)
        second = files(build(tmp_path / name, tmp_path / "two", cache_env))
        assert sorted(first) == sorted(second)
        for item in first:
            assert first[item] == second[item], item
    signed = (tmp_path / "one" / "x86_64-qemu_x86_64-r0" / "onie-updater-x86_64-qemu_x86_64-r0")
    assert b"ONIE-SIGNATURE/1 statement=" in signed.read_bytes()[-64:]
