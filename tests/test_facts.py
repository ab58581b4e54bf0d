"""builder.initramfs.facts: facts about files remembered between builds, never stale."""

from __future__ import annotations

import json
import os
from pathlib import Path

from builder.initramfs import facts
from builder.initramfs.elf import parse_elf


def counting(calls: list[str], value: str) -> str:
    calls.append(value)
    return value


def test_a_fact_is_computed_once_and_saved(tmp_path: Path) -> None:
    store, file = tmp_path / "facts.json", tmp_path / "f"
    file.write_bytes(b"one")
    calls: list[str] = []
    with facts.remember(store) as known:
        assert known.recall("k", file, lambda: counting(calls, "a"), str, str) == "a"
        assert known.recall("k", file, lambda: counting(calls, "b"), str, str) == "a"
    assert calls == ["a"]
    with facts.remember(store) as again:  # a later build reads the saved fact
        assert again.recall("k", file, lambda: counting(calls, "c"), str, str) == "a"
    assert calls == ["a"]
    assert json.loads(store.read_text())["format"] == facts.FORMAT


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    store, file = tmp_path / "facts.json", tmp_path / "f"
    file.write_bytes(b"one")
    calls: list[str] = []
    with facts.remember(store) as known:
        known.recall("k", file, lambda: counting(calls, "old"), str, str)
    file.write_bytes(b"other size")
    with facts.remember(store) as known:
        assert known.recall("k", file, lambda: counting(calls, "new"), str, str) == "new"
    # Same size, new mtime: read again too.
    file.write_bytes(b"OTHER SIZE")
    os.utime(file, ns=(1, 1))
    with facts.remember(store) as known:
        assert known.recall("k", file, lambda: counting(calls, "newer"), str, str) == "newer"
    assert calls == ["old", "new", "newer"]


def test_kinds_are_separate_and_a_bad_file_is_ignored(tmp_path: Path) -> None:
    store, file = tmp_path / "facts.json", tmp_path / "f"
    file.write_bytes(b"x")
    store.write_text("{not json")
    with facts.remember(store) as known:
        assert known.recall("a", file, lambda: "A", str, str) == "A"
        assert known.recall("b", file, lambda: "B", str, str) == "B"
    assert len(json.loads(store.read_text())["facts"]) == 2


def test_outside_a_build_nothing_is_written(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_bytes(b"x")
    assert facts.current().path is None
    assert facts.current().recall("k", file, lambda: "v", str, str) == "v"
    assert list(tmp_path.iterdir()) == [file]


def test_a_remembered_elf_fact_reads_back_equal(tmp_path: Path) -> None:
    binary = Path("/bin/ls").resolve()
    fresh = parse_elf(binary)
    with facts.remember(tmp_path / "facts.json"):
        first = parse_elf(binary)
    with facts.remember(tmp_path / "facts.json"):
        again = parse_elf(binary)
    assert fresh == first == again and again is not None and again.needed
    not_elf = tmp_path / "script"
    not_elf.write_text("#!/bin/sh\n")
    with facts.remember(tmp_path / "facts.json"):
        assert parse_elf(not_elf) is None
    with facts.remember(tmp_path / "facts.json"):
        assert parse_elf(not_elf) is None
