"""Resolve a recipe's components to files on disk: Debian packages, pinned URLs and local files.

With a lock, Debian packages are fetched by pool path and sha256 (from the cache when
present, so a locked build works offline); without one they are looked up in the
archive's signed indexes and the result can be written back as a lock.
"""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from builder.components.apt import Archive, DebPackage
from builder.components.cache import Cache
from builder.components.deb import unpack_deb
from builder.components.kernelproc import unpack_kernel_apart
from builder.components.lock import Lock, Pin, PlatformLock
from builder.components.mirror import AptSource, find_host_sources, parse_mirror_option
from builder.components.unpacked import resolve_inside
from builder.errors import BuildError, MissingPackage
from builder.recipe.component import Component, Source
from builder.recipe.implied import implied_components, implied_modules
from builder.recipe.model import Recipe

log = logging.getLogger(__name__)

KERNEL_IMAGE_RE = re.compile(r"^(?:vmlinuz|vmlinux|Image)-(?P<version>.+)$")
# The archives opened in one run, by apt sources and architecture (``Resolver.archive``).
Archives = dict[tuple[tuple[AptSource, ...], str], Archive]


@dataclass(frozen=True)
class Package:
    """A .deb that a component uses, pinned and unpacked."""

    pin: Pin
    root: Path

    @property
    def origin(self) -> str:
        """Provenance string for the manifest, e.g. ``debian:busybox-static=1:1.35.0-4+b1``."""
        return f"debian:{self.pin.name}={self.pin.version}"


@dataclass(frozen=True)
class ResolvedComponent:
    """A recipe component with its content on disk; ``name`` is its toolset name, or its
    source key for an ``initramfs.components`` entry."""

    name: str
    component: Component
    key: str
    packages: tuple[Package, ...]
    file: Path | None
    sha256: str

    @property
    def origin(self) -> str:
        """Provenance for files that come from this component's single file."""
        return self.key


@dataclass(frozen=True)
class ResolvedKernel:
    """The kernel image and, when it came from a package, its modules folder."""

    packages: tuple[Package, ...]
    image: Path
    release: str
    modules_dir: Path | None


@dataclass(frozen=True)
class Resolution:
    """Everything a build reads from outside the recipe."""

    kernel: ResolvedKernel
    components: tuple[ResolvedComponent, ...]
    lock: PlatformLock
    pins: tuple[Pin, ...]


def source_key(source: Source) -> str:
    """A stable name for a source, used as the key in lock files and manifests."""
    if source.debian is not None:
        return f"debian:{source.debian}"
    if source.url is not None:
        return f"url:{source.url}"
    assert source.path is not None
    return f"path:{source.path.name}"


def find_apt_sources(recipe: Recipe, mirror: str | None) -> list[AptSource]:
    """The archive to use: ``--mirror``, else the recipe's, else the host's apt sources."""
    if mirror:
        return parse_mirror_option(mirror)
    if recipe.debian.mirror:
        suites = ",".join(recipe.debian.suites)
        if not suites:
            raise BuildError("debian.mirror needs debian.suites (e.g. [bookworm])")
        return parse_mirror_option(f"{recipe.debian.mirror} {suites} "
                                   f"{','.join(recipe.debian.components)}")
    sources = find_host_sources()
    if recipe.debian.suites:
        wanted = set(recipe.debian.suites)
        sources = [AptSource(s.uri, tuple(x for x in s.suites if x in wanted), s.components,
                             s.keyring) for s in sources]
        sources = [s for s in sources if s.suites]
    if not sources:
        raise BuildError("no Debian archive configured: the host has no apt sources",
                         hint="pass --mirror 'URI SUITE[,SUITE] [COMPONENT,...]'")
    return sources


class Resolver:
    """Turns one recipe's sources into packages and files, from a lock or from the archive."""

    def __init__(self, recipe: Recipe, cache: Cache, apt_sources: list[AptSource],
                 lock: Lock | None = None, relock: str | None = None,
                 archives: Archives | None = None) -> None:
        self.recipe = recipe
        self.cache = cache
        self.apt_sources = apt_sources
        self.lock = lock
        self.arch = recipe.platform.arch.debian
        self.platform_lock = (lock.platforms.get(recipe.platform_string) if lock else None)
        if lock is not None and self.platform_lock is None:
            raise BuildError(f"the lock file has no entry for {recipe.platform_string}",
                             hint=f"run '{relock or 'onie-builder lock RECIPE'}'")
        self._archives: Archives = {} if archives is None else archives
        self._pins: dict[str, Pin] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._unpacks: dict[Path, Future[Path]] = {}

    @property
    def archive(self) -> Archive:
        """The Debian archive, opened only when something is not pinned; one per sources and
        architecture in ``archives``, so every resolver sharing it loads each index once."""
        key = (tuple(self.apt_sources), self.arch)
        if key not in self._archives:
            self._archives[key] = Archive(self.apt_sources, self.arch, self.cache)
        return self._archives[key]

    def resolve(self) -> Resolution:
        """Resolve the kernel and every initramfs component. Packages are unpacked on worker
        threads (decompression and file writes let go of the GIL) while this one goes on
        resolving and then unpacks the kernel; all are done when this returns."""
        out_lock = PlatformLock()
        initramfs = self.recipe.initramfs
        named = [*((source_key(c), c) for c in initramfs.components), *initramfs.tools,
                 *((source_key(c), c) for c in implied_components(self.recipe))]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            self._pool = pool
            try:
                components = tuple(self._resolve_component(name, c, out_lock)
                                   for name, c in named)
                kernel = self._resolve_kernel(out_lock)
                for future in self._unpacks.values():
                    future.result()
            finally:
                self._pool = None
        pins = tuple(sorted(self._pins.values(), key=lambda p: p.name))
        return Resolution(kernel, components, out_lock, pins)

    def _resolve_kernel(self, out_lock: PlatformLock) -> ResolvedKernel:
        source = self.recipe.kernel
        if source.debian is not None:
            names = (self.platform_lock.kernel if self.platform_lock
                     else [self.kernel_package_name(source.debian, source.version)])
            packages = tuple(self._package(n, None, kernel=True) for n in names)
            out_lock.kernel = [p.pin.name for p in packages]
        elif source.is_package:
            packages = (self._local_package(source),)
        else:
            image = self._single_file(source)[1]
            if self.recipe.kernel.modules:
                raise BuildError("kernel.modules needs a kernel package (.deb); "
                                 "a bare kernel image has no modules")
            return ResolvedKernel((), image, "unknown", None)
        return self._kernel_from(packages)

    def kernel_package_name(self, name: str, version: str | None) -> str:
        """Follow a metapackage such as ``linux-image-amd64`` to the versioned kernel package."""
        pkg = self.archive.find(name, version)
        if re.match(r"linux-image-\d", pkg.name):
            return pkg.name
        for dep in pkg.depends:
            first = re.split(r"[\s(:|]", dep.strip(), maxsplit=1)[0]
            if re.match(r"linux-image-\d", first):
                return first
        return pkg.name

    def _kernel_from(self, packages: tuple[Package, ...]) -> ResolvedKernel:
        for package in packages:
            # Every path resolved inside the package: a link may not lead to the host's /boot.
            boot = resolve_inside(package.root, "boot", follow_last=True)
            found = sorted(p.name for p in boot.iterdir() if KERNEL_IMAGE_RE.match(p.name)) \
                if boot.is_dir() else []
            images = [resolve_inside(package.root, f"boot/{n}", follow_last=True) for n in found]
            if images and images[0].is_file():
                match = KERNEL_IMAGE_RE.match(found[0])
                assert match is not None
                release = match["version"]
                modules = resolve_inside(package.root, f"lib/modules/{release}", follow_last=True)
                return ResolvedKernel(packages, images[0], release,
                                      modules if modules.is_dir() else None)
        names = ", ".join(p.pin.name for p in packages)
        raise BuildError(f"kernel package {names} holds no boot/vmlinuz-*")

    def _resolve_component(self, name: str, component: Component,
                           out_lock: PlatformLock) -> ResolvedComponent:
        key = source_key(component)
        if component.debian is not None:
            packages = tuple(self._package(n, p) for n, p in self.package_names(component))
            out_lock.components[key] = [p.pin.name for p in packages]
            return ResolvedComponent(name, component, key, packages, None, packages[0].pin.sha256)
        if component.is_package:
            package = self._local_package(component)
            return ResolvedComponent(name, component, key, (package,), None, package.pin.sha256)
        sha256, path = self._single_file(component)
        return ResolvedComponent(name, component, key, (), path, sha256)

    def package_names(self, component: Source) -> list[tuple[str, DebPackage | None]]:
        """The Debian packages a ``debian:`` component uses, its own first: the lock's list, or
        the package and (when it names binaries) its Depends closure from the archive."""
        assert component.debian is not None
        if self.platform_lock is not None:
            key = source_key(component)
            try:
                return [(n, None) for n in self.platform_lock.components[key]]
            except KeyError:
                raise MissingPackage(f"the lock file has no entry for {key} on "
                                 f"{self.recipe.platform_string}",
                                 hint="run 'onie-builder lock' again") from None
        wanted = self.archive.find(component.debian, component.version)
        binaries = isinstance(component, Component) and bool(component.binaries)
        closure = self.archive.closure([wanted.name]) if binaries else [wanted]
        return [(p.name, p) for p in [wanted, *[p for p in closure if p.name != wanted.name]]]

    def fetch(self, name: str, found: DebPackage | None = None) -> tuple[Pin, Path]:
        """One Debian package's pin and its .deb in the cache (downloaded when missing), pinned
        by the lock or by the archive's index; not unpacked."""
        if self.lock is not None:
            pin = self.lock.pin(self.arch, name) if name in self.lock.packages.get(self.arch, {}) \
                else self.lock.pin("all", name)
            return pin, self._fetch_pinned(pin)
        pkg = found or self.archive.find(name)
        pin = Pin(pkg.name, pkg.version, pkg.arch, pkg.sha256, pkg.size, pkg.filename)
        return pin, self.archive.fetch(pkg)

    def _package(self, name: str, found: DebPackage | None, kernel: bool = False) -> Package:
        """Fetch and unpack one Debian package, pinned by the lock or by the archive's index; a
        kernel package without the modules the recipe does not need (builder.components.
        lazytree)."""
        pin, deb = self.fetch(name, found)
        self._pins[pin.name] = pin
        if kernel:
            wanted = [*self.recipe.kernel.modules, *implied_modules(self.recipe)]
            return Package(pin, unpack_kernel_apart(deb, self.cache, wanted))
        if self._pool is None or deb != self.cache.blob_path(deb.name):
            return Package(pin, unpack_deb(deb, self.cache, pin.name))
        if deb not in self._unpacks:
            self._unpacks[deb] = self._pool.submit(unpack_deb, deb, self.cache, pin.name)
        # unpack_deb's folder for a cache blob, there once resolve() returns
        return Package(pin, self.cache.root / "unpacked" / deb.name)

    def _fetch_pinned(self, pin: Pin) -> Path:
        if (hit := self.cache.find(pin.sha256)) is not None:
            return hit
        errors: list[str] = []
        for source in self.apt_sources:
            try:
                return self.cache.fetch(f"{source.uri}/{pin.filename}", pin.sha256)[1]
            except BuildError as exc:
                errors.append(exc.message)
        raise BuildError(f"could not fetch pinned {pin.name}={pin.version}:\n" + "\n".join(errors))

    def _local_package(self, source: Source) -> Package:
        sha256, deb = self._single_file(source)
        if source.url is not None:
            name = source.url.rsplit("/", 1)[-1]
        else:  # the file's own name: ``deb`` is the cache's copy, named by its digest
            assert source.path is not None
            name = source.path.name
        pin = Pin(name, "", self.arch, sha256, deb.stat().st_size, name)
        return Package(pin, unpack_deb(deb, self.cache, pin.name))

    def _single_file(self, source: Source) -> tuple[str, Path]:
        if source.url is not None:
            return self.cache.fetch(source.url, source.sha256)
        assert source.path is not None
        if not source.path.is_file():
            raise BuildError(f"{source.path}: no such file (named by a 'path' source)")
        return self.cache.put_file(source.path)
