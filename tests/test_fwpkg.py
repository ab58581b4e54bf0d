"""onie-fwpkg (#17) under the host's BusyBox ash (tests/guestcmd.py) with the test keys'
verifier: packages verified when staged and again before they run, ONIE's commands and their
bookkeeping on a stand-in ONIE-BOOT, an update boot's `apply` with retries."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.signing.format import ImageType
from tests.guestcmd import Guest, platform_recipe
from tests.tamper import FLOOR, Keys, make_keys, render_verifier, revoked_digests, signed


def package(tag: str, status: int = 0) -> bytes:
    """A firmware package's payload: the vendor's flash step, here a script that says it ran."""
    return (f"#!/bin/sh\necho \"FLASHED {tag} name=$onie_fwpkg_name version=$onie_fwpkg_version "
            f"platform=$onie_platform\"\nexit {status}\n").encode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def guest(tmp_path: Path, keys: Keys) -> Guest:
    verifier = tmp_path / "verify.sh"
    verifier.write_text(render_verifier(keys.store(revoked_digests()), tmp_path / "trust"))
    (tmp_path / "tmp").mkdir()
    return Guest(tmp_path / "guest", platform_recipe("qemu_x86_64"), verify_lib=str(verifier),
                 fwpkg_tmp=str(tmp_path / "tmp"))


def fwpkg(guest: Guest, *args: str | Path) -> tuple[int, str, str]:
    proc = guest.command("onie-fwpkg", *args)
    return proc.returncode, proc.stdout, proc.stderr


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def test_add_show_remove(guest: Guest, keys: Keys, tmp_path: Path) -> None:
    good = write(tmp_path, "bios-1.2.bin", signed(package("bios"), keys.a, image=ImageType.FIRMWARE,
                                                   version=12))
    assert fwpkg(guest, "add", good) == (0, "Staged firmware update package bios-1.2.bin (version "
                                            "12): the next update boot applies it (onie-boot-mode "
                                            "-o update).\n", "")
    update = guest.onie_boot / "onie" / "update"
    assert (update / "pending" / "bios-1.2.bin").read_bytes() == good.read_bytes()
    assert fwpkg(guest) == (0, "Pending firmware update packages:\nName | Version | Attempts\n"
                               "bios-1.2.bin | 12 | 0\n", "")
    assert fwpkg(guest, "show-pending", "bios-1.2.bin")[1].splitlines() == [
        "Name     : bios-1.2.bin", "Version  : 12", f"Size     : {good.stat().st_size}",
        "Attempts : 0 of 3"]
    assert fwpkg(guest, "add", good) == (
        1, "", "ERROR: firmware update package bios-1.2.bin is already pending\n")
    assert "staged" in (update / "update.log").read_text()
    assert fwpkg(guest, "-q", "remove", "bios-1.2.bin") == (0, "", "")
    assert not (update / "pending" / "bios-1.2.bin").exists()
    assert fwpkg(guest, "remove", "bios-1.2.bin") == (
        1, "", "ERROR: no firmware update package named bios-1.2.bin\n")
    assert fwpkg(guest, "remove", "../etc") == (
        1, "", "ERROR: invalid firmware update package name: '../etc'\n")


@pytest.mark.parametrize(("data", "reason"), [
    (lambda k: package("unsigned"), "unsigned"),
    (lambda k: signed(package("upd"), k.a, image=ImageType.UPDATER, version=FLOOR + 1), "wrong-image"),
    (lambda k: signed(package("nos"), k.a), "wrong-image"),
    (lambda k: signed(package("x"), k.x, image=ImageType.FIRMWARE), "unknown-key"),
])
def test_add_refuses_what_is_not_a_trusted_firmware_package(guest: Guest, keys: Keys,
                                                            tmp_path: Path, data, reason) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, "pkg", data(keys))
    rc, out, err = fwpkg(guest, "add", path)
    assert rc == 1 and out.startswith(f"onie-discovery: refused {reason}: ")
    assert err == f"ERROR: {path} is not a firmware update package this image trusts\n"
    assert not (guest.onie_boot / "onie" / "update" / "pending" / "pkg").exists()


def test_apply_runs_each_package_then_records_it(guest: Guest, keys: Keys, tmp_path: Path) -> None:
    for name, status in (("a-cpld.bin", 0), ("b-bios.bin", 3)):
        path = write(tmp_path, name, signed(package(name, status), keys.b, image=ImageType.FIRMWARE,
                                            version=17))
        assert fwpkg(guest, "-q", "add", path)[0] == 0
    rc, out, _ = fwpkg(guest, "apply")
    assert rc == 0
    assert out.splitlines() == [
        "onie-fwpkg: applying a-cpld.bin (version 17), attempt 1 of 3",
        "FLASHED a-cpld.bin name=a-cpld.bin version=17 platform=x86_64-qemu_x86_64-r0",
        "onie-fwpkg: a-cpld.bin applied",
        "onie-fwpkg: applying b-bios.bin (version 17), attempt 1 of 3",
        "FLASHED b-bios.bin name=b-bios.bin version=17 platform=x86_64-qemu_x86_64-r0",
        "onie-fwpkg: b-bios.bin failed: exit status 3: it stays pending (attempt 1 of 3)"]
    assert fwpkg(guest, "show-pending")[1].splitlines()[2:] == ["b-bios.bin | 17 | 1"]
    for _ in range(2):
        out = fwpkg(guest, "apply")[1]
    assert out.splitlines()[-1] == "onie-fwpkg: b-bios.bin failed: exit status 3, 3 attempts: no more tries"
    results = fwpkg(guest, "show-results")[1].splitlines()
    assert results[:2] == ["Firmware update results:", "Name | Version | Result | Time"]
    assert [line.rsplit(" | ", 1)[0] for line in results[2:]] == [
        "a-cpld.bin | 17 | success", "b-bios.bin | 17 | failed: exit status 3, 3 attempts"]
    assert fwpkg(guest, "show-pending")[1].splitlines()[2:] == []
    log = fwpkg(guest, "show-log")[1]
    assert "FLASHED b-bios.bin" in log and "a-cpld.bin version 17: success" in log
    assert fwpkg(guest, "-q", "purge") == (0, "", "")
    assert fwpkg(guest, "show-results")[1].splitlines()[2:] == []


def test_apply_verifies_again(guest: Guest, keys: Keys, tmp_path: Path) -> None:
    path = write(tmp_path, "fw.bin", signed(package("fw"), keys.a, image=ImageType.FIRMWARE))
    assert fwpkg(guest, "-q", "add", path)[0] == 0
    staged = guest.onie_boot / "onie" / "update" / "pending" / "fw.bin"
    data = bytearray(staged.read_bytes())
    data[5] ^= 1  # changed on ONIE-BOOT after it was staged
    staged.write_bytes(bytes(data))
    out = fwpkg(guest, "apply")[1]
    assert "FLASHED" not in out
    assert out.splitlines()[-1] == ("onie-fwpkg: fw.bin failed: refused digest-mismatch: the "
                                    "payload's sha256 differs from the statement's")


def test_fwpkg_rc_applies_only_in_update_mode(guest: Guest, keys: Keys, tmp_path: Path) -> None:
    path = write(tmp_path, "fw.bin", signed(package("fw"), keys.a, image=ImageType.FIRMWARE))
    assert fwpkg(guest, "-q", "add", path)[0] == 0
    rc = guest.install("S50onie-fwpkg", guest.render("guest/etc/fwpkg-rc.j2"))
    guest.cmdline.write_text("console=ttyS0 boot_reason=install\n")
    assert guest.sh(str(rc)).stdout == ""
    guest.cmdline.write_text("console=ttyS0 boot_reason=update\n")
    assert "onie-fwpkg: fw.bin applied" in guest.sh(str(rc)).stdout
    assert fwpkg(guest, "show-pending")[1].splitlines()[2:] == []
