"""What a recipe asks of its Debian packages, checked against the same cache, lock and archive
the build uses: every package in the Packages index for the platform's architecture (or
pinned in the lock), every kernel module in the kernel package, every binary and file in its
component's packages. Package contents are read from the .deb's data.tar member names
(``dpkg --contents``), never unpacked; .deb files are downloaded into the cache when missing,
as the build would, but nothing is written outside it."""

from __future__ import annotations

import re
from pathlib import Path

from builder.components.cache import Cache
from builder.components.deb import list_contents
from builder.components.lock import Lock
from builder.components.mirror import AptSource
from builder.components.resolve import Resolver
from builder.errors import MissingPackage
from builder.initramfs.kmod import normalize_name, split_suffix
from builder.preflight.problems import at
from builder.recipe.component import Component, Source
from builder.recipe.document import KeyPath
from builder.recipe.implied import (
    ISCSI_MODULES,
    UEFI_MODULE,
    implied_components,
    implied_modules,
)
from builder.recipe.merge import Merged
from builder.recipe.model import Recipe

MAX_HOPS = 40  # symlinks followed for one path, as Linux (ELOOP)
MODULE_RE = re.compile(r"^(?:usr/)?lib/modules/[^/]+/(?:.+/)?(?P<file>[^/]+)$")
# The setting that brings each implied package or module along, where its problems point.
IMPLIED_BY: dict[str, KeyPath] = {
    "openssl": ("transports", "https", "ca"),
    "open-iscsi": ("transports", "iscsi", "enabled"),
    "open-isns-utils": ("transports", "iscsi", "enabled"),
    "dhcpcd-base": ("transports", "ipv6", "dhcpv6"),
    "dropbear-bin": ("ssh",),
    **{m: ("transports", "iscsi", "enabled") for m in ISCSI_MODULES},
    UEFI_MODULE: ("initramfs", "toolset"),
}

Listing = dict[str, str]


def check_packages(recipe: Recipe, merged: Merged, cache: Cache, sources: list[AptSource],
                   lock: Lock | None, relock: str | None = None) -> list[str]:
    """Every problem with the recipe's Debian packages, kernel modules and binaries, as
    ``file:line: key: message``. A missing index or an unreachable mirror is a BuildError."""
    resolver = Resolver(recipe, cache, sources, lock, relock=relock)
    problems: list[str] = []
    modules = [*((("kernel", "modules", i), m) for i, m in enumerate(recipe.kernel.modules)),
               *((IMPLIED_BY.get(m, ("kernel", "modules")), m) for m in implied_modules(recipe))]
    try:
        kernel = _kernel_listings(resolver, recipe.kernel, cache)
    except LookupError as exc:
        problems.append(at(merged, ("kernel", "debian"), str(exc.args[0])))
        kernel = None
    if kernel is not None:
        problems += _check_modules(kernel, modules, merged)
    elif recipe.kernel.debian is None and modules:
        problems.append(at(merged, ("kernel", "modules"), "kernel.modules needs a kernel "
                           "package (.deb); a bare kernel image has no modules"))
    named: list[tuple[KeyPath, Component]] = [
             *((("initramfs", "components", i), c) for i, c in
               enumerate(recipe.initramfs.components)),
             *((("initramfs", "toolset", n), c) for n, c in recipe.initramfs.tools),
             *((IMPLIED_BY.get(c.debian or "", ("initramfs",)), c)
               for c in implied_components(recipe))]
    for key, component in named:
        problems += _check_component(resolver, key, component, cache, merged)
    return problems


def _kernel_listings(resolver: Resolver, source: Source, cache: Cache) -> list[Listing] | None:
    """The kernel package's contents; None for a bare kernel image. LookupError carries the
    message of a package the index or lock does not have."""
    if source.debian is not None:
        try:
            names = (resolver.platform_lock.kernel if resolver.platform_lock
                     else [resolver.kernel_package_name(source.debian, source.version)])
            return [list_contents(resolver.fetch(n)[1], cache) for n in names]
        except MissingPackage as exc:
            raise LookupError(exc.message) from None
    deb = _local_deb(source, cache)
    return [list_contents(deb, cache)] if deb is not None else None


def _check_modules(listings: list[Listing], wanted: list[tuple[KeyPath, str]],
                   merged: Merged) -> list[str]:
    have: set[str] = set()
    for listing in listings:
        for path, kind in listing.items():
            found = MODULE_RE.match(path)
            if found and kind == "f" and (parts := split_suffix(found["file"])) is not None:
                have.add(normalize_name(parts[0]))
    import difflib

    problems = []
    for key, name in wanted:
        if normalize_name(name) not in have:
            close = difflib.get_close_matches(normalize_name(name), sorted(have), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(at(merged, key, f"unknown kernel module {name!r}: the kernel "
                               f"package has no {name}.ko{hint}"))
    return problems


def _check_component(resolver: Resolver, key: KeyPath, component: Component, cache: Cache,
                     merged: Merged) -> list[str]:
    if component.debian is not None:
        try:
            found = resolver.package_names(component)
            fetched = [resolver.fetch(n, p) for n, p in found]
        except MissingPackage as exc:
            where = (*key, "debian") if key[:2] != ("transports",) and key != ("ssh",) else key
            return [at(merged, where, exc.message)]
        listings = [list_contents(deb, cache) for _, deb in fetched]
        main = fetched[0][0]
        what = f"Debian package {main.name} {main.version}"
    else:
        deb = _local_deb(component, cache)
        if deb is None:
            return []
        listings, what = [list_contents(deb, cache)], f"{deb.name}"
    problems = []
    dirs = [_folders(listing) for listing in listings]
    for i, binary in enumerate(component.binaries):
        if lookup(listings, dirs, binary) != "f":
            others = " or the packages it depends on" if len(listings) > 1 else ""
            problems.append(at(merged, (*key, "binaries", i),
                               f"{binary} is not a file in {what}{others}"))
    for i, path in enumerate(component.files):
        if lookup(listings[:1], dirs[:1], path) is None:
            problems.append(at(merged, (*key, "files", i), f"{path} is not in {what}"))
    return problems


def _local_deb(source: Source, cache: Cache) -> Path | None:
    """A ``path`` or ``url`` component's .deb (None for a single file, or a missing path:
    the file checks report that)."""
    if not source.is_package:
        return None
    if source.url is not None:
        return cache.fetch(source.url, source.sha256)[1]
    return source.path if source.path is not None and source.path.is_file() else None


def _folders(listing: Listing) -> set[str]:
    """Every folder of a listing, the ones only implied by a deeper path too."""
    out = {p for p, kind in listing.items() if kind == "d"}
    for path in listing:
        parts = path.split("/")
        out.update("/".join(parts[:n]) for n in range(1, len(parts)))
    return out


def lookup(listings: list[Listing], folders: list[set[str]], path: str) -> str | None:
    """What ``path`` is in the packages seen as one file system (the first package holding a
    path wins, as the build's sysroot): ``"f"``, ``"d"`` or None; symlinks followed inside."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    kind: str | None = "d"
    while parts:
        part = parts.pop(0)
        if part == "..":
            del done[-1:]
            continue
        candidate = "/".join([*done, part])
        kind = next((listing.get(candidate) or ("d" if candidate in dirs else None)
                     for listing, dirs in zip(listings, folders, strict=True)
                     if candidate in listing or candidate in dirs), None)
        if kind is None:
            return None
        if kind.startswith("l:"):
            hops += 1
            if hops > MAX_HOPS:
                return None
            target = kind[2:]
            done = [] if target.startswith("/") else done
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            kind = "d"
            continue
        if parts and kind != "d":
            return None
        done.append(part)
    return kind
