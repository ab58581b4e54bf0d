"""builder.images.pe: the PE image checksum, against the word-by-word definition."""

from __future__ import annotations

import random
import struct

import pytest

from builder.images.pe import checksum


def folded_word_by_word(data: bytes) -> int:
    """The checksum as Microsoft's imagehlp describes it: add each 16-bit word, folding the
    carry back in after every addition; then add the file's length."""
    total = 0
    for (word,) in struct.iter_unpack("<H", data + b"\0" * (len(data) % 2)):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return (total + len(data)) & 0xFFFFFFFF


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4097, 3 * 65536 + 1])
def test_checksum_matches_the_definition(size: int) -> None:
    rng = random.Random(size)
    data = rng.randbytes(size)
    assert checksum(data) == folded_word_by_word(data)


@pytest.mark.parametrize("data", [b"\xff" * 200_001, b"\xff\xff" * 65_535, b"\x00" * 10, b"\x01\x00"])
def test_checksum_folds_carries_like_the_definition(data: bytes) -> None:
    assert checksum(data) == folded_word_by_word(data)
