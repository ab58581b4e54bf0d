"""`verify-provenance`: check a build's signed provenance against its output folder.

The envelope must be signed by one of the given keys, its payload an in-toto Statement v1
with a SLSA Provenance v1 predicate, every subject present with its sha256, and no file of
the folder (besides the envelope) left out of the subjects, except the images a
``--no-images`` build kept from an earlier one: the signed manifest lists those
(``kept_images``) with their sha256, which must match.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.components.cache import sha256_file
from builder.errors import BuildError
from builder.provenance.dsse import IN_TOTO, check_signature, parse_envelope
from builder.provenance.statement import PREDICATE_TYPE, STATEMENT_TYPE
from builder.signing.keys import PublicKey

PROVENANCE = "provenance.intoto.jsonl"


@dataclass(frozen=True)
class Verdict:
    """A verified provenance: who signed it and what it covers."""

    key: PublicKey
    subjects: dict[str, str]
    predicate: dict[str, Any]


def verify_provenance(folder: Path, keys: list[PublicKey]) -> Verdict:
    """Check ``folder/provenance.intoto.jsonl``; raise a BuildError naming the first fault."""
    path = folder / PROVENANCE
    try:
        text = path.read_text()
    except OSError as exc:
        raise BuildError(f"{path}: cannot read the provenance: {exc.strerror}") from None
    envelope = parse_envelope(text, str(path))
    if envelope.payload_type != IN_TOTO:
        raise BuildError(f"{path}: payload type {envelope.payload_type!r}, expected {IN_TOTO!r}")
    key = check_signature(envelope, keys, str(path))
    statement = _statement(envelope.payload, path)
    subjects = _subjects(statement, path)
    for name, digest in sorted(subjects.items()):
        file = folder / name
        if not file.is_file():
            raise BuildError(f"{folder}: {name}: missing (the provenance lists it)")
        if (actual := sha256_file(file)) != digest:
            raise BuildError(f"{folder}: {name}: sha256 {actual} differs from the provenance's "
                             f"{digest}: the file changed after the build")
    kept = _kept_images(folder, subjects)
    for name, digest in sorted(kept.items()):
        if (actual := sha256_file(folder / name)) != digest:
            raise BuildError(f"{folder}: {name}: sha256 {actual} differs from the signed "
                             f"manifest's kept image {digest}")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    if extra := sorted(present - set(subjects) - set(kept) - {PROVENANCE}):
        raise BuildError(f"{folder}: {extra[0]}: not covered by the provenance"
                         + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    return Verdict(key, subjects, statement["predicate"])


def _kept_images(folder: Path, subjects: dict[str, str]) -> dict[str, str]:
    """The images a ``--no-images`` build kept (name to sha256), from the manifest when it is
    a checked subject; only names of files inside the folder."""
    if "manifest.json" not in subjects:
        return {}
    try:
        kept = json.loads((folder / "manifest.json").read_text()).get("kept_images") or {}
        found = {str(name): str(info["sha256"]) for name, info in kept.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise BuildError(f"{folder}: manifest.json: unreadable kept_images") from None
    return {name: digest for name, digest in found.items()
            if (folder / name).is_file() and not name.startswith("/")
            and ".." not in name.split("/")}


def _statement(payload: bytes, path: Path) -> dict[str, Any]:
    try:
        statement = json.loads(payload)
    except ValueError as exc:
        raise BuildError(f"{path}: the payload is not JSON ({exc})") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise BuildError(f"{path}: the payload is not an in-toto Statement v1")
    if statement.get("predicateType") != PREDICATE_TYPE \
            or not isinstance(statement.get("predicate"), dict):
        raise BuildError(f"{path}: the predicate is not SLSA Provenance v1")
    return statement


def _subjects(statement: dict[str, Any], path: Path) -> dict[str, str]:
    """Subject names to sha256; a name leaving the folder is refused, never followed."""
    subjects: dict[str, str] = {}
    for subject in statement.get("subject") or []:
        name = subject.get("name") if isinstance(subject, dict) else None
        digest = (subject.get("digest") or {}).get("sha256") if isinstance(subject, dict) else None
        if not isinstance(name, str) or not isinstance(digest, str):
            raise BuildError(f"{path}: a subject without a name or a sha256 digest")
        if name.startswith("/") or posixpath.normpath(name) != name or name.startswith(".."):
            raise BuildError(f"{path}: subject {name!r} is not a path inside the folder")
        subjects[name] = digest
    if not subjects:
        raise BuildError(f"{path}: the statement has no subject")
    return subjects
