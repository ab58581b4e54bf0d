"""Where a recipe name leads: the recipe search path.

The path is a list of recipe folders, each laid out like the shipped one (``platforms/`` holds
the buildable platforms, ``base/`` the recipes they extend): the user's folders first
(``--recipes DIR``, then ``$ONIE_BUILDER_RECIPES``), the recipes shipped inside the package
last. A name is looked up folder by folder, ``platforms/NAME.yaml`` then ``base/NAME.yaml``;
the first match wins, so a user's platform adds to the shipped ones or overrides one by name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from builder.errors import RecipeError

# Package data: a real folder in a wheel, a link to the repository's recipes/ in a checkout.
SHIPPED = (Path(__file__).resolve().parent.parent / "recipes").resolve()
KINDS = ("platforms", "base")
SUFFIXES = (".yaml", ".yml")
ENV = "ONIE_BUILDER_RECIPES"


def is_name(value: str) -> bool:
    """True for a recipe name (``qemu_x86_64``), False for a path (``../base/x86_64.yaml``)."""
    return "/" not in value and not value.endswith(SUFFIXES) and value not in (".", "..")


@dataclass(frozen=True)
class RecipePath:
    """The recipe folders, searched in order; the shipped recipes are always the last."""

    folders: tuple[Path, ...] = (SHIPPED,)

    @classmethod
    def from_options(cls, folders: Iterable[Path], env: str | None = None) -> RecipePath:
        """``--recipes`` folders, then the ``os.pathsep``-separated ``env`` value, then the
        shipped recipes; each user folder must exist and hold ``platforms/`` or ``base/``."""
        named = [*folders, *(Path(p) for p in (env or "").split(os.pathsep) if p)]
        problems = []
        for folder in named:
            if not folder.is_dir():
                problems.append(f"{folder}: recipe folder does not exist")
            elif not any((folder / kind).is_dir() for kind in KINDS):
                problems.append(f"{folder}: a recipe folder holds platforms/ (and base/), "
                                "found neither")
        if problems:
            raise RecipeError(problems, hint=f"--recipes and ${ENV} name folders laid out like "
                                             f"the shipped {SHIPPED}")
        unique = dict.fromkeys(p.resolve() for p in [*named, SHIPPED])
        return cls(tuple(unique))

    def find(self, name: str, besides: Path | None = None) -> Path | None:
        """The first ``platforms/NAME.yaml`` or ``base/NAME.yaml`` on the path; ``besides``
        (a recipe extending one of its own name) is skipped, so the next one is found."""
        for folder in self.folders:
            for kind in KINDS:
                for suffix in SUFFIXES:
                    candidate = folder / kind / f"{name}{suffix}"
                    if candidate.is_file() and candidate.resolve() != besides:
                        return candidate
        return None

    def platforms(self) -> dict[str, Path]:
        """Every platform recipe by name, sorted; a name in an earlier folder hides the later."""
        found: dict[str, Path] = {}
        for folder in self.folders:
            for path in sorted((folder / "platforms").glob("*.y*ml")):
                if path.suffix in SUFFIXES:
                    found.setdefault(path.stem, path)
        return dict(sorted(found.items()))

    def where(self, path: Path) -> str:
        """Which folder a recipe comes from: ``shipped`` or the user's folder."""
        folder = path.resolve().parent.parent
        return "shipped" if folder == SHIPPED else str(folder)
