"""The provenance files of an output folder: both SBOMs, then the signed statement."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from builder.components.cache import write_atomic
from builder.components.resolve import Resolution
from builder.errors import BuildError
from builder.provenance.drafts import CYCLONEDX, SPDX, Drafts, Render, render_sboms
from builder.provenance.dsse import IN_TOTO, render_envelope
from builder.provenance.inventory import Inventory, make_inventory
from builder.provenance.statement import find_recipe_files, render_statement
from builder.provenance.verify import PROVENANCE
from builder.recipe.model import Recipe
from builder.signing.keys import load_private_key
from builder.signing.signers import KeySigner

Outputs = dict[str, dict[str, Any]]


def write_sboms(staging: Path, recipe: Recipe, resolution: Resolution, drafts: Drafts,
                outputs: Outputs, source_date_epoch: int,
                render: Render = render_sboms) -> tuple[Inventory, Outputs]:
    """Write the SPDX and CYCLONEDX documents describing ``outputs`` (names to digests and
    sizes) and the drafts' contents; return theirs. The drafts are used when they describe
    the same files, with their placeholders and serial swapped for the real ones: the texts
    differ only there (a digest's length is fixed; both documents order outputs by name, not
    by digest). Otherwise the documents are rendered again."""
    inventory = make_inventory(recipe, resolution, drafts.contents, outputs, source_date_epoch)
    if sorted(drafts.planned) == sorted(outputs):
        swaps = {str(drafts.inventory.serial): str(inventory.serial),
                 **{str(planned["sha256"]): str(outputs[name]["sha256"])
                    for name, planned in drafts.planned.items()}}
        pattern = re.compile("|".join(re.escape(old) for old in swaps))
        texts = {name: pattern.sub(lambda m: swaps[m[0]], text)
                 for name, text in drafts.texts.items()}
    else:  # the images wrote other files than their names said
        texts = render(inventory)
    written: Outputs = {name: _write(staging / name, texts[name].encode())
                        for name in (SPDX, CYCLONEDX)}
    return inventory, written


def describe_provenance(recipe: Recipe) -> dict[str, object]:
    """What the manifest says of the provenance: its file and whether a key signs it (its
    digest cannot be there: the statement covers the manifest)."""
    return {"file": PROVENANCE, "signed": recipe.provenance.key is not None,
            "sbom": {"spdx": SPDX, "cyclonedx": CYCLONEDX}}


def write_provenance(staging: Path, inventory: Inventory, recipe: Recipe, subjects: dict[str, str],
                     recipe_files: list[Path], lock_path: Path | None, images: bool) -> Outputs:
    """Write the DSSE envelope of the provenance statement, signed when the recipe names a key."""
    lock = (lock_path.name, hashlib.sha256(lock_path.read_bytes()).hexdigest()) \
        if lock_path is not None else None
    payload = render_statement(inventory, subjects, find_recipe_files(recipe_files), lock, images)
    signer = None
    if (key := recipe.provenance.key) is not None:
        if not key.is_file():
            raise BuildError(f"provenance.key: {key}: no such file")
        signer = KeySigner(load_private_key(key))
    return {PROVENANCE: _write(staging / PROVENANCE,
                               render_envelope(IN_TOTO, payload, signer).encode())}


def _write(path: Path, data: bytes) -> dict[str, Any]:
    write_atomic(path, data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
