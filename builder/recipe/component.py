"""Sources and components: where the kernel and the initramfs programs come from, and what of
each package goes into the image (programs with their libraries, plain files, a pruned GRUB
platform folder, links)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Self

from pydantic import AfterValidator, Field, field_validator, model_validator

from builder.recipe.base import SHA256_RE, Model

GRUB_MODULE_RE = re.compile(r"^[a-z0-9_]+$")  # moddep.lst names: ext2, part_gpt, search_fs_uuid


class Source(Model):
    """Where a component comes from: a Debian package, a URL pinned by sha256, or a local file."""

    debian: str | None = None
    version: str | None = None
    url: str | None = None
    sha256: str | None = None
    path: Path | None = None

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: str | None) -> str | None:
        if v is not None and not SHA256_RE.match(v):
            raise ValueError(f"expected 64 lower-case hex digits, got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [k for k in ("debian", "url", "path") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("expected exactly one of 'debian', 'url' or 'path'"
                             + (f", got {' and '.join(given)}" if given else ""))
        if self.url is not None and self.sha256 is None:
            raise ValueError("a 'url' source needs 'sha256' to pin its content")
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError(f"url: expected an http(s) URL, got {self.url!r}")
        if self.version is not None and self.debian is None:
            raise ValueError("'version' applies only to a 'debian' source")
        return self

    @property
    def is_package(self) -> bool:
        """True when the source is a .deb (from Debian, a URL or a local file)."""
        if self.debian is not None:
            return True
        name = self.url if self.url is not None else str(self.path)
        return name.endswith(".deb")


def _in_tree(v: str) -> str:
    if not v.startswith("/") or ".." in v.split("/"):
        raise ValueError(f"expected an absolute path inside the image, got {v!r}")
    return v


InTreePath = Annotated[str, AfterValidator(_in_tree)]


def _grub_module(v: str) -> str:
    if not GRUB_MODULE_RE.match(v):
        raise ValueError(f"expected a GRUB module name such as 'part_gpt', got {v!r}")
    return v


class GrubFolder(Model):
    """A GRUB platform folder (``/usr/lib/grub/i386-pc``) with only ``modules`` and the modules
    they depend on (its moddep.lst), plus the images, lists and modinfo.sh grub-install reads."""

    folder: InTreePath
    modules: Annotated[list[Annotated[str, AfterValidator(_grub_module)]], Field(min_length=1)]


class Component(Source):
    """Files for the initramfs: ELF ``binaries`` (with their libraries), plain ``files``, a
    pruned ``grub`` platform folder, and ``links`` (symlink path: target) made after them."""

    binaries: list[InTreePath] = []
    files: list[InTreePath] = []
    grub: GrubFolder | None = None
    links: dict[InTreePath, InTreePath] = {}
    dest: InTreePath | None = None
    mode: Annotated[int, Field(ge=0, le=0o7777)] = 0o644

    @model_validator(mode="after")
    def _what_to_install(self) -> Self:
        if self.is_package and not (self.binaries or self.files or self.grub):
            raise ValueError("a package component needs 'binaries', 'files' or 'grub' to install")
        if not self.is_package and self.dest is None:
            raise ValueError("a single-file component needs 'dest'")
        if self.is_package and self.dest is not None and (len(self.binaries) != 1 or self.files):
            raise ValueError("'dest' on a package component renames its one binary: expected "
                             f"exactly one binary and no files, got {len(self.binaries)} "
                             f"binaries and {len(self.files)} files")
        return self
