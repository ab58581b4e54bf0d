"""The provenance statement: an in-toto Statement v1 whose subjects are the output files and
whose predicate is SLSA Provenance v1: the recipe files, the lock file, the recipe's commit
and every component with their digests, the builder's version and SOURCE_DATE_EPOCH.

Nothing in it varies between two builds of the same inputs (no start time, no invocation
id, no host name, no path of the build machine), so it is as reproducible as the outputs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import MissingToolError
from builder.process import run
from builder.provenance.inventory import Inventory

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# TypeURIs naming this builder and its build: URNs, as the project has no web address.
BUILD_TYPE = "urn:onie-builder:build-type:platform:v1"
BUILDER_ID = "urn:onie-builder:builder"


@dataclass(frozen=True)
class RecipeFile:
    """A recipe file: its name (repository-relative when in git), digest and commit."""

    name: str
    sha256: str
    commit: str | None
    dirty: bool


def find_recipe_files(paths: list[Path]) -> list[RecipeFile]:
    """Each recipe file with its digest; the commit of its git repository when it is in one,
    and whether the file differs from that commit."""
    found = []
    for path in paths:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        try:
            proc = run(["git", "-C", path.resolve().parent, "rev-parse", "--show-toplevel",
                        "HEAD"], check=False)
        except MissingToolError:
            proc = None
        lines = proc.stdout.decode(errors="replace").split() if proc else []
        if proc is None or proc.returncode != 0 or len(lines) != 2:
            found.append(RecipeFile(path.name, digest, None, False))
            continue
        top, commit = Path(lines[0]), lines[1]
        name = path.resolve().relative_to(top.resolve()).as_posix()
        status = run(["git", "-C", top, "status", "--porcelain", "--", name], check=False)
        found.append(RecipeFile(name, digest, commit, bool(status.stdout.strip())))
    return found


def render_statement(inventory: Inventory, subjects: dict[str, str],
                     recipe_files: list[RecipeFile], lock: tuple[str, str] | None,
                     images: bool) -> bytes:
    """The statement's JSON bytes (sorted keys, no spaces: the DSSE payload)."""
    dependencies: list[dict[str, Any]] = []
    for recipe in recipe_files:
        entry: dict[str, Any] = {"name": recipe.name, "digest": {"sha256": recipe.sha256}}
        if recipe.commit is not None:
            entry["digest"]["gitCommit"] = recipe.commit
            entry["annotations"] = {"modifiedSinceCommit": recipe.dirty}
        dependencies.append(entry)
    if lock is not None:
        dependencies.append({"name": lock[0], "digest": {"sha256": lock[1]}})
    dependencies += [{"uri": c.purl, "name": c.key, "digest": {"sha256": c.sha256}}
                     for c in inventory.components]
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": digest}}
                    for name, digest in sorted(subjects.items())],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "recipe": recipe_files[-1].name if recipe_files else inventory.recipe,
                    "platform": inventory.platform,
                    "sourceDateEpoch": inventory.source_date_epoch,
                    "images": images,
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID,
                            "version": {"onie-builder": inventory.builder_version}},
            },
        },
    }
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
