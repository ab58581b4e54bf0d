"""The one shape of every command's ``--json`` output (docs/json.md): an envelope that names
the schema version and the command, says whether it succeeded, and carries the command's own
result and every error, so a pipeline reads success and failure the same way."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import click

# Bumped (onie-builder/2) only when a field is removed or changes meaning; new fields do not.
SCHEMA = "onie-builder/1"

# The envelope as a JSON Schema (draft 2020-12); docs/json.md shows the same document.
JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "onie-builder --json envelope",
    "type": "object",
    "required": ["schema", "command", "ok", "result", "errors"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": SCHEMA},
        "command": {"type": "string", "minLength": 1},
        "ok": {"type": "boolean"},
        "result": {},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["subject", "message", "hint"],
                "additionalProperties": False,
                "properties": {
                    "subject": {"type": ["string", "null"]},
                    "message": {"type": "string", "minLength": 1},
                    "hint": {"type": ["string", "null"]},
                },
            },
        },
    },
}


def error(message: str, subject: str | None = None, hint: str | None = None) -> dict[str, Any]:
    """One entry of ``errors``: what failed (a platform, a file; None for the whole command)."""
    return {"subject": subject, "message": message, "hint": hint}


def render_envelope(command: str, ok: bool, result: Any,
                    errors: Iterable[dict[str, Any]] = ()) -> str:
    """The envelope as indented JSON text."""
    doc = {"schema": SCHEMA, "command": command, "ok": ok, "result": result,
           "errors": list(errors)}
    return json.dumps(doc, indent=2)


def command_name() -> str:
    """The running command as a user types it after ``onie-builder`` (``keys generate``)."""
    names: list[str] = []
    ctx: click.Context | None = click.get_current_context()
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def emit(ok: bool, result: Any, errors: Iterable[dict[str, Any]] = ()) -> None:
    """Print the running command's envelope on stdout."""
    click.echo(render_envelope(command_name(), ok, result, errors))
