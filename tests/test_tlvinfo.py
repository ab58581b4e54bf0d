"""ONIE TlvInfo EEPROM images: the byte layout, the CRC, the errors, and onie-syseeprom's text.

Expected bytes and text here are written out by hand from the ONIE design spec and from the
format strings of ONIE's onie-syseeprom, not produced by the module under test.
"""

from __future__ import annotations

import binascii
import os
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from builder.onie import tlvcodes, tlvinfo
from builder.onie.tlvcodes import (
    Code,
    TlvCrcError,
    TlvFormatError,
    TlvHeaderError,
    TlvInfoError,
    TlvLengthError,
    TlvMissingError,
    TlvValueError,
)
from builder.onie.tlvinfo import (
    Field,
    decode,
    encode,
    lookup,
    render_text,
)

# Built by hand: header, five TLVs, CRC TLV.
HAND_PREFIX = bytes.fromhex(
    "546C76496E666F00"  # "TlvInfo\0"
    "01"                # version
    "0020"              # total length: 26 bytes of TLVs + 6 of CRC TLV = 32
    "2104" "51454D55"   # Product Name, 4, "QEMU"
    "2303" "534E31"     # Serial Number, 3, "SN1"
    "2406" "0242AC110002"  # Base MAC Address, 6
    "2601" "03"         # Device Version, 1, 3
    "2A02" "012C"       # MAC Addresses, 2, 300 big-endian
    "FE04"              # CRC-32 TLV type and length: covered by the CRC
)
HAND_CRC = 0x9E50DBA3
HAND_IMAGE = HAND_PREFIX + HAND_CRC.to_bytes(4, "big")

HAND_FIELDS = [
    Field.of(Code.PRODUCT_NAME, "QEMU"),
    Field.of(Code.SERIAL_NUMBER, "SN1"),
    Field.of(Code.MAC_BASE, "02:42:ac:11:00:02"),
    Field.of(Code.DEVICE_VERSION, 3),
    Field.of(Code.MAC_ADDRESSES, 300),
]


def test_display_names_are_onies() -> None:
    assert {code.value: code.display_name for code in Code} == {
        0x21: "Product Name", 0x22: "Part Number", 0x23: "Serial Number",
        0x24: "Base MAC Address", 0x25: "Manufacture Date", 0x26: "Device Version",
        0x27: "Label Revision", 0x28: "Platform Name", 0x29: "ONIE Version",
        0x2A: "MAC Addresses", 0x2B: "Manufacturer", 0x2C: "Country Code",
        0x2D: "Vendor Name", 0x2E: "Diag Version", 0x2F: "Service Tag",
        0xFD: "Vendor Extension", 0xFE: "CRC-32",
    }
    assert tlvcodes.code_name(0x30) == "Unknown"


def test_crc_is_the_standard_crc32() -> None:
    # The CRC-32 check value (ISO-HDLC, as zlib, gzip and Python's binascii compute it).
    assert tlvinfo.crc32(b"123456789") == 0xCBF43926
    assert binascii.crc32(HAND_PREFIX) == HAND_CRC


def test_encode_matches_the_hand_built_vector() -> None:
    assert encode(HAND_FIELDS) == HAND_IMAGE


def test_decode_the_hand_built_vector() -> None:
    assert decode(HAND_IMAGE) == HAND_FIELDS
    assert [f.text for f in decode(HAND_IMAGE)] == ["QEMU", "SN1", "02:42:AC:11:00:02", "3", "300"]


def test_round_trips() -> None:
    fields = [
        Field.of(Code.PRODUCT_NAME, "x86_64-qemu_x86_64"),
        Field.of(Code.PART_NUMBER, "PN-0001"),
        Field.of(Code.SERIAL_NUMBER, "QEMU0123456789"),
        Field.of(Code.MAC_BASE, "52:54:00:12:34:56"),
        Field.of(Code.MANUFACTURE_DATE, "12/31/2023 23:59:59"),
        Field.of(Code.DEVICE_VERSION, "0x02"),
        Field.of(Code.LABEL_REVISION, "R01"),
        Field.of(Code.PLATFORM_NAME, "x86_64-qemu_x86_64-r0"),
        Field.of(Code.ONIE_VERSION, "2024.01"),
        Field.of(Code.MAC_ADDRESSES, "65535"),
        Field.of(Code.MANUFACTURER, "QEMU"),
        Field.of(Code.COUNTRY_CODE, "US"),
        Field.of(Code.VENDOR_NAME, "onie-builder"),
        Field.of(Code.DIAG_VERSION, "1.0"),
        Field.of(Code.SERVICE_TAG, "TAG"),
        Field.of(Code.VENDOR_EXTENSION, "0 0 0xA6 0x7F, 1;2\t255"),
        Field(0x30, b"\x01\x02"),
    ]
    image = encode(fields)
    assert decode(image) == fields
    assert encode(decode(image)) == image
    # An EEPROM is larger than its TlvInfo data; what follows the CRC TLV is ignored.
    assert decode(image + b"\xff" * 200) == fields
    assert fields[15].value == bytes((0, 0, 0xA6, 0x7F, 1, 2, 255))


def test_empty_image_holds_only_the_crc() -> None:
    image = encode([])
    assert image[:11] == b"TlvInfo\x00\x01\x00\x06"
    assert image[11:13] == b"\xfe\x04"
    assert image[13:] == zlib.crc32(image[:13]).to_bytes(4, "big")
    assert decode(image) == []


def test_largest_image_is_2048_bytes() -> None:
    # 11 header + 6 CRC leaves 2031 bytes: seven 257-byte TLVs (1799) + one of 232 (2+230).
    fields = [Field(0xFD, bytes(255))] * 7 + [Field(0xFD, bytes(230))]
    image = encode(fields)
    assert len(image) == 2048
    assert decode(image) == fields
    with pytest.raises(TlvLengthError, match="2049"):
        encode([*fields[:-1], Field(0xFD, bytes(231))])


def test_over_long_value_is_refused() -> None:
    assert len(Field.of(Code.PRODUCT_NAME, "x" * 255).value) == 255
    with pytest.raises(TlvValueError, match="256 bytes"):
        Field.of(Code.PRODUCT_NAME, "x" * 256)
    with pytest.raises(TlvValueError):
        Field(0xFD, bytes(256))


def test_bad_crc() -> None:
    broken = bytearray(HAND_IMAGE)
    broken[13] ^= 0x01  # one bit of "QEMU"
    with pytest.raises(TlvCrcError) as caught:
        decode(bytes(broken))
    assert caught.value.stored == HAND_CRC
    assert caught.value.computed == binascii.crc32(bytes(broken[:-4]))
    stored_wrong = HAND_PREFIX + (HAND_CRC ^ 1).to_bytes(4, "big")
    with pytest.raises(TlvCrcError):
        render_text(stored_wrong)


def test_truncated_input() -> None:
    for cut in (0, 5, 10, 11, len(HAND_IMAGE) - 1):
        with pytest.raises(TlvLengthError, match="truncated"):
            decode(HAND_IMAGE[:cut])


def test_bad_header() -> None:
    with pytest.raises(TlvHeaderError):
        decode(b"TlvInfX\x00" + HAND_IMAGE[8:])
    with pytest.raises(TlvHeaderError, match="version 2"):
        decode(HAND_IMAGE[:8] + b"\x02" + HAND_IMAGE[9:])
    with pytest.raises(TlvLengthError, match="2038"):
        decode(HAND_IMAGE[:9] + (2038).to_bytes(2, "big") + bytes(2100))


def test_malformed_tlv_lists() -> None:
    def image(body: bytes) -> bytes:
        covered = b"TlvInfo\x00\x01" + (len(body) + 6).to_bytes(2, "big") + body + b"\xfe\x04"
        return covered + zlib.crc32(covered).to_bytes(4, "big")

    with pytest.raises(TlvFormatError, match="reserved"):
        decode(image(b"\x00\x00"))
    with pytest.raises(TlvFormatError, match="runs into"):
        decode(image(b"\x21\x05AB"))
    with pytest.raises(TlvFormatError, match="not the last"):
        decode(image(b"\xfe\x04\x00\x00\x00\x00"))
    no_crc = b"TlvInfo\x00\x01\x00\x06\x21\x04QEMU"
    with pytest.raises(TlvFormatError, match="CRC-32 TLV"):
        decode(no_crc)
    assert issubclass(TlvFormatError, TlvInfoError)
    assert issubclass(TlvInfoError, ValueError)


def test_values_are_checked_per_code() -> None:
    bad: list[tuple[int, str | int | bytes]] = [
        (Code.MAC_BASE, "01:00:5e:00:00:01"),   # multicast
        (Code.MAC_BASE, "ff:ff:ff:ff:ff:ff"),   # broadcast
        (Code.MAC_BASE, "00:00:00:00:00:00"),
        (Code.MAC_BASE, "52-54-00-12-34-56"),
        (Code.MAC_BASE, b"\x52\x54\x00"),
        (Code.MANUFACTURE_DATE, "2024-01-02 03:04:05"),
        (Code.MANUFACTURE_DATE, "13/01/2024 00:00:00"),
        (Code.MANUFACTURE_DATE, "1/2/2024 3:04:05"),
        (Code.DEVICE_VERSION, 256),
        (Code.DEVICE_VERSION, "seven"),
        (Code.MAC_ADDRESSES, 0),
        (Code.MAC_ADDRESSES, 65536),
        (Code.COUNTRY_CODE, "USA"),
        (Code.SERIAL_NUMBER, "caf\u00e9"),
        (Code.SERIAL_NUMBER, "a\x00b"),
        (Code.SERIAL_NUMBER, 5),
        (Code.VENDOR_EXTENSION, "1 2 256"),
        (Code.VENDOR_EXTENSION, "1 x"),
        (Code.CRC_32, b"\x00\x00\x00\x00"),
        (0x00, b""),
        (0xFF, b""),
    ]
    for code, value in bad:
        with pytest.raises(TlvValueError):
            Field.of(code, value)
    with pytest.raises(TlvValueError):
        encode([Field(Code.CRC_32, bytes(4))])


def test_lookup_prints_like_dash_g() -> None:
    assert lookup(HAND_IMAGE, 0x23) == "SN1"
    assert lookup(HAND_IMAGE, Code.MAC_BASE) == "02:42:AC:11:00:02"
    assert lookup(HAND_IMAGE, 0x2A) == "300"
    assert lookup(HAND_IMAGE, 0xFE) == "0x9E50DBA3"
    with pytest.raises(TlvMissingError, match="not present in EEPROM: 0x22"):
        lookup(HAND_IMAGE, 0x22)


def test_render_text_is_onie_syseeprom_output() -> None:
    image = encode([
        Field.of(Code.PRODUCT_NAME, "QEMU-X86"),
        Field(Code.PART_NUMBER, b"PN-1\x00\xff"),  # printed up to the NUL, as C does
        Field.of(Code.MANUFACTURE_DATE, "01/02/2024 03:04:05"),
        Field.of(Code.COUNTRY_CODE, "DE"),
        Field.of(Code.VENDOR_EXTENSION, b"\x00\x00\xa6\x7f\x01"),
        Field(0x30, b"\x7f"),
        Field(Code.VENDOR_EXTENSION, b""),
    ])
    crc = binascii.crc32(image[:-4])
    assert image[-4:] == crc.to_bytes(4, "big")
    assert render_text(image) == (
        "TlvInfo Header:\n"
        "   Id String:    TlvInfo\n"
        "   Version:      1\n"
        "   Total Length: 61\n"
        "TLV Name             Code Len Value\n"
        "-------------------- ---- --- -----\n"
        "Product Name         0x21   8 QEMU-X86\n"
        "Part Number          0x22   6 PN-1\n"
        "Manufacture Date     0x25  19 01/02/2024 03:04:05\n"
        "Country Code         0x2C   2 DE\n"
        "Vendor Extension     0xFD   5  0x00 0x00 0xA6 0x7F 0x01\n"
        "Unknown              0x30   1  0x7F\n"
        "Vendor Extension     0xFD   0 \n"
        f"CRC-32               0xFE   4 0x{crc:08X}\n"
        "Checksum is valid.\n"
    )
    assert crc == 0x0A6421FF


def test_render_text_of_the_hand_built_vector() -> None:
    assert render_text(HAND_IMAGE).splitlines()[6:] == [
        "Product Name         0x21   4 QEMU",
        "Serial Number        0x23   3 SN1",
        "Base MAC Address     0x24   6 02:42:AC:11:00:02",
        "Device Version       0x26   1 3",
        "MAC Addresses        0x2A   2 300",
        "CRC-32               0xFE   4 0x9E50DBA3",
        "Checksum is valid.",
    ]


def test_code_list_is_dash_l_output() -> None:
    lines = tlvinfo.render_code_list().splitlines()
    assert lines[:3] == ["TLV Code    TLV Name", "========    =================", "0x21        Product Name"]
    assert lines[-2:] == ["0xfd        Vendor Extension", "0xfe        CRC-32"]
    assert len(lines) == 2 + 17


def test_busybox_gzip_trailer_holds_the_crc32(tmp_path: Path) -> None:
    """The guest can compute TlvInfo's CRC in BusyBox ash: gzip's 8-byte trailer is the CRC-32
    of the input (little-endian), then the input size mod 2**32 (RFC 1952)."""
    busybox = shutil.which("busybox")
    if busybox is None:
        message = "busybox is not installed (apt-get install busybox-static)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    inputs = [b"", b"a", b"123456789", HAND_PREFIX, bytes(range(256)) * 9, os.urandom(3000)]
    for index, data in enumerate(inputs):
        path = tmp_path / f"in{index}"
        path.write_bytes(data)
        # The exact pipeline a guest script runs, in BusyBox's own shell and applets.
        proc = subprocess.run(
            [busybox, "sh", "-c", "busybox gzip -c \"$1\" | busybox tail -c 8 | busybox head -c 4",
             "sh", str(path)],
            capture_output=True, check=True, env={"PATH": str(Path(busybox).parent)})
        assert len(proc.stdout) == 4
        assert int.from_bytes(proc.stdout, "little") == zlib.crc32(data), data[:16]
