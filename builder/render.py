"""Jinja2 rendering of the environment's scripts; a vendor folder overrides any template by name."""

from __future__ import annotations

import functools
import os
import re
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jinja2

from builder.errors import BuildError

# Package data: a real folder in a wheel, a link to the repository's templates/ in a checkout.
BUILTIN_TEMPLATES = (Path(__file__).resolve().parent / "templates").resolve()


def shquote(value: object) -> str:
    """Quote any value for a POSIX shell; the only way a value reaches generated shell."""
    return shlex.quote(str(value))


CONF_WORD = re.compile(r"[A-Za-z0-9._:/+,@%=-]*")


def confquote(value: object, always: bool = False) -> str:
    """A value for a flat ``key=value`` file such as /etc/machine.conf, which installers both
    source and parse line by line (docs/onie-contract.md, F4): one plain word as it is, else in
    double quotes (``always`` quotes every value); a value neither reader would get back whole
    (quotes, ``$``, backquote, backslash, ``#``, a line break) is refused."""
    text = str(value)
    if any(c in text for c in "\"$`\\#'\n\r"):
        raise BuildError(f"{text!r} cannot be written to a key=value file read by sh and by "
                         "installers' parsers (no quotes, $, `, \\, # or line breaks)")
    return f'"{text}"' if always or not CONF_WORD.fullmatch(text) else text


@functools.cache
def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates in the cache folder (Jinja2 checks each against its source), so a
    build does not compile the ~2,000 lines of templates again; None when it cannot be made."""
    from builder.components.cache import default_cache_root

    folder = default_cache_root() / "jinja2"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(folder))


class ContainedLoader(jinja2.FileSystemLoader):
    """Templates from folders, each read only from inside its folder: a template that is a
    link to a file elsewhere (``guest/init.j2 -> /etc/shadow``) is refused, not rendered."""

    def get_source(self, environment: jinja2.Environment,
                   template: str) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        real = os.path.realpath(filename)
        folder = next((f for f in self.searchpath if filename.startswith(os.path.join(f, ""))),
                      os.path.dirname(filename))
        if os.path.commonpath([real, os.path.realpath(folder)]) != os.path.realpath(folder):
            raise BuildError(f"template {template!r}: {filename} leads out of {folder}",
                             hint="copy the file into the template folder instead of linking it")
        return source, filename, uptodate


def make_environment(vendor_dirs: Sequence[Path] = ()) -> jinja2.Environment:
    """An environment that looks in the vendor folders first, then the built-in templates."""
    env = jinja2.Environment(
        loader=ContainedLoader([*map(str, vendor_dirs), str(BUILTIN_TEMPLATES)]),
        bytecode_cache=_bytecode_cache(),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["shquote"] = shquote
    env.filters["confquote"] = confquote
    return env


def render_template(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    """Render one template by name, turning Jinja2 errors into a BuildError naming the file."""
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound:
        raise BuildError(f"template {name!r} not found in {_search_path(env)}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise BuildError(f"{exc.filename}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise BuildError(f"template {name!r}: {exc.message}") from None


def template_sources(env: jinja2.Environment, names: Sequence[str]) -> dict[str, str]:
    """The file each template name resolves to, for the manifest's origins."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = env.get_template(name).filename or name
        except jinja2.TemplateNotFound:
            raise BuildError(f"template {name!r} not found in {_search_path(env)}") from None
    return out


def _search_path(env: jinja2.Environment) -> str:
    loader = env.loader
    paths = getattr(loader, "searchpath", [])
    return ", ".join(paths) or "(no template folders)"
