"""ONIE's default file names and TFTP waterfall, checked against ONIE's lists.

ONIE's example machine: platform ``x86_64-kvm_x86_64-r0``, switch ASIC ``qemu``, MAC
52:54:00:12:34:56, leased address 192.168.1.178. The generated script computes the runtime
part (MAC folder, hex-IP folders) itself: ``tests/test_discovery.py`` runs it under BusyBox
``ash`` and compares it with these lists.
"""

from __future__ import annotations

import pytest

from builder.onie.waterfall import default_names, hex_prefixes, mac_folder, waterfall_paths

ONIE_NAMES = (
    "onie-installer-x86_64-kvm_x86_64-r0",
    "onie-installer-x86_64-kvm_x86_64-r0.bin",
    "onie-installer-x86_64-kvm_x86_64",
    "onie-installer-x86_64-kvm_x86_64.bin",
    "onie-installer-kvm_x86_64",
    "onie-installer-kvm_x86_64.bin",
    "onie-installer-x86_64-qemu",
    "onie-installer-x86_64-qemu.bin",
    "onie-installer-x86_64",
    "onie-installer-x86_64.bin",
    "onie-installer",
    "onie-installer.bin",
)

ONIE_WATERFALL = (
    "52-54-00-12-34-56/onie-installer-x86_64-kvm_x86_64-r0",
    "C0A801B2/onie-installer-x86_64-kvm_x86_64-r0",
    "C0A801B/onie-installer-x86_64-kvm_x86_64-r0",
    "C0A801/onie-installer-x86_64-kvm_x86_64-r0",
    "C0A80/onie-installer-x86_64-kvm_x86_64-r0",
    "C0A8/onie-installer-x86_64-kvm_x86_64-r0",
    "C0A/onie-installer-x86_64-kvm_x86_64-r0",
    "C0/onie-installer-x86_64-kvm_x86_64-r0",
    "C/onie-installer-x86_64-kvm_x86_64-r0",
    *ONIE_NAMES,
)


def kvm_names(prefix: str = "onie-installer") -> tuple[str, ...]:
    return default_names(prefix, "x86_64-kvm_x86_64-r0", "x86_64", "kvm_x86_64", "qemu")


def test_default_names_are_onies() -> None:
    assert kvm_names() == ONIE_NAMES


def test_update_mode_uses_the_updater_prefix() -> None:
    assert kvm_names("onie-updater") == tuple(
        n.replace("onie-installer", "onie-updater") for n in ONIE_NAMES)


def test_waterfall_is_onies() -> None:
    assert waterfall_paths(kvm_names(), "52:54:00:12:34:56", "192.168.1.178") == ONIE_WATERFALL


def test_waterfall_without_mac_or_address_keeps_the_root_names() -> None:
    assert waterfall_paths(kvm_names(), None, None) == ONIE_NAMES
    assert waterfall_paths(kvm_names(), None, "10.0.0.1")[0] == (
        "0A000001/onie-installer-x86_64-kvm_x86_64-r0")


def test_hex_prefixes_run_from_eight_digits_to_one() -> None:
    assert hex_prefixes("192.168.1.178") == (
        "C0A801B2", "C0A801B", "C0A801", "C0A80", "C0A8", "C0A", "C0", "C")


@pytest.mark.parametrize("mac", ["52:54:00:12:34", "52-54-00-12-34-56", "zz:54:00:12:34:56", ""])
def test_mac_folder_refuses_what_is_not_a_mac(mac: str) -> None:
    with pytest.raises(ValueError, match="expected a MAC address"):
        mac_folder(mac)
