"""Commands that make images: `recipes`, `lock` and `build`."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import click

from builder.cli.common import (
    DEFAULT_RECIPE,
    archive_options,
    find_recipe_file,
    handle_errors,
    load,
    log,
    make_cache,
    platform_files,
    search_path,
    source_date_epoch,
)
from builder.cli.envelope import emit, error
from builder.errors import BuildError, RecipeError
from builder.progress import Phase, Progress
from builder.result import BuildResult


@click.group()
def recipes() -> None:
    """List, show and validate recipes."""


@recipes.command("list")
@handle_errors
def recipes_list() -> None:
    """List the platform recipes on the search path: name, platform string, description and,
    in brackets, where each comes from (`shipped`, or a --recipes / $ONIE_BUILDER_RECIPES folder)."""
    search = search_path()
    for name, path in search.platforms().items():
        where = search.where(path)
        try:
            recipe, _ = load(path)
            click.echo(f"{name:<24} {recipe.platform_string:<34} {recipe.platform.description}"
                       f"  ({where})")
        except RecipeError:
            click.echo(f"{name:<24} (invalid: run 'onie-builder recipes validate {path}')"
                       f"  ({where})")


@recipes.command("show")
@click.argument("recipe", default=DEFAULT_RECIPE)
@handle_errors
def recipes_show(recipe: str) -> None:
    """Print the fully resolved RECIPE, each value with the file and line that set it."""
    from builder.recipe.merge import render_with_origins

    path = find_recipe_file(recipe)
    resolved, merged = load(path)
    click.echo(f"# {resolved.platform_string}: {' -> '.join(str(p.name) for p in merged.files)}")
    click.echo(render_with_origins(merged), nl=False)


@recipes.command("validate")
@click.argument("names", nargs=-1)
@archive_options
@click.pass_context
@handle_errors
def recipes_validate(ctx: click.Context, names: tuple[str, ...], lock_path: Path | None,
                     no_lock: bool, offline: bool, mirror: str | None) -> None:
    """Check recipes (all platforms when none is named) for everything `build` would fail on.

    YAML, keys and values; the files they name (overlays, keys, CA, authorized keys...), read
    and parsed; Debian packages in the archive's index for the platform's architecture (or
    the lock), kernel modules in the kernel package, binaries in their packages, read through
    the same cache and lock as `build` (--offline works from the cache). Exit 2 listing
    every problem as file:line: key: message, sorted by file and line.
    """
    from builder.build import relock_command
    from builder.components.lock import read_lock
    from builder.components.resolve import Archives
    from builder.preflight import check_archive, untrusted

    paths = ([find_recipe_file(n) for n in names] if names
             else platform_files())
    problems, loaded = load_checked(paths)
    lock_path = pick_lock(lock_path, no_lock)
    the_lock = read_lock(lock_path) if lock_path is not None else None
    cache = make_cache(ctx, offline=offline)
    archives: Archives = {}  # each index loaded once for every recipe
    for path, recipe, merged, files_ok in loaded:
        try:
            found = check_archive(recipe, merged, cache, mirror, the_lock,
                                  relock_command(path, lock_path), archives)
        except BuildError as exc:  # the mirror, the cache or --offline: not the recipe's fault
            if not problems:
                raise
            raise RecipeError(problems, hint=f"packages not checked: {exc.message}") from None
        problems += found
        if files_ok and not found:
            click.echo(f"ok  {path}  {recipe.platform_string}")
        if (line := untrusted(recipe, merged)) is not None:
            click.echo(f"warning: {line} (build refuses it without --allow-untrusted)", err=True)
    if problems:
        raise RecipeError(problems)


def load_checked(paths: list[Path]) -> tuple[list[str], list[tuple[Path, Any, Any, bool]]]:
    """Load every recipe and check the files it names: every problem of every recipe, and
    the recipes that loaded (with their merged documents, and whether their files passed)."""
    from builder.preflight import check_files

    problems: list[str] = []
    loaded = []
    for path in paths:
        try:
            recipe, merged = load(path)
        except RecipeError as exc:
            problems.extend(exc.problems)
            continue
        found = check_files(recipe, merged)
        problems += found
        loaded.append((path, recipe, merged, not found))
    return problems, loaded


def pick_lock(lock_path: Path | None, no_lock: bool) -> Path | None:
    """The lock to resolve from: --lock, else onie-builder.lock when present; none with --no-lock."""
    if no_lock:
        return None
    default_lock = Path("onie-builder.lock")
    return lock_path if lock_path is not None or not default_lock.is_file() else default_lock


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

    target = lock_path or DEFAULT_LOCK
    existing = read_lock(target) if target.exists() else Lock()
    paths = ([find_recipe_file(n) for n in names] if names
             else platform_files())
    with Progress() as progress:
        cache = make_cache(ctx, progress=progress)
        for path in paths:
            recipe, _ = load(path)
            progress.step(Phase.RESOLVE, f"{recipe.platform_string}: resolving")
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
              help="Build every platform on the recipe search path; a failure does not stop the others.")
@click.option("-j", "--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Platforms built at once (worker processes sharing one cache).")
@click.option("--no-images", is_flag=True,
              help="Build the kernel and initramfs only, not the recipe's images (a quicker "
                   "edit-and-boot loop with `onie-builder boot`).")
@click.option("--allow-untrusted", is_flag=True,
              help="Build an image that trusts no key (no trust.keys, not discovery.insecure), "
                   "which refuses every installer; without it such a build fails.")
@click.pass_context
@handle_errors
def build(ctx: click.Context, names: tuple[str, ...], out_dir: Path, lock_path: Path | None,
          no_lock: bool, offline: bool, mirror: str | None, force: bool, as_json: bool,
          all_platforms: bool, jobs: int, no_images: bool, allow_untrusted: bool) -> None:
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
                 else platform_files())
        build_batch(ctx, paths, out_dir, lock_path, no_lock, offline, mirror, force, as_json, jobs,
                    not no_images, allow_untrusted)
        return
    paths = [find_recipe_file(n) for n in (names or (DEFAULT_RECIPE,))]
    lock_path = pick_lock(lock_path, no_lock)
    epochs = [source_date_epoch(p) for p in paths]
    # Fast path: a locked build whose recorded inputs are all unchanged needs no imports.
    fresh = [None if force else find_fresh(out_dir, p, e, lock_path, not no_images)
             for p, e in zip(paths, epochs, strict=True)]
    if all(fresh) and (allow_untrusted or all(r and r.get("trusted") for r in fresh)):
        report([BuildResult(r["platform"], out_dir / r["platform"], r["outputs"], True, 0.0,
                            tuple((str(n), int(s)) for n, s in r.get("sizes", [])))
                for r in fresh if r], as_json, paths)
        return
    from builder.components.kernelproc import start_kernels
    from builder.components.lock import read_lock

    # Every check before any work: the recipes and the files they name (no download), then
    # their packages, modules and binaries (through the cache), for every recipe named.
    problems, loaded = load_checked(paths)
    problems += check_trust(loaded, allow_untrusted)
    if problems:
        raise RecipeError(problems)
    the_lock = read_lock(lock_path) if lock_path is not None else None
    results = []
    with Progress() as progress:
        cache = make_cache(ctx, offline=offline, progress=progress)
        # The kernel package, the checks' longest work, starts unpacking now (when the lock
        # pins it and the cache holds it), while the modules the rest needs are imported.
        for _, recipe, _, _ in loaded:
            start_kernels(recipe, the_lock, cache)
        from builder.build import BuildOptions, build_platform, make_resolver
        from builder.components.resolve import Archives
        from builder.preflight import check_packages

        archives: Archives = {}  # each index loaded once, for the checks and the builds
        builds = []
        for epoch, (path, recipe, merged, _) in zip(epochs, loaded, strict=True):
            options = BuildOptions(out_dir=out_dir, source_date_epoch=epoch, lock=the_lock,
                                   lock_path=lock_path, mirror=mirror, force=force,
                                   images=not no_images)
            started = time.monotonic()
            resolver = make_resolver(recipe, path, options, cache, archives)
            problems += check_packages(resolver, merged)
            builds.append((recipe, merged, options, resolver, time.monotonic() - started))
        if problems:
            raise RecipeError(problems)
        for recipe, merged, options, resolver, checking in builds:
            result = build_platform(recipe, merged.files, options, cache, step=progress.step,
                                    resolver=resolver)
            # "built in" counts the checks too: they unpack what the build then uses
            results.append(dataclasses.replace(result, seconds=result.seconds + checking))
    report(results, as_json, paths)


def check_trust(loaded: list[tuple[Path, Any, Any, bool]], allow: bool) -> list[str]:
    """The images that trust no key: problems, or with --allow-untrusted a warning line each."""
    from builder.preflight import untrusted

    lines = [line for _, recipe, merged, _ in loaded
             if (line := untrusted(recipe, merged)) is not None]
    if allow:
        for line in lines:
            click.echo(f"warning: {line} (--allow-untrusted)", err=True)
        return []
    return [f"{line}; name a public key in trust.keys (docs/signed-installer.md) or pass "
            "--allow-untrusted" for line in lines]


def build_batch(ctx: click.Context, paths: list[Path], out_dir: Path, lock_path: Path | None,
                no_lock: bool, offline: bool, mirror: str | None, force: bool, as_json: bool,
                jobs: int, images: bool, allow_untrusted: bool) -> None:
    """Build many platforms, ``jobs`` at once; print the summary; exit 1 if any failed."""
    from builder.batch import Job, build_many, render_summary
    from builder.build import BuildOptions
    from builder.components.lock import read_lock

    loaded = []
    for path in paths:  # a recipe that does not load fails in its worker, beside the others
        with contextlib.suppress(RecipeError):
            loaded.append((path, *load(path), True))
    if refused := check_trust(loaded, allow_untrusted):
        raise RecipeError(refused)
    lock_path = pick_lock(lock_path, no_lock)
    the_lock = read_lock(lock_path) if lock_path is not None else None
    debug = bool(ctx.find_root().params.get("debug"))
    batch = [Job(path, BuildOptions(out_dir=out_dir, source_date_epoch=source_date_epoch(path),
                                    lock=the_lock, lock_path=lock_path, mirror=mirror, force=force,
                                    images=images),
                 ctx.obj["cache_dir"], offline, debug, search_path()) for path in paths]
    start = time.monotonic()
    outcomes = build_many(batch, jobs, done=lambda o: log.info(
        "==> %s: %s", o.platform, "FAILED" if o.failed else "done"))
    if as_json:
        emit(not any(o.failed for o in outcomes),
             [{"platform": o.platform, "recipe": str(o.recipe_file), "ok": not o.failed,
               "error": o.error, "seconds": round(o.seconds, 3),
               "out": str(o.result.out) if o.result else None,
               "skipped": o.result.skipped if o.result else False,
               "outputs": o.result.outputs if o.result else {},
               "components": [{"name": n, "compressed": s} for n, s in o.result.sizes]
               if o.result else []}
              for o in outcomes],
             [error(o.error or "failed", subject=o.platform) for o in outcomes if o.failed])
    else:
        click.echo(render_summary(outcomes, time.monotonic() - start))
    if any(o.failed for o in outcomes):
        sys.exit(1)


def report(results: list[BuildResult], as_json: bool, recipe_files: list[Path]) -> None:
    """Print one line per platform, or the JSON summary (the same entries as ``--all``)."""
    if as_json:
        emit(True, [{"platform": r.platform, "recipe": str(f), "ok": True, "error": None,
                     "out": str(r.out), "skipped": r.skipped, "seconds": round(r.seconds, 3),
                     "outputs": r.outputs,
                     "components": [{"name": n, "compressed": s} for n, s in r.sizes]}
                    for r, f in zip(results, recipe_files, strict=True)])
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
