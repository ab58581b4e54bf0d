"""What every command shares: finding recipes, the build time, the cache, and the one
boundary where ``BuildError`` becomes a message, a hint and an exit code."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from builder.errors import BuildError, RecipeError

log = logging.getLogger("builder")

DEFAULT_RECIPE = "qemu_x86_64"
REPO_ROOT = Path(__file__).resolve().parents[2]
F = TypeVar("F", bound=Callable[..., Any])


def recipes_dir() -> Path:
    """``$ONIE_BUILDER_RECIPES``, else ``./recipes`` when present, else the shipped recipes."""
    if explicit := os.environ.get("ONIE_BUILDER_RECIPES"):
        return Path(explicit)
    local = Path("recipes")
    return local if (local / "platforms").is_dir() else REPO_ROOT / "recipes"


def find_recipe_file(name: str) -> Path:
    """A recipe argument is a file path or a platform name under ``recipes/platforms/``."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    candidate = recipes_dir() / "platforms" / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in (recipes_dir() / "platforms").glob("*.yaml"))
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known platforms: {', '.join(known)}"
    raise RecipeError([f"no recipe named {name!r} in {recipes_dir() / 'platforms'}"], hint=hint)


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


def make_cache(ctx: click.Context, offline: bool = False) -> Any:
    """The cache for this invocation."""
    from builder.components.cache import Cache
    from builder.progress import DownloadProgress

    return Cache(ctx.obj["cache_dir"], offline=offline, on_download=DownloadProgress().start)


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
