"""What each component costs in the compressed initramfs (docs/formats.md, "Sizes").

Every entry belongs to one group: the recipe component that first put it in the tree (its
toolset name, or its source key), else "kernel modules" for the module folders, else
"environment" (the skeleton, rendered templates, trust files, overlays). A file that several
components need (the C library) belongs to the first one in recipe order, so a component's
figure is what it adds to those before it. Each group's entries are archived as newc on
their own and compressed with the image's compressor, level and filter: the figure is that
archive's size. Groups compressed alone cannot share matches with each other, so their sum
is a little more than the image (both are reported).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from builder.initramfs.cpio import Layer, layer_of, render_entries
from builder.initramfs.tree import Entry, Kind, Tree

MODULES_GROUP = "kernel modules"
ENVIRONMENT_GROUP = "environment"

# (archive, x86 branch filter) -> compressed bytes: the image's compressor and settings.
Squeeze = Callable[[bytes, bool], bytes]


@dataclass(frozen=True)
class ComponentSize:
    """One group's share of the image: entries, content bytes, compressed alone."""

    name: str
    entries: int
    bytes: int
    compressed: int


def group_of(entry: Entry, owners: dict[str, str]) -> str:
    """The group an entry is counted in."""
    if entry.path in owners:
        return owners[entry.path]
    return MODULES_GROUP if layer_of(entry) is Layer.MODULES else ENVIRONMENT_GROUP


def measure_components(tree: Tree, mtime: int, squeeze: Squeeze, *, x86: bool,
                       jobs: int = 1) -> list[ComponentSize]:
    """Each group's size, components in recipe order, then kernel modules and environment;
    ``jobs`` groups compress at once."""
    groups: dict[str, list[Entry]] = {}
    for name in dict.fromkeys(tree.owners.values()):
        groups[name] = []
    groups[MODULES_GROUP], groups[ENVIRONMENT_GROUP] = [], []
    for entry in tree.entries():
        groups[group_of(entry, tree.owners)].append(entry)

    def measure(item: tuple[str, list[Entry]]) -> ComponentSize:
        name, entries = item
        content = sum(len(e.content()) for e in entries if e.kind is Kind.FILE)
        # The branch filter only where the image uses it: programs, not modules or scripts.
        bcj = x86 and name not in (MODULES_GROUP, ENVIRONMENT_GROUP)
        blob = squeeze(render_entries(entries, mtime), bcj)
        return ComponentSize(name, len(entries), content, len(blob))

    items = [(name, entries) for name, entries in groups.items() if entries]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(measure, items))
