"""What a recipe asks of its Debian packages, checked against the same cache, lock and archive
the build uses: every package in the Packages index for the platform's architecture (or
pinned in the lock), every kernel module in the kernel package, every binary and file in its
component's packages. Package contents are the .deb's data.tar member names (``dpkg
--contents``), listed while the package is unpacked into the cache as the build would
unpack it (the kernel lazily, builder.components.lazytree), so each is decompressed once
for both; .deb files are downloaded into the cache when missing, as the build would, and
nothing is written outside it. A pass is recorded in the cache by what was asked and the
packages' digests, so a warm build checks again only by looking it up."""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from builder.components.cache import Cache, touch, write_atomic
from builder.components.deb import deb_digest, list_contents
from builder.components.kernelproc import kernel_contents
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
CHECKS_FORMAT = 1  # bumped whenever a check below changes what it passes


@dataclass(frozen=True)
class _Part:
    """One component to check: where the recipe names it, the .debs it reads, and what the
    messages call them."""

    key: KeyPath
    component: Component
    debs: tuple[Path, ...]
    what: str
    names: tuple[str, ...]  # each .deb's package, as progress shows it while it unpacks


def check_packages(resolver: Resolver, merged: Merged) -> list[str]:
    """Every problem with the recipe's Debian packages, kernel modules and binaries, as
    ``file:line: key: message``, through ``resolver`` (the build's own: one archive index,
    loaded once). A missing index or an unreachable mirror is a BuildError.

    The packages are found first (pinned by the lock or the index, fetched when missing);
    when the same modules, binaries and files were found in packages of the same digests
    before, the pass recorded then is the answer. Else the listings are read on threads:
    from the cache, or made while unpacking (``unpack_deb``, ``unpack_kernel``), as the
    build would unpack each package anyway."""
    recipe, cache = resolver.recipe, resolver.cache
    problems: list[str] = []
    modules = [*((("kernel", "modules", i), m) for i, m in enumerate(recipe.kernel.modules)),
               *((IMPLIED_BY.get(m, ("kernel", "modules")), m) for m in implied_modules(recipe))]
    try:
        kernel = _kernel_debs(resolver, recipe.kernel)
    except LookupError as exc:
        problems.append(at(merged, ("kernel", "debian"), str(exc.args[0])))
        kernel = None
    if kernel is None and recipe.kernel.debian is None and modules:
        problems.append(at(merged, ("kernel", "modules"), "kernel.modules needs a kernel "
                           "package (.deb); a bare kernel image has no modules"))
    named: list[tuple[KeyPath, Component]] = [
             *((("initramfs", "components", i), c) for i, c in
               enumerate(recipe.initramfs.components)),
             *((("initramfs", "toolset", n), c) for n, c in recipe.initramfs.tools),
             *((IMPLIED_BY.get(c.debian or "", ("initramfs",)), c)
               for c in implied_components(recipe))]
    parts: list[_Part] = []
    for key, component in named:
        try:
            part = _component_debs(resolver, key, component)
        except MissingPackage as exc:
            where = (*key, "debian") if key[:2] != ("transports",) and key != ("ssh",) else key
            problems.append(at(merged, where, exc.message))
            continue
        if part is not None:
            parts.append(part)
    passed = _passed_file(cache, modules, kernel, parts)
    if not problems and passed.is_file():
        touch(passed)
        return []
    wanted = [name for _, name in modules]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        kernel_listings = ([pool.submit(kernel_contents, deb, cache, wanted) for deb in kernel]
                           if kernel is not None else None)
        listings = [[pool.submit(list_contents, deb, cache, True, name)
                     for deb, name in zip(part.debs, part.names, strict=True)]
                    for part in parts]
        if kernel_listings is not None:
            problems += _check_modules([f.result() for f in kernel_listings], modules, merged)
        for part, futures in zip(parts, listings, strict=True):
            problems += _check_component(part, [f.result() for f in futures], merged)
    if not problems:
        write_atomic(passed, b"")
    return problems


def _passed_file(cache: Cache, modules: list[tuple[KeyPath, str]], kernel: list[Path] | None,
                 parts: list[_Part]) -> Path:
    """Where a pass of these checks over these packages (by digest) is recorded."""
    question = {"modules": sorted(normalize_name(m) for _, m in modules),
                "kernel": [deb_digest(d, cache) for d in kernel] if kernel is not None else None,
                "components": [[list(p.component.binaries), list(p.component.files),
                                [deb_digest(d, cache) for d in p.debs]] for p in parts]}
    digest = hashlib.sha256(json.dumps(question, sort_keys=True).encode()).hexdigest()
    return cache.root / "derived" / "checks" / f"{digest}.v{CHECKS_FORMAT}"


def _kernel_debs(resolver: Resolver, source: Source) -> list[Path] | None:
    """The kernel package's .debs; None for a bare kernel image. LookupError carries the
    message of a package the index or lock does not have."""
    if source.debian is not None:
        try:
            names = (resolver.platform_lock.kernel if resolver.platform_lock
                     else [resolver.kernel_package_name(source.debian, source.version)])
            return [resolver.fetch(n)[1] for n in names]
        except MissingPackage as exc:
            raise LookupError(exc.message) from None
    deb = _local_deb(source, resolver.cache)
    return [deb] if deb is not None else None


def _component_debs(resolver: Resolver, key: KeyPath, component: Component) -> _Part | None:
    """A component's .debs (its own first, then those it depends on); None for one that is
    a single file or a missing path. MissingPackage when the index or lock has no package."""
    if component.debian is not None:
        fetched = [resolver.fetch(n, p) for n, p in resolver.package_names(component)]
        main = fetched[0][0]
        return _Part(key, component, tuple(deb for _, deb in fetched),
                     f"Debian package {main.name} {main.version}",
                     tuple(pin.name for pin, _ in fetched))
    deb = _local_deb(component, resolver.cache)
    return _Part(key, component, (deb,), deb.name, (deb.name,)) if deb is not None else None


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


def _check_component(part: _Part, listings: list[Listing], merged: Merged) -> list[str]:
    problems = []
    dirs = [_folders(listing) for listing in listings]
    for i, binary in enumerate(part.component.binaries):
        if lookup(listings, dirs, binary) != "f":
            others = " or the packages it depends on" if len(listings) > 1 else ""
            problems.append(at(merged, (*part.key, "binaries", i),
                               f"{binary} is not a file in {part.what}{others}"))
    for i, path in enumerate(part.component.files):
        if lookup(listings[:1], dirs[:1], path) is None:
            problems.append(at(merged, (*part.key, "files", i), f"{path} is not in {part.what}"))
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
