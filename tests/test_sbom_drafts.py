"""SBOM drafts (builder.provenance.documents): rendered before the outputs exist with a
placeholder for each digest, then finished by swapping in the real digests and serial, which
must give the text a render of the real outputs gives; other outputs than planned are
rendered again."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from builder.provenance import drafts as drafting
from builder.provenance.documents import write_sboms
from builder.provenance.drafts import CYCLONEDX, SPDX, Drafts, placeholder
from builder.provenance.inventory import Contents, Inventory, make_inventory

RECIPE: Any = SimpleNamespace(platform_string="x86_64-test-r0", name="test", version="1",
                              platform=SimpleNamespace(arch=SimpleNamespace(debian="amd64")))
RESOLUTION: Any = SimpleNamespace(kernel=SimpleNamespace(release="6.1.0-test"))
CONTENTS = Contents(components=(), files=())
EPOCH = 1700000000


def render(inventory: Inventory) -> dict[str, str]:
    """A stand-in for the two documents: the serial and every output's digest, in order."""
    lines = [str(inventory.serial), *(f"{o.name} {o.sha256}" for o in inventory.outputs)]
    return {SPDX: "\n".join(lines), CYCLONEDX: "\n".join(reversed(lines))}


def drafts(names: list[str]) -> tuple[Drafts, list[Inventory]]:
    rendered: list[Inventory] = []

    def counting(inventory: Inventory) -> dict[str, str]:
        rendered.append(inventory)
        return render(inventory)

    planned = {name: {"sha256": placeholder(name), "size": 0} for name in names}
    inventory = make_inventory(RECIPE, RESOLUTION, CONTENTS, planned, EPOCH)
    return Drafts(CONTENTS, planned, inventory, counting(inventory)), rendered


def real(names: list[str]) -> dict[str, dict[str, Any]]:
    return {name: {"sha256": f"{i:064x}", "size": i} for i, name in enumerate(names, 1)}


def test_finishing_a_draft_gives_what_rendering_the_outputs_gives(tmp_path: Path) -> None:
    names = ["vmlinuz", "initrd.img", "onie-recovery.iso", "uki/onie.efi"]
    draft, rendered = drafts(names)
    outputs = real(names)
    inventory, written = write_sboms(tmp_path, RECIPE, RESOLUTION, draft, outputs, EPOCH, render)
    assert len(rendered) == 1  # the draft only: finishing rendered nothing
    expected = render(make_inventory(RECIPE, RESOLUTION, CONTENTS, outputs, EPOCH))
    assert (tmp_path / SPDX).read_text() == expected[SPDX]
    assert (tmp_path / CYCLONEDX).read_text() == expected[CYCLONEDX]
    assert str(inventory.serial) in expected[SPDX] and str(draft.inventory.serial) not in \
        (tmp_path / SPDX).read_text()
    assert set(written) == {SPDX, CYCLONEDX}


def test_other_outputs_than_planned_are_rendered_again(tmp_path: Path) -> None:
    draft, _ = drafts(["vmlinuz", "initrd.img", "a.img"])
    outputs = real(["vmlinuz", "initrd.img", "a.img", "b.img"])
    again: list[Inventory] = []

    def render_again(inventory: Inventory) -> dict[str, str]:
        again.append(inventory)
        return render(inventory)

    write_sboms(tmp_path, RECIPE, RESOLUTION, draft, outputs, EPOCH, render_again)
    assert len(again) == 1 and [o.name for o in again[0].outputs] == sorted(outputs)
    assert "b.img" in (tmp_path / SPDX).read_text()


def test_placeholders_are_digest_shaped_and_distinct() -> None:
    names = ["vmlinuz", "initrd.img", "netboot/vmlinuz", "onie-updater-x"]
    found = {placeholder(name) for name in names}
    assert len(found) == len(names)
    assert all(len(p) == 64 and int(p, 16) >= 0 for p in found)
    assert drafting.placeholder("vmlinuz") == placeholder("vmlinuz")  # stable across calls
