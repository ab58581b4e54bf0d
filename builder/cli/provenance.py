"""Provenance commands: `sources` (the GPL source offer) and `verify-provenance`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from builder.cli.common import (
    DEFAULT_RECIPE,
    archive_options,
    find_recipe_file,
    handle_errors,
    load,
    log,
    make_cache,
)
from builder.errors import BuildError


@click.command()
@click.argument("recipe", default=DEFAULT_RECIPE)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Folder the source packages are downloaded into.")
@click.option("--package", "only", multiple=True, metavar="SOURCE",
              help="Only this source package (repeat); default: every one the platform uses.")
@archive_options
@click.pass_context
@handle_errors
def sources(ctx: click.Context, recipe: str, out_dir: Path, only: tuple[str, ...],
            lock_path: Path | None, no_lock: bool, offline: bool, mirror: str | None) -> None:
    """Download the Debian source packages of RECIPE's image into OUT, for the GPL offer.

    Every package's source and each source its Built-Using field names (the kernel's
    `linux`, the glibc in a static BusyBox): the .dsc and the files it lists, each checked
    against the sha256 of the archive's signed Sources index. OUT/sources.json lists them.
    """
    from builder.components.apt import Archive
    from builder.components.lock import read_lock
    from builder.components.resolve import Resolver, find_apt_sources
    from builder.components.sources import SourceIndex, fetch_source, find_binary_sources

    default_lock = Path("onie-builder.lock")
    if lock_path is None and not no_lock and default_lock.is_file():
        lock_path = default_lock
    the_lock = read_lock(lock_path) if lock_path is not None and not no_lock else None
    loaded, _ = load(find_recipe_file(recipe))
    cache = make_cache(ctx, offline=offline)
    apt_sources = find_apt_sources(loaded, mirror)
    resolution = Resolver(loaded, cache, apt_sources, the_lock).resolve()
    binaries = find_binary_sources(resolution.pins, cache)
    refs = sorted({ref for found in binaries.values() for ref in found.refs})
    if unknown := sorted(set(only) - {ref.name for ref in refs}):
        raise BuildError(f"{loaded.platform_string} uses no source package "
                         f"{', '.join(map(repr, unknown))}",
                         hint=f"its sources: {', '.join(sorted({r.name for r in refs}))}")
    index = SourceIndex(Archive(apt_sources, loaded.platform.arch.debian, cache))
    out_dir.mkdir(parents=True, exist_ok=True)
    listing = []
    for ref in refs:
        if only and ref.name not in only:
            continue
        package = index.find(ref)
        log.info("==> %s: %d files", ref, len(package.files))
        fetch_source(package, cache, out_dir)
        listing.append({
            "name": ref.name, "version": ref.version,
            "binaries": sorted(b for b, found in binaries.items() if ref in found.refs),
            "files": [{"name": f.name, "sha256": f.sha256, "size": f.size} for f in package.files]})
        size = sum(f.size for f in package.files)
        click.echo(f"{ref}: {len(package.files)} files, {size / 1e6:.1f} MB")
    (out_dir / "sources.json").write_text(json.dumps(
        {"platform": loaded.platform_string, "sources": listing}, indent=2, sort_keys=True) + "\n")


@click.command("verify-provenance")
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--key", "key_paths", multiple=True, required=True,
              type=click.Path(path_type=Path), help="A trusted public key (PEM; repeat).")
@handle_errors
def verify_provenance(folder: Path, key_paths: tuple[Path, ...]) -> None:
    """Check FOLDER (a build's out/<platform>) against its signed provenance.

    The statement must be signed by one of the keys, and every file of FOLDER must be one of
    its subjects with the same sha256; exits 1 naming the first file that differs.
    """
    from builder.provenance.verify import verify_provenance as verify
    from builder.signing.keys import load_public_key

    verdict = verify(folder, [load_public_key(p) for p in key_paths])
    click.echo(f"{folder}: ok: {len(verdict.subjects)} files signed by key {verdict.key.key_id}")
