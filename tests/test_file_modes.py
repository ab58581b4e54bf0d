"""Files written through a temporary file and a rename (outputs, manifest, lock, cache
entries) get the mode a plain write would: 0666 less the umask, not mkstemp's 0600 (#20)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.components.cache import Cache, write_atomic
from builder.components.lock import Lock, Pin, write_lock
from builder.files import public_mode, umask


@pytest.fixture(params=[0o022, 0o027, 0o077], ids=["022", "027", "077"])
def mask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server for ``tmp_path / "www"``; yields its base URL."""
    (tmp_path / "www").mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path / "www")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_umask_is_read_without_changing_it(mask: int) -> None:
    assert umask() == mask
    assert umask() == mask
    assert public_mode() == 0o666 & ~mask
    assert public_mode(executable=True) == 0o777 & ~mask


def test_atomic_writes_and_lock_follow_the_umask(tmp_path: Path, mask: int) -> None:
    write_atomic(tmp_path / "a" / "manifest.json", b"{}")
    assert mode(tmp_path / "a" / "manifest.json") == 0o666 & ~mask
    assert mode(tmp_path / "a") == 0o777 & ~mask
    lock = Lock()
    lock.add(Pin("busybox", "1", "amd64", "0" * 64, 1, "pool/b.deb"))
    write_lock(lock, tmp_path / "onie-builder.lock")
    assert mode(tmp_path / "onie-builder.lock") == 0o666 & ~mask
    # No temporary file is left behind.
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "manifest.json", "onie-builder.lock"]


def test_cache_entries_follow_the_umask(tmp_path: Path, mask: int, served: str) -> None:
    cache = Cache(tmp_path / "cache")
    _, stored = cache.put_bytes(b"stored")
    data = b"downloaded" * 1000
    (tmp_path / "www" / "file.bin").write_bytes(data)
    digest, fetched = cache.fetch(f"{served}/file.bin", hashlib.sha256(data).hexdigest())
    assert fetched.read_bytes() == data and digest == hashlib.sha256(data).hexdigest()
    assert mode(stored) == mode(fetched) == 0o666 & ~mask
    assert mode(fetched.parent) == 0o777 & ~mask
