"""ONIE TlvInfo's vocabulary: the header constants, the TLV type codes with ONIE's display
names, the value patterns, and the errors a malformed EEPROM image raises (``tlvinfo`` builds
and reads the images)."""

from __future__ import annotations

import enum
import re

MAGIC = b"TlvInfo\x00"
"""The 8-byte identification string that opens every TlvInfo image."""

VERSION = 1
"""The only header version defined (0x00 and 0xFF are reserved)."""

HEADER_SIZE = 11
"""Magic (8) + version (1) + total length (2)."""

MAX_SIZE = 2048
"""Largest image, from the first byte of the magic to the last byte of the CRC TLV."""

MAX_TOTAL_LENGTH = MAX_SIZE - HEADER_SIZE
"""Largest value of the header's total-length field (2037)."""

MAX_VALUE_LENGTH = 255
"""A TLV's length is one byte."""

CRC_TLV_SIZE = 6
"""Type, length and the 4-byte CRC."""


class Code(enum.IntEnum):
    """The TLV type codes ONIE defines (0x00 and 0xFF are reserved and never used)."""

    PRODUCT_NAME = 0x21
    PART_NUMBER = 0x22
    SERIAL_NUMBER = 0x23
    MAC_BASE = 0x24
    MANUFACTURE_DATE = 0x25
    DEVICE_VERSION = 0x26
    LABEL_REVISION = 0x27
    PLATFORM_NAME = 0x28
    ONIE_VERSION = 0x29
    MAC_ADDRESSES = 0x2A
    MANUFACTURER = 0x2B
    COUNTRY_CODE = 0x2C
    VENDOR_NAME = 0x2D
    DIAG_VERSION = 0x2E
    SERVICE_TAG = 0x2F
    VENDOR_EXTENSION = 0xFD
    CRC_32 = 0xFE

    @property
    def display_name(self) -> str:
        """The name ``onie-syseeprom`` prints in its TLV Name column and its ``-l`` list."""
        return _DISPLAY_NAMES[self]


# ONIE's BusyBox onie-syseeprom applet names 0x29 "ONIE Version"; its older i2c-tools build
# called it "Loader Version". The current name is used.
_DISPLAY_NAMES: dict[Code, str] = {
    Code.PRODUCT_NAME: "Product Name",
    Code.PART_NUMBER: "Part Number",
    Code.SERIAL_NUMBER: "Serial Number",
    Code.MAC_BASE: "Base MAC Address",
    Code.MANUFACTURE_DATE: "Manufacture Date",
    Code.DEVICE_VERSION: "Device Version",
    Code.LABEL_REVISION: "Label Revision",
    Code.PLATFORM_NAME: "Platform Name",
    Code.ONIE_VERSION: "ONIE Version",
    Code.MAC_ADDRESSES: "MAC Addresses",
    Code.MANUFACTURER: "Manufacturer",
    Code.COUNTRY_CODE: "Country Code",
    Code.VENDOR_NAME: "Vendor Name",
    Code.DIAG_VERSION: "Diag Version",
    Code.SERVICE_TAG: "Service Tag",
    Code.VENDOR_EXTENSION: "Vendor Extension",
    Code.CRC_32: "CRC-32",
}

STRING_CODES = frozenset({
    Code.PRODUCT_NAME, Code.PART_NUMBER, Code.SERIAL_NUMBER, Code.MANUFACTURE_DATE,
    Code.LABEL_REVISION, Code.PLATFORM_NAME, Code.ONIE_VERSION, Code.MANUFACTURER,
    Code.COUNTRY_CODE, Code.VENDOR_NAME, Code.DIAG_VERSION, Code.SERVICE_TAG,
})
"""Codes whose value is text (printed as the raw characters)."""

FIXED_LENGTHS: dict[int, int] = {
    Code.MAC_BASE: 6,
    Code.MANUFACTURE_DATE: 19,
    Code.DEVICE_VERSION: 1,
    Code.MAC_ADDRESSES: 2,
    Code.COUNTRY_CODE: 2,
    Code.CRC_32: 4,
}

RESERVED_CODES = frozenset({0x00, 0xFF})

DATE = re.compile(r"(\d\d)/(\d\d)/(\d{4}) (\d\d):(\d\d):(\d\d)", re.ASCII)
MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}", re.ASCII)
BYTE_SEPARATORS = re.compile(r"[ \t,;]+")


class TlvInfoError(ValueError):
    """Something is wrong with a TlvInfo image or with a value meant for one."""


class TlvHeaderError(TlvInfoError):
    """The first 11 bytes are not a TlvInfo version 1 header."""


class TlvLengthError(TlvInfoError):
    """The image is shorter than its header says, or longer than TlvInfo allows."""


class TlvFormatError(TlvInfoError):
    """The TLV list itself is malformed: a reserved type, an overrun, no CRC TLV at the end."""


class TlvCrcError(TlvInfoError):
    """The stored CRC-32 does not match the bytes it covers."""

    def __init__(self, stored: int, computed: int) -> None:
        super().__init__(f"TlvInfo CRC-32 mismatch: stored 0x{stored:08X}, computed 0x{computed:08X}")
        self.stored = stored
        self.computed = computed


class TlvValueError(TlvInfoError):
    """A value cannot be stored under its code (wrong type, format, range or length)."""


class TlvMissingError(TlvInfoError):
    """The image has no TLV with the requested code."""


def code_name(code: int) -> str:
    """ONIE's display name for a type code; ``"Unknown"`` for codes ONIE does not define."""
    try:
        return Code(code).display_name
    except ValueError:
        return "Unknown"
