"""`cache info` and `cache prune`: how big the download cache is, and keeping it small."""

from __future__ import annotations

import time
from pathlib import Path

import click

from builder.cli.common import handle_errors
from builder.cli.envelope import emit


@click.group()
def cache() -> None:
    """Show and prune the cache (downloads, unpacked packages, indexes, compressed layers)."""


def _root(ctx: click.Context) -> Path:
    from builder.components.cache import default_cache_root

    return ctx.find_root().obj["cache_dir"] or default_cache_root()


def _when(stamp: object) -> str:
    if not isinstance(stamp, float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


@cache.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
@handle_errors
def cache_info(ctx: click.Context, as_json: bool) -> None:
    """Where the cache is, its total size, and each kind's size and oldest and newest use."""
    from builder.components.cachedir import scan, summarize

    root = _root(ctx)
    info = summarize(root, scan(root))
    if as_json:
        emit(True, info)
        return
    click.echo(f"{info['path']}: {_mb(int(str(info['bytes'])))} in {info['entries']} entries")
    kinds = info["kinds"]
    assert isinstance(kinds, dict)
    click.echo(f"  {'kind':<10} {'entries':>8} {'size':>12}  {'oldest use':<16}  {'newest use':<16}")
    for kind, row in kinds.items():
        click.echo(f"  {kind:<10} {row['entries']:>8} {_mb(row['bytes']):>12}  "
                   f"{_when(row['oldest']):<16}  {_when(row['newest']):<16}")


@cache.command("prune")
@click.option("--max-size", default="2G", show_default=True, metavar="SIZE",
              help="Remove the least recently used entries until the cache is at most SIZE "
                   "(2G, 500M; powers of 1000).")
@click.option("--older-than", default=None, metavar="AGE",
              help="Also remove every entry last used more than AGE ago (30d, 12h, 2w).")
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
@click.option("--lock", "lock_path", type=click.Path(path_type=Path),
              default=Path("onie-builder.lock"), show_default=True,
              help="Keep every package this lock file pins.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("out"),
              show_default=True, help="Keep every package the builds in this folder used.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@click.pass_context
@handle_errors
def cache_prune(ctx: click.Context, max_size: str, older_than: str | None, dry_run: bool,
                lock_path: Path, out_dir: Path, as_json: bool) -> None:
    """Remove cache entries by age and by size, least recently used first; never a package
    that the lock file pins or that the last builds in --out used. Run it between builds:
    a build running meanwhile may have to download or unpack again."""
    from builder.components.cachedir import (
        in_use,
        parse_age,
        parse_size,
        plan_prune,
        remove,
        scan,
    )

    root = _root(ctx)
    bound, age = parse_size(max_size), parse_age(older_than) if older_than else None
    plan = plan_prune(scan(root), in_use(lock_path, out_dir), bound, age)
    if not dry_run:
        for entry in plan.removed:
            remove(entry)
    if as_json:
        emit(True, {
            "path": str(root), "dry_run": dry_run, "bytes_before": plan.total,
            "bytes_freed": plan.freed, "bytes_after": plan.total - plan.freed,
            "protected": plan.protected,
            "removed": [{"kind": e.kind, "name": e.name, "bytes": e.size, "used": e.used}
                        for e in plan.removed]})
        return
    verb = "would remove" if dry_run else "removed"
    for entry in plan.removed:
        click.echo(f"{verb} {entry.kind:<9} {_mb(entry.size):>12}  {entry.name}")
    click.echo(f"{'would free' if dry_run else 'freed'} {_mb(plan.freed)} of {_mb(plan.total)}; "
               f"{_mb(plan.total - plan.freed)} left, {plan.protected} entries kept for the "
               f"lock and the last builds")
