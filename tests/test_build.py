"""The build pipeline on real Debian packages: outputs, manifest, reproducibility, atomicity."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.initramfs.elf import parse_elf
from tests.conftest import ROOT, digest, run_cli, unpack_initramfs

pytestmark = pytest.mark.network


def manifest(image: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((image / "manifest.json").read_text())


def test_default_build_outputs(built: Callable[[str], Path]) -> None:
    image = built("qemu_x86_64")
    assert image.name == "x86_64-qemu_x86_64-r0"
    assert sorted(p.name for p in image.iterdir()) == [
        "initrd.img", "manifest.json", "netboot", "onie-recovery-x86_64-qemu_x86_64-r0.iso",
        "onie-updater-x86_64-qemu_x86_64-r0", "provenance.intoto.jsonl", "sbom.cdx.json",
        "sbom.spdx.json", "uki", "vmlinuz"]  # images: docs/images.md; SBOMs: docs/formats.md
    assert (image / "initrd.img").read_bytes()[:6] == b"\xfd7zXZ\x00"
    doc = manifest(image)
    assert doc["platform"] == "x86_64-qemu_x86_64-r0"
    assert doc["kernel"]["cmdline"].startswith("console=ttyS0,115200")
    names = {c["name"] for c in doc["components"]}
    assert "busybox-static" in names and any(n.startswith("linux-image-6") for n in names)
    for comp in doc["components"]:
        assert len(comp["sha256"]) == 64 and comp["version"]


def test_manifest_lists_every_initramfs_file(built: Callable[[str], Path], tmp_path: Path) -> None:
    image = built("qemu_x86_64")
    files = {f["path"]: f for f in manifest(image)["initramfs"]["files"]}
    root = unpack_initramfs(image, tmp_path / "root")
    on_disk = {"/" + str(p.relative_to(root)) for p in root.rglob("*")}
    assert on_disk == set(files) - {"/"}
    import hashlib

    for path, entry in files.items():
        if entry["type"] == "file":
            assert hashlib.sha256((root / path.lstrip("/")).read_bytes()).hexdigest() == entry["sha256"]
            assert entry["origin"]
    assert files["/bin/busybox"]["origin"].startswith("debian:busybox-static=")
    assert files["/init"]["origin"] == "template:init.j2" and files["/init"]["mode"] == "0755"
    assert files["/dev/console"]["rdev"] == [5, 1]
    assert any(p.endswith("/e1000.ko") for p in files)
    dep = next(p for p in files if p.endswith("/modules.dep"))
    assert "e1000.ko:" in (root / dep.lstrip("/")).read_text()


def test_machine_conf(built: Callable[[str], Path], tmp_path: Path) -> None:
    root = unpack_initramfs(built("qemu_x86_64"), tmp_path / "root")
    conf = dict(line.split("=", 1) for line in (root / "etc/machine.conf").read_text().splitlines())
    assert conf["onie_platform"] == "x86_64-qemu_x86_64-r0"
    assert conf["onie_machine"] == "qemu_x86_64"
    assert conf["onie_arch"] == "x86_64"
    assert conf["onie_vendor_id"] == "42623"
    assert conf["onie_switch_asic"] == "qemu"
    assert conf["onie_machine_rev"] == "0"
    # ONIE's `date -Imin` form, in double quotes as ONIE writes it; SOURCE_DATE_EPOCH=1700000000.
    assert conf["onie_build_date"] == '"2023-11-14T22:13+0000"'
    assert conf["onie_version"] == "2026.11"


def test_two_builds_are_identical(built: Callable[[str], Path], tmp_path: Path,
                                  cache_env: dict[str, str]) -> None:
    first = built("qemu_x86_64")
    time.sleep(1.1)  # a different wall-clock second must not matter
    run_cli("build", "--allow-untrusted",
            "qemu_x86_64", "--out", str(tmp_path / "again"), "--no-lock", env=cache_env)
    second = tmp_path / "again" / first.name
    for name in ("vmlinuz", "initrd.img", "manifest.json"):
        assert digest(first / name) == digest(second / name), name


@pytest.mark.parametrize("platform", ["qemu_arm64", "accton_as4564_26p"])
def test_arm64_binaries_and_modules_are_aarch64(built: Callable[[str], Path], tmp_path: Path,
                                                platform: str) -> None:
    image = built(platform)
    root = unpack_initramfs(image, tmp_path / "root")
    machines = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and (info := parse_elf(path)) is not None:
            machines[str(path.relative_to(root))] = info.machine
    assert "bin/busybox" in machines
    assert any(p.endswith(".ko") for p in machines)
    assert set(machines.values()) == {"EM_AARCH64"}, machines
    if platform == "accton_as4564_26p":
        assert "sbin/ethtool" in machines
        assert (root / "lib/ld-linux-aarch64.so.1").resolve().is_file()


def test_vendor_x86_switch_builds_with_ethtool(built: Callable[[str], Path], tmp_path: Path) -> None:
    root = unpack_initramfs(built("accton_as7726_32x"), tmp_path / "root")
    assert parse_elf(root / "sbin/ethtool").machine == "EM_X86_64"  # type: ignore[union-attr]
    assert (root / "lib64/ld-linux-x86-64.so.2").exists()
    assert list(root.rglob("igb.ko")) and list(root.rglob("ixgbe.ko"))


def test_noop_and_change_detection(tmp_path: Path, cache_env: dict[str, str]) -> None:
    work = tmp_path / "w"
    shutil.copytree(ROOT / "recipes", work / "recipes")
    env = {**cache_env, "ONIE_BUILDER_RECIPES": str(work / "recipes")}  # searched before the shipped
    overlay = work / "recipes" / "overlay"
    (overlay / "etc").mkdir(parents=True)
    (overlay / "etc" / "motd").write_text("hello\n")
    with (work / "recipes" / "platforms" / "qemu_x86_64.yaml").open("a") as f:
        f.write("initramfs:\n  overlays: [../overlay]\n")
    run_cli("lock", "qemu_x86_64", cwd=work, env=env)
    build = ("build", "--allow-untrusted", "qemu_x86_64", "--json")
    first = json.loads(run_cli(*build, cwd=work, env=env).stdout)["result"][0]
    assert not first["skipped"]
    again = json.loads(run_cli(*build, cwd=work, env=env).stdout)["result"][0]
    assert again["skipped"]
    (overlay / "etc" / "issue").write_text("new file\n")
    changed = json.loads(run_cli(*build, cwd=work, env=env).stdout)["result"][0]
    assert not changed["skipped"]
    files = {f["path"]: f for f in manifest(work / "out" / first["platform"])["initramfs"]["files"]}
    assert files["/etc/issue"]["origin"] == "overlay:overlay"
    # Offline from the lock: everything comes from the cache.
    shutil.rmtree(work / "out")
    offline = json.loads(run_cli(*build, "--offline", cwd=work, env=env).stdout)["result"][0]
    assert not offline["skipped"]


def test_no_images_and_layer_reuse(tmp_path: Path, cache_env: dict[str, str]) -> None:
    """--no-images writes the kernel and initramfs only, and is a different build from one with
    images; an edit to the recipe compresses the `files` layer again and reuses the others."""
    work = tmp_path / "w"
    shutil.copytree(ROOT / "recipes", work / "recipes")
    env = {**cache_env, "ONIE_BUILDER_RECIPES": str(work / "recipes")}  # searched before the shipped
    run_cli("lock", "qemu_x86_64", cwd=work, env=env)
    out = work / "out" / "x86_64-qemu_x86_64-r0"
    quick = ("build", "--allow-untrusted", "qemu_x86_64", "--json", "--no-images")
    first = json.loads(run_cli(*quick, cwd=work, env=env).stdout)["result"][0]
    assert not first["skipped"]
    assert sorted(p.name for p in out.iterdir()) == [
        "initrd.img", "manifest.json", "provenance.intoto.jsonl", "sbom.cdx.json", "sbom.spdx.json",
        "vmlinuz"]
    assert json.loads(run_cli(*quick, cwd=work, env=env).stdout)["result"][0]["skipped"]
    layers = {x["layer"]: x for x in manifest(out)["initramfs"]["layers"]}
    assert list(layers) == ["files", "programs", "modules"]

    recipe = work / "recipes" / "platforms" / "qemu_x86_64.yaml"
    # A new version (in /etc/machine.conf) each run: a shared cache ($ONIE_BUILDER_CACHE) has
    # not seen that files layer yet.
    recipe.write_text(recipe.read_text() + f'version: "2026.11-{os.urandom(8).hex()}"\n')
    derived = Path(cache_env["ONIE_BUILDER_CACHE"]) / "derived"
    before = set(derived.iterdir())
    assert not json.loads(run_cli(*quick, cwd=work, env=env).stdout)["result"][0]["skipped"]
    after = {x["layer"]: x for x in manifest(out)["initramfs"]["layers"]}
    assert after["files"]["sha256"] != layers["files"]["sha256"]
    for name in ("programs", "modules"):
        assert after[name] == {**layers[name], "offset": after[name]["offset"]}
    # Only the files layer was compressed: its archive is new in the compressed-layer cache,
    # the other two were there before. (Other xdist workers share this cache and may add
    # entries meanwhile: the check names this build's archives, it does not count entries.)
    old_names = {p.name.split(".")[0] for p in before}
    new = {p.name.split(".")[0] for p in set(derived.iterdir()) - before}
    assert after["files"]["archive_sha256"] in new
    for name in ("programs", "modules"):
        assert after[name]["archive_sha256"] in old_names
    sizes = {c["name"]: c for c in manifest(out)["initramfs"]["components"]}
    assert sizes["environment"]["compressed"] > 0 and "kernel modules" in sizes

    full = json.loads(run_cli("build", "--allow-untrusted",
                              "qemu_x86_64", "--json", cwd=work, env=env).stdout)["result"][0]
    assert not full["skipped"]  # images were not built before: not up to date
    assert "onie-updater-x86_64-qemu_x86_64-r0" in {p.name for p in out.iterdir()}


def test_failed_build_keeps_previous_output(tmp_path: Path, cache_env: dict[str, str]) -> None:
    work = tmp_path / "w"
    shutil.copytree(ROOT / "recipes", work / "recipes")
    env = {**cache_env, "ONIE_BUILDER_RECIPES": str(work / "recipes")}  # searched before the shipped
    out = work / "out" / "x86_64-qemu_x86_64-r0"
    run_cli("build", "--allow-untrusted", "qemu_x86_64", "--no-lock", cwd=work, env=env)
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    recipe = work / "recipes" / "platforms" / "qemu_x86_64.yaml"
    recipe.write_text(recipe.read_text() + "kernel:\n  modules+: [no_such_module]\n")
    proc = run_cli("build", "--allow-untrusted",
                   "qemu_x86_64", "--no-lock", cwd=work, env=env, check=False)
    assert proc.returncode == 2  # a recipe error, found before the build started
    assert "unknown kernel module 'no_such_module'" in proc.stderr
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(os.listdir(work / "out")) == [".stamps", "x86_64-qemu_x86_64-r0"]


def test_bad_recipe_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {ROOT}/recipes/base/x86_64.yaml\nplatform:\n  vendor: X\n")
    proc = run_cli("build", "--allow-untrusted", str(bad), "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2
    assert "platform.vendor: expected lower-case letters" in proc.stderr
    assert "platform.machine: required key missing" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_vendor_template_overrides_builtin(tmp_path: Path, cache_env: dict[str, str]) -> None:
    vendor = tmp_path / "acme-templates"
    (vendor / "guest/etc").mkdir(parents=True)
    (vendor / "guest/etc/profile.j2").write_text("# acme {{ platform.machine | shquote }}\n")
    recipe = tmp_path / "acme.yaml"
    recipe.write_text(f"extends: {ROOT}/recipes/platforms/qemu_x86_64.yaml\n"
                      "templates: [acme-templates]\n")
    run_cli("build", "--allow-untrusted",
            str(recipe), "--out", str(tmp_path / "out"), "--no-lock", env=cache_env)
    image = tmp_path / "out" / "x86_64-qemu_x86_64-r0"
    root = unpack_initramfs(image, tmp_path / "root")
    assert (root / "etc/profile").read_text() == "# acme qemu_x86_64\n"
    files = {f["path"]: f for f in manifest(image)["initramfs"]["files"]}
    assert files["/etc/profile"]["origin"] == "template:acme-templates/guest/etc/profile.j2"
    assert files["/init"]["origin"] == "template:init.j2"
    assert str(tmp_path) not in (image / "manifest.json").read_text()


def test_a_build_prints_only_its_own_lines(tmp_path: Path, cache_env: dict[str, str]) -> None:
    """Progress, the summary and its size breakdown; nothing a library logs on its own (such
    as python-debian's "Fixing Format URL" for an old copyright file)."""
    proc = run_cli("build", "--allow-untrusted", "qemu_x86_64", "--out", str(tmp_path / "out"), "--no-images",
                   "--no-lock", env=cache_env)
    lines = proc.stderr.splitlines()
    assert any(line.startswith("==> x86_64-qemu_x86_64-r0: writing the SBOMs") for line in lines)
    own = re.compile(r"(==> x86_64-qemu_x86_64-r0: |x86_64-qemu_x86_64-r0: built in | {2}|downloading "
                     r"|warning: recipes/platforms/qemu_x86_64.yaml: x86_64-qemu_x86_64-r0 trusts no key)")
    strays = [line for line in lines if not own.match(line)]
    assert strays == []
