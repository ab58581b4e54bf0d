"""Loading a recipe: YAML documents merged along ``extends``, paths made relative to the file
that wrote them, then validated into a frozen ``Recipe``; every problem reported at once as
``file:line: key.path: message, got 'value'``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from builder.errors import RecipeError
from builder.recipe.document import KeyPath
from builder.recipe.merge import Merged, load_merged
from builder.recipe.model import Recipe
from builder.recipe.search import RecipePath
from builder.recipe.validation import describe_error, resolve_relative

PATH_FIELDS: tuple[KeyPath, ...] = (("templates",), ("initramfs", "overlays"), ("trust", "keys"),
                                    ("transports", "https", "ca"), ("ssh", "authorized_keys"))
# Single paths, resolved like the lists above.
PATH_SCALARS: tuple[KeyPath, ...] = (("transports", "iscsi", "chap"),
                                     ("images", "fit", "key"), ("images", "fit", "dtb"),
                                     ("images", "uki", "secureboot_key"),
                                     ("images", "uki", "secureboot_cert"),
                                     ("images", "updater", "key"), ("provenance", "key"))


def load_recipe(path: Path, search: RecipePath | None = None) -> tuple[Recipe, Merged]:
    """Load, merge and validate a recipe file (``extends`` by name looks on ``search``, default
    the shipped recipes); raise RecipeError listing every problem."""
    merged = load_merged(path, search)
    data = dict(merged.data)
    data.setdefault("name", path.stem)
    _resolve_paths(data, merged)
    try:
        return Recipe.model_validate(data), merged
    except ValidationError as exc:
        raise RecipeError([describe_error(err, merged, Recipe) for err in exc.errors()]) from None


def _resolve_paths(data: dict[str, Any], merged: Merged) -> None:
    """Make relative paths relative to the file that wrote them, not the current folder."""

    def resolve(value: Any, where: KeyPath) -> Any:
        return resolve_relative(value, where, merged)

    for key in PATH_FIELDS:
        node: Any = data
        for part in key[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        items = node.get(key[-1]) if isinstance(node, dict) else None
        if isinstance(items, list):
            node[key[-1]] = [resolve(v, (*key, i)) for i, v in enumerate(items)]
    for key in PATH_SCALARS:
        node = data
        for part in key[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and isinstance(node.get(key[-1]), str):
            node[key[-1]] = resolve(node[key[-1]], key)
    for section, listed in (("kernel", False), ("initramfs", True)):
        block = data.get(section)
        if not isinstance(block, dict):
            continue
        entries = block.get("components") if listed else [block]
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            if isinstance(entry, dict) and "path" in entry:
                where = (section, "components", i, "path") if listed else (section, "path")
                entry["path"] = resolve(entry["path"], where)
    initramfs = data.get("initramfs")
    tools = initramfs.get("toolset") if isinstance(initramfs, dict) else None
    if isinstance(tools, dict):
        for name, entry in tools.items():
            if isinstance(entry, dict) and "path" in entry:
                entry["path"] = resolve(entry["path"], ("initramfs", "toolset", name, "path"))
