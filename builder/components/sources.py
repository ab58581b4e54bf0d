"""Debian source packages: which ones an image's binaries come from, found in the archive's
signed Sources index and downloaded for the GPL source offer (``onie-builder sources``).

A binary names its source in its control file: ``Source: name`` or ``Source: name (version)``
when the versions differ (binNMUs, signed kernels), the package itself when the field is
absent. ``Built-Using`` names the sources of code built into it: a static BusyBox carries
glibc, the signed kernel package the ``linux`` source its image was compiled from (Debian
Policy 7.8 made the field for exactly this licence duty).
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Sources

from builder.components.apt import Archive, decompress
from builder.components.cache import Cache, sha256_file
from builder.components.deb import read_control
from builder.components.lock import Pin
from builder.components.mirror import AptSource
from builder.errors import BuildError

log = logging.getLogger(__name__)

SOURCE_FIELD = re.compile(r"\s*([a-z0-9][a-z0-9+.-]*)\s*(?:\(\s*(\S+)\s*\))?\s*")
BUILT_USING = re.compile(r"\s*([a-z0-9][a-z0-9+.-]*)\s*\(\s*=\s*(\S+)\s*\)\s*")


@dataclass(frozen=True, order=True)
class SourceRef:
    """A source package by name and exact version."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


@dataclass(frozen=True)
class BinarySources:
    """The source a binary package was built from and the sources built into it."""

    source: SourceRef
    built_using: tuple[SourceRef, ...]

    @property
    def refs(self) -> tuple[SourceRef, ...]:
        """Every source the binary's licence obligations reach, the own source first."""
        return (self.source, *(r for r in self.built_using if r != self.source))


@dataclass(frozen=True)
class SourceFile:
    """One file of a source package (.dsc, .orig.tar.*, .debian.tar.*) as the index lists it."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class SourcePackage:
    """A source package found in a signed Sources index: its pool folder and files."""

    ref: SourceRef
    uri: str
    directory: str
    files: tuple[SourceFile, ...]

    def url(self, file: SourceFile) -> str:
        """Where ``file`` is downloaded from."""
        return f"{self.uri}/{self.directory}/{file.name}"


def parse_binary_sources(control: dict[str, str]) -> BinarySources:
    """The Source and Built-Using of a binary package's control fields."""
    name, version = control.get("Package", ""), control.get("Version", "")
    if (field := control.get("Source")) is not None:
        match = SOURCE_FIELD.fullmatch(field)
        if match is None:
            raise BuildError(f"Debian package {name} {version}: bad Source field {field!r}")
        name, version = match[1], match[2] or version
    built_using = []
    for entry in filter(str.strip, control.get("Built-Using", "").split(",")):
        match = BUILT_USING.fullmatch(entry)
        if match is None:
            raise BuildError(f"Debian package {control.get('Package')}: bad Built-Using entry "
                             f"{entry.strip()!r}")
        built_using.append(SourceRef(match[1], match[2]))
    return BinarySources(SourceRef(name, version), tuple(sorted(set(built_using))))


def find_binary_sources(pins: tuple[Pin, ...], cache: Cache) -> dict[str, BinarySources]:
    """Each pinned package's sources, read from its .deb in the cache (so a locked, offline
    build knows them too)."""
    found = {}
    for pin in pins:
        deb = cache.find(pin.sha256)
        if deb is None:
            raise BuildError(f"{pin.name}={pin.version} is not in the cache",
                             hint="resolve the platform first (onie-builder build or lock)")
        found[pin.name] = parse_binary_sources(read_control(deb))
    return found


class SourceIndex:
    """The source packages of some apt sources: each suite's ``Sources`` index, verified
    through the suite's signed InRelease and read on first use."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._indexes: list[tuple[AptSource, bytes]] | None = None

    def find(self, ref: SourceRef) -> SourcePackage:
        """The source package ``ref``, exactly that version, from the first index listing it."""
        seen: list[str] = []
        for source, data in self._loaded():
            for stanza in _stanzas(data, ref.name):
                if stanza.get("Version") == ref.version:
                    return _package(ref, source.uri, stanza)
                seen.append(stanza.get("Version", "?"))
        suites = ", ".join(s for source in self.archive.sources for s in source.suites)
        have = f"; the index has {', '.join(sorted(set(seen)))}" if seen else ""
        raise BuildError(f"Debian source package {ref} is not in the Sources index of {suites}"
                         + have, hint="an archive that keeps every version (a snapshot "
                         "mirror) can be given with --mirror")

    def _loaded(self) -> list[tuple[AptSource, bytes]]:
        if self._indexes is None:
            self._indexes = []
            for source in self.archive.sources:
                for suite in source.suites:
                    for component in source.components:
                        found = self.archive.find_index(source, suite, f"{component}/source/Sources")
                        if found is not None:
                            blob = self.archive.cache.fetch(*found)[1]
                            self._indexes.append((source, decompress(blob.read_bytes())))
            if not self._indexes:
                raise BuildError("the apt sources list no Sources index (main/source/Sources)")
        return self._indexes


def _stanzas(data: bytes, name: str) -> list[Sources]:
    """The stanzas of source package ``name`` in a Sources file (each starts with Package:)."""
    found = []
    for match in re.finditer(rb"^Package: " + re.escape(name.encode()) + rb"\n", data, re.M):
        end = data.find(b"\n\n", match.start())
        text = data[match.start():end if end >= 0 else len(data)].decode(errors="replace")
        found.append(Sources(text.splitlines()))
    return found


def _package(ref: SourceRef, uri: str, stanza: Sources) -> SourcePackage:
    files = tuple(SourceFile(f["name"], f["sha256"], int(f["size"]))
                  for f in stanza.get("Checksums-Sha256", []))
    if not files or "Directory" not in stanza:
        raise BuildError(f"Debian source package {ref}: its Sources stanza lists no files")
    return SourcePackage(ref, uri, stanza["Directory"], files)


def fetch_source(package: SourcePackage, cache: Cache, dest: Path) -> list[Path]:
    """Download every file of ``package`` (through the cache, each checked against the sha256
    of the signed index) into ``dest``; a file already there with that digest is kept."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for file in package.files:
        if "/" in file.name or file.name in ("", ".", ".."):
            raise BuildError(f"Debian source package {package.ref}: bad file name {file.name!r}")
        target = dest / file.name
        if not (target.is_file() and sha256_file(target) == file.sha256):
            blob = cache.fetch(package.url(file), file.sha256)[1]
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(blob, tmp)
            tmp.replace(target)
        written.append(target)
    log.debug("%s: %d files in %s", package.ref, len(written), dest)
    return written
