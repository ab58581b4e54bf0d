"""Every check a build would fail on, made before it downloads or writes anything, each
problem at the ``file:line: key`` that caused it (docs/recipes.md, "Validation").

``check_files`` needs only the recipe and the files it names; ``check_packages`` reads the
Debian archive's index (or the lock) and package contents through the build's cache.
``recipes validate`` runs both; ``build`` runs the first for every recipe, then the second
(with the resolver it builds with, so the archive's index is read once), before its first
step. ``untrusted`` says when an image would refuse every installer.
"""

from __future__ import annotations

from builder.components.cache import Cache
from builder.components.lock import Lock
from builder.components.resolve import Archives, Resolver, find_apt_sources
from builder.preflight.files import check_files
from builder.preflight.packages import check_packages
from builder.recipe.document import display_name
from builder.recipe.merge import Merged
from builder.recipe.model import Recipe

__all__ = ["check_archive", "check_files", "check_packages", "untrusted"]


def check_archive(recipe: Recipe, merged: Merged, cache: Cache, mirror: str | None,
                  lock: Lock | None, relock: str | None = None,
                  archives: Archives | None = None) -> list[str]:
    """``check_packages`` against the archive the build would use (``--mirror``, the recipe's,
    else the host's apt sources); ``relock`` is the command a missing lock entry's hint names,
    ``archives`` the archives already open (``Resolver``). ``build`` calls ``check_packages``
    with the resolver it builds with."""
    return check_packages(Resolver(recipe, cache, find_apt_sources(recipe, mirror), lock, relock,
                                   archives), merged)


def untrusted(recipe: Recipe, merged: Merged) -> str | None:
    """One line when the image trusts no key and is not insecure: its discovery would refuse
    every installer (docs/signed-installer.md); None otherwise."""
    if recipe.trust.keys or recipe.discovery.insecure:
        return None
    return (f"{display_name(merged.files[-1])}: {recipe.platform_string} trusts no key (no trust.keys, "
            "discovery.insecure false), so its images refuse every installer")
