"""The Debian archives to use: the host's apt sources or a user's ``--mirror``."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822

from builder.errors import BuildError

log = logging.getLogger(__name__)

LIST_LINE = re.compile(r"(deb|deb-src)\s+(?:\[([^\]]*)\]\s*)?(\S+)\s+(\S+)\s*(.*)")


@dataclass(frozen=True)
class AptSource:
    """One 'deb' line or deb822 stanza URI: where packages come from and who signs them."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    keyring: Path | None


def find_host_sources(root: Path = Path("/")) -> list[AptSource]:
    """The 'deb' entries of the apt configuration under ``root``, in the order apt reads them."""
    etc = root / "etc/apt"
    files = [etc / "sources.list"] if (etc / "sources.list").is_file() else []
    parts = etc / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir()
                        if p.suffix in (".list", ".sources") and p.is_file())
    sources: list[AptSource] = []
    for path in files:
        text = path.read_text(errors="replace")
        parse = _parse_deb822 if path.suffix == ".sources" else _parse_one_line
        sources += [s for s in parse(text, root, path) if _fetchable(s, path)]
    return sources


def parse_mirror_option(text: str) -> list[AptSource]:
    """Parse ``URI SUITE[,SUITE] [COMPONENT,...]``; several mirrors may be joined with ';'."""
    sources = []
    for entry in text.split(";"):
        words = entry.split()
        if len(words) not in (2, 3):
            raise BuildError(
                f"mirror: expected 'URI SUITE[,SUITE] [COMPONENT,...]', got {entry.strip()!r}"
            )
        uri = words[0].rstrip("/")
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", uri):
            raise BuildError(f"mirror: expected an http:// or https:// URI, got {words[0]!r}")
        suites = tuple(s for s in words[1].split(",") if s)
        components = tuple(c for c in words[2].split(",") if c) if len(words) == 3 else ("main",)
        if not suites or not components:
            raise BuildError(f"mirror: empty suite or component in {entry.strip()!r}")
        sources.append(AptSource(uri, suites, components, None))
    return sources


def _parse_one_line(text: str, root: Path, path: Path) -> list[AptSource]:
    sources = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = LIST_LINE.fullmatch(line)
        if match is None:
            log.warning("%s:%d: ignoring unparsable apt source %r", path, lineno, line)
            continue
        kind, options, uri, suite, components = match.groups()
        if kind != "deb":
            continue
        opts = dict(o.split("=", 1) for o in (options or "").split() if "=" in o)
        keyring = _keyring(opts.get("signed-by"), root)
        sources.append(AptSource(uri.rstrip("/"), (suite,), tuple(components.split()), keyring))
    return sources


def _parse_deb822(text: str, root: Path, path: Path) -> list[AptSource]:
    sources = []
    for stanza in Deb822.iter_paragraphs(text.splitlines()):
        if "deb" not in stanza.get("Types", "").split():
            continue
        if stanza.get("Enabled", "yes").strip().lower() in ("no", "false", "off", "0"):
            continue
        suites = tuple(stanza.get("Suites", "").split())
        components = tuple(stanza.get("Components", "").split())
        keyring = _keyring(stanza.get("Signed-By"), root)
        for uri in stanza.get("URIs", "").split():
            sources.append(AptSource(uri.rstrip("/"), suites, components, keyring))
    return sources


def _keyring(value: str | None, root: Path) -> Path | None:
    """The keyring file a Signed-By names; fingerprints and inline keys give None."""
    for word in (value or "").replace(",", " ").split():
        if word.startswith("/") and (root / word.lstrip("/")).is_file():
            return root / word.lstrip("/")
    return None


def _fetchable(source: AptSource, path: Path) -> bool:
    if not source.uri.startswith(("http://", "https://")):
        log.warning("%s: skipping %s: only http and https mirrors are supported", path, source.uri)
        return False
    if any(suite.endswith("/") for suite in source.suites):
        log.warning("%s: skipping %s: flat repositories are not supported", path, source.uri)
        return False
    return bool(source.suites)
