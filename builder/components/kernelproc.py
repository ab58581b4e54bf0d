"""The kernel package unpacked in a process of its own, and started early.

``unpack_kernel`` (builder.components.lazytree) walks the package's 390 MB of tar in Python.
On a thread that walk takes turns for the GIL with the packages the checks unpack beside it;
in a spawned process it runs on the other core. The CLI knows the kernel package from the
lock file before it has imported what the checks and the build need, so it starts the
unpacking then (``start_kernels``), and the checks wait for that one.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from builder.components.cache import Cache
from builder.components.deb import cached_contents, list_contents
from builder.components.lazytree import is_made, unpack_kernel

if TYPE_CHECKING:
    from builder.components.lock import Lock
    from builder.recipe.model import Recipe


def unpack_kernel_apart(deb: Path, cache: Cache, wanted: Iterable[str]) -> Path:
    """``unpack_kernel`` in a process of its own when the tree is still to be made. Its walk
    over the package's 390 MB is Python work which, on a thread, takes turns for the GIL with
    the packages unpacked beside it; a process of its own runs it beside them, on the other
    core. A tree already made, or a package not in the cache, stays in this process; one
    ``start_unpack_kernel`` began is waited for."""
    with _started_lock:
        started = _started.get(deb)
    if started is not None:
        return started.result()
    if not _to_make(deb, cache):
        return unpack_kernel(deb, cache, wanted)
    return _spawn_unpack(deb, cache, sorted(wanted))


def _to_make(deb: Path, cache: Cache) -> bool:
    """Whether ``deb`` is a blob of ``cache`` whose kernel tree is not made yet."""
    return deb == cache.blob_path(deb.name) and not is_made(deb, cache)


_started: dict[Path, Future[Path]] = {}  # start_unpack_kernel's, by package
_started_lock = threading.Lock()


def start_unpack_kernel(deb: Path, cache: Cache, wanted: Iterable[str]) -> None:
    """Begin ``unpack_kernel_apart`` of ``deb`` now, on a thread of its own, and return. The
    kernel package is the longest work of a cold build's checks, and the CLI knows it from
    the lock file before it has imported what the checks and the build need (~0.25 s on one
    core, the other idle): ``start_kernels``. Nothing is started for a tree already made."""
    if not _to_make(deb, cache):
        return
    with _started_lock:
        if deb in _started:
            return
        future: Future[Path] = Future()
        _started[deb] = future
    names = sorted(wanted)

    def run() -> None:
        try:
            future.set_result(_spawn_unpack(deb, cache, names))
        except BaseException as exc:  # handed to the checks, which report it
            future.set_exception(exc)

    threading.Thread(target=run, name=f"unpack {deb.name[:12]}", daemon=True).start()


def start_kernels(recipe: Recipe, lock: Lock | None, cache: Cache) -> None:
    """``start_unpack_kernel`` for the kernel packages the lock pins for ``recipe`` and the
    cache holds (a build downloads the others in its checks)."""
    from builder.recipe.implied import implied_modules  # not in the kernel's own process

    entry = lock.platforms.get(recipe.platform_string) if lock is not None else None
    if entry is None or recipe.kernel.debian is None:
        return
    pins = lock.packages.get(recipe.platform.arch.debian, {}) if lock is not None else {}
    for name in entry.kernel:
        deb = cache.find(pins[name].sha256) if name in pins else None
        if deb is not None:
            start_unpack_kernel(deb, cache, [*recipe.kernel.modules, *implied_modules(recipe)])


def _spawn_unpack(deb: Path, cache: Cache, wanted: list[str]) -> Path:
    # spawn, not fork: the caller runs threads (the other packages' unpacking)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_unpack_kernel_in, deb, cache.root, wanted).result()


def _unpack_kernel_in(deb: Path, root: Path, wanted: list[str]) -> Path:
    """``unpack_kernel`` in a worker process, with the cache at ``root``."""
    return unpack_kernel(deb, Cache(root, offline=True), wanted)


def kernel_contents(deb: Path, cache: Cache, wanted: Iterable[str]) -> dict[str, str]:
    """``list_contents`` of kernel package ``deb``. A cache blob not listed yet is unpacked
    lazily first (``unpack_kernel``, the build's own step), whose one decompression lists it
    too: the package is read once for the checks before a build and for the build."""
    if _to_make(deb, cache) and cached_contents(cache, deb.name) is None:
        unpack_kernel_apart(deb, cache, wanted)
    return list_contents(deb, cache)
