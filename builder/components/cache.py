"""A content-addressed download cache in the XDG cache folder, shared by builds and CI runners."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import BuildError
from builder.files import public_mode

if TYPE_CHECKING:
    import requests  # imported when a download starts: most builds hit the cache

log = logging.getLogger(__name__)

CHUNK = 1 << 20


def default_cache_root() -> Path:
    """``$ONIE_BUILDER_CACHE``, else ``$XDG_CACHE_HOME/onie-builder``, else ``~/.cache/onie-builder``."""
    if explicit := os.environ.get("ONIE_BUILDER_CACHE"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "onie-builder"


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers never see half;
    the file gets the mode a plain write would (0644 under umask 022), not mkstemp's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), public_mode())
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def touch(path: Path) -> None:
    """Mark a cache entry used now (its mtime), for ``cache prune``'s least-recently-used order;
    a read-only cache stays as it is."""
    with contextlib.suppress(OSError):
        os.utime(path)


class Cache:
    """Blobs stored by sha256 under ``root/blobs``; downloads are verified before they are kept."""

    def __init__(self, root: Path | None = None, offline: bool = False,
                 on_download: Callable[[str, int | None], Callable[[int], None]] | None = None,
                 on_unpack: Callable[[str], None] | None = None) -> None:
        self.root = root or default_cache_root()
        self.offline = offline
        self.on_download = on_download
        self.on_unpack = on_unpack  # told the package's name before a .deb is unpacked
        self._session: requests.Session | None = None

    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this digest lives (whether or not it is there)."""
        return self.root / "blobs" / sha256[:2] / sha256

    def find(self, sha256: str) -> Path | None:
        """Return the cached blob with this digest, or None."""
        path = self.blob_path(sha256)
        if not path.is_file():
            return None
        touch(path)
        return path

    def put_file(self, src: Path) -> tuple[str, Path]:
        """Copy a local file into the cache; return its digest and cached path."""
        digest = sha256_file(src)
        if (found := self.find(digest)) is not None:
            return digest, found
        write_atomic(self.blob_path(digest), src.read_bytes())
        return digest, self.blob_path(digest)

    def put_bytes(self, data: bytes) -> tuple[str, Path]:
        """Store bytes; return their digest and cached path."""
        digest = hashlib.sha256(data).hexdigest()
        if self.find(digest) is None:
            write_atomic(self.blob_path(digest), data)
        return digest, self.blob_path(digest)

    def session(self) -> requests.Session:
        """One HTTP session per cache, so connections to the mirror are reused."""
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.headers["User-Agent"] = "onie-builder"
        return self._session

    def fetch(
        self,
        url: str,
        sha256: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[str, Path]:
        """Download ``url`` into the cache, verifying ``sha256`` when given; a hit needs no network."""
        if sha256 is not None and (found := self.find(sha256)) is not None:
            return sha256, found
        if self.offline:
            raise BuildError(
                f"{url} is not in the cache and --offline forbids downloading it",
                hint="run the same build once with network access to fill the cache",
            )
        return self._download(url, sha256, progress)

    def _download(
        self, url: str, sha256: str | None, progress: Callable[[int], None] | None
    ) -> tuple[str, Path]:
        log.info("downloading %s", url)
        tmpdir = self.root / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=tmpdir)
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        import requests

        try:
            with os.fdopen(fd, "wb") as out, self.session().get(url, stream=True, timeout=60) as r:
                os.fchmod(out.fileno(), public_mode())
                if r.status_code != 200:
                    raise BuildError(f"downloading {url} failed: HTTP {r.status_code}")
                if progress is None and self.on_download is not None:
                    length = r.headers.get("Content-Length")
                    progress = self.on_download(url, int(length) if length else None)
                for chunk in r.iter_content(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    if progress:
                        progress(len(chunk))
            got = digest.hexdigest()
            if sha256 is not None and got != sha256:
                raise BuildError(
                    f"{url}: sha256 mismatch: expected {sha256}, got {got}",
                    hint="the pinned digest is wrong or the file was tampered with",
                )
            final = self.blob_path(got)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            return got, final
        except requests.RequestException as exc:
            raise BuildError(f"downloading {url} failed: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
