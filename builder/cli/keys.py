"""Signing commands: `keys`, `sign` and `verify`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from builder.cli.common import (
    find_recipe_file,
    handle_errors,
    load,
    source_date_epoch,
)
from builder.cli.envelope import emit, error
from builder.errors import BuildError


@click.group()
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


@click.command()
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
@click.option("--type", "image_type", type=click.Choice(["installer", "updater", "firmware"]),
              default="installer", show_default=True,
              help="NOS installer, updater, or firmware package (onie-fwpkg).")
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


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--recipe", "recipe_name", default=None,
              help="Verify as this platform's image does: its trust, platform and build time.")
@click.option("--key", "key_paths", multiple=True, type=click.Path(path_type=Path),
              help="Instead of --recipe: a trusted public key (repeat).")
@click.option("--platform", default=None, help="With --key: the platform string to check.")
@click.option("--mode", type=click.Choice(["install", "update", "embed", "rescue", "uninstall",
                                          "firmware"]),
              default="install", show_default=True,
              help="The boot mode to check against (firmware: as onie-fwpkg checks a package).")
@click.option("--now", type=int, default=None, help="The clock (UTC epoch) for expiry checks.")
@click.option("--running-version", "running", type=int, default=None,
              help="In update or embed mode: the version of the environment an updater would "
                   "replace (its SOURCE_DATE_EPOCH); an updater must be newer. With --recipe "
                   "the default is the recipe's build time; 0 turns the check off.")
@click.option("--strip", "strip_to", type=click.Path(path_type=Path), default=None,
              help="Write the verified installer (without the signature) here; one FILE only.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON verdict per file.")
@handle_errors
def verify(files: tuple[Path, ...], recipe_name: str | None, key_paths: tuple[Path, ...],
           platform: str | None, mode: str, now: int | None, running: int | None,
           strip_to: Path | None, as_json: bool) -> None:
    """Check signed installers exactly as the environment does before running one.

    Prints `FILE: ok ...` or `FILE: refused <reason>: <detail>` per file; exits 1 when any
    is refused. The reasons are those the guest prints (docs/signed-installer.md).
    """
    from builder.files import FileRefused
    from builder.initramfs.trust import TrustStore, load_trust, strip_signature, verify_signed
    from builder.signing.format import BootMode, Refusal
    from builder.signing.keys import load_public_key

    if (recipe_name is None) == (not key_paths):
        raise BuildError("give exactly one of --recipe and --key")
    if recipe_name is not None:
        path = find_recipe_file(recipe_name)
        recipe, _ = load(path)
        epoch = source_date_epoch(path)
        store, platform = load_trust(recipe.trust, epoch), recipe.platform_string
        running = epoch if running is None else running
    elif platform is None:
        raise BuildError("--key needs --platform (the platform string to check)")
    else:
        store = TrustStore(keys=tuple(load_public_key(p) for p in key_paths))
    if strip_to is not None and len(files) != 1:
        raise BuildError("--strip takes exactly one FILE")
    verdicts, refused = [], 0
    for file in files:
        try:
            verdict = verify_signed(file, store, platform, BootMode(mode), now, running or None)
        except FileRefused as exc:  # a FIFO, a device, a folder: refused without reading it
            refused += 1
            verdicts.append({"file": str(file), "ok": False, "reason": "unreadable",
                             "detail": exc.reason})
            if not as_json:
                click.echo(f"{file}: refused unreadable: {exc.reason}")
            continue
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
        emit(not refused, verdicts,
             [error(f"refused {v['reason']}: {v['detail']}", subject=str(v["file"]))
              for v in verdicts if not v["ok"]])
        if refused:  # the envelope already says so; no second one from the error boundary
            click.echo(f"error: {refused} of {len(files)} refused", err=True)
            sys.exit(1)
    if refused:
        raise BuildError(f"{refused} of {len(files)} refused")
