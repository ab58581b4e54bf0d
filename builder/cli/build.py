"""Commands that make images: `recipes`, `lock` and `build`."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import click

from builder.cli.common import (
    DEFAULT_RECIPE,
    archive_options,
    find_recipe_file,
    handle_errors,
    log,
    make_cache,
    recipes_dir,
    source_date_epoch,
)
from builder.errors import BuildError, RecipeError
from builder.result import BuildResult


@click.group()
def recipes() -> None:
    """List, show and validate recipes."""


@recipes.command("list")
@handle_errors
def recipes_list() -> None:
    """List the platform recipes with their platform strings."""
    from builder.recipe.load import load_recipe

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
    from builder.recipe.load import load_recipe
    from builder.recipe.merge import render_with_origins

    path = find_recipe_file(recipe)
    resolved, merged = load_recipe(path)
    click.echo(f"# {resolved.platform_string}: {' -> '.join(str(p.name) for p in merged.files)}")
    click.echo(render_with_origins(merged), nl=False)


@recipes.command("validate")
@click.argument("names", nargs=-1)
@handle_errors
def recipes_validate(names: tuple[str, ...]) -> None:
    """Validate recipes (all platforms when none is named); exit 2 listing every problem."""
    from builder.recipe.load import load_recipe

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


@click.command()
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
    from builder.components.lock import DEFAULT_LOCK, Lock, read_lock, write_lock
    from builder.components.resolve import Resolver, find_apt_sources
    from builder.recipe.load import load_recipe

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


@click.command()
@click.argument("names", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("out"),
              show_default=True, help="Output folder; each platform goes to OUT/<platform>/.")
@archive_options
@click.option("--force", is_flag=True, help="Rebuild even when the inputs have not changed.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option("--all", "all_platforms", is_flag=True,
              help="Build every platform under recipes/platforms/; a failure does not stop the others.")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Platforms built at once (worker processes sharing one cache).")
@click.option("--no-images", is_flag=True,
              help="Build the kernel and initramfs only, not the recipe's images (a quicker "
                   "edit-and-boot loop with `onie-builder boot`).")
@click.pass_context
@handle_errors
def build(ctx: click.Context, names: tuple[str, ...], out_dir: Path, lock_path: Path | None,
          no_lock: bool, offline: bool, mirror: str | None, force: bool, as_json: bool,
          all_platforms: bool, jobs: int, no_images: bool) -> None:
    """Build the named platform recipes (default: qemu_x86_64) into OUT/<platform>/.

    Each output folder holds `vmlinuz`, `initrd.img`, `manifest.json` and the boot images
    the recipe asks for (docs/images.md). The previous output stays intact until a build
    succeeds. Times come from SOURCE_DATE_EPOCH (or the last git commit), so two builds give
    identical bytes. With --all (or -j above 1) every platform is built even when one fails,
    a summary table follows, and the exit code is 1 if any failed.
    """
    from builder.stamp import find_fresh

    if all_platforms and names:
        raise BuildError("--all builds every platform: name none, or drop --all")
    if all_platforms or jobs > 1:
        paths = ([find_recipe_file(n) for n in names] if names
                 else sorted((recipes_dir() / "platforms").glob("*.yaml")))
        build_batch(ctx, paths, out_dir, lock_path, no_lock, offline, mirror, force, as_json, jobs,
                    not no_images)
        return
    paths = [find_recipe_file(n) for n in (names or (DEFAULT_RECIPE,))]
    default_lock = Path("onie-builder.lock")
    if lock_path is None and not no_lock and default_lock.is_file():
        lock_path = default_lock
    if no_lock:
        lock_path = None
    epochs = [source_date_epoch(p) for p in paths]
    # Fast path: a locked build whose recorded inputs are all unchanged needs no imports.
    fresh = [None if force else find_fresh(out_dir, p, e, lock_path, not no_images)
             for p, e in zip(paths, epochs, strict=True)]
    if all(fresh):
        report([BuildResult(r["platform"], out_dir / r["platform"], r["outputs"], True, 0.0,
                            tuple((str(n), int(s)) for n, s in r.get("sizes", [])))
                for r in fresh if r], as_json)
        return
    from builder.build import BuildOptions, build_platform
    from builder.components.lock import read_lock
    from builder.recipe.load import load_recipe

    loaded = [load_recipe(p) for p in paths]  # every recipe is validated before anything is built
    the_lock = read_lock(lock_path) if lock_path is not None else None
    cache = make_cache(ctx, offline=offline)
    results = []
    for epoch, (recipe, merged) in zip(epochs, loaded, strict=True):
        options = BuildOptions(out_dir=out_dir, source_date_epoch=epoch, lock=the_lock,
                               lock_path=lock_path, mirror=mirror, force=force,
                               images=not no_images)
        results.append(build_platform(recipe, merged.files, options, cache,
                                      step=lambda msg: log.info("==> %s", msg)))
    report(results, as_json)


def build_batch(ctx: click.Context, paths: list[Path], out_dir: Path, lock_path: Path | None,
                no_lock: bool, offline: bool, mirror: str | None, force: bool, as_json: bool,
                jobs: int, images: bool) -> None:
    """Build many platforms, ``jobs`` at once; print the summary; exit 1 if any failed."""
    import time

    from builder.batch import Job, build_many, render_summary
    from builder.build import BuildOptions
    from builder.components.lock import read_lock

    if not no_lock and lock_path is None and Path("onie-builder.lock").is_file():
        lock_path = Path("onie-builder.lock")
    if no_lock:
        lock_path = None
    the_lock = read_lock(lock_path) if lock_path is not None else None
    debug = bool(ctx.find_root().params.get("debug"))
    batch = [Job(path, BuildOptions(out_dir=out_dir, source_date_epoch=source_date_epoch(path),
                                    lock=the_lock, lock_path=lock_path, mirror=mirror, force=force,
                                    images=images),
                 ctx.obj["cache_dir"], offline, debug) for path in paths]
    start = time.monotonic()
    outcomes = build_many(batch, jobs, done=lambda o: log.info(
        "==> %s: %s", o.platform, "FAILED" if o.failed else "done"))
    if as_json:
        click.echo(json.dumps([{"platform": o.platform, "recipe": str(o.recipe_file),
                                "ok": not o.failed, "error": o.error, "seconds": round(o.seconds, 3),
                                "out": str(o.result.out) if o.result else None,
                                "skipped": o.result.skipped if o.result else False,
                                "outputs": o.result.outputs if o.result else {}}
                               for o in outcomes], indent=2))
    else:
        click.echo(render_summary(outcomes, time.monotonic() - start))
    if any(o.failed for o in outcomes):
        sys.exit(1)


def report(results: list[BuildResult], as_json: bool) -> None:
    """Print one line per platform, or the JSON summary."""
    if as_json:
        click.echo(json.dumps([{"platform": r.platform, "out": str(r.out), "skipped": r.skipped,
                                "seconds": round(r.seconds, 3), "outputs": r.outputs,
                                "components": [{"name": n, "compressed": s} for n, s in r.sizes]}
                               for r in results], indent=2))
    else:
        for r in results:
            size = r.outputs.get("initrd.img", {}).get("size", 0)
            state = "up to date" if r.skipped else f"built in {r.seconds:.1f} s"
            click.echo(f"{r.platform}: {state}, initramfs {size / 1e6:.2f} MB -> {r.out}")
            if r.sizes:
                click.echo(render_sizes(r.sizes))


def render_sizes(sizes: tuple[tuple[str, int], ...], width: int = 96) -> str:
    """Each component's compressed size, folded into indented lines (docs/formats.md, Sizes)."""
    # No-break spaces keep each "name N kB" on one line.
    text = ", ".join(f"{name}\xa0{size / 1e3:.0f}\xa0kB" for name, size in sizes)
    return textwrap.fill(text, width, initial_indent="  compressed alone, by component: ",
                         subsequent_indent="    ", break_on_hyphens=False,
                         break_long_words=False).replace("\xa0", " ")
