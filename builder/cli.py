"""The command line: the one boundary where errors become messages and exit codes."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from builder import __version__
from builder.errors import BuildError, RecipeError
from builder.result import BuildResult

log = logging.getLogger("builder")

DEFAULT_RECIPE = "qemu_x86_64"
REPO_ROOT = Path(__file__).resolve().parent.parent
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
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onie-builder")
@click.option("--debug", is_flag=True, help="Log every command run and show tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Only print errors.")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
              help="Download cache folder (default: $XDG_CACHE_HOME/onie-builder).")
@click.pass_context
def main(ctx: click.Context, debug: bool, quiet: bool, cache_dir: Path | None) -> None:
    """Build ONIE-style network installer environments from YAML recipes.

    A recipe describes a platform (vendor, machine, arch, console), its kernel and the
    initramfs contents. `build` turns recipes into out/<platform>/ with a kernel, an
    initramfs and a manifest; `boot` runs the result in QEMU.

    Exit codes: 0 success, 1 build failure, 2 bad recipe or usage, 3 missing host tool,
    130 interrupted.
    """
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    ctx.obj = {"cache_dir": cache_dir}


def make_cache(ctx: click.Context, offline: bool = False) -> Any:
    """The cache for this invocation."""
    from builder.cache import Cache
    from builder.progress import DownloadProgress

    return Cache(ctx.obj["cache_dir"], offline=offline, on_download=DownloadProgress().start)


@main.group()
def recipes() -> None:
    """List, show and validate recipes."""


@recipes.command("list")
@handle_errors
def recipes_list() -> None:
    """List the platform recipes with their platform strings."""
    from builder.recipe import load_recipe

    for path in sorted((recipes_dir() / "platforms").glob("*.yaml")):
        try:
            recipe, _ = load_recipe(path)
            click.echo(f"{path.stem:<24} {recipe.platform_string:<34} {recipe.platform.description}")
        except RecipeError:
            click.echo(f"{path.stem:<24} (invalid: run 'onie-builder recipes validate {path.stem}')")


@recipes.command("show")
@click.argument("recipe", default=DEFAULT_RECIPE)
@handle_errors
def recipes_show(recipe: str) -> None:
    """Print the fully resolved RECIPE, each value with the file and line that set it."""
    from builder.merge import render_with_origins
    from builder.recipe import load_recipe

    path = find_recipe_file(recipe)
    resolved, merged = load_recipe(path)
    click.echo(f"# {resolved.platform_string}: {' -> '.join(str(p.name) for p in merged.files)}")
    click.echo(render_with_origins(merged), nl=False)


@recipes.command("validate")
@click.argument("names", nargs=-1)
@handle_errors
def recipes_validate(names: tuple[str, ...]) -> None:
    """Validate recipes (all platforms when none is named); exit 2 listing every problem."""
    from builder.recipe import load_recipe

    paths = ([find_recipe_file(n) for n in names] if names
             else sorted((recipes_dir() / "platforms").glob("*.yaml")))
    problems: list[str] = []
    for path in paths:
        try:
            recipe, _ = load_recipe(path)
            click.echo(f"ok  {path}  {recipe.platform_string}")
        except RecipeError as exc:
            problems.extend(exc.problems)
    if problems:
        raise RecipeError(problems)


@main.command()
@click.argument("names", nargs=-1)
@click.option("--lock", "lock_path", type=click.Path(path_type=Path), default=None,
              help="Lock file to write (default: onie-builder.lock).")
@click.option("--mirror", default=None, metavar="'URI SUITES [COMPONENTS]'",
              help="Debian archive to use instead of the host's apt sources.")
@click.pass_context
@handle_errors
def lock(ctx: click.Context, names: tuple[str, ...], lock_path: Path | None,
         mirror: str | None) -> None:
    """Pin every Debian package of the named platforms (default: all) by version and sha256.

    Entries for platforms not named are kept, so platforms can be locked one at a time.
    """
    from builder.lock import DEFAULT_LOCK, Lock, read_lock, write_lock
    from builder.recipe import load_recipe
    from builder.sources import Resolver, find_apt_sources

    target = lock_path or DEFAULT_LOCK
    existing = read_lock(target) if target.exists() else Lock()
    paths = ([find_recipe_file(n) for n in names] if names
             else sorted((recipes_dir() / "platforms").glob("*.yaml")))
    cache = make_cache(ctx)
    for path in paths:
        recipe, _ = load_recipe(path)
        log.info("==> %s: resolving", recipe.platform_string)
        resolution = Resolver(recipe, cache, find_apt_sources(recipe, mirror)).resolve()
        for pin in resolution.pins:
            existing.add(pin)
        existing.platforms[recipe.platform_string] = resolution.lock
    write_lock(existing, target)
    click.echo(f"wrote {target}")


@main.command()
@click.argument("names", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("out"),
              show_default=True, help="Output folder; each platform goes to OUT/<platform>/.")
@click.option("--lock", "lock_path", type=click.Path(path_type=Path), default=None,
              help="Build from this lock file (default: onie-builder.lock when it exists).")
@click.option("--no-lock", is_flag=True, help="Ignore onie-builder.lock; resolve from the archive.")
@click.option("--offline", is_flag=True, help="Use only the cache; fail rather than download.")
@click.option("--mirror", default=None, metavar="'URI SUITES [COMPONENTS]'",
              help="Debian archive to use instead of the host's apt sources.")
@click.option("--force", is_flag=True, help="Rebuild even when the inputs have not changed.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.pass_context
@handle_errors
def build(ctx: click.Context, names: tuple[str, ...], out_dir: Path, lock_path: Path | None,
          no_lock: bool, offline: bool, mirror: str | None, force: bool, as_json: bool) -> None:
    """Build the named platform recipes (default: qemu_x86_64) into OUT/<platform>/.

    Each output folder holds `vmlinuz`, `initrd.img` and `manifest.json`. The previous
    output stays intact until a build succeeds. Times come from SOURCE_DATE_EPOCH (or the
    last git commit), so two builds give identical bytes.
    """
    from builder.stamp import find_fresh

    paths = [find_recipe_file(n) for n in (names or (DEFAULT_RECIPE,))]
    default_lock = Path("onie-builder.lock")
    if lock_path is None and not no_lock and default_lock.is_file():
        lock_path = default_lock
    if no_lock:
        lock_path = None
    epochs = [source_date_epoch(p) for p in paths]
    # Fast path: a locked build whose recorded inputs are all unchanged needs no imports.
    fresh = [None if force else find_fresh(out_dir, p, e, lock_path)
             for p, e in zip(paths, epochs, strict=True)]
    if all(fresh):
        report([BuildResult(r["platform"], out_dir / r["platform"], r["outputs"], True, 0.0)
                for r in fresh if r], as_json)
        return
    from builder.build import BuildOptions, build_platform
    from builder.lock import read_lock
    from builder.recipe import load_recipe

    loaded = [load_recipe(p) for p in paths]  # every recipe is validated before anything is built
    the_lock = read_lock(lock_path) if lock_path is not None else None
    cache = make_cache(ctx, offline=offline)
    results = []
    for epoch, (recipe, merged) in zip(epochs, loaded, strict=True):
        options = BuildOptions(out_dir=out_dir, source_date_epoch=epoch, lock=the_lock,
                               lock_path=lock_path, mirror=mirror, force=force)
        results.append(build_platform(recipe, merged.files, options, cache,
                                      step=lambda msg: log.info("==> %s", msg)))
    report(results, as_json)


def report(results: list[BuildResult], as_json: bool) -> None:
    """Print one line per platform, or the JSON summary."""
    if as_json:
        click.echo(json.dumps([{"platform": r.platform, "out": str(r.out), "skipped": r.skipped,
                                "seconds": round(r.seconds, 3), "outputs": r.outputs}
                               for r in results], indent=2))
    else:
        for r in results:
            size = r.outputs.get("initrd.img", {}).get("size", 0)
            state = "up to date" if r.skipped else f"built in {r.seconds:.1f} s"
            click.echo(f"{r.platform}: {state}, initramfs {size / 1e6:.2f} MB -> {r.out}")


@main.command()
@click.argument("image", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--append", default="", help="Extra kernel command-line arguments.")
@click.option("--dry-run", is_flag=True, help="Print the QEMU command instead of running it.")
@handle_errors
def boot(image: Path, append: str, dry_run: bool) -> None:
    """Boot a built IMAGE folder (out/<platform>) in QEMU with the serial console on stdio.

    Leave QEMU with Ctrl-A X. QEMU's user-mode network is attached, so nothing leaves the
    emulator except what the guest itself sends.
    """
    from builder.lab import find_qemu, machine_for, qemu_command

    try:
        manifest = json.loads((image / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise BuildError(f"{image}: not a built image folder ({exc})") from None
    machine = machine_for(manifest["arch"])
    cmdline = " ".join(x for x in (manifest["kernel"]["cmdline"], append) if x)
    argv = qemu_command(machine, image / "vmlinuz", image / "initrd.img", cmdline)
    if dry_run:
        import shlex

        click.echo(shlex.join(argv))
        return
    find_qemu(manifest["arch"])
    os.execvp(argv[0], argv)
