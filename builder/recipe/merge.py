"""Recipe inheritance: ``extends:`` chains merged with provenance for every value.

Rules (docs/recipes.md): maps deep-merge; scalars override; lists replace, unless the
child writes ``key+:`` which appends to the inherited list. ``extends`` is a path relative
to the file that names it, or a recipe name looked up on the search path (``builder.recipe.search``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from builder.errors import RecipeError
from builder.recipe.document import Document, KeyPath, Location, format_path, load_document
from builder.recipe.search import RecipePath, is_name

APPEND = "+"
MAX_EXTENDS = 16  # files in one chain; the shipped recipes use 3


@dataclass
class Merged:
    """A recipe after inheritance: the data, where each value came from, and the files read."""

    data: dict[str, Any]
    origins: dict[KeyPath, Location]
    files: list[Path]


def load_merged(path: Path, search: RecipePath | None = None) -> Merged:
    """Load ``path`` and every recipe it extends, base first, and merge them; ``extends`` by
    name looks on ``search`` (default: the shipped recipes only)."""
    chain = _load_chain(path, search or RecipePath())
    merged = Merged({}, {}, [])
    for doc in chain:
        problems: list[str] = []
        merged.data = _merge_map(merged.data, doc.data, (), doc, merged.origins, problems)
        if problems:
            raise RecipeError(problems)
        merged.files.append(doc.path)
    merged.data.pop("extends", None)
    merged.origins[()] = chain[-1].locations[()]
    return merged


def _load_chain(path: Path, search: RecipePath) -> list[Document]:
    chain: list[Document] = []
    seen: list[Path] = []
    current: Path | None = path.resolve()
    while current is not None:
        if current in seen:
            names = " -> ".join(p.name for p in [*seen, current])
            raise RecipeError([f"{chain[-1].locations[('extends',)]}: extends: cycle: {names}"])
        seen.append(current)
        if len(seen) > MAX_EXTENDS:
            raise RecipeError([f"{chain[-1].locations[('extends',)]}: extends: more than "
                               f"{MAX_EXTENDS} files in one chain"])
        doc = load_document(current)
        chain.append(doc)
        parent = doc.data.get("extends")
        if parent is None:
            current = None
        elif not isinstance(parent, str) or not parent:
            loc = doc.locations[("extends",)]
            raise RecipeError([f"{loc}: extends: expected a recipe name or a path to a recipe "
                               f"file, got {parent!r}"])
        elif is_name(parent):
            found = search.find(parent, besides=current)
            if found is None:
                loc = doc.locations[("extends",)]
                folders = ", ".join(str(f) for f in search.folders)
                raise RecipeError([f"{loc}: extends: no recipe named {parent!r} on the recipe "
                                   f"search path ({folders})"])
            current = found.resolve()
        else:
            current = (current.parent / parent).resolve()
            if not current.is_file():
                loc = doc.locations[("extends",)]
                raise RecipeError([f"{loc}: extends: no such recipe file {parent!r}"])
    chain.reverse()
    return chain


def _merge_map(base: dict[str, Any], child: dict[str, Any], path: KeyPath, doc: Document,
               origins: dict[KeyPath, Location], problems: list[str]) -> dict[str, Any]:
    out = dict(base)
    for raw_key, value in child.items():
        append = raw_key.endswith(APPEND)
        key = raw_key[: -len(APPEND)] if append else raw_key
        here = (*path, key)
        loc = doc.locations.get((*path, raw_key), doc.locations[path])
        if append:
            inherited = out.get(key, [])
            if not isinstance(value, list) or not isinstance(inherited, list):
                problems.append(f"{loc}: {format_path(here)}+: appending needs a list on both "
                                f"sides, got {type(inherited).__name__} and {type(value).__name__}")
                continue
            _record(origins, here, value, doc, (*path, raw_key), offset=len(inherited))
            out[key] = [*inherited, *value]
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            origins[here] = loc
            out[key] = _merge_map(out[key], value, here, doc, origins, problems)
        else:
            _forget(origins, here)
            _record(origins, here, value, doc, (*path, raw_key))
            out[key] = _strip_append(value)
    return out


def _strip_append(value: Any) -> Any:
    """A value that replaces wholesale keeps no ``+`` keys (nothing to append to)."""
    if isinstance(value, dict):
        return {k.removesuffix(APPEND): _strip_append(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_append(v) for v in value]
    return value


def _record(origins: dict[KeyPath, Location], path: KeyPath, value: Any, doc: Document,
            src: KeyPath, offset: int = 0) -> None:
    """Copy the locations of ``value`` (read at ``src`` in ``doc``) to ``path``."""
    origins[path] = doc.locations.get(src, doc.locations[()])
    if isinstance(value, dict):
        for k, v in value.items():
            _record(origins, (*path, k.removesuffix(APPEND)), v, doc, (*src, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _record(origins, (*path, i + offset), v, doc, (*src, i))


def _forget(origins: dict[KeyPath, Location], path: KeyPath) -> None:
    n = len(path)
    for key in [k for k in origins if k[:n] == path and len(k) > n]:
        del origins[key]


def render_with_origins(merged: Merged, root: Path | None = None) -> str:
    """The merged recipe as YAML, each value followed by ``# file:line`` of the file that set it."""
    lines: list[str] = []
    _emit(merged.data, (), 0, merged, lines)
    return "\n".join(lines) + "\n"


def _emit(value: Any, path: KeyPath, indent: int, merged: Merged, lines: list[str]) -> None:
    pad = "  " * indent
    items: list[tuple[str | int, Any]] = (list(value.items()) if isinstance(value, dict)
                                          else list(enumerate(value)))
    for key, item in items:
        here = (*path, key)
        head = f"{pad}- " if isinstance(key, int) else f"{pad}{key}:"
        origin = merged.origins.get(here)
        note = f"  # {origin}" if origin else ""
        if isinstance(item, dict | list) and item:
            lines.append(head.rstrip() + note if not isinstance(key, int) else head + note)
            _emit(item, here, indent + 1, merged, lines)
        else:
            scalar = yaml.safe_dump(item, default_flow_style=True, width=1 << 16).strip()
            scalar = scalar.removesuffix("\n...").removesuffix("...").strip()
            sep = "" if isinstance(key, int) else " "
            lines.append(f"{head}{sep}{scalar}{note}")
