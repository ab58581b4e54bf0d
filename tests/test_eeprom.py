"""The recipe's platform.eeprom key and the virtual EEPROM the build encodes from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import RecipeError
from builder.initramfs import eeprom
from builder.initramfs.tree import Tree
from builder.onie.tlvcodes import Code
from builder.onie.tlvinfo import Field, decode, encode
from builder.recipe.eeprom import EepromSource
from builder.recipe.load import load_recipe
from tests.guest_eeprom import PLATFORMS, RECIPES, recipe_from

KVM = RECIPES / "kvm_x86_64.yaml"


def test_default_is_a_virtual_eeprom_naming_the_platform(tmp_path: Path) -> None:
    recipe = load_recipe(KVM)[0]
    assert recipe.platform.eeprom.source is EepromSource.VIRTUAL
    assert eeprom.make_image(recipe) == encode([
        Field.of(Code.PLATFORM_NAME, "x86_64-kvm_x86_64-r0"), Field.of(Code.ONIE_VERSION, "2026.11")])
    values = eeprom.template_values(recipe)["eeprom"]
    assert (values["source"], values["file"], values["module"]) == ("virtual", "", "qemu_fw_cfg")
    assert values["empty_crc"] == int.from_bytes(encode([])[-4:], "big")


def test_the_qemu_platforms_encode_their_fields() -> None:
    recipe = load_recipe(PLATFORMS / "qemu_x86_64.yaml")[0]
    tree = Tree()
    eeprom.install_eeprom(tree, recipe)
    entry = tree.get("/etc/onie/eeprom.bin")
    assert entry is not None and entry.mode & 0o777 == 0o444
    assert decode(entry.content()) == [
        Field.of(0x21, "QEMU-x86_64-switch"), Field.of(0x22, "QEMU-X86-64-0001"),
        Field.of(0x26, 1), Field.of(0x27, "R01"), Field.of(0x28, "x86_64-qemu_x86_64-r0"),
        Field.of(0x29, "2026.11"), Field.of(0x2B, "QEMU"), Field.of(0x2C, "XX"),
        Field.of(0x2D, "onie-builder")]
    arm = load_recipe(PLATFORMS / "qemu_arm64.yaml")[0]
    assert Field.of(0x28, "arm64-qemu_arm64-r0") in decode(eeprom.make_image(arm) or b"")


def test_every_field_in_code_order(tmp_path: Path) -> None:
    recipe = recipe_from("""version: "9.9"
platform:
  eeprom:
    fields:
      vendor_extensions: ["0x00 0x00 0xa6 0x7f 0x01"]
      service_tag: ST
      diag_version: "3.1"
      vendor_name: Acme
      country_code: TW
      manufacturer: Acme Inc.
      mac_addresses: 64
      onie_version: "2019.05"
      platform_name: x86_64-acme-r0
      label_revision: A01
      device_version: 2
      manufacture_date: "05/31/2024 23:59:01"
      base_mac: 3c:2c:30:aa:bb:00
      serial_number: SN1
      part_number: PN1
      product_name: S1
""", tmp_path, KVM)
    assert [(f.code, f.text) for f in decode(eeprom.make_image(recipe) or b"")] == [
        (0x21, "S1"), (0x22, "PN1"), (0x23, "SN1"), (0x24, "3C:2C:30:AA:BB:00"),
        (0x25, "05/31/2024 23:59:01"), (0x26, "2"), (0x27, "A01"), (0x28, "x86_64-acme-r0"),
        (0x29, "2019.05"), (0x2A, "64"), (0x2B, "Acme Inc."), (0x2C, "TW"), (0x2D, "Acme"),
        (0x2E, "3.1"), (0x2F, "ST"), (0xFD, " 0x00 0x00 0xA6 0x7F 0x01")]


def test_sysfs_and_file_sources_have_no_image(tmp_path: Path) -> None:
    sysfs = recipe_from("platform:\n  eeprom: {source: sysfs, path: /sys/bus/i2c/devices/0-0056/eeprom}\n",
                        tmp_path, KVM)
    assert eeprom.make_image(sysfs) is None
    values = eeprom.template_values(sysfs)["eeprom"]
    assert (values["source"], values["file"], values["module"]) == (
        "sysfs", "/sys/bus/i2c/devices/0-0056/eeprom", "")
    file = recipe_from("platform:\n  eeprom: {source: file}\n", tmp_path, KVM)
    assert eeprom.template_values(file)["eeprom"]["file"] == "/mnt/onie-boot/onie/config/eeprom.bin"


@pytest.mark.parametrize(("block", "message"), [
    ("fields: {base_mac: '01:00:5e:00:00:01'}",
     "platform.eeprom.fields.base_mac: Base MAC Address must not be 00:00:00:00:00:00, a "
     "multicast address or FF:FF:FF:FF:FF:FF, got '01:00:5e:00:00:01'"),
    ("fields: {base_mac: '52:54:00:12:34'}",
     "platform.eeprom.fields.base_mac: Base MAC Address must be XX:XX:XX:XX:XX:XX, got "
     "'52:54:00:12:34'"),
    ("fields: {manufacture_date: '2024-05-31'}",
     "platform.eeprom.fields.manufacture_date: Manufacture Date must be MM/DD/YYYY hh:mm:ss, "
     "got '2024-05-31'"),
    ("fields: {device_version: 256}",
     "platform.eeprom.fields.device_version: TLV 0x26 (Device Version) must be 0-255, got 256"),
    ("fields: {mac_addresses: 0}",
     "platform.eeprom.fields.mac_addresses: TLV 0x2A (MAC Addresses) must be 1-65535, got 0"),
    ("fields: {country_code: TWN}",
     "platform.eeprom.fields.country_code: TLV 0x2C (Country Code) is 2 bytes, got 3, got 'TWN'"),
    ("fields: {vendor_extensions: ['1 2 300']}",
     "platform.eeprom.fields.vendor_extensions: TLV 0xFD: 300 is greater than 255, got '1 2 300'"),
    ("fields: {serial: SN1}",
     "platform.eeprom.fields.serial: unknown key; did you mean 'serial_number'?"),
    ("source: sysfs",
     "platform.eeprom: a 'sysfs' EEPROM needs 'path', e.g. /sys/bus/i2c/devices/0-0050/eeprom"),
    ("{source: virtual, path: /x}",
     "platform.eeprom: a 'virtual' EEPROM has no 'path': the build makes it from 'fields'"),
    ("{source: file, fields: {serial_number: SN1}}",
     "platform.eeprom: 'fields' apply only to a 'virtual' EEPROM, not to 'file'"),
    ("{source: file, path: /mnt/../etc/x}",
     "platform.eeprom.path: expected an absolute path in the running environment, got "
     "'/mnt/../etc/x'"),
    ("source: i2c", "platform.eeprom.source: expected one of 'virtual', 'sysfs' or 'file', got 'i2c'"),
    ("fields: {" + ", ".join(f"{k}: '{'x' * 255}'" for k in (
        "product_name", "part_number", "serial_number", "label_revision", "manufacturer",
        "vendor_name", "diag_version", "service_tag")) + "}",
     "platform.eeprom: fields: TlvInfo image would be 2077 bytes, at most 2048 are allowed"),
])
def test_bad_eeprom_sections(tmp_path: Path, block: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"extends: {KVM}\nplatform:\n  eeprom: {block}\n"
                    if block.startswith("{") else
                    f"extends: {KVM}\nplatform:\n  eeprom:\n    {block}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert [p.split(": ", 1)[1] for p in info.value.problems] == [message]
