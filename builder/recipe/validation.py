"""Validation messages shared by every YAML file we read (recipes, site files).

pydantic collects the errors; these turn each into ``file:line: key.path: message`` with a
"did you mean" for unknown keys, and resolve relative paths against the file that wrote them.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from builder.recipe.document import KeyPath, Location, format_path
from builder.recipe.merge import Merged

# pydantic's wording for the common type errors, said the way the rest of our messages are.
PLAIN_MESSAGES = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "string_type": "expected a string",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "greater_than_equal": "expected a number >= {ge}",
    "less_than_equal": "expected a number <= {le}",
    "path_type": "expected a path",
    "ip_v4_address": "expected an IPv4 address",
    "ip_v6_address": "expected an IPv6 address",
    "ip_any_address": "expected an IP address",
    "ip_any_network": "expected a network such as '10.0.0.0/24'",
}



def resolve_relative(value: Any, where: KeyPath, merged: Merged) -> Any:
    """A relative path string made relative to the file that wrote it (others returned as-is)."""
    if not isinstance(value, str) or value.startswith("/"):
        return value
    origin = merged.origins.get(where)
    base = Path(origin.file).parent if origin else Path.cwd()
    return str((base / value).resolve())


def describe_error(err: Any, merged: Merged, root: type[BaseModel]) -> str:
    """Turn one pydantic error on ``root`` into ``file:line: key.path: message``."""
    loc: KeyPath = tuple(err["loc"])
    kind = err["type"]
    where = find_location(loc, merged)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = known_keys(loc[:-1], root)
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(known)}"
        return f"{where}: {format_path(loc)}: unknown key{hint}"
    if kind == "missing":
        return f"{where}: {format_path(loc)}: required key missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind in PLAIN_MESSAGES:
        msg = PLAIN_MESSAGES[kind].format(**err.get("ctx", {}))
        return f"{where}: {format_path(loc)}: {msg}, got {err['input']!r}"
    if kind == "enum":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{where}: {format_path(loc)}: expected one of {expected}, got {err['input']!r}"
    if kind.startswith("value_error") or "got " in msg:
        return f"{where}: {format_path(loc)}: {msg}"
    return f"{where}: {format_path(loc)}: {msg[0].lower()}{msg[1:]}, got {err['input']!r}"


def find_location(loc: KeyPath, merged: Merged) -> Location | str:
    """The location of the deepest known part of ``loc``."""
    for n in range(len(loc), -1, -1):
        if (found := merged.origins.get(loc[:n])) is not None:
            return found
    return str(merged.files[-1]) if merged.files else "recipe"


def known_keys(loc: KeyPath, root: type[BaseModel]) -> list[str]:
    """The keys the model at ``loc`` accepts, for "did you mean"."""
    model: type[BaseModel] = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        inner = getattr(ann, "__args__", (ann,))
        found = [t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)]
        if not found:
            return []
        model = found[0]
    return sorted(model.model_fields)
