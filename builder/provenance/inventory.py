"""What an image is made of, as one typed value both SBOM writers read: the outputs, every
component with its package URL, digest, licence and sources, and every initramfs file with
its digests and the component it came from."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packageurl import PackageURL

from builder import __version__
from builder.components.cache import Cache
from builder.components.deb import read_control
from builder.components.resolve import Package, Resolution
from builder.components.sources import BinarySources, SourceRef, parse_binary_sources
from builder.initramfs.tree import Kind, Tree
from builder.provenance.licenses import NOASSERTION, PackageLicense, find_copyright, parse_license
from builder.recipe.model import Recipe

# Every serial number and namespace is a UUIDv5 in this namespace, so the same image always
# gets the same ones (a random UUID would make two builds differ).
NAMESPACE = uuid.UUID("6c1f3a52-58a4-4d7e-9a0c-3f1d2b8e7a41")
INITRAMFS = "initrd.img"


@dataclass(frozen=True)
class Output:
    """A file of the output folder with its digest."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Component:
    """One component: a Debian package, a file fetched by URL, or a local file."""

    key: str  # stable and unique in the image: the manifest's name for it
    name: str
    version: str
    kind: str  # "debian" (the archive), "deb" (a local or URL .deb), "url" or "path"
    sha256: str
    purl: str
    license: PackageLicense
    sources: BinarySources | None  # Debian packages only
    origin: str  # the manifest's origin of the files that came from it
    in_kernel: bool  # the kernel image (vmlinuz) came from it


@dataclass(frozen=True)
class File:
    """A regular file of the initramfs; a secret one has no digests."""

    path: str
    sha256: str | None
    sha1: str | None
    size: int
    component: str | None  # Component.key, or None for templates, overlays and built-ins
    origin: str


@dataclass(frozen=True)
class Inventory:
    """Everything an SBOM says about one platform image."""

    platform: str
    recipe: str
    version: str
    arch: str
    builder_version: str
    source_date_epoch: int
    kernel_release: str
    outputs: tuple[Output, ...]
    components: tuple[Component, ...]
    files: tuple[File, ...]

    @property
    def serial(self) -> uuid.UUID:
        """A UUID that names this exact image: same outputs, same UUID."""
        text = "\n".join([self.platform, *(f"{o.name} {o.sha256}" for o in self.outputs)])
        return uuid.uuid5(NAMESPACE, text)

    @property
    def initramfs(self) -> Output:
        """The initrd.img output."""
        return next(o for o in self.outputs if o.name == INITRAMFS)

    @property
    def sources(self) -> tuple[SourceRef, ...]:
        """Every source package the components come from or have built in, sorted."""
        return tuple(sorted({r for c in self.components if c.sources for r in c.sources.refs}))


@dataclass(frozen=True)
class Contents:
    """What an inventory lists besides the outputs: the components and the initramfs files.
    Found from the resolution and the tree alone, so a build finds them while it writes the
    initramfs and the images (``find_components`` and ``find_files``, in the process of
    builder.provenance.renderer)."""

    components: tuple[Component, ...]
    files: tuple[File, ...]


def make_inventory(recipe: Recipe, resolution: Resolution, contents: Contents,
                   outputs: dict[str, dict[str, Any]], source_date_epoch: int) -> Inventory:
    """The inventory of a built image, from what the build resolved and assembled
    (``contents``) and the digests and sizes of its ``outputs``."""
    return Inventory(
        platform=recipe.platform_string, recipe=recipe.name, version=recipe.version,
        arch=recipe.platform.arch.debian, builder_version=__version__,
        source_date_epoch=source_date_epoch, kernel_release=resolution.kernel.release,
        outputs=tuple(Output(name, str(o["sha256"]), int(o["size"]))
                      for name, o in sorted(outputs.items())),
        components=contents.components, files=contents.files)


def find_components(resolution: Resolution, cache: Cache, arch: str) -> tuple[Component, ...]:
    """Every package and file component, Debian packages first, each once, sorted by key."""
    packages = _packages(resolution)
    roots = [p.root for p in packages]
    kernel = {p.pin.name for p in resolution.kernel.packages}
    local = _local_keys(resolution)
    found = [_package_component(p, roots, cache, arch, p.pin.name in kernel, local.get(p.pin.name))
             for p in packages]
    for item in resolution.components:
        if item.file is not None:
            kind, _, name = item.key.partition(":")
            purl = PackageURL("generic", name=name.rsplit("/", 1)[-1] or "file",
                              qualifiers={"checksum": f"sha256:{item.sha256}"})
            found.append(Component(item.key, name, "", kind, item.sha256, purl.to_string(),
                                   PackageLicense(NOASSERTION, (), f"{item.key}: a plain file"),
                                   None, item.origin, False))
    return tuple(sorted(found, key=lambda c: (c.kind != "debian", c.key)))


def _packages(resolution: Resolution) -> list[Package]:
    """The kernel's and the components' packages, each once."""
    seen: dict[str, Package] = {}
    for package in (*resolution.kernel.packages,
                    *(p for item in resolution.components for p in item.packages)):
        seen.setdefault(package.pin.name, package)
    return list(seen.values())


def _local_keys(resolution: Resolution) -> dict[str, str]:
    """The recipe's key (``path:x.deb``, ``url:...``) of each .deb not from the archive."""
    archived = {pin.name for pin in resolution.pins}
    keys = {p.pin.name: f"kernel:{p.pin.name}" for p in resolution.kernel.packages}
    keys.update((p.pin.name, item.key) for item in resolution.components for p in item.packages)
    return {name: key for name, key in keys.items() if name not in archived}


def _package_component(package: Package, roots: list[Path], cache: Cache, arch: str,
                       in_kernel: bool, local_key: str | None) -> Component:
    """A .deb: from the Debian archive, or a local or URL one (named by its file's digest, not
    by a Debian package URL, and with no source package `sources` could fetch)."""
    pin = package.pin
    deb = cache.find(pin.sha256)
    control = read_control(deb) if deb is not None else {}
    name = control.get("Package", pin.name)
    version = pin.version or control.get("Version", "")
    copyright_file = find_copyright(name, package.root, roots)
    license_ = (parse_license(copyright_file.read_text(errors="replace"),
                              f"/usr/share/doc/{copyright_file.parent.name}/copyright")
                if copyright_file is not None
                else PackageLicense(NOASSERTION, (), f"{name}: the package has no copyright file"))
    if local_key is not None:
        purl = PackageURL("generic", name=name, version=version or None,
                          qualifiers={"checksum": f"sha256:{pin.sha256}"})
        return Component(local_key, name, version, "deb", pin.sha256, purl.to_string(),
                         license_, None, package.origin, in_kernel)
    purl = PackageURL("deb", "debian", name, version or None, {"arch": pin.arch or arch})
    return Component(f"debian:{pin.name}", name, version, "debian", pin.sha256, purl.to_string(),
                     license_, parse_binary_sources(control) if control else None,
                     package.origin, in_kernel)


def find_files(tree: Tree, resolution: Resolution) -> tuple[File, ...]:
    """Every regular file of the initramfs with the key of the component it came from."""
    local = _local_keys(resolution)
    owners = {p.origin: local.get(p.pin.name, f"debian:{p.pin.name}") for p in _packages(resolution)}
    owners.update({item.origin: item.key for item in resolution.components if item.file})
    files = []
    for entry in tree.entries():
        if entry.kind is not Kind.FILE:
            continue
        data = entry.content()
        secret = entry.secret
        files.append(File(entry.path, None if secret else hashlib.sha256(data).hexdigest(),
                          None if secret else hashlib.sha1(data, usedforsecurity=False).hexdigest(),
                          0 if secret else len(data), owners.get(entry.origin), entry.origin))
    return tuple(files)
