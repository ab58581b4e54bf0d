"""YAML documents loaded with the file and line of every value, so errors can point at them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from builder.errors import RecipeError
from builder.files import FileRefused, read_bounded

KeyPath = tuple[str | int, ...]

MAX_BYTES = 256 * 1024  # the largest shipped recipe is 3 KB
MAX_DEPTH = 32  # the deepest key path of a recipe or site file is 5
# Control characters (C0, DEL, C1) and the bidirectional overrides that make text read
# differently from what it holds (CVE-2021-42574): refused in a file, except tab and line ends,
# and in a value, except tab and line feed (a quoted "\e" or "\r" writes them).
BIDI = "\u202a-\u202e\u2066-\u2069"
CONTROL_RE = re.compile(f"[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f{BIDI}]")
VALUE_CONTROL_RE = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f{BIDI}]")


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
    """Parse ``path`` with ``yaml.safe_load`` semantics, recording each value's line; bounded
    (``MAX_BYTES``, ``MAX_DEPTH``, no aliases, no control characters) so a hostile file ends in
    a ``file:line: key.path: message`` RecipeError, not a traceback or an exhausted memory."""
    name = display_name(path)
    try:
        text = read_bounded(path, MAX_BYTES).decode("utf-8")
    except FileRefused as exc:
        raise RecipeError([f"{name}: {exc.reason}"]) from None
    except UnicodeDecodeError as exc:
        raise RecipeError([f"{name}: cannot read: {exc}"]) from None
    if (bad := CONTROL_RE.search(text)) is not None:
        line = text.count("\n", 0, bad.start()) + 1
        raise RecipeError([f"{name}:{line}: control character {bad.group()!r} in the file"])
    loader = BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(path, {}, {(): Location(name, 1)})
        locations: dict[KeyPath, Location] = {}
        data = _convert(node, (), name, locations, loader)
    except LoadProblem as exc:
        raise RecipeError([f"{name}:{exc.line}: {format_path(exc.path)}: {exc.message}"]) from None
    except yaml.YAMLError as exc:
        raise RecipeError([f"{name}:{_error_place(exc, text)}: invalid YAML: {_problem(exc)}"]) \
            from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise RecipeError([f"{name}:{node.start_mark.line + 1}: a recipe must be a mapping of keys"])
    return Document(path, data, locations)


class LoadProblem(Exception):
    """A value the bounded loader refuses, with where it is."""

    def __init__(self, line: int, path: KeyPath, message: str) -> None:
        super().__init__(message)
        self.line, self.path, self.message = line, path, message


class BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses aliases (a few lines of them expand to gigabytes) and
    nesting deeper than ``MAX_DEPTH`` (the composer recurses), naming the key path of each."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._path: KeyPath = ()

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        part = index.value if isinstance(index, yaml.ScalarNode) else index
        path = (*self._path, part) if isinstance(part, str | int) else self._path
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        # A mapping's value may start lines below its key: point at the key, as _convert does.
        line = (index if isinstance(index, yaml.Node) else event).start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            raise LoadProblem(line, path,
                              f"YAML aliases are not allowed (*{event.anchor}): write the value out")
        if len(path) > MAX_DEPTH:
            raise LoadProblem(line, path, f"nested deeper than {MAX_DEPTH} levels")
        outer, self._path = self._path, path
        try:
            return super().compose_node(parent, index)
        finally:
            self._path = outer


def _error_place(exc: yaml.YAMLError, text: str) -> str:
    """``line:column`` (both from 1) where the parser gave up."""
    if isinstance(exc, yaml.reader.ReaderError):
        line_start = text.rfind("\n", 0, exc.position) + 1
        return f"{text.count(chr(10), 0, exc.position) + 1}:{exc.position - line_start + 1}"
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f"{mark.line + 1}:{mark.column + 1}" if mark is not None else "1:1"


def _problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character {chr(exc.character)!r} is not allowed" \
            if isinstance(exc.character, int) else str(exc.reason)
    return str(getattr(exc, "problem", None) or exc)


def _construct(node: yaml.Node, path: KeyPath, loader: yaml.SafeLoader) -> Any:
    """A scalar's value; one that Python refuses (an integer of 5,000 digits, February 30th)
    or a string holding control characters is a LoadProblem."""
    try:
        value = loader.construct_object(node, deep=True)
    except (ValueError, OverflowError) as exc:
        raise LoadProblem(node.start_mark.line + 1, path,
                          f"cannot read {str(node.value)[:40]!r}: {_first_clause(exc)}") from None
    if isinstance(value, str) and (bad := VALUE_CONTROL_RE.search(value)) is not None:
        raise LoadProblem(node.start_mark.line + 1, path,
                          f"control character {bad.group()!r} in {value[:40]!r}")
    return value


def _first_clause(exc: Exception) -> str:
    text = str(exc).split(";")[0]
    return text[:1].lower() + text[1:]


def _convert(node: yaml.Node, path: KeyPath, name: str,
             locations: dict[KeyPath, Location], loader: yaml.SafeLoader) -> Any:
    locations[path] = Location(name, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise LoadProblem(key_node.start_mark.line + 1, path,
                                  "expected a plain key, got a list or mapping as a key")
            key = _construct(key_node, path, loader)
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
    return _construct(node, path, loader)
