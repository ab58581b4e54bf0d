"""Licences from Debian copyright files: a machine-readable one (DEP-5, copyright-format 1.0)
becomes an SPDX expression; any other gives NOASSERTION, never a guess.

Debian's short names map onto SPDX identifiers (``GPL-2+`` -> ``GPL-2.0-or-later``,
``Expat`` -> ``MIT``, ``BSD-3-clause`` -> ``BSD-3-Clause``, ``GPL-2 with Linux-syscall-note
exception`` -> ``GPL-2.0-only WITH Linux-syscall-note``); a name SPDX does not list becomes a
``LicenseRef-`` carrying the text the copyright file gives for it. A package's licence is
the conjunction of the licences of all its Files paragraphs: it ships files under each.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debian import copyright as dep5
from license_expression import ExpressionError, LicenseExpression, Licensing
from spdx_tools.common.spdx_licensing import spdx_licensing

NOASSERTION = "NOASSERTION"

# Families whose SPDX identifiers say -only or -or-later, with Debian's bare versions spelt out.
VERSIONED = {"GPL": {"1": "1.0", "2": "2.0", "3": "3.0"},
             "LGPL": {"2": "2.0", "2.0": "2.0", "2.1": "2.1", "3": "3.0"},
             "AGPL": {"3": "3.0"}, "GFDL": {"1.1": "1.1", "1.2": "1.2", "1.3": "1.3"},
             "GFDL-NIV": {"1.1": "1.1", "1.2": "1.2", "1.3": "1.3"}}
# Debian short names whose SPDX spelling differs by more than letter case.
RENAMED = {"expat": "MIT", "artistic": "Artistic-1.0", "artistic-1": "Artistic-1.0",
           "artistic-2": "Artistic-2.0", "apache-2": "Apache-2.0", "mpl-2": "MPL-2.0",
           "cc0": "CC0-1.0", "psf-2": "PSF-2.0", "zope-2.1": "ZPL-2.1",
           "perl": "(Artistic-1.0-Perl OR GPL-1.0-or-later)"}
TERM = re.compile(r"(?P<family>[A-Za-z][A-Za-z-]*?)-(?P<version>\d+(?:\.\d+)*)(?P<plus>\+?)")
EXCEPTION = re.compile(r"(?P<license>\S+)\s+with\s+(?P<exception>\S+)\s+exception", re.I)


@dataclass(frozen=True)
class LicenseRef:
    """A licence SPDX does not list: its ``LicenseRef-`` id, Debian's name and its text."""

    id: str
    name: str
    text: str


@dataclass(frozen=True)
class PackageLicense:
    """A package's declared licence: an SPDX expression or NOASSERTION, and why."""

    expression: str
    refs: tuple[LicenseRef, ...]
    comment: str


def find_copyright(package: str, root: Path, roots: Sequence[Path]) -> Path | None:
    """``/usr/share/doc/<package>/copyright`` in the package's tree; when the doc folder is a
    link to a sibling package's (``libgcc-s1 -> gcc-12-base``), that one in any of ``roots``."""
    doc = root / "usr" / "share" / "doc" / package
    if (doc / "copyright").is_file() and not doc.is_symlink():
        return doc / "copyright"
    if doc.is_symlink():
        target = Path(doc.readlink())
        if len(target.parts) == 1 and target.name not in ("", ".", ".."):
            for other in roots:
                found = other / "usr" / "share" / "doc" / target.name / "copyright"
                if found.is_file() and not found.parent.is_symlink():
                    return found
    return None


def parse_license(text: str, where: str) -> PackageLicense:
    """The licence a copyright file declares; NOASSERTION when it is not machine-readable."""
    try:
        parsed = dep5.Copyright(text.splitlines(keepends=True), strict=False)
    except (dep5.NotMachineReadableError, dep5.MachineReadableFormatError, ValueError) as exc:
        why = "not machine-readable" if isinstance(exc, dep5.NotMachineReadableError) \
            else f"not valid DEP-5 ({exc})"
        return PackageLicense(NOASSERTION, (), f"{where}: {why}")
    # python-debian declares License fields as RestrictedField; they hold a License.
    licenses: list[Any] = [p.license for p in parsed.all_license_paragraphs()]
    texts = {lic.synopsis.strip(): lic.text for lic in licenses if lic is not None}
    expressions: list[str] = []
    refs: dict[str, LicenseRef] = {}
    for paragraph in parsed.all_files_paragraphs():
        license_: Any = paragraph.license
        if license_ is None:
            continue
        expression, found = convert_synopsis(license_.synopsis, texts, license_.text, where)
        refs.update((ref.id, ref) for ref in found)
        if expression not in expressions:
            expressions.append(expression)
    if not expressions:
        return PackageLicense(NOASSERTION, (), f"{where}: no Files paragraph names a licence")
    joined = " AND ".join(f"({e})" if " OR " in e and len(expressions) > 1 else e
                          for e in expressions)
    return PackageLicense(joined, tuple(sorted(refs.values(), key=lambda r: r.id)),
                          f"{where}: the licences of its Files paragraphs (DEP-5)")


def convert_synopsis(synopsis: str, texts: dict[str, str], inline: str,
                     where: str) -> tuple[str, list[LicenseRef]]:
    """A DEP-5 licence synopsis as an SPDX expression. ``and`` binds tighter than ``or``, as
    in SPDX; a comma ends a group (``A or B, and C`` is ``(A OR B) AND C``)."""
    refs: list[LicenseRef] = []
    result = ""
    for i, chunk in enumerate(synopsis.split(",")):
        words = chunk.split()
        operator = ""
        if i and words and words[0].lower() in ("and", "or"):
            operator, words = words[0].upper(), words[1:]
        converted = _convert_chunk(words, texts, inline, where, refs)
        result = f"{_group(result)} {operator or 'AND'} {_group(converted)}" if result else converted
    if not _valid(result, refs):
        ref = _ref(synopsis.strip(), texts, inline, where)
        return ref.id, [ref]
    return result, refs


def _group(expression: str) -> str:
    """An expression as one operand: in parentheses unless it is a single term."""
    return f"({expression})" if " " in expression else expression


def _convert_chunk(words: list[str], texts: dict[str, str], inline: str, where: str,
                   refs: list[LicenseRef]) -> str:
    """One comma-free run: terms (each possibly ``X with Y exception``) joined by and/or."""
    out: list[str] = []
    term: list[str] = []
    for word in [*words, "or"]:
        if word.lower() in ("and", "or") and term:
            out.append(_convert_term(" ".join(term), texts, inline, where, refs))
            term = []
            out.append(word.upper())
        elif word.lower() not in ("and", "or"):
            term.append(word)
    return " ".join(out[:-1])


def _convert_term(term: str, texts: dict[str, str], inline: str, where: str,
                  refs: list[LicenseRef]) -> str:
    """One licence, with its exception: an SPDX id when Debian's name maps onto one."""
    if (match := EXCEPTION.fullmatch(term)) is not None:
        license_id, exception = spdx_id(match["license"]), _exception(match["exception"])
        if license_id is not None and exception is not None and "(" not in license_id:
            return f"{license_id} WITH {exception}"
    elif (found := spdx_id(term)) is not None:
        return found
    ref = _ref(term, texts, inline, where)
    refs.append(ref)
    return ref.id


def spdx_id(name: str) -> str | None:
    """The SPDX identifier (or small expression) for one Debian short licence name, or None."""
    if (renamed := RENAMED.get(name.lower())) is not None:
        return renamed
    match = TERM.fullmatch(name)
    if match is not None and match["family"].upper() in VERSIONED:
        family = match["family"].upper()
        version = VERSIONED[family].get(match["version"].removesuffix(".0")) \
            or VERSIONED[family].get(match["version"])
        if version is None:
            return None
        spdx_family = "GFDL" if family == "GFDL-NIV" else family
        niv = "-no-invariants" if family == "GFDL-NIV" else ""
        return f"{spdx_family}-{version}{niv}-{'or-later' if match['plus'] else 'only'}"
    if name.endswith("+"):
        return None  # SPDX's "+" operator is deprecated and few names carry it; keep Debian's
    return _known(False).get(name.lower())


def _exception(name: str) -> str | None:
    known = _known(True)
    return known.get(name.lower()) or known.get(f"{name.lower()}-exception")


@functools.cache
def _known(exceptions: bool) -> dict[str, str]:
    """SPDX licence (or exception) identifiers by lower-case name."""
    return {key.lower(): key for key, symbol in _licensing().known_symbols.items()
            if not key.startswith("LicenseRef-") and bool(symbol.is_exception) == exceptions}


def _licensing() -> Licensing:
    """The SPDX licence list spdx-tools loaded (loading it takes a quarter of a second)."""
    return spdx_licensing


def parse_expression(expression: str) -> LicenseExpression:
    """An expression this module made, parsed (spdx-tools takes the parsed form)."""
    return _licensing().parse(expression)


def _valid(expression: str, refs: list[LicenseRef]) -> bool:
    ours = {ref.id for ref in refs}
    try:
        info = _licensing().validate(expression)
    except ExpressionError:
        return False
    return not info.errors or set(info.invalid_symbols) <= ours


def _ref(name: str, texts: dict[str, str], inline: str, where: str) -> LicenseRef:
    """A LicenseRef for a Debian licence name SPDX does not list, with the copyright file's text."""
    slug = re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9.-]", "-", name.replace("+", "-plus"))).strip("-")
    text = texts.get(name) or inline or f"The licence Debian's copyright file {where} calls {name!r}."
    return LicenseRef(f"LicenseRef-{slug or 'unnamed'}", name, text)
