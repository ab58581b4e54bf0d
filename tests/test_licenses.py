"""Debian copyright files to SPDX licence expressions: DEP-5 short names mapped, unknown names
kept as LicenseRefs with their text, and NOASSERTION (never a guess) for free-form files."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.provenance.licenses import NOASSERTION, convert_synopsis, find_copyright, parse_license

CASES = [
    ("GPL-2", "GPL-2.0-only"),
    ("GPL-2+", "GPL-2.0-or-later"),
    ("LGPL-2.1+", "LGPL-2.1-or-later"),
    ("LGPL-2", "LGPL-2.0-only"),
    ("GPL-3.0+", "GPL-3.0-or-later"),
    ("Expat", "MIT"),
    ("BSD-3-clause", "BSD-3-Clause"),
    ("Apache-2.0", "Apache-2.0"),
    ("Artistic", "Artistic-1.0"),
    ("GFDL-NIV-1.3+", "GFDL-1.3-no-invariants-or-later"),
    ("Perl", "(Artistic-1.0-Perl OR GPL-1.0-or-later)"),
    ("GPL-2 with Linux-syscall-note exception", "GPL-2.0-only WITH Linux-syscall-note"),
    ("GPL-3+ with GCC-exception-3.1 exception", "GPL-3.0-or-later WITH GCC-exception-3.1"),
    ("Expat and ISC or Zlib", "MIT AND ISC OR Zlib"),
    ("GPL-2+ or Artistic, and BSD-3-clause", "(GPL-2.0-or-later OR Artistic-1.0) AND BSD-3-Clause"),
    ("public-domain", "LicenseRef-public-domain"),
    ("GPL-2+ with OpenSSL exception", "LicenseRef-GPL-2-plus-with-OpenSSL-exception"),
    ("MPL-1.1+", "LicenseRef-MPL-1.1-plus"),
]


@pytest.mark.parametrize(("synopsis", "expected"), CASES, ids=[c[0] for c in CASES])
def test_debian_short_names_become_spdx(synopsis: str, expected: str) -> None:
    assert convert_synopsis(synopsis, {}, "", "x/copyright")[0] == expected


DEP5 = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: demo

Files: *
Copyright: 2020 Someone
License: GPL-2+

Files: lib/*
Copyright: 2021 Someone Else
License: Expat or CRYPTOGAMS

Files: debian/*
Copyright: 2022 A Packager
License: GPL-2+

License: GPL-2+
 On Debian systems the full text is in /usr/share/common-licenses/GPL-2.

License: CRYPTOGAMS
 Redistribution and use in source and binary forms are permitted.
"""


def test_a_dep5_file_gives_the_conjunction_of_its_files_paragraphs() -> None:
    found = parse_license(DEP5, "/usr/share/doc/demo/copyright")
    assert found.expression == "GPL-2.0-or-later AND (MIT OR LicenseRef-CRYPTOGAMS)"
    assert [(r.id, r.name, r.text) for r in found.refs] == [
        ("LicenseRef-CRYPTOGAMS", "CRYPTOGAMS",
         "Redistribution and use in source and binary forms are permitted.")]
    assert found.comment == "/usr/share/doc/demo/copyright: the licences of its Files paragraphs (DEP-5)"


def test_a_free_form_copyright_file_is_noassertion() -> None:
    found = parse_license("This package was debianized by someone.\n\nLicense: GPL, see above.\n",
                          "/usr/share/doc/busybox/copyright")
    assert (found.expression, found.refs) == (NOASSERTION, ())
    assert found.comment == "/usr/share/doc/busybox/copyright: not machine-readable"


def test_a_doc_folder_link_finds_the_sibling_package_copyright(tmp_path: Path) -> None:
    base, lib = tmp_path / "gcc-base", tmp_path / "libgcc"
    (base / "usr/share/doc/gcc-12-base").mkdir(parents=True)
    (base / "usr/share/doc/gcc-12-base/copyright").write_text("text")
    (lib / "usr/share/doc").mkdir(parents=True)
    (lib / "usr/share/doc/libgcc-s1").symlink_to("gcc-12-base")
    assert find_copyright("libgcc-s1", lib, [lib, base]) == base / "usr/share/doc/gcc-12-base/copyright"
    assert find_copyright("gcc-12-base", base, [lib, base]) == base / "usr/share/doc/gcc-12-base/copyright"
    assert find_copyright("other", lib, [lib, base]) is None
    (lib / "usr/share/doc/escape").symlink_to("../../../../etc")
    assert find_copyright("escape", lib, [lib, base]) is None
