"""Problems found before a build starts, each at the file, line and key that caused it."""

from __future__ import annotations

from builder.recipe.document import KeyPath, format_path
from builder.recipe.merge import Merged
from builder.recipe.validation import find_location


def at(merged: Merged, key: KeyPath, message: str) -> str:
    """``file:line: key.path: message`` for ``key`` as the merged recipe holds it: the file is
    the one that wrote the value (a parent recipe's, when the value is inherited). A key
    prefix the message repeats (``trust.keys: ...``) is left out."""
    name = format_path(key)
    bare = format_path(tuple(p for p in key if not isinstance(p, int)))
    for prefix in (f"{name}: ", f"{bare}: "):
        message = message.removeprefix(prefix)
    return f"{find_location(key, merged)}: {name}: {message}"
