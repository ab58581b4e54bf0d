"""Debian archive access without root or host apt state: sources, signed indexes, closure."""

from __future__ import annotations

import difflib
import gzip
import hashlib
import json
import logging
import lzma
import posixpath
import re
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debian.deb822 import Release
from debian.debian_support import Version

from builder.components.cache import Cache, touch, write_atomic
from builder.components.keyring import keyrings, verify_release
from builder.components.mirror import AptSource
from builder.errors import BuildError, MissingPackage

log = logging.getLogger(__name__)

# Debian's name for each architecture spelling a recipe or `uname -m` may use.
ARCHES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armhf": "armhf",
    "armv7l": "armhf",
    "ppc64el": "ppc64el",
    "ppc64le": "ppc64el",
    "riscv64": "riscv64",
}

INDEX_MAX_AGE = 24 * 3600
INDEX_FORMAT = 1

# Fields kept from each Packages stanza, in the order of a cached record's columns.
FIELDS = ("Package", "Version", "Architecture", "Filename", "SHA256", "Size",
          "Depends", "Pre-Depends", "Provides")
FIELD_KEYS = tuple(f.encode() for f in FIELDS)
REQUIRED = (b"Package", b"Version", b"Filename", b"SHA256", b"Size")
# Package is the first field of every stanza dak writes; continuation lines start with a space.
FIELD_LINE = re.compile(rb"^(" + b"|".join(FIELD_KEYS) + rb"):([^\n]*)", re.M)
DEP_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9+.-]*)")


@dataclass(frozen=True)
class DebPackage:
    """One binary package as its signed Packages index describes it."""

    name: str
    version: str
    arch: str
    filename: str
    sha256: str
    size: int
    uri: str
    depends: tuple[str, ...]

    @property
    def url(self) -> str:
        """Where the .deb is downloaded from."""
        return f"{self.uri}/{self.filename}"


def debian_arch(arch: str) -> str:
    """Debian's name for ``arch`` (``x86_64`` -> ``amd64``); an unknown one is a BuildError."""
    if arch not in ARCHES:
        raise BuildError(
            f"unknown architecture '{arch}'; expected one of: {', '.join(sorted(ARCHES))}"
        )
    return ARCHES[arch]


class _Index:
    """One Packages file: each name to its "version offset ..." rows, virtual names to providers.

    Rows are kept as strings and the provides map is read only when a closure needs it, so a
    warm lookup decodes ~5 MB of JSON instead of building 100k lists.
    """

    def __init__(self, uri: str, names: dict[str, str], provides: dict[str, str] | Path,
                 records: bytes | Path) -> None:
        self.uri = uri
        self.names = names
        self._provides = provides
        self._records = records

    @classmethod
    def load(cls, stem: Path, uri: str) -> _Index | None:
        """The index saved at ``stem``, or None when it is not (completely) there."""
        names, provides, records = (stem.with_name(stem.name + suffix)
                                    for suffix in (".names.json", ".provides.json", ".records"))
        if not (names.is_file() and provides.is_file() and records.is_file()):
            return None
        return cls(uri, json.loads(names.read_bytes()), provides, records)

    def save(self, stem: Path) -> None:
        """Write the index next to ``stem``; the names file goes last and marks it complete."""
        assert isinstance(self._records, bytes) and isinstance(self._provides, dict)
        write_atomic(stem.with_name(stem.name + ".records"), self._records)
        for suffix, table in ((".provides.json", self._provides), (".names.json", self.names)):
            write_atomic(stem.with_name(stem.name + suffix),
                         json.dumps(table, separators=(",", ":")).encode())

    def rows(self, name: str) -> list[tuple[str, int]]:
        """(version, record offset) for each stanza of ``name``."""
        words = self.names.get(name, "").split()
        return [(words[i], int(words[i + 1])) for i in range(0, len(words), 2)]

    def providers(self, virtual: str) -> list[str]:
        """The packages that declare Provides: ``virtual``."""
        if isinstance(self._provides, Path):
            self._provides = json.loads(self._provides.read_bytes())
        assert isinstance(self._provides, dict)
        return self._provides.get(virtual, "").split()

    def record(self, offset: int) -> dict[str, str]:
        """The kept fields of the stanza stored at ``offset``."""
        if isinstance(self._records, Path):
            self._records = self._records.read_bytes()
        end = self._records.index(b"\n", offset)
        values = self._records[offset:end].decode(errors="replace").split("\t")
        return dict(zip(FIELDS, values, strict=True))


def parse_packages(data: bytes, uri: str) -> _Index:
    """Turn a Packages file into an index; a regex over the bytes is ~15x faster than deb822."""
    stanzas: list[dict[bytes, bytes]] = []
    for key, value in FIELD_LINE.findall(data):
        if key == b"Package":
            stanzas.append({})
        if stanzas:
            stanzas[-1][key] = value.strip()
    names: dict[str, list[str]] = {}
    provides: dict[str, list[str]] = {}
    lines, offset = [], 0
    for stanza in stanzas:
        if not all(stanza.get(key) for key in REQUIRED):
            continue
        name = stanza[b"Package"].decode()
        names.setdefault(name, []).append(f"{stanza[b'Version'].decode()} {offset}")
        for virtual in _dep_names(stanza.get(b"Provides", b"").decode()):
            providers = provides.setdefault(virtual, [])
            if name not in providers:
                providers.append(name)
        line = b"\t".join([stanza.get(key, b"") for key in FIELD_KEYS]) + b"\n"
        lines.append(line)
        offset += len(line)
    return _Index(uri, {k: " ".join(v) for k, v in names.items()},
                  {k: " ".join(v) for k, v in provides.items()}, b"".join(lines))


def _dep_names(value: str) -> list[str]:
    """The package names in a comma or '|' separated relation field, qualifiers dropped."""
    found = (DEP_NAME.match(part) for part in re.split(r"[,|]", value))
    return [m[1] for m in found if m is not None]


class Archive:
    """The packages of some apt sources for one architecture; indexes load on first use."""

    def __init__(self, sources: list[AptSource], arch: str, cache: Cache) -> None:
        self.sources = list(sources)
        self.arch = debian_arch(arch)
        self.cache = cache
        self._indexes: list[_Index] | None = None
        self._releases: dict[str, Release] = {}

    @classmethod
    def from_packages_text(cls, text: str, arch: str, cache: Cache | None = None,
                           uri: str = "http://archive.invalid/debian") -> Archive:
        """An archive over one in-memory Packages file (tests, local repositories)."""
        archive = cls([AptSource(uri, ("local",), ("main",), None)], arch,
                      cache or Cache(offline=True))
        archive._indexes = [parse_packages(text.encode(), uri)]
        return archive

    def find(self, name: str, version: str | None = None) -> DebPackage:
        """The highest version of ``name`` over all suites, or exactly ``version``."""
        rows = [(v, index, offset) for index in self._loaded()
                for v, offset in index.rows(name)]
        if not rows:
            raise self._not_found(name)
        if version is not None:
            rows = [row for row in rows if row[0] == version]
            if not rows:
                raise MissingPackage(
                    f"Debian package '{name}' has no version {version} for {self.arch} in "
                    f"{self._suites()}; available: {', '.join(self._versions(name))}"
                )
        _, index, offset = max(rows, key=lambda row: Version(row[0]))
        return self._package(index, offset)

    def closure(self, names: list[str], exclude: frozenset[str] = frozenset()) -> list[DebPackage]:
        """``names`` and all they Depend or Pre-Depend on, sorted by name; constraints ignored."""
        chosen: dict[str, DebPackage] = {}
        provided: set[str] = set()
        queue: deque[DebPackage] = deque()

        def add(pkg: DebPackage) -> None:
            if pkg.name not in chosen and pkg.name not in exclude:
                chosen[pkg.name] = pkg
                provided.update(self._provides(pkg))
                queue.append(pkg)

        for name in names:
            if name not in exclude:
                add(self._resolve(name) or self.find(name))
        while queue:
            pkg = queue.popleft()
            for group in pkg.depends:
                alternatives = _dep_names(group)
                if any(a in exclude or a in chosen or a in provided for a in alternatives):
                    continue
                dep = next(filter(None, map(self._resolve, alternatives)), None)
                if dep is None:
                    raise MissingPackage(
                        f"Debian package '{pkg.name}' {pkg.version} depends on '{group}', "
                        f"which nothing for {self.arch} in {self._suites()} provides"
                    )
                add(dep)
        return sorted(chosen.values(), key=lambda p: p.name)

    def fetch(self, pkg: DebPackage) -> Path:
        """The .deb in the cache, downloaded and checked against the signed index if needed."""
        return self.cache.fetch(pkg.url, pkg.sha256)[1]

    def _resolve(self, name: str) -> DebPackage | None:
        """A real package called ``name``, else the first provider of that virtual name."""
        indexes = self._loaded()
        if any(name in index.names for index in indexes):
            return self.find(name)
        providers = sorted({p for index in indexes for p in index.providers(name)})
        return self.find(providers[0]) if providers else None

    def _provides(self, pkg: DebPackage) -> list[str]:
        for index in self._loaded():
            for version, offset in index.rows(pkg.name):
                if version == pkg.version and index.uri == pkg.uri:
                    return _dep_names(index.record(offset)["Provides"])
        return []

    def _package(self, index: _Index, offset: int) -> DebPackage:
        fields = index.record(offset)
        depends = [d.strip() for key in ("Depends", "Pre-Depends") for d in fields[key].split(",")]
        return DebPackage(
            name=fields["Package"], version=fields["Version"],
            arch=fields["Architecture"] or self.arch, filename=fields["Filename"],
            sha256=fields["SHA256"], size=int(fields["Size"]), uri=index.uri,
            depends=tuple(d for d in depends if d),
        )

    def _not_found(self, name: str) -> BuildError:
        if providers := sorted({p for index in self._loaded() for p in index.providers(name)}):
            return MissingPackage(
                f"Debian package '{name}' is virtual for {self.arch} in {self._suites()}; "
                f"name the package that provides it: {_choices(providers)}"
            )
        known = sorted({n for index in self._loaded() for n in index.names})
        close = difflib.get_close_matches(name, known, n=3)
        message = f"Debian package '{name}' not found for {self.arch} in {self._suites()}"
        return MissingPackage(message + (f"; did you mean {_choices(close)}?" if close else ""))

    def _versions(self, name: str) -> list[str]:
        versions = {v for index in self._loaded() for v, _ in index.rows(name)}
        return sorted(versions, key=Version)

    def _suites(self) -> str:
        return ", ".join(dict.fromkeys(s for source in self.sources for s in source.suites))

    def _loaded(self) -> list[_Index]:
        if self._indexes is None:
            self._indexes = self._load()
        return self._indexes

    def _load(self) -> list[_Index]:
        if not self.sources:
            raise BuildError(
                "no apt sources to resolve Debian packages from",
                hint="add a 'deb' entry to the host's apt sources or give a mirror "
                "as 'URI SUITE[,SUITE] [COMPONENT,...]'",
            )
        start = time.monotonic()
        indexes = [index for source in self.sources for suite in source.suites
                   for index in self._load_suite(source, suite)]
        if not indexes:
            raise BuildError(f"the apt sources have no Packages index for {self.arch} "
                             f"in {self._suites()}")
        log.debug("loaded %d Packages indexes for %s in %.2f s",
                  len(indexes), self.arch, time.monotonic() - start)
        return indexes

    def _load_suite(self, source: AptSource, suite: str) -> list[_Index]:
        if suite.endswith("/"):
            raise BuildError(f"{source.uri} {suite}: flat repositories are not supported")
        indexes = []
        for component in source.components:
            found = self.find_index(source, suite, f"{component}/binary-{self.arch}/Packages")
            if found is not None:
                indexes.append(self._packages_index(source.uri, *found))
        return indexes

    def find_index(self, source: AptSource, suite: str, path: str) -> tuple[str, str] | None:
        """The URL and sha256 of index ``path`` (e.g. ``main/source/Sources``, compressed with
        xz or gzip) as the suite's signed InRelease lists it; None when it lists none."""
        base = f"{source.uri}/dists/{suite}"
        if base not in self._releases:  # gpgv once per suite
            release = Release(self._release_text(f"{base}/InRelease", source.keyring),
                              fields=["SHA256", "Acquire-By-Hash"])
            self._releases[base] = release
        release = self._releases[base]
        hashes = {entry["name"]: entry["sha256"] for entry in release.get("SHA256", [])}
        name = next((path + ext for ext in (".xz", ".gz") if path + ext in hashes), None)
        if name is None:
            log.debug("%s has no %s", base, path)
            return None
        by_hash = release.get("Acquire-By-Hash", "").strip() == "yes"
        url = (f"{base}/{posixpath.dirname(name)}/by-hash/SHA256/{hashes[name]}"
               if by_hash else f"{base}/{name}")
        return url, hashes[name]

    def _packages_index(self, uri: str, url: str, sha256: str) -> _Index:
        """A Packages index, parsed once and then kept in the cache keyed by its digest."""
        stem = self.cache.root / "indexes" / "parsed" / f"{sha256}.v{INDEX_FORMAT}"
        if (index := _Index.load(stem, uri)) is not None:
            touch(stem.with_name(stem.name + ".names.json"))
            return index
        _, blob = self.cache.fetch(url, sha256)
        start = time.monotonic()
        index = parse_packages(decompress(blob.read_bytes()), uri)
        index.save(stem)
        log.debug("parsed %s in %.2f s", url, time.monotonic() - start)
        return index

    def _release_text(self, url: str, keyring: Path | None) -> str:
        """A suite's InRelease, cached by URL for a day (for ever offline), signature checked."""
        pointer = self.cache.root / "indexes" / f"{hashlib.sha256(url.encode()).hexdigest()}.json"
        cached: dict[str, Any] = json.loads(pointer.read_bytes()) if pointer.is_file() else {}
        blob = self.cache.find(cached["sha256"]) if cached else None
        age = time.time() - cached.get("fetched", 0)
        modified = f"the cached copy was modified; delete {pointer} to download it again"
        if blob is not None and (age < INDEX_MAX_AGE or self.cache.offline):
            return verify_release(blob, keyrings(keyring), url, modified)
        if self.cache.offline:
            raise BuildError(
                f"{url} is not in the cache and --offline forbids downloading it",
                hint="run once with network access to cache the Debian indexes",
            )
        try:
            digest, fetched = self.cache.fetch(url)
        except BuildError as exc:
            if blob is None:
                raise
            # The stale copy was verified when it came; it beats no build while the mirror is down.
            log.warning("%s; using the copy cached %.0f hours ago", exc.message, age / 3600)
            return verify_release(blob, keyrings(keyring), url, modified)
        text = verify_release(fetched, keyrings(keyring), url,
                              "the mirror served an index not signed by a trusted key")
        write_atomic(pointer, json.dumps({"url": url, "sha256": digest,
                                          "fetched": time.time()}).encode())
        return text


def _choices(names: list[str]) -> str:
    """'a', 'b' or 'c'."""
    quoted = [repr(name) for name in names]
    return " or ".join([", ".join(quoted[:-1]), quoted[-1]] if quoted[1:] else quoted)


def decompress(data: bytes) -> bytes:
    """An index compressed with xz or gzip (or not at all), told apart by its magic bytes."""
    if data.startswith(b"\xfd7zXZ\x00"):
        return lzma.decompress(data)
    if data.startswith(b"\x1f\x8b"):
        return gzip.decompress(data)
    return data
