"""The provenance files of an output folder: both SBOMs, then the signed statement."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import Any

from builder.components.cache import Cache, write_atomic
from builder.components.resolve import Resolution
from builder.errors import BuildError
from builder.initramfs.tree import Tree
from builder.provenance.dsse import IN_TOTO, render_envelope
from builder.provenance.inventory import Contents, Inventory, find_contents, make_inventory
from builder.provenance.statement import find_recipe_files, render_statement
from builder.provenance.verify import PROVENANCE
from builder.recipe.model import Recipe
from builder.signing.keys import load_private_key
from builder.signing.signers import KeySigner

SPDX = "sbom.spdx.json"
RENDERERS = ("builder.provenance.spdx", "builder.provenance.cyclonedx")
CYCLONEDX = "sbom.cdx.json"

Outputs = dict[str, dict[str, Any]]


def prepare_sboms(recipe: Recipe, resolution: Resolution, tree: Tree, cache: Cache) -> Contents:
    """What ``write_sboms`` needs that the outputs do not change: the components (their
    licences parsed) and the files, and the two SBOM libraries loaded. A build runs this on
    another thread while it makes the images, which mostly wait on tools."""
    for renderer in RENDERERS:  # spdx-tools and cyclonedx-python-lib: 0.25 s to import
        importlib.import_module(renderer)
    return find_contents(recipe, resolution, tree, cache)


def write_sboms(staging: Path, recipe: Recipe, resolution: Resolution, contents: Contents,
                outputs: Outputs, source_date_epoch: int) -> tuple[Inventory, Outputs]:
    """Write the SPDX and CycloneDX documents describing ``outputs`` (names to digests and
    sizes) and ``contents`` (``find_contents``); return theirs."""
    from builder.provenance.cyclonedx import render_cyclonedx
    from builder.provenance.spdx import render_spdx

    inventory = make_inventory(recipe, resolution, contents, outputs, source_date_epoch)
    written: Outputs = {}
    for name, text in ((SPDX, render_spdx(inventory)), (CYCLONEDX, render_cyclonedx(inventory))):
        written[name] = _write(staging / name, text.encode())
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
