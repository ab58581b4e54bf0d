"""YAML documents loaded with the file and line of every value, so errors can point at them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from builder.errors import RecipeError

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Location:
    """Where a value was written."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Document:
    """A parsed YAML mapping plus the location of every key path in it."""

    path: Path
    data: dict[str, Any]
    locations: dict[KeyPath, Location] = field(default_factory=dict)


def format_path(path: KeyPath) -> str:
    """Render a key path as ``kernel.modules[2]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def display_name(path: Path) -> str:
    """A path as users wrote it: relative to the current folder when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_document(path: Path) -> Document:
    """Parse ``path`` with ``yaml.safe_load`` semantics, recording each value's line."""
    name = display_name(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([f"{name}: no such recipe file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([f"{name}: cannot read: {exc}"]) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError([f"{where}: invalid YAML: {problem}"]) from None
    finally:
        loader.dispose()
    if node is None:
        return Document(path, {}, {(): Location(name, 1)})
    locations: dict[KeyPath, Location] = {}
    data = _convert(node, (), name, locations, loader)
    if not isinstance(data, dict):
        raise RecipeError([f"{name}:{node.start_mark.line + 1}: a recipe must be a mapping of keys"])
    return Document(path, data, locations)


def _convert(node: yaml.Node, path: KeyPath, name: str,
             locations: dict[KeyPath, Location], loader: yaml.SafeLoader) -> Any:
    locations[path] = Location(name, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                raise RecipeError([f"{name}:{key_node.start_mark.line + 1}: "
                                   f"{format_path((*path, key))}: key given twice"])
            out[key] = _convert(value_node, (*path, key), name, locations, loader)
            # A mapping's value starts on the line after its key: point at the key.
            locations[(*path, key)] = Location(name, key_node.start_mark.line + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), name, locations, loader)
                for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
