"""The few PE/COFF header facts a UKI needs: where the next section may go, and a fixed time stamp.

Offsets follow the PE format specification (Microsoft, "PE Format"): the COFF header after
the "PE\\0\\0" signature, then the optional header (PE32+ for the x86_64 stub).
"""

from __future__ import annotations

import array
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from builder.errors import BuildError

COFF = 4  # the COFF header follows the 4-byte signature
TIMESTAMP = COFF + 4
OPTIONAL = COFF + 20
CHECKSUM = OPTIONAL + 64  # same place in PE32 and PE32+


@dataclass(frozen=True)
class PeLayout:
    """Where a PE image is based and where its last section ends (both virtual addresses)."""

    image_base: int
    section_alignment: int
    end: int  # relative virtual address just past the last section

    def next_section(self, after: int | None = None) -> int:
        """The absolute VMA for a section placed after ``after`` (an RVA) or the last section."""
        rva = self.end if after is None else after
        align = self.section_alignment
        return self.image_base + -(-rva // align) * align


def _header(data: bytes, path: Path) -> int:
    if data[:2] != b"MZ":
        raise BuildError(f"{path}: not a PE image (no MZ header)")
    pe = int(struct.unpack_from("<I", data, 0x3C)[0])
    if data[pe : pe + 4] != b"PE\0\0":
        raise BuildError(f"{path}: not a PE image (no PE signature)")
    return pe


def read_layout(path: Path) -> PeLayout:
    """Read a PE image's base, section alignment and the end of its last section."""
    data = path.read_bytes()
    pe = _header(data, path)
    sections, opt_size = struct.unpack_from("<H12xH", data, pe + COFF + 2)
    magic = struct.unpack_from("<H", data, pe + OPTIONAL)[0]
    if magic == 0x20B:  # PE32+
        base = struct.unpack_from("<Q", data, pe + OPTIONAL + 24)[0]
    else:
        base = struct.unpack_from("<I", data, pe + OPTIONAL + 28)[0]
    align = struct.unpack_from("<I", data, pe + OPTIONAL + 32)[0]
    table = pe + OPTIONAL + opt_size
    end = 0
    for i in range(sections):
        vsize, vaddr = struct.unpack_from("<II", data, table + 40 * i + 8)
        end = max(end, vaddr + vsize)
    return PeLayout(int(base), int(align), end)


def set_timestamp(path: Path, epoch: int) -> None:
    """Set the COFF time stamp (objcopy writes the wall clock) and recompute the checksum."""
    data = bytearray(path.read_bytes())
    pe = _header(bytes(data), path)
    struct.pack_into("<I", data, pe + TIMESTAMP, epoch & 0xFFFFFFFF)
    struct.pack_into("<I", data, pe + CHECKSUM, 0)
    struct.pack_into("<I", data, pe + CHECKSUM, checksum(bytes(data)))
    path.write_bytes(bytes(data))


def checksum(data: bytes) -> int:
    """The PE image checksum (with its own field zeroed): folded 16-bit sum plus the length."""
    # The sum of every little-endian word, folded once at the end: the same as folding after
    # each word (both are the end-around-carry sum), summed in C rather than word by word.
    words = array.array("H", data + b"\0" * (len(data) % 2))
    if sys.byteorder == "big":
        words.byteswap()
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (total + len(data)) & 0xFFFFFFFF
