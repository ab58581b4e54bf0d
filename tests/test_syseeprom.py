"""onie-syseeprom, the guest's BusyBox ash command, against builder/onie/tlvinfo.py: the same
bytes give the same text, what it writes decodes with a valid CRC-32, and its options, messages
and exit statuses are ONIE's (docs/onie-contract.md, "onie-syseeprom")."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from builder.onie.tlvcodes import Code
from builder.onie.tlvinfo import Field, decode, encode, lookup, render_code_list, render_text
from tests.guest_eeprom import RECIPES, Guest, guest, recipe_from

KVM = RECIPES / "kvm_x86_64.yaml"  # no EEPROM section: the default virtual one

QEMU = [Field.of(Code.PRODUCT_NAME, "QEMU"), Field.of(Code.SERIAL_NUMBER, "SN1"),
        Field.of(Code.MAC_BASE, "02:42:AC:11:00:02"), Field.of(Code.DEVICE_VERSION, 3),
        Field.of(Code.MAC_ADDRESSES, 300)]
EVERY = [
    Field.of(Code.PRODUCT_NAME, "S5248F-ON"), Field.of(Code.PART_NUMBER, "0ABC12"),
    Field.of(Code.SERIAL_NUMBER, "CN0ABC12DEF3456"), Field.of(Code.MAC_BASE, "3C:2C:30:AA:BB:00"),
    Field.of(Code.MANUFACTURE_DATE, "05/31/2024 23:59:01"), Field.of(Code.DEVICE_VERSION, 255),
    Field.of(Code.LABEL_REVISION, "A01"), Field.of(Code.PLATFORM_NAME, "x86_64-acme_s1-r0"),
    Field.of(Code.ONIE_VERSION, "2026.11"), Field.of(Code.MAC_ADDRESSES, 65535),
    Field.of(Code.MANUFACTURER, "Acme, Inc."), Field.of(Code.COUNTRY_CODE, "TW"),
    Field.of(Code.VENDOR_NAME, "Acme"), Field.of(Code.DIAG_VERSION, "3.1"),
    Field.of(Code.SERVICE_TAG, "www.example.com/st"),
    Field.of(Code.VENDOR_EXTENSION, "0x00 0x00 0xa6 0x7f 0x01 0xff"),
]
ODD = [
    Field(0x23, b"SN\x00hidden"),  # text stops at a NUL
    Field(0x21, b"100% \\x41 $(touch pwned) `id`"),  # printed as stored, never run
    Field(0x42, b"\x01\x02"),  # a code ONIE does not know: its bytes
    Field(0xFD, b""),  # an empty vendor extension: a trailing space
    Field(0x24, b"\x01\x02\x03"),  # a MAC of the wrong length: its bytes
    Field(0x27, b"\xe9t\xe9"),  # Latin-1 bytes as they are
]
LONG = [Field(0x21, bytes(range(32, 127)) * 2 + b"x" * 65), Field(0xFD, bytes(range(256))[:255])]


def at(g: Guest, image: bytes, where: str = "builtin") -> None:
    g.path(where).parent.mkdir(parents=True, exist_ok=True)
    g.path(where).write_bytes(image)


@pytest.mark.parametrize("fields", [QEMU, EVERY, ODD, LONG, []],
                         ids=["qemu", "every", "odd", "long", "empty"])
def test_listing_is_tlvinfos_text(tmp_path: Path, fields: list[Field]) -> None:
    g = guest(tmp_path)
    image = encode(fields)
    at(g, image + b"\xff" * 64)  # the rest of an EEPROM after the image is not read
    out = g.run("onie-syseeprom")
    assert (out.returncode, out.stderr) == (0, b"")
    assert out.stdout == render_text(image).encode("latin-1")
    assert not g.path("pwned").exists()


@pytest.mark.parametrize("fields", [QEMU, EVERY, ODD], ids=["qemu", "every", "odd"])
def test_get_prints_each_value(tmp_path: Path, fields: list[Field]) -> None:
    g = guest(tmp_path)
    image = encode(fields)
    at(g, image)
    for code in sorted({f.code for f in fields} | {0xFE}):
        out = g.run("onie-syseeprom", "-g", f"0x{code:x}")
        assert (out.returncode, out.stdout) == (0, (lookup(image, code) + "\n").encode("latin-1"))
    # strtoul(.., 0) spellings: decimal, upper-case hex, octal; and --get.
    for spelling in ("35", "0X23", "043"):
        assert g.text("onie-syseeprom", "-g", spelling) == lookup(image, 0x23) + "\n"
    assert g.text("onie-syseeprom", "--get", "0x23") == lookup(image, 0x23) + "\n"


def test_get_of_an_absent_code(tmp_path: Path) -> None:
    g = guest(tmp_path)
    at(g, encode(QEMU))
    for arg, shown in (("0x22", "0x22"), ("0x2f", "0x2f"), ("7", "0x07"), ("nonsense", "0x00")):
        out = g.run("onie-syseeprom", "-g", arg)
        message = f"ERROR: TLV code not present in EEPROM: {shown}\n"
        assert (out.returncode, out.stdout) == (1, message.encode())


@pytest.mark.parametrize(("damage", "notice"), [
    (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "checksum"),  # CRC off by one bit
    (lambda b: b[:12] + bytes([b[12] ^ 0x20]) + b[13:], "checksum"),  # a value byte changed
    (lambda b: b[:-6] + b"\xfd\x04" + b[-4:], "checksum"),  # no CRC TLV at the end
    (lambda b: b"TlvInfo\x00\x02" + b[9:], "header"),  # version 2
    (lambda b: b"TlvInfx\x00" + b[8:], "header"),
    (lambda b: b[:9] + b"\x07\xf6" + b[11:], "header"),  # total length over 2037
    (lambda b: b[:20], "checksum"),  # shorter than its header says
    (lambda b: b"", "header"),
])
def test_a_bad_image_reads_as_the_empty_one(tmp_path: Path, damage: object, notice: str) -> None:
    g = guest(tmp_path)
    at(g, damage(encode(QEMU)))  # type: ignore[operator]
    out = g.run("onie-syseeprom")
    assert out.returncode == 0
    assert out.stdout == render_text(encode([])).encode()
    assert out.stderr == f"Notice:  Invalid TLV {notice} found.  Using default contents.\n".encode()
    got = g.run("onie-syseeprom", "-g", "0x23")
    assert (got.returncode, got.stdout) == (1, b"ERROR: TLV code not present in EEPROM: 0x23\n")


def test_a_reserved_type_stops_the_listing(tmp_path: Path) -> None:
    g = guest(tmp_path)
    body = b"\x21\x04QEMU\xff\x01x"
    covered = b"TlvInfo\x00\x01" + (len(body) + 6).to_bytes(2, "big") + body + b"\xfe\x04"
    at(g, covered + zlib.crc32(covered).to_bytes(4, "big"))
    lines = g.text("onie-syseeprom").splitlines()
    assert lines[-2:] == ["Product Name         0x21   4 QEMU",
                          "Invalid TLV field starting at EEPROM offset 17"]


def test_set_then_read_back(tmp_path: Path) -> None:
    g = guest(tmp_path)
    at(g, encode(QEMU))
    out = g.text("onie-syseeprom", "-s", "0x23=NEW SERIAL,0x22=PN-1,0x24=52:54:00:ab:cd:ef,"
                 "0x26=0x10,0x2a=4096,0x25=12/31/2025 23:59:59,0xfd=0 0 0xa6 0x7f 1,0x2c=")
    written = g.path("ram").read_bytes()  # not on ONIE-BOOT: the copy in RAM
    # Each pair deletes the code's TLV and appends the new one before the CRC.
    expected = [QEMU[0], Field.of(0x23, "NEW SERIAL"), Field.of(0x22, "PN-1"),
                Field.of(0x24, "52:54:00:AB:CD:EF"), Field.of(0x26, 16), Field.of(0x2A, 4096),
                Field.of(0x25, "12/31/2025 23:59:59"), Field.of(0xFD, "0 0 0xa6 0x7f 1")]
    assert decode(written) == expected  # decode checks the CRC-32 gzip gave the guest
    assert written == encode(expected)
    assert out == (
        "Deleting TLV 0x23: Serial Number\nAdding   TLV 0x23: Serial Number\n"
        "Adding   TLV 0x22: Part Number\n"
        "Deleting TLV 0x24: Base MAC Address\nAdding   TLV 0x24: Base MAC Address\n"
        "Deleting TLV 0x26: Device Version\nAdding   TLV 0x26: Device Version\n"
        "Deleting TLV 0x2a: MAC Addresses\nAdding   TLV 0x2a: MAC Addresses\n"
        "Adding   TLV 0x25: Manufacture Date\nAdding   TLV 0xfd: Vendor Extension\n"
        "Programming passed.\n" + render_text(written))
    # The next run reads what was written; deleting the serial number leaves the rest.
    assert g.text("onie-syseeprom") == render_text(written)
    assert g.text("onie-syseeprom", "-g", "0x23") == "NEW SERIAL\n"
    g.text("onie-syseeprom", "--set", "0x23=")
    assert decode(g.path("ram").read_bytes()) == [f for f in expected if f.code != 0x23]


def test_set_keeps_hostile_text_as_data(tmp_path: Path) -> None:
    g = guest(tmp_path)
    value = "$(touch pwned)`touch pwned`;\\x41 %s 'q'"
    g.text("onie-syseeprom", "-s", f"0x21={value}")
    assert decode(g.path("ram").read_bytes()) == [Field.of(0x21, value)]
    assert g.text("onie-syseeprom", "-g", "0x21") == value + "\n"
    assert not g.path("pwned").exists()


@pytest.mark.parametrize(("arg", "message"), [
    ("0x23x=1", "ERROR: Invalid option: 0x23x=1"),
    ("0x99=1", "ERROR: Invalid option: 0x99=1"),
    ("0x023=1", "ERROR: Invalid option: 0x023=1"),
    ("35=1", "ERROR: Invalid option: 35=1"),
    ("0xfe=1", "WARNING: The CRC TLV is set automatically and cannot be set manually."),
    ("0x24=01:00:5e:00:00:01", "ERROR: MAC address must not be 00:00:00:00:00:00, a multicast"
                               " address or FF:FF:FF:FF:FF:FF."),
    ("0x24=00:00:00:00:00:00", "ERROR: MAC address must not be 00:00:00:00:00:00, a multicast"
                               " address or FF:FF:FF:FF:FF:FF."),
    ("0x24=52:54:00:12:34", "ERROR: MAC address must be in the format XX:XX:XX:XX:XX:XX: 52:54:00:12:34"),
    ("0x25=2025-12-31 23:59:59", "ERROR: Bad date format (MM/DD/YYYY hh:mm:ss): 2025-12-31 23:59:59"),
    ("0x26=256", "ERROR: Device version must be 255 or less. Value supplied: 256"),
    ("0x2a=65536", "ERROR: MAC Size must be 65535 or less. Value supplied: 65536"),
    ("0xfd=1 2 300", "ERROR: Bad value for TLV 0xfd: 300 is not a byte"),
    (",".join(f"0x2{d}={'x' * 250}" for d in "123789bcdef"),
     "ERROR: There is not enough room in the EERPOM to save data."),
])
def test_set_refuses_what_onie_refuses(tmp_path: Path, arg: str, message: str) -> None:
    g = guest(tmp_path)
    at(g, encode(QEMU))
    out = g.run("onie-syseeprom", "-s", arg)
    assert out.returncode == 1
    assert out.stdout.decode().splitlines()[-1] == message
    assert not g.path("ram").exists()  # nothing was written


def test_erase_and_list(tmp_path: Path) -> None:
    g = guest(tmp_path)
    at(g, encode(QEMU))
    assert g.text("onie-syseeprom", "-e") == "Programming passed.\n" + render_text(encode([]))
    assert g.path("ram").read_bytes() == encode([])
    assert g.text("onie-syseeprom", "-l") == render_code_list()
    assert g.text("onie-syseeprom", "--list") == render_code_list()
    for args in (["-h"], ["--help"], ["-x"], ["extra"]):
        out = g.run("onie-syseeprom", *args)
        assert out.returncode == 1 and out.stdout == b""
        # The usage on stderr (after getopts' own line for an unknown option).
        assert "Display and program the system EEPROM data block." in out.stderr.decode().splitlines()


def test_virtual_sources_in_order_and_writes_on_onie_boot(tmp_path: Path) -> None:
    """The saved copy on ONIE-BOOT, the copy in RAM, the VM's fw_cfg blob, the image's own."""
    g = guest(tmp_path)
    images = {name: encode([Field.of(0x23, name)]) for name in ("builtin", "fw_cfg", "ram")}
    at(g, images["builtin"])
    assert g.text("onie-syseeprom", "-g", "0x23") == "builtin\n"
    at(g, images["fw_cfg"], "fw_cfg")
    assert g.text("onie-syseeprom", "-g", "0x23") == "fw_cfg\n"
    at(g, images["ram"], "ram")
    assert g.text("onie-syseeprom", "-g", "0x23") == "ram\n"
    # With ONIE-BOOT mounted a write goes there (and survives a reboot) and wins.
    g.path("onie-boot").mkdir()
    g.path("mounts").write_text(f"/dev/vda2 {g.path('onie-boot')} ext4 rw 0 0\n")
    g.text("onie-syseeprom", "-s", "0x23=saved")
    saved = g.path("onie-boot/onie/config/eeprom.bin")
    assert decode(saved.read_bytes()) == [Field.of(0x23, "saved")]
    assert g.path("ram").read_bytes() == images["ram"]
    assert g.text("onie-syseeprom", "-g", "0x23") == "saved\n"


def test_sysfs_source(tmp_path: Path) -> None:
    sysfs = recipe_from("platform:\n  eeprom:\n    source: sysfs\n"
                        "    path: /sys/bus/i2c/devices/0-0050/eeprom\n", tmp_path, KVM)
    g = guest(tmp_path, sysfs)
    g.path("device").write_bytes(encode(QEMU) + b"\xff" * (256 - len(encode(QEMU))))
    assert g.text("onie-syseeprom") == render_text(encode(QEMU))
    g.text("onie-syseeprom", "-s", "0x23=SN2")
    assert decode(g.path("device").read_bytes()) == [*QEMU[:1], *QEMU[2:], Field.of(0x23, "SN2")]
    assert not g.path("ram").exists()


def test_a_file_on_onie_boot_is_written_only_when_it_is_mounted(tmp_path: Path) -> None:
    g = guest(tmp_path, recipe_from("platform:\n  eeprom: {source: file}\n", tmp_path, KVM))
    saved = g.path("onie-boot/onie/config/eeprom.bin")
    # Missing, it reads as the empty image.
    out = g.run("onie-syseeprom")
    assert out.stdout == render_text(encode([])).encode()
    assert out.stderr == b"Notice:  Invalid TLV header found.  Using default contents.\n"
    out = g.run("onie-syseeprom", "-s", "0x21=made")
    assert out.returncode == 1
    assert out.stdout.decode().splitlines()[-1] == (
        f"ERROR: Unable to write the EEPROM: {saved} (ONIE-BOOT is not mounted at "
        f"{g.path('onie-boot')})")
    assert not saved.exists()
    g.path("onie-boot").mkdir()
    g.path("mounts").write_text(f"/dev/vda2 {g.path('onie-boot')} ext4 rw 0 0\n")
    g.text("onie-syseeprom", "-s", "0x21=made")
    assert decode(saved.read_bytes()) == [Field.of(0x21, "made")]
