"""Tests for builder.components.mirror: the host's apt sources and the --mirror option."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.components.mirror import AptSource, find_host_sources, parse_mirror_option
from builder.errors import BuildError

# --- host apt sources -------------------------------------------------------------------------

SOURCES_LIST = """\
# the main archive
deb http://mirror.example/debian/ bookworm main contrib  # trailing comment
deb-src http://mirror.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/vendor.gpg] http://vendor.example/apt stable main
deb file:///srv/local ./
"""

DEB822 = """\
Types: deb deb-src
# a comment inside the stanza
URIs: http://mirror.example/debian http://other.example/debian/
Suites: bookworm bookworm-updates
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/vendor.gpg

Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb
URIs: http://disabled.example/debian
Suites: trixie
Components: main
Enabled: false

Types: deb
URIs: http://flat.example/repo
Suites: ./

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZ
 -----END PGP PUBLIC KEY BLOCK-----
"""


def test_find_host_sources(tmp_path: Path) -> None:
    keyring = tmp_path / "usr/share/keyrings/vendor.gpg"
    keyring.parent.mkdir(parents=True)
    keyring.write_bytes(b"")
    parts = tmp_path / "etc/apt/sources.list.d"
    parts.mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list").write_text(SOURCES_LIST)
    (parts / "b.sources").write_text(DEB822)
    (parts / "a.list").write_text("deb https://a.example/debian trixie main\n")
    (parts / "c.list.disabled").write_text("deb http://off.example/debian bookworm main\n")
    (parts / "d.sources.save").write_text(DEB822.replace("mirror", "saved"))
    assert find_host_sources(tmp_path) == [
        AptSource("http://mirror.example/debian", ("bookworm",), ("main", "contrib"), None),
        AptSource("http://vendor.example/apt", ("stable",), ("main",), keyring),
        AptSource("https://a.example/debian", ("trixie",), ("main",), None),
        AptSource("http://mirror.example/debian", ("bookworm", "bookworm-updates"),
                  ("main", "non-free-firmware"), keyring),
        AptSource("http://other.example/debian", ("bookworm", "bookworm-updates"),
                  ("main", "non-free-firmware"), keyring),
        AptSource("http://security.example/debian-security", ("bookworm-security",),
                  ("main",), None),
    ]


def test_find_host_sources_empty_root(tmp_path: Path) -> None:
    assert find_host_sources(tmp_path) == []


def test_find_host_sources_reads_this_host() -> None:
    for source in find_host_sources():
        assert source.uri.startswith(("http://", "https://"))
        assert not source.uri.endswith("/")
        assert source.suites and source.components


def test_parse_mirror_option() -> None:
    assert parse_mirror_option("http://host.example/debian/ bookworm,bookworm-updates") == [
        AptSource("http://host.example/debian", ("bookworm", "bookworm-updates"), ("main",), None)
    ]
    assert parse_mirror_option(
        "https://h.example/debian bookworm main,contrib; http://h.example/sec bookworm-security"
    ) == [
        AptSource("https://h.example/debian", ("bookworm",), ("main", "contrib"), None),
        AptSource("http://h.example/sec", ("bookworm-security",), ("main",), None),
    ]


@pytest.mark.parametrize(("text", "message"), [
    ("", "mirror: expected 'URI SUITE[,SUITE] [COMPONENT,...]', got ''"),
    ("http://h.example/debian", "mirror: expected 'URI SUITE[,SUITE] [COMPONENT,...]', "
     "got 'http://h.example/debian'"),
    ("http://h/debian bookworm main extra", "mirror: expected 'URI SUITE[,SUITE] "
     "[COMPONENT,...]', got 'http://h/debian bookworm main extra'"),
    ("ftp://h/debian bookworm", "mirror: expected an http:// or https:// URI, got 'ftp://h/debian'"),
    ("h.example/debian bookworm", "mirror: expected an http:// or https:// URI, "
     "got 'h.example/debian'"),
    ("http://h/debian , main", "mirror: empty suite or component in 'http://h/debian , main'"),
])
def test_parse_mirror_option_bad(text: str, message: str) -> None:
    with pytest.raises(BuildError) as exc:
        parse_mirror_option(text)
    assert exc.value.message == message
