"""The SBOMs drafted before the outputs exist: each output's digest a placeholder.

A build knows what its SBOMs say before its images are made, all but the images' digests
(and the serial the digests give): ``draft_sboms`` renders both documents then, with a
``placeholder`` for each digest, in a process of its own (builder.provenance.renderer) while
the images are made; ``documents.write_sboms`` swaps the real digests in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from builder.provenance.inventory import Component, Contents, Inventory, find_files, make_inventory

if TYPE_CHECKING:
    from builder.components.resolve import Resolution
    from builder.initramfs.tree import Tree
    from builder.recipe.model import Recipe

SPDX = "sbom.spdx.json"
CYCLONEDX = "sbom.cdx.json"
Outputs = dict[str, dict[str, Any]]
Render = Callable[[Inventory], dict[str, str]]  # SPDX and CYCLONEDX to their text


def render_sboms(inventory: Inventory) -> dict[str, str]:
    """The SPDX and CycloneDX texts of ``inventory``, by file name."""
    from builder.provenance.cyclonedx import render_cyclonedx
    from builder.provenance.spdx import render_spdx

    return {SPDX: render_spdx(inventory), CYCLONEDX: render_cyclonedx(inventory)}


@dataclass(frozen=True)
class Drafts:
    """Both SBOMs rendered before the images were made (``draft_sboms``), each image's digest
    a placeholder (``placeholder``) that ``write_sboms`` swaps for the real one."""

    contents: Contents
    planned: Outputs  # the outputs they describe, the images' digests placeholders
    inventory: Inventory  # of the planned outputs (its serial comes from their digests)
    texts: dict[str, str]  # SPDX and CYCLONEDX to their text


def placeholder(name: str) -> str:
    """A stand-in sha256 for the output ``name`` until it is made: the digest of a text no
    output is, so it cannot occur in an SBOM for another reason."""
    return hashlib.sha256(f"onie-builder: the sha256 of {name}, once made".encode()).hexdigest()


def draft_sboms(recipe: Recipe, resolution: Resolution, tree: Tree,
                components: tuple[Component, ...], names: list[str], source_date_epoch: int,
                render: Render = render_sboms) -> Drafts:
    """The SBOMs of ``components`` (``find_components``) and ``tree``'s files, describing as
    outputs the files ``names`` not made yet, each with a placeholder digest. A build drafts
    them in a process of its own (``SbomRenderer``) while it writes the initramfs and makes
    the images, so that once they are done, writing the SBOMs is a text substitution."""
    contents = Contents(components, find_files(tree, resolution))
    planned: Outputs = {name: {"sha256": placeholder(name), "size": 0} for name in names}
    inventory = make_inventory(recipe, resolution, contents, planned, source_date_epoch)
    return Drafts(contents, planned, inventory, render(inventory))
