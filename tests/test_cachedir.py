"""`cache info` and `cache prune` over a cache folder laid out as builds leave it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from builder.components.cachedir import parse_age, parse_size, plan_prune, scan
from builder.errors import BuildError
from tests.conftest import run_cli

DAY = 86400.0
NOW = 2_000_000_000.0


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def put(path: Path, data: bytes, age_days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    when = NOW - age_days * DAY
    os.utime(path, (when, when))
    return path


def make_cache(root: Path) -> dict[str, str]:
    """A deb (and its unpacked tree) 40 days unused, another used today, an index download, a
    parsed index, a compressed layer and a half-made unpack; returns the debs' digests."""
    old, new = sha("old"), sha("new")
    put(root / "blobs" / old[:2] / old, b"!<arch>\n" + b"o" * 3000, 40)
    put(root / "blobs" / new[:2] / new, b"!<arch>\n" + b"n" * 2000, 0)
    put(root / "blobs" / sha("idx")[:2] / sha("idx"), b"\xfd7zXZ\x00" + b"i" * 500, 10)
    put(root / "unpacked" / old / "bin" / "tool", b"t" * 4000, 40)
    put(root / "unpacked" / f"{old}.modes.json", b"{}", 40)
    os.utime(root / "unpacked" / old, (NOW - 40 * DAY, NOW - 40 * DAY))
    put(root / "indexes" / "parsed" / f"{sha('idx')}.v1.records", b"r" * 100, 1)
    put(root / "indexes" / "parsed" / f"{sha('idx')}.v1.names.json", b"{}", 1)
    put(root / "derived" / f"{sha('layer')}.xz-None-x86-r3", b"x" * 700, 5)
    put(root / "unpacked" / f".{new}.abcd" / "half", b"h" * 10, 2)
    os.utime(root / "unpacked" / f".{new}.abcd", (NOW - 2 * DAY, NOW - 2 * DAY))
    return {"old": old, "new": new}


def test_scan_sorts_entries_by_kind_and_last_use(tmp_path: Path) -> None:
    digests = make_cache(tmp_path)
    entries = scan(tmp_path)
    assert [(e.kind, e.size) for e in entries] == [
        ("debs", 3008), ("unpacked", 4002), ("downloads", 506), ("layers", 700), ("tmp", 10),
        ("indexes", 102), ("debs", 2008)]
    assert entries[1].digest == digests["old"]
    assert {p.name for p in entries[1].paths} == {digests["old"], f"{digests['old']}.modes.json"}


def test_prune_by_size_least_recently_used_first(tmp_path: Path) -> None:
    make_cache(tmp_path)
    plan = plan_prune(scan(tmp_path), set(), max_size=3000, older_than=None, now=NOW)
    assert [e.kind for e in plan.removed] == ["debs", "unpacked", "downloads"]
    assert plan.total - plan.freed == 2820 <= 3000


def test_prune_keeps_what_the_lock_pins(tmp_path: Path) -> None:
    """The old package is pinned: neither its download nor its tree goes, however old."""
    digests = make_cache(tmp_path)
    plan = plan_prune(scan(tmp_path), {digests["old"]}, max_size=None, older_than=30 * DAY,
                      now=NOW)
    assert plan.removed == [] and plan.protected == 2
    plan = plan_prune(scan(tmp_path), set(), max_size=None, older_than=30 * DAY, now=NOW)
    assert [e.kind for e in plan.removed] == ["debs", "unpacked"]


def test_cli_prune_dry_run_then_prune(tmp_path: Path) -> None:
    """--dry-run removes nothing; prune then frees what it printed; info agrees after."""
    cache = tmp_path / "cache"
    digests = make_cache(cache)
    lock = tmp_path / "onie-builder.lock"
    lock.write_text(f"sha256: {digests['new']}\n")
    args = ("--cache", str(cache), "cache", "prune", "--max-size", "0", "--lock", str(lock),
            "--out", str(tmp_path / "out"), "--json")
    dry = json.loads(run_cli(*args, "--dry-run").stdout)["result"]
    assert dry["protected"] == 1 and len(dry["removed"]) == 6
    assert dry["bytes_freed"] == dry["bytes_before"] - 2008
    assert (cache / "unpacked" / digests["old"]).is_dir()
    done = json.loads(run_cli(*args).stdout)["result"]
    assert {**done, "dry_run": True} == dry
    info = json.loads(run_cli("--cache", str(cache), "cache", "info", "--json").stdout)["result"]
    assert info["bytes"] == 2008 and info["entries"] == 1
    assert info["kinds"]["debs"]["entries"] == 1 and info["kinds"]["unpacked"]["entries"] == 0
    assert not (cache / "unpacked" / digests["old"]).exists()
    assert not any(p.name.startswith(".pruned-") for p in (cache / "unpacked").iterdir())


@pytest.mark.parametrize(("text", "size"), [("2G", 2_000_000_000), ("500M", 500_000_000),
                                            ("1.5GB", 1_500_000_000), ("123", 123)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("parse", "text", "message"), [
    (parse_size, "two gigs", "--max-size: expected a size such as 2G or 500M, got 'two gigs'"),
    (parse_age, "30", "--older-than: expected an age such as 30d, 12h or 2w, got '30'"),
])
def test_bad_sizes_and_ages(parse: object, text: str, message: str) -> None:
    assert callable(parse)
    with pytest.raises(BuildError) as err:
        parse(text)
    assert err.value.message == message


def test_parse_age() -> None:
    assert parse_age("30d") == 30 * DAY and parse_age("12h") == 43200 and parse_age("2w") == 14 * DAY
