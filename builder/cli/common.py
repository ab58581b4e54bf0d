"""What every command shares: finding recipes, the build time, the cache, and the one
boundary where ``BuildError`` becomes a message, a hint and an exit code."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from builder.errors import BuildError, RecipeError
from builder.progress import Progress
from builder.recipe.search import ENV, RecipePath

if TYPE_CHECKING:
    from builder.recipe.merge import Merged
    from builder.recipe.model import Recipe

log = logging.getLogger("builder")

DEFAULT_RECIPE = "qemu_x86_64"
F = TypeVar("F", bound=Callable[..., Any])


def search_path() -> RecipePath:
    """The recipe search path: ``--recipes`` folders, ``$ONIE_BUILDER_RECIPES``, the shipped."""
    root = click.get_current_context().find_root()
    folders = root.params.get("recipe_dirs") or ()
    return RecipePath.from_options(folders, os.environ.get(ENV))


def platform_files() -> list[Path]:
    """Every platform recipe on the search path, by name."""
    return list(search_path().platforms().values())


def load(path: Path) -> tuple[Recipe, Merged]:
    """``load_recipe`` with this invocation's search path: ``(Recipe, Merged)``."""
    from builder.recipe.load import load_recipe

    return load_recipe(path, search_path())


def find_recipe_file(name: str) -> Path:
    """A recipe argument is a file path or a platform name on the recipe search path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    search = search_path()
    if (found := search.find(name)) is not None:
        return found
    known = list(search.platforms())
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known platforms: {', '.join(known)}"
    folders = ", ".join(str(f) for f in search.folders)
    raise RecipeError([f"no recipe named {name!r} on the recipe search path ({folders})"], hint=hint)


def source_date_epoch(recipe_file: Path) -> int:
    """``$SOURCE_DATE_EPOCH``, else the time of the last commit of the recipe's repository."""
    if (value := os.environ.get("SOURCE_DATE_EPOCH")) is not None:
        try:
            return int(value)
        except ValueError:
            raise BuildError(f"SOURCE_DATE_EPOCH must be an integer, got {value!r}") from None
    from builder.process import run

    proc = run(["git", "-C", recipe_file.resolve().parent, "log", "-1", "--format=%ct"],
               check=False)
    out = proc.stdout.decode().strip()
    if proc.returncode == 0 and out.isdigit():
        return int(out)
    log.warning("SOURCE_DATE_EPOCH is not set and the recipe is not in git: using 0")
    return 0


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is like Ctrl-C's KeyboardInterrupt, so that
    every ``finally`` (staging folders, half-unpacked trees) runs before the exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def catch_signals() -> None:
    """SIGTERM and SIGHUP clean up as SIGINT does; the exit code is 128 + the signal's number
    (130 SIGINT, 143 SIGTERM, 129 SIGHUP). Build workers (``fork``) inherit the handlers."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)


def handle_errors(func: F) -> F:
    """Turn BuildError into a message, a hint and an exit code; tracebacks only with --debug."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BuildError as exc:
            if click.get_current_context().find_root().params.get("debug"):
                raise
            # Each recipe problem is its own error line; other messages may carry a tool's stderr.
            lines = exc.problems if isinstance(exc, RecipeError) else [exc.message]
            if kwargs.get("as_json"):  # a pipeline gets the envelope on failure too
                from builder.cli.envelope import emit, error

                emit(False, None, [error(line, hint=exc.hint) for line in lines])
            for line in lines:
                click.echo(f"error: {line}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            click.echo(f"interrupted ({signal.Signals(signum).name})", err=True)
            sys.exit(128 + signum)

    return wrapper  # type: ignore[return-value]


def make_cache(ctx: click.Context, offline: bool = False, progress: Progress | None = None) -> Any:
    """The cache for this invocation; downloads and unpacking show on ``progress``."""
    from builder.components.cache import Cache

    progress = progress or Progress()
    return Cache(ctx.obj["cache_dir"], offline=offline, on_download=progress.download,
                 on_unpack=progress.unpack)


def archive_options(command: F) -> F:
    """``--lock``, ``--no-lock``, ``--offline`` and ``--mirror``: where the Debian packages of a
    command that resolves a recipe come from (``build``, ``sources``)."""
    for option in reversed((
        click.option("--lock", "lock_path", type=click.Path(path_type=Path), default=None,
                     help="Resolve from this lock file (default: onie-builder.lock when it exists)."),
        click.option("--no-lock", is_flag=True,
                     help="Ignore onie-builder.lock; resolve from the archive."),
        click.option("--offline", is_flag=True, help="Use only the cache; fail rather than download."),
        click.option("--mirror", default=None, metavar="'URI SUITES [COMPONENTS]'",
                     help="Debian archive to use instead of the host's apt sources."),
    )):
        command = option(command)
    return command
