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
    from builder.components.cache import Cache
    from builder.progress import DownloadProgress

    return Cache(ctx.obj["cache_dir"], offline=offline, on_download=DownloadProgress().start)


@main.group()
def recipes() -> None:
    """List, show and validate recipes."""


@recipes.command("list")
@handle_errors
def recipes_list() -> None:
    """List the platform recipes with their platform strings."""
    from builder.recipe.model import load_recipe

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
    from builder.recipe.merge import render_with_origins
    from builder.recipe.model import load_recipe

    path = find_recipe_file(recipe)
    resolved, merged = load_recipe(path)
    click.echo(f"# {resolved.platform_string}: {' -> '.join(str(p.name) for p in merged.files)}")
    click.echo(render_with_origins(merged), nl=False)


@recipes.command("validate")
@click.argument("names", nargs=-1)
@handle_errors
def recipes_validate(names: tuple[str, ...]) -> None:
    """Validate recipes (all platforms when none is named); exit 2 listing every problem."""
    from builder.recipe.model import load_recipe

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
    from builder.components.lock import DEFAULT_LOCK, Lock, read_lock, write_lock
    from builder.components.resolve import Resolver, find_apt_sources
    from builder.recipe.model import load_recipe

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
        report([BuildResult(r["platform"], out_dir / r["platform"], r["outputs"], True, 0.0)
                for r in fresh if r], as_json)
        return
    from builder.build import BuildOptions, build_platform
    from builder.components.lock import read_lock
    from builder.recipe.model import load_recipe

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
    from builder.lab.netns import find_qemu, machine_for, qemu_command

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


@main.command("dhcp-config")
@click.argument("names", nargs=-1)
@click.option("--site", "site_path", required=True, type=click.Path(path_type=Path),
              help="The site file (subnets, server, devices).")
@click.option("--format", "fmt", type=click.Choice(["dnsmasq", "kea", "isc"]), default="dnsmasq",
              show_default=True, help="The DHCP server to configure.")
@click.option("--family", type=click.Choice(["4", "6"]), default="4", show_default=True,
              help="Kea and ISC dhcpd run one daemon per IP family; dnsmasq serves both.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write the configuration here (atomically) instead of to stdout.")
@handle_errors
def dhcp_config(names: tuple[str, ...], site_path: Path, fmt: str, family: str,
                output: Path | None) -> None:
    """Write a DHCP server configuration for the site's ONIE devices.

    Every platform of the named recipes (default: all) and of the site file gets a class on
    vendor class `onie_vendor:<platform>` answering option 114 and VIVSO 125 with its installer
    URL on the `serve` server; devices with a MAC get host entries. See docs/factory.md.
    """
    from builder.factory.dhcp import DhcpFormat, render_dhcp_config
    from builder.factory.site import load_site
    from builder.recipe.model import load_recipe

    site, _ = load_site(site_path)
    paths = ([find_recipe_file(n) for n in names] if names
             else sorted((recipes_dir() / "platforms").glob("*.yaml")))
    platforms = [load_recipe(p)[0].platform_string for p in paths]
    text = render_dhcp_config(site, platforms, DhcpFormat(fmt), int(family))
    if output is None:
        click.echo(text, nl=False)
        return
    from builder.components.cache import write_atomic

    write_atomic(output, text.encode())
    output.chmod(0o644)
    click.echo(f"wrote {output}", err=True)


@main.command()
@click.option("--site", "site_path", required=True, type=click.Path(path_type=Path),
              help="The site file (assignments, TLS material, status token).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("out"),
              show_default=True, help="The build output tree to serve.")
@click.option("--listen", multiple=True, help="Address to listen on (repeat for several; "
              "default: the site's server.listen).")
@click.option("--http-port", type=int, default=None, help="Override server.http_port (0: any).")
@click.option("--https-port", type=int, default=None, help="Override server.https_port (0: any).")
@click.option("--record", type=click.Path(path_type=Path), default=None,
              help="Append every status report and finished download to this JSON Lines file.")
@handle_errors
def serve(site_path: Path, out_dir: Path, listen: tuple[str, ...], http_port: int | None,
          https_port: int | None, record: Path | None) -> None:
    """Serve OUT and the site's installers to ONIE devices, and collect their status.

    Waterfall names (`onie-installer-<platform>` ...) get the installer the site assigns to
    the asking device (by ONIE's serial number and MAC headers); Range requests resume
    downloads; devices POST signed reports to /status. The live status page is at /,
    the same data for scripts at /status.json (or `onie-builder status URL --json`).
    Stop with Ctrl-C.
    """
    from builder.factory.serve import Server, run_server
    from builder.factory.site import check_site_files, load_site

    site, _ = load_site(site_path)
    check_site_files(site)
    server = Server(site, out_dir, listen=list(listen) or None, http_port=http_port,
                    https_port=https_port, record=record)

    def ready(urls: list[str]) -> None:
        click.echo(f"serving {out_dir} for site {site.name}: {' '.join(urls)}")
        click.echo(f"status page: {urls[0]}/", err=True)
        sys.stdout.flush()

    run_server(server, ready)


@main.command()
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON as it is.")
@click.option("--cacert", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="CA certificate to check an https:// server against.")
@handle_errors
def status(url: str, as_json: bool, cacert: Path | None) -> None:
    """Show the devices a running `onie-builder serve` at URL knows and their state."""
    from builder.factory.status import fetch_status, format_status

    data = fetch_status(url, cacert)
    click.echo(json.dumps(data, indent=2) if as_json else format_status(data))


# --- signed installers (docs/signed-installer.md) ----------------------------------------------

@main.group()
def keys() -> None:
    """Generate and inspect the keys that sign installers."""


@keys.command("generate")
@click.argument("stem", type=click.Path(path_type=Path))
@click.option("--type", "key_type", default="ed25519", show_default=True,
              type=click.Choice(["ed25519", "ecdsa-p256", "rsa-3072"]),
              help="Key type (RSA-3072 suits HSMs that lack the others).")
@click.option("--passphrase-file", type=click.Path(path_type=Path), default=None,
              help="Encrypt the private key with the first line of this file.")
@handle_errors
def keys_generate(stem: Path, key_type: str, passphrase_file: Path | None) -> None:
    """Write a key pair: STEM.key (private, mode 0600) and STEM.pub (for recipes' trust.keys)."""
    from builder.signing.keys import KeyType, make_key_pair, read_passphrase

    passphrase = read_passphrase(passphrase_file) if passphrase_file else None
    public = make_key_pair(KeyType(key_type), stem, passphrase)
    click.echo(f"{public.source}: {public.type.value} key {public.key_id}")


@keys.command("id")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@handle_errors
def keys_id(files: tuple[Path, ...]) -> None:
    """Print the key id and type of public key FILES (the ids that trust.revoked_keys lists)."""
    from builder.signing.keys import load_public_key

    for path in files:
        key = load_public_key(path)
        click.echo(f"{key.key_id}  {key.type.value:<10}  {path}")


def parse_epoch(value: str | None) -> int | None:
    """A UTC time as an epoch integer or an ISO 8601 date/time (UTC unless it says otherwise)."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    import datetime

    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise BuildError(f"--not-after: expected a UTC epoch or an ISO 8601 date, got {value!r}") \
            from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp())


@main.command()
@click.argument("installer", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="The signed file (default: INSTALLER.signed).")
@click.option("--key", "key_path", type=click.Path(path_type=Path), default=None,
              help="Private key file (PEM).")
@click.option("--passphrase-file", type=click.Path(path_type=Path), default=None,
              help="The private key's passphrase: the first line of this file.")
@click.option("--signer-cmd", default=None,
              help="Sign with this command instead: statement on stdin, signature on stdout.")
@click.option("--public-key", "public_path", type=click.Path(path_type=Path), default=None,
              help="With --signer-cmd: the signer's public key.")
@click.option("--version", "image_version", type=int, required=True,
              help="The installer's version: an integer that only grows (rollback floor).")
@click.option("--platform", "platforms", multiple=True, required=True,
              help="A platform string it may run on (repeat), or '*' for any.")
@click.option("--type", "image_type", type=click.Choice(["installer", "updater"]),
              default="installer", show_default=True, help="NOS installer or updater.")
@click.option("--not-after", default=None,
              help="Expiry: a UTC epoch or ISO 8601 date/time.")
@handle_errors
def sign(installer: Path, output: Path | None, key_path: Path | None,
         passphrase_file: Path | None, signer_cmd: str | None, public_path: Path | None,
         image_version: int, platforms: tuple[str, ...], image_type: str,
         not_after: str | None) -> None:
    """Sign INSTALLER: write it unchanged followed by a signed statement and a trailer.

    The statement names the installer's sha256 and size, VERSION, the platforms, the image
    type, the key id and the expiry. With --signer-cmd the private key stays in an HSM or a
    signing service: the command gets the statement on stdin and writes the signature.
    """
    from builder.signing.format import ImageType, sign_installer
    from builder.signing.keys import load_private_key, load_public_key, read_passphrase
    from builder.signing.signers import CommandSigner, KeySigner

    signer: KeySigner | CommandSigner
    if (key_path is None) == (signer_cmd is None):
        raise BuildError("give exactly one of --key and --signer-cmd")
    if signer_cmd is not None:
        if public_path is None:
            raise BuildError("--signer-cmd needs --public-key (the signer's public key)")
        signer = CommandSigner(signer_cmd, load_public_key(public_path))
    else:
        assert key_path is not None
        passphrase = read_passphrase(passphrase_file) if passphrase_file else None
        signer = KeySigner(load_private_key(key_path, passphrase))
    dest = output or installer.with_name(installer.name + ".signed")
    statement = sign_installer(installer, dest, signer, image=ImageType(image_type),
                               version=image_version, platforms=platforms,
                               not_after=parse_epoch(not_after))
    click.echo(f"{dest}: {statement.image.value} version {statement.version} sha256 "
               f"{statement.sha256} key {statement.key_id}")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--recipe", "recipe_name", default=None,
              help="Verify as this platform's image does: its trust, platform and build time.")
@click.option("--key", "key_paths", multiple=True, type=click.Path(path_type=Path),
              help="Instead of --recipe: a trusted public key (repeat).")
@click.option("--platform", default=None, help="With --key: the platform string to check.")
@click.option("--mode", type=click.Choice(["install", "update", "embed", "rescue", "uninstall"]),
              default="install", show_default=True, help="The boot mode to check against.")
@click.option("--now", type=int, default=None, help="The clock (UTC epoch) for expiry checks.")
@click.option("--strip", "strip_to", type=click.Path(path_type=Path), default=None,
              help="Write the verified installer (without the signature) here; one FILE only.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON verdict per file.")
@handle_errors
def verify(files: tuple[Path, ...], recipe_name: str | None, key_paths: tuple[Path, ...],
           platform: str | None, mode: str, now: int | None, strip_to: Path | None,
           as_json: bool) -> None:
    """Check signed installers exactly as the environment does before running one.

    Prints `FILE: ok ...` or `FILE: refused <reason>: <detail>` per file; exits 1 when any
    is refused. The reasons are those the guest prints (docs/signed-installer.md).
    """
    from builder.initramfs.trust import TrustStore, load_trust, strip_signature, verify_signed
    from builder.recipe.model import load_recipe
    from builder.signing.format import BootMode, Refusal
    from builder.signing.keys import load_public_key

    if (recipe_name is None) == (not key_paths):
        raise BuildError("give exactly one of --recipe and --key")
    if recipe_name is not None:
        path = find_recipe_file(recipe_name)
        recipe, _ = load_recipe(path)
        store, platform = load_trust(recipe.trust, source_date_epoch(path)), recipe.platform_string
    elif platform is None:
        raise BuildError("--key needs --platform (the platform string to check)")
    else:
        store = TrustStore(keys=tuple(load_public_key(p) for p in key_paths))
    if strip_to is not None and len(files) != 1:
        raise BuildError("--strip takes exactly one FILE")
    verdicts, refused = [], 0
    for file in files:
        try:
            verdict = verify_signed(file, store, platform, BootMode(mode), now)
        except Refusal as exc:
            refused += 1
            verdicts.append({"file": str(file), "ok": False, "reason": exc.reason.value,
                             "detail": exc.detail})
            if not as_json:
                click.echo(f"{file}: refused {exc.reason.value}: {exc.detail}")
            continue
        s = verdict.statement
        verdicts.append({"file": str(file), "ok": True, "image": s.image.value,
                         "version": s.version, "platforms": list(s.platforms), "size": s.size,
                         "sha256": s.sha256, "key": s.key_id, "not_after": s.not_after})
        if not as_json:
            click.echo(f"{file}: ok {s.image.value} version {s.version} key {s.key_id}")
        if strip_to is not None:
            strip_signature(file, verdict, strip_to)
    if as_json:
        click.echo(json.dumps(verdicts, indent=2))
    if refused:
        raise BuildError(f"{refused} of {len(files)} refused")
