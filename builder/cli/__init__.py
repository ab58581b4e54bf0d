"""The command line: ``main`` only wires the command groups of this package together.

Each module holds one group of commands; ``builder.cli.common`` holds the error boundary
that turns ``BuildError`` into a message and an exit code.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from builder import __version__
from builder.cli import boot, build, cache, factory, keys, provenance
from builder.cli.common import catch_signals
from builder.progress import CurrentStderr


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onie-builder")
@click.option("--debug", is_flag=True, help="Log every command run and show tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Only print errors.")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
              help="Download cache folder (default: $XDG_CACHE_HOME/onie-builder).")
@click.option("--recipes", "recipe_dirs", type=click.Path(path_type=Path, file_okay=False),
              multiple=True, metavar="DIR",
              help="A recipe folder (platforms/, base/) searched before $ONIE_BUILDER_RECIPES and "
                   "the shipped recipes; repeatable, the first named is searched first.")
@click.pass_context
def main(ctx: click.Context, debug: bool, quiet: bool, cache_dir: Path | None,
         recipe_dirs: tuple[Path, ...]) -> None:
    """Build ONIE-style network installer environments from YAML recipes.

    A recipe describes a platform (vendor, machine, arch, console), its kernel and the
    initramfs contents. `build` turns recipes into out/<platform>/ with a kernel, an
    initramfs and a manifest; `boot` runs the result in QEMU.

    Exit codes: 0 success, 1 build failure, 2 bad recipe or usage, 3 missing host tool,
    130 interrupted (SIGINT), 143 terminated (SIGTERM), 129 hung up (SIGHUP); each signal
    removes the staging folders first.
    """
    catch_signals()
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    # Through CurrentStderr: log lines print above the progress display while it draws.
    # --debug is for our own lines: libraries keep to INFO (cyclonedx-python-lib alone logs a
    # thousand DEBUG lines as it loads).
    logging.basicConfig(level=max(level, logging.INFO), format="%(message)s",
                        stream=CurrentStderr())
    logging.getLogger("builder").setLevel(level)
    if not debug:
        # python-debian notes each copyright file it reads leniently ("Fixing Format URL"):
        # about Debian's files, not the user's build.
        logging.getLogger("debian").setLevel(logging.ERROR)
    ctx.obj = {"cache_dir": cache_dir}




for command in (build.recipes, build.lock, build.build, boot.boot, factory.dhcp_config,
                factory.serve, factory.status, cache.cache, keys.keys, keys.sign, keys.verify,
                provenance.sources, provenance.verify_provenance):
    main.add_command(command)
