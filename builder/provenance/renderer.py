"""Both SBOMs drafted in a process of its own, beside the images.

The SBOMs' work is pure Python: importing spdx-tools and cyclonedx-python-lib (~0.4 s),
reading the components' licences and hashing the files (~0.3 s), rendering the two documents
(~0.35 s). On a thread it holds the GIL that the image builders' own Python needs at the same
time, so it only took turns with them (measured: no faster than after the images). In a
spawned process it runs on the core the images leave idle. A build starts the process before
it assembles the tree (the imports overlap that), sends it the tree once assembled, and gets
back drafts whose output digests are placeholders (``documents.draft_sboms``), swapped for the
real ones when the images are done (``documents.write_sboms``).
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from builder.components.cache import Cache
from builder.errors import BuildError
from builder.provenance.drafts import Drafts, draft_sboms, render_sboms
from builder.provenance.inventory import Component, Inventory, find_components

if TYPE_CHECKING:
    from builder.components.resolve import Resolution
    from builder.initramfs.tree import Tree
    from builder.recipe.model import Recipe

T = TypeVar("T")
LOGGERS = ("builder", "debian")  # whose levels the process takes from the build
MODULES = ("builder.provenance.spdx", "builder.provenance.cyclonedx")


def _init(levels: dict[str, int]) -> None:
    """Log as the build does: a library's notes (python-debian's "Fixing Format URL" for
    each lenient copyright file) only when the build shows them."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _load() -> None:
    for name in MODULES:
        importlib.import_module(name)


# In the process: the components found by ``_find_components`` for ``_draft``, by request.
_components: dict[str, tuple[Component, ...]] = {}


def _find_components(key: str, resolution: Resolution, cache_root: Path, arch: str) -> None:
    _components[key] = find_components(resolution, Cache(cache_root, offline=True), arch)


def _draft(key: str, recipe: Recipe, resolution: Resolution, tree: Tree, cache_root: Path,
           names: list[str], source_date_epoch: int) -> Drafts:
    components = _components.pop(key, None)
    if components is None:  # not found first (the process runs requests in order)
        components = find_components(resolution, Cache(cache_root, offline=True),
                                     recipe.platform.arch.debian)
    return draft_sboms(recipe, resolution, tree, components, names, source_date_epoch)


class SbomRenderer:
    """``draft_sboms`` and ``render_sboms`` in a spawned process (spawn, not fork: the build
    runs threads) for one build; ``close`` when done.

    Started once the checks are over: started before them, its imports (~0.5 s of CPU) made
    the checks, which keep both cores busy, as much longer as they saved later (measured)."""

    def __init__(self, recipe: Recipe, resolution: Resolution, cache_root: Path) -> None:
        """Start the process: the libraries' imports, then the components of ``resolution``
        (their licences read from the copyright files), which the tree does not change."""
        levels = {name: logging.getLogger(name).getEffectiveLevel() for name in LOGGERS}
        self._pool = ProcessPoolExecutor(max_workers=1,
                                         mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init, initargs=(levels,))
        self._key = uuid.uuid4().hex
        self._recipe, self._resolution, self._cache_root = recipe, resolution, cache_root
        self._pool.submit(_load)
        self._pool.submit(_find_components, self._key, resolution, cache_root,
                          recipe.platform.arch.debian)

    def draft(self, tree: Tree, names: list[str], source_date_epoch: int) -> Future[Drafts]:
        """``draft_sboms`` of ``tree`` in the process, every output in ``names``."""
        return self._pool.submit(_draft, self._key, self._recipe, self._resolution, tree,
                                 self._cache_root, names, source_date_epoch)

    def render(self, inventory: Inventory) -> dict[str, str]:
        """``render_sboms(inventory)``, in the process."""
        return self.result(self._pool.submit(render_sboms, inventory))

    @staticmethod
    def result(future: Future[T]) -> T:
        """The future's result, a stopped process as a BuildError."""
        try:
            return future.result()
        except BrokenProcessPool as exc:
            raise BuildError(f"the process drafting the SBOMs stopped: {exc}") from exc

    def close(self) -> None:
        """Stop the process (what it still has to do is dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
