"""ONIE TlvInfo EEPROM images: build them, read them back, and print them as ONIE does.

The format (ONIE design spec, "Board EEPROM Information Format"):

- an 11-byte header: the 8 bytes ``b"TlvInfo\\0"``, a version byte (always 1), and the
  big-endian 16-bit length of everything that follows the header;
- then TLVs, each a type byte, a length byte (0-255) and that many value bytes;
- the last TLV is always the CRC-32 TLV: type 0xFE, length 4, and the big-endian CRC-32 of
  every byte from the ``T`` of ``TlvInfo`` up to and including that TLV's length byte.

The whole image, header to CRC, is at most 2048 bytes.

The CRC is the standard (ISO-HDLC / zlib / gzip / Ethernet) CRC-32: reflected polynomial
0xEDB88320, initial value and final XOR 0xFFFFFFFF. The spec names Python's
``binascii.crc32()`` as the reference, ONIE's first ``onie-syseeprom`` (i2c-tools patch) linked
zlib's ``crc32()``, and the BusyBox applet ONIE ships today computes the same table-driven CRC
with the same pre/post inversion. ``zlib.crc32`` is that function, so it is used here; the
tests pin the standard check value (``crc32(b"123456789") == 0xCBF43926``) and a BusyBox
``gzip`` trailer against it.

:func:`render_text` reproduces the text ``onie-syseeprom`` prints with no arguments, byte for
byte; :attr:`Field.text` is what ``onie-syseeprom -g CODE`` prints (without the newline).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from builder.onie.tlvcodes import (
    BYTE_SEPARATORS,
    CRC_TLV_SIZE,
    DATE,
    FIXED_LENGTHS,
    HEADER_SIZE,
    MAC,
    MAGIC,
    MAX_SIZE,
    MAX_TOTAL_LENGTH,
    MAX_VALUE_LENGTH,
    RESERVED_CODES,
    STRING_CODES,
    VERSION,
    Code,
    TlvCrcError,
    TlvFormatError,
    TlvHeaderError,
    TlvLengthError,
    TlvMissingError,
    TlvValueError,
    code_name,
)


def crc32(data: bytes) -> int:
    """The TlvInfo CRC: the standard CRC-32 (see the module docstring), as an unsigned int."""
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Field:
    """One TLV: a type code and its raw value bytes (the CRC TLV is never a Field)."""

    code: int
    value: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFF:
            raise TlvValueError(f"TLV code {self.code!r} does not fit in one byte")
        if len(self.value) > MAX_VALUE_LENGTH:
            raise TlvValueError(
                f"TLV 0x{self.code:02X} ({code_name(self.code)}): value is {len(self.value)} bytes,"
                f" at most {MAX_VALUE_LENGTH} fit")

    @classmethod
    def of(cls, code: int, value: str | int | bytes) -> Field:
        """A field from a typed value, checked against ONIE's format for ``code``.

        - text codes take ASCII ``str`` (Manufacture Date as ``MM/DD/YYYY hh:mm:ss``,
          Country Code as two letters);
        - Base MAC Address takes ``"XX:XX:XX:XX:XX:XX"`` (a unicast, non-zero address, as
          ``onie-syseeprom -s`` demands) or 6 raw bytes;
        - Device Version takes an ``int`` 0-255, MAC Addresses an ``int`` 1-65535 (stored as 2
          big-endian bytes); both also take the number as text (decimal or ``0x`` hex);
        - Vendor Extension and codes ONIE does not define take raw ``bytes``, or text listing
          byte values separated by spaces, tabs, commas or semicolons (the ``-s`` syntax);
        - the CRC-32 code and the reserved codes 0x00 and 0xFF are refused: the CRC is computed.
        """
        if code in RESERVED_CODES:
            raise TlvValueError(f"TLV code 0x{code:02X} is reserved")
        if code == Code.CRC_32:
            raise TlvValueError("the CRC-32 TLV is computed by encode(), it cannot be given")
        if isinstance(value, bytes):
            raw = value
        elif code in STRING_CODES:
            raw = _encode_text(code, value)
        elif code == Code.MAC_BASE:
            raw = _encode_mac(value)
        elif code == Code.DEVICE_VERSION:
            raw = _encode_number(code, value, 0, 0xFF).to_bytes(1, "big")
        elif code == Code.MAC_ADDRESSES:
            raw = _encode_number(code, value, 1, 0xFFFF).to_bytes(2, "big")
        elif isinstance(value, str):
            raw = _encode_byte_list(code, value)
        else:
            raise TlvValueError(f"TLV 0x{code:02X} ({code_name(code)}) takes bytes, not {value!r}")
        expected = FIXED_LENGTHS.get(code)
        if expected is not None and len(raw) != expected:
            raise TlvValueError(
                f"TLV 0x{code:02X} ({code_name(code)}) is {expected} bytes, got {len(raw)}")
        if code == Code.MAC_BASE:
            _check_unicast(raw)
        return cls(code, raw)

    @property
    def name(self) -> str:
        """ONIE's display name for this field's code."""
        return code_name(self.code)

    @property
    def text(self) -> str:
        """The value as ``onie-syseeprom`` prints it (also the output of ``-g``)."""
        return _decode_value(self.code, self.value)


def encode(fields: Iterable[Field]) -> bytes:
    """The TlvInfo image holding ``fields`` in order, with the CRC-32 TLV appended.

    Raises :class:`TlvValueError` for a CRC or reserved code among ``fields`` and
    :class:`TlvLengthError` when the image would exceed 2048 bytes.
    """
    body = bytearray()
    for field in fields:
        if field.code in RESERVED_CODES or field.code == Code.CRC_32:
            raise TlvValueError(f"TLV code 0x{field.code:02X} cannot be stored as a field")
        body += bytes((field.code, len(field.value))) + field.value
    total = len(body) + CRC_TLV_SIZE
    if total > MAX_TOTAL_LENGTH:
        raise TlvLengthError(
            f"TlvInfo image would be {HEADER_SIZE + total} bytes, at most {MAX_SIZE} are allowed")
    covered = MAGIC + bytes((VERSION,)) + total.to_bytes(2, "big") + body + bytes((Code.CRC_32, 4))
    return covered + crc32(covered).to_bytes(4, "big")


@dataclass(frozen=True)
class _Parsed:
    total_length: int
    fields: tuple[Field, ...]
    crc: int


def _parse(image: bytes) -> _Parsed:
    if len(image) < HEADER_SIZE:
        raise TlvLengthError(f"TlvInfo image truncated: {len(image)} bytes, the header alone is 11")
    if image[:8] != MAGIC:
        raise TlvHeaderError(f"not a TlvInfo image: starts with {image[:8]!r}")
    if image[8] != VERSION:
        raise TlvHeaderError(f"TlvInfo version {image[8]} is not supported (only 1 is defined)")
    total = int.from_bytes(image[9:11], "big")
    if total > MAX_TOTAL_LENGTH:
        raise TlvLengthError(f"TlvInfo total length {total} exceeds the maximum {MAX_TOTAL_LENGTH}")
    end = HEADER_SIZE + total
    if len(image) < end:
        raise TlvLengthError(
            f"TlvInfo image truncated: header says {end} bytes, only {len(image)} present")
    if total < CRC_TLV_SIZE:
        raise TlvFormatError("TlvInfo image has no room for its CRC-32 TLV")
    crc_at = end - CRC_TLV_SIZE
    if image[crc_at] != Code.CRC_32 or image[crc_at + 1] != 4:
        raise TlvFormatError("the last TLV of a TlvInfo image must be the 4-byte CRC-32 TLV")
    fields: list[Field] = []
    offset = HEADER_SIZE
    while offset < crc_at:
        code = image[offset]
        if code in RESERVED_CODES:
            raise TlvFormatError(f"invalid TLV field (reserved type 0x{code:02X}) at offset {offset}")
        if code == Code.CRC_32:
            raise TlvFormatError(f"CRC-32 TLV at offset {offset} is not the last TLV")
        if offset + 2 > crc_at:
            raise TlvFormatError(f"TLV at offset {offset} runs into the CRC-32 TLV")
        length = image[offset + 1]
        value_end = offset + 2 + length
        if value_end > crc_at:
            raise TlvFormatError(
                f"TLV 0x{code:02X} at offset {offset} ({length} bytes) runs into the CRC-32 TLV")
        fields.append(Field(code, bytes(image[offset + 2:value_end])))
        offset = value_end
    stored = int.from_bytes(image[crc_at + 2:end], "big")
    computed = crc32(bytes(image[:crc_at + 2]))
    if stored != computed:
        raise TlvCrcError(stored, computed)
    return _Parsed(total, tuple(fields), stored)


def decode(image: bytes) -> list[Field]:
    """The fields of a TlvInfo image, in order, without the CRC-32 TLV.

    Bytes after the CRC TLV (the rest of a larger EEPROM, usually 0xFF) are ignored. Raises a
    :class:`TlvInfoError` subclass naming what is wrong: :class:`TlvHeaderError`,
    :class:`TlvLengthError`, :class:`TlvFormatError` or :class:`TlvCrcError`.
    """
    return list(_parse(image).fields)


def lookup(image: bytes, code: int) -> str:
    """What ``onie-syseeprom -g CODE`` prints for ``image``: the first TLV with ``code``.

    Raises :class:`TlvMissingError` (ONIE: ``TLV code not present in EEPROM``) when absent.
    """
    parsed = _parse(image)
    if code == Code.CRC_32:
        return f"0x{parsed.crc:08X}"
    for field in parsed.fields:
        if field.code == code:
            return field.text
    raise TlvMissingError(f"ERROR: TLV code not present in EEPROM: 0x{code:02x}")


def render_text(image: bytes) -> str:
    """The exact text ``onie-syseeprom`` (no arguments) prints for a valid ``image``.

    Layout: a ``TlvInfo Header:`` block, a column header, one line per TLV formatted as
    name left-justified in 20 columns (cut to 19 characters), a space, ``0x`` and the code in
    two upper-case hex digits, a space, the length right-justified in 3 columns, a space and
    the value; then ``Checksum is valid.``. Every line ends with a newline.
    """
    parsed = _parse(image)
    lines = [
        "TlvInfo Header:",
        "   Id String:    TlvInfo",
        f"   Version:      {VERSION}",
        f"   Total Length: {parsed.total_length}",
        "TLV Name             Code Len Value",
        "-------------------- ---- --- -----",
    ]
    for field in (*parsed.fields, Field(Code.CRC_32, parsed.crc.to_bytes(4, "big"))):
        lines.append(f"{field.name[:19]:<20} 0x{field.code:02X} {len(field.value):3d} {field.text}")
    lines.append("Checksum is valid.")
    return "\n".join(lines) + "\n"


def render_code_list() -> str:
    """The text ``onie-syseeprom -l`` prints: every code ONIE understands, with its name."""
    lines = ["TLV Code    TLV Name", "========    ================="]
    lines += [f"0x{code:02x}        {code.display_name}" for code in Code]
    return "\n".join(lines) + "\n"


def _decode_value(code: int, raw: bytes) -> str:
    # ONIE copies a text value into a C string, so printing stops at the first NUL; text is
    # mapped byte-for-character (latin-1) so str.encode("latin-1") gives ONIE's exact bytes.
    if code in STRING_CODES:
        return raw.split(b"\x00", 1)[0].decode("latin-1")
    expected = FIXED_LENGTHS.get(code)
    if expected is not None and len(raw) == expected:
        if code == Code.MAC_BASE:
            return ":".join(f"{b:02X}" for b in raw)
        if code in (Code.DEVICE_VERSION, Code.MAC_ADDRESSES):
            return str(int.from_bytes(raw, "big"))
        if code == Code.CRC_32:
            return f"0x{int.from_bytes(raw, 'big'):08X}"
    # Vendor Extension, codes ONIE does not know, and fixed-size codes stored with the wrong
    # length (ONIE would read past the value there): every byte as " 0xHH".
    return "".join(f" 0x{b:02X}" for b in raw)


def _encode_text(code: int, value: str | int) -> bytes:
    if not isinstance(value, str):
        raise TlvValueError(f"TLV 0x{code:02X} ({code_name(code)}) takes text, not {value!r}")
    if not value.isascii() or "\x00" in value:
        raise TlvValueError(f"TLV 0x{code:02X} ({code_name(code)}) must be ASCII without NUL: {value!r}")
    if code == Code.MANUFACTURE_DATE:
        _check_date(value)
    return value.encode("ascii")


def _check_date(value: str) -> None:
    match = DATE.fullmatch(value)
    if match is None:
        raise TlvValueError(f"Manufacture Date must be MM/DD/YYYY hh:mm:ss, got {value!r}")
    month, day, _year, hour, minute, second = (int(part) for part in match.groups())
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 59):
        raise TlvValueError(f"Manufacture Date out of range: {value!r}")


def _encode_mac(value: str | int) -> bytes:
    if not isinstance(value, str) or MAC.fullmatch(value) is None:
        raise TlvValueError(f"Base MAC Address must be XX:XX:XX:XX:XX:XX, got {value!r}")
    return bytes(int(part, 16) for part in value.split(":"))


def _check_unicast(raw: bytes) -> None:
    if raw[0] & 0x01 or not any(raw):
        raise TlvValueError(
            "Base MAC Address must not be 00:00:00:00:00:00, a multicast address or"
            " FF:FF:FF:FF:FF:FF")


def _encode_number(code: int, value: str | int, low: int, high: int) -> int:
    if isinstance(value, str):
        try:
            number = int(value.strip(), 0)
        except ValueError:
            raise TlvValueError(f"TLV 0x{code:02X} ({code_name(code)}) takes a number, "
                                f"got {value!r}") from None
    else:
        number = value
    if not low <= number <= high:
        raise TlvValueError(f"TLV 0x{code:02X} ({code_name(code)}) must be {low}-{high}, got {number}")
    return number


def _encode_byte_list(code: int, value: str) -> bytes:
    out = bytearray()
    for token in BYTE_SEPARATORS.split(value.strip()):
        if not token:
            continue
        try:
            number = int(token, 0)
        except ValueError:
            raise TlvValueError(f"TLV 0x{code:02X}: {token!r} is not a byte value") from None
        if not 0 <= number <= 0xFF:
            raise TlvValueError(f"TLV 0x{code:02X}: {number} is greater than 255")
        out.append(number)
    return bytes(out)
