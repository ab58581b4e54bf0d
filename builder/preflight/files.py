"""The files a recipe names by path, read and parsed as the build will read them: template
and overlay folders, trusted keys, the HTTPS CA and CHAP secrets, root's SSH keys, the FIT,
UKI, updater and provenance keys, and local component files. No download, no write."""

from __future__ import annotations

from pathlib import Path

from builder.errors import BuildError
from builder.files import FileRefused, read_bounded
from builder.images.fit import key_bits
from builder.initramfs.ssh import load_authorized_keys
from builder.initramfs.transports import MAX_PEM_FILE, make_ca_bundle, parse_chap
from builder.preflight.problems import at
from builder.recipe.component import Source
from builder.recipe.document import KeyPath
from builder.recipe.merge import Merged
from builder.recipe.model import Recipe
from builder.signing.keys import load_private_key, load_public_key


def check_files(recipe: Recipe, merged: Merged) -> list[str]:
    """Every problem with a file the recipe names, as ``file:line: key: message``."""
    problems: list[str] = []

    def check(key: KeyPath, action: object) -> None:
        try:
            assert callable(action)
            action()
        except BuildError as exc:
            problems.append(at(merged, key, exc.message.splitlines()[0]))

    for i, folder in enumerate(recipe.templates):
        check(("templates", i), lambda f=folder: _folder(f, "template"))
    for i, folder in enumerate(recipe.initramfs.overlays):
        check(("initramfs", "overlays", i), lambda f=folder: _folder(f, "overlay"))
    seen: dict[str, Path] = {}
    for i, path in enumerate(recipe.trust.keys):
        check(("trust", "keys", i), lambda p=path: _trusted_key(p, seen))
    for i, path in enumerate(recipe.transports.https.ca):
        check(("transports", "https", "ca", i), lambda p=path: make_ca_bundle([p]))
    if (chap := recipe.transports.iscsi.chap) is not None and recipe.transports.iscsi.enabled:
        check(("transports", "iscsi", "chap"), lambda: _chap(chap))
    if recipe.ssh.authorized_keys:
        check(("ssh", "authorized_keys"), lambda: load_authorized_keys(recipe))
    images = recipe.images
    if images.fit.key is not None:
        check(("images", "fit", "key"), lambda: key_bits(_file(images.fit.key)))
    if images.fit.dtb is not None:
        check(("images", "fit", "dtb"), lambda: _file(images.fit.dtb))
    if images.uki.secureboot_key is not None:
        check(("images", "uki", "secureboot_key"), lambda: _pem_key(images.uki.secureboot_key))
    if images.uki.secureboot_cert is not None:
        check(("images", "uki", "secureboot_cert"), lambda: _pem_cert(images.uki.secureboot_cert))
    if images.updater.key is not None:
        check(("images", "updater", "key"), lambda: load_private_key(_file(images.updater.key)))
    if recipe.provenance.key is not None:
        check(("provenance", "key"), lambda: load_private_key(_file(recipe.provenance.key)))
    for key, source in _path_sources(recipe):
        check(key, lambda s=source: _file(s.path))
    return problems


def _path_sources(recipe: Recipe) -> list[tuple[KeyPath, Source]]:
    """Each component given by a local ``path``, with the key path of that ``path``."""
    found: list[tuple[KeyPath, Source]] = []
    if recipe.kernel.path is not None:
        found.append((("kernel", "path"), recipe.kernel))
    for i, component in enumerate(recipe.initramfs.components):
        if component.path is not None:
            found.append((("initramfs", "components", i, "path"), component))
    for name, component in recipe.initramfs.tools:
        if component.path is not None:
            found.append((("initramfs", "toolset", name, "path"), component))
    return found


def _file(path: Path | None) -> Path:
    assert path is not None
    if not path.is_file():
        raise BuildError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    return path


def _folder(path: Path, what: str) -> None:
    if not path.is_dir():
        raise BuildError(f"{path}: no such {what} folder" if not path.exists()
                         else f"{path}: not a folder")


def _trusted_key(path: Path, seen: dict[str, Path]) -> None:
    key = load_public_key(_file(path))
    if key.key_id in seen:
        raise BuildError(f"{path} is the same key as {seen[key.key_id]}")
    seen[key.key_id] = path


def _chap(path: Path) -> None:
    try:
        text = read_bounded(_file(path), MAX_PEM_FILE).decode()
    except (FileRefused, UnicodeDecodeError) as exc:
        raise BuildError(f"{path}: cannot read it ({exc})") from None
    parse_chap(text, str(path))


def _pem_key(path: Path | None) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        load_pem_private_key(read_bounded(_file(path), 1 << 20), password=None)
    except (FileRefused, ValueError, TypeError) as exc:
        raise BuildError(f"{path}: not an unencrypted PEM private key ({exc})") from None


def _pem_cert(path: Path | None) -> None:
    from cryptography import x509

    try:
        x509.load_pem_x509_certificate(read_bounded(_file(path), 1 << 20))
    except (FileRefused, ValueError) as exc:
        raise BuildError(f"{path}: not a PEM certificate ({exc})") from None
