"""The UEFI unified kernel image: its sections, UEFI HTTP boot in the lab, and Secure Boot with
enrolled test keys (accepted when signed by the db key, refused when signed by another)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.images.fat import make_vfat
from builder.lab.netns import NetNamespace
from builder.lab.qemu import Console
from builder.lab.servers import Dnsmasq, HttpServer
from tests.conftest import ROOT, require_root_netns, require_tool, run_cli
from tests.imagelab import expect_environment, ovmf_args, subnet, x86_command

pytestmark = [pytest.mark.lab, pytest.mark.network]

PLATFORM = "x86_64-qemu_x86_64-r0"
OWNER = "a5b1e5d0-6d4c-4b8e-9a41-0ddba11c0ffe"  # the signature owner GUID for our test keys


def section_names(image: Path) -> list[str]:
    out = subprocess.run(["objdump", "-h", str(image)], capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"^\s*\d+\s+(\.\S+)", out, re.M)


def test_uki_sections(built: Callable[[str], Path], tmp_path: Path) -> None:
    uki = built("qemu_x86_64") / "uki" / "onie.efi"
    names = section_names(uki)
    assert {".osrel", ".cmdline", ".linux", ".initrd"} <= set(names)
    subprocess.run(["objcopy", "-O", "binary", "--only-section=.cmdline", str(uki),
                    str(tmp_path / "cmdline")], check=True)
    cmdline = (tmp_path / "cmdline").read_text().strip("\0\n")
    assert cmdline.startswith("console=ttyS0,115200") and cmdline.endswith("boot_reason=install")


def test_uki_over_uefi_http_boot(built: Callable[[str], Path], tmp_path: Path) -> None:
    require_root_netns()
    image = built("qemu_x86_64")
    net = subnet()
    with NetNamespace.create("obuki") as ns:
        ns.add_tap("tap0", f"{net}.1/24")
        web = HttpServer(ns, image / "uki", tmp_path / "http", address=f"{net}.1", port=8080).start()
        # OVMF's HTTP boot asks with vendor class "HTTPClient" and wants it echoed (option 60);
        # the boot file name (option 67) is the URL.
        Dnsmasq(ns, "tap0", f"{net}.1", tmp_path / "dnsmasq",
                force_options=["tag:efihttp,60,HTTPClient"],
                extra=["--dhcp-vendorclass=set:efihttp,HTTPClient",
                       f"--dhcp-boot=tag:efihttp,{web.url('onie.efi')}"]).start()
        argv = x86_command(*ovmf_args(tmp_path),
                           "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
                           "-device", "virtio-net-pci,netdev=n0,romfile=")
        with Console.start(argv, tmp_path / "console.log", netns=ns.name) as console:
            found = expect_environment(console, PLATFORM, timeout=300)
            assert found.group(2) == "install"
            assert "boot_reason=install" in console.run("cat /proc/cmdline", timeout=30)
        assert [r.path for r in web.requests() if r.status == 200][:1] == ["/onie.efi"]


def make_cert(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    subprocess.run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                    "-days", "3650", "-subj", f"/CN=onie-builder test {name}", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    return key, cert


def test_uki_under_secure_boot(tmp_path: Path, cache_env: dict[str, str]) -> None:
    require_tool("sbsign", "to sign with another key (Debian package sbsigntool)")
    vars_tool = require_tool("virt-fw-vars", "to enroll Secure Boot keys (PyPI virt-firmware)")
    keys = tmp_path / "keys"
    keys.mkdir()
    pk, kek, (db_key, db_cert), (other_key, other_cert) = (
        make_cert(keys, "pk")[1], make_cert(keys, "kek")[1], make_cert(keys, "db"),
        make_cert(keys, "other"))
    recipe = tmp_path / "signed.yaml"
    recipe.write_text(f"extends: {ROOT}/recipes/platforms/qemu_x86_64.yaml\n"
                      f"images:\n  formats: [uki]\n  uki:\n"
                      f"    secureboot_key: {db_key}\n    secureboot_cert: {db_cert}\n")
    out = Path(json.loads(run_cli("build", "--allow-untrusted",
                                  str(recipe), "--out", str(tmp_path / "out"), "--json",
                                  "--no-lock", env=cache_env).stdout)["result"][0]["out"])
    good = out / "uki" / "onie.efi"
    subprocess.run(["sbverify", "--cert", str(db_cert), str(good)], check=True, capture_output=True)
    # The same image signed by a key the firmware does not trust.
    unsigned = tmp_path / "unsigned.efi"
    shutil.copyfile(good, unsigned)
    subprocess.run(["sbattach", "--remove", str(unsigned)], check=True, capture_output=True)
    bad = tmp_path / "bad.efi"
    subprocess.run(["sbsign", "--key", str(other_key), "--cert", str(other_cert), "--output",
                    str(bad), str(unsigned)], check=True, capture_output=True)
    varstore = tmp_path / "vars-enrolled.fd"
    subprocess.run([vars_tool, "--input", "/usr/share/OVMF/OVMF_VARS_4M.fd", "--output",
                    str(varstore), "--set-pk", OWNER, str(pk), "--add-kek", OWNER, str(kek),
                    "--add-db", OWNER, str(db_cert), "--secure-boot", "--no-microsoft"],
                   check=True, capture_output=True)
    # Two disks, each an EFI system partition: the firmware tries the other-key one first.
    disks = []
    for name, efi in (("bad", bad), ("good", good)):
        disks.append(make_vfat(tmp_path / f"{name}.img", {"EFI/BOOT/BOOTX64.EFI": efi}, "ESP",
                               name, 1700000000))
    argv = x86_command(*ovmf_args(tmp_path, secure=True, varstore=varstore), "-nic", "none",
                       "-drive", f"if=none,id=bad,format=raw,file={disks[0]}",
                       "-device", "virtio-blk-pci,drive=bad,bootindex=1",
                       "-drive", f"if=none,id=good,format=raw,file={disks[1]}",
                       "-device", "virtio-blk-pci,drive=good,bootindex=2")
    with Console.start(argv, tmp_path / "console.log") as console:
        refused = console.expect(r"failed to load (Boot\d+).*?: (Access Denied|Security Violation)",
                                 timeout=300)
        started = console.expect(r"starting (Boot\d+)", timeout=120)
        assert started.group(1) != refused.group(1)
        expect_environment(console, PLATFORM, timeout=300)
        assert "Secure boot enabled" in console.run("dmesg | grep -i 'secure boot'", timeout=30)
