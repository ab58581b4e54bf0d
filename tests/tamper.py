"""The tamper matrix: signed installers, good and bad in every documented way, with the verdict
each must get. Shared by the host/guest agreement tests, the boot tests and bench/verify.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.initramfs.trust import TrustStore, load_trust, template_values
from builder.recipe.load import load_recipe
from builder.recipe.model import Recipe, Trust
from builder.render import make_environment, render_template
from builder.signing.format import (
    BLOCK_SIZE,
    TRAILER_FORMAT,
    TRAILER_SIZE,
    ImageType,
    Statement,
    render_block,
)
from builder.signing.keys import KeyType, PrivateKey, load_private_key, make_key_pair

ROOT = Path(__file__).resolve().parent.parent

PLATFORM = "x86_64-qemu_x86_64-r0"
OTHER_PLATFORM = "x86_64-accton_as7726_32x-r0"
FLOOR = 1700000000  # the clock floor the test images are built with (SOURCE_DATE_EPOCH)
RUNNING = FLOOR  # so also the test images' own version, which an updater must exceed
MIN_VERSION = 10
FUTURE = 4102444800  # 2100-01-01


@dataclass(frozen=True)
class Keys:
    """Test keys: A, B (ECDSA) and C (RSA) trusted; R trusted but revoked; X untrusted."""

    a: PrivateKey
    b: PrivateKey
    c: PrivateKey
    r: PrivateKey
    x: PrivateKey
    folder: Path

    def trust(self, revoked_digests: tuple[str, ...] = ()) -> Trust:
        """The recipe trust section the test images use."""
        return Trust(keys=[self.folder / f"{n}.pub" for n in "abcr"],
                     revoked_keys=[self.r.public.key_id], revoked_digests=list(revoked_digests),
                     min_version=MIN_VERSION)

    def store(self, revoked_digests: tuple[str, ...] = ()) -> TrustStore:
        """The trust store for ``trust()`` with the test clock floor."""
        return load_trust(self.trust(revoked_digests), FLOOR)


def make_keys(folder: Path) -> Keys:
    """Generate the test keys into ``folder`` (C is passphrase-protected, like a real one)."""
    folder.mkdir(parents=True, exist_ok=True)
    types = {"a": KeyType.ED25519, "b": KeyType.ECDSA_P256, "c": KeyType.RSA_3072,
             "r": KeyType.ED25519, "x": KeyType.ED25519}
    for name, key_type in types.items():
        if not (folder / f"{name}.key").exists():
            make_key_pair(key_type, folder / name, b"hunter2" if name == "c" else None)
    loaded = {n: load_private_key(folder / f"{n}.key", b"hunter2" if n == "c" else None)
              for n in types}
    return Keys(folder=folder, **loaded)


@dataclass(frozen=True)
class Case:
    """One file of the matrix: its name, the boot mode it is checked in and the expected
    refusal reason (None: it verifies and runs)."""

    name: str
    reason: str | None
    mode: str = "install"


def payload(name: str) -> bytes:
    """A tiny installer that says which case ran (same length for same-length names)."""
    return f"#!/bin/sh\necho INSTALLER-RAN {name}\nexit 0\n".encode()


def signed(data: bytes, key: PrivateKey, *, image: ImageType = ImageType.INSTALLER,
           version: int = MIN_VERSION, platforms: tuple[str, ...] = (PLATFORM,),
           not_after: int | None = None, key_id: str | None = None) -> bytes:
    """``data`` + a signature block (``key_id`` may lie about the signing key)."""
    import hashlib

    statement = Statement(image, version, platforms, len(data), hashlib.sha256(data).hexdigest(),
                          key_id or key.public.key_id, not_after).render()
    return data + render_block(statement, key.sign(statement))


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    """``data`` with one bit flipped."""
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def statement_offset(data: bytes, line: bytes) -> int:
    """Where the value of statement line ``line`` (e.g. b"sha256=") starts in a signed file."""
    block = len(data) - BLOCK_SIZE
    return data.index(b"\n" + line, block - 1) + 1 + len(line) if block else -1


def signature_offset(data: bytes) -> int:
    """Where the signature starts in a signed file (after the statement the trailer sizes)."""
    statement = int(data[-TRAILER_SIZE:].split(b"statement=")[1][:4])
    return len(data) - BLOCK_SIZE + statement


def bad_trailer(data: bytes, statement: int, signature: int) -> bytes:
    """``data`` with the trailer's lengths rewritten."""
    return data[:-TRAILER_SIZE] + TRAILER_FORMAT % (statement, signature)


def build_cases(keys: Keys) -> list[tuple[Case, bytes]]:
    """Every case with its file content; the good ones first (their names start 'good-')."""
    a, b, c = keys.a, keys.b, keys.c
    p = payload
    good = signed(p("statement-bitflip"), a)
    sha = statement_offset(good, b"sha256=")
    digit = next(i for i in range(sha, sha + 64) if good[i] in b"0123456789")
    other = signed(p("signature-grafted"), b)
    revoked_payload = p("revoked-digest")
    padded = bytearray(signed(p("padding-nonzero"), a))
    padded[-TRAILER_SIZE - 1] = 1
    crlf = Statement(ImageType.INSTALLER, MIN_VERSION, (PLATFORM,), 0, "0" * 64,
                     a.public.key_id).render().replace(b"\n", b"\r\n")
    # A '*' among names: a shell that split the list with globbing on would see file names.
    glob = Statement(ImageType.INSTALLER, MIN_VERSION, (PLATFORM,), 0, "0" * 64,
                     a.public.key_id).render().replace(PLATFORM.encode(), PLATFORM.encode() + b" *")
    table: list[tuple[Case, Callable[[], bytes]]] = [
        (Case("good-ed25519", None), lambda: signed(p("good-ed25519"), a)),
        (Case("good-ecdsa", None), lambda: signed(p("good-ecdsa"), b)),
        (Case("good-rsa-any-platform", None), lambda: signed(p("good-rsa"), c, platforms=("*",))),
        (Case("good-not-expired", None), lambda: signed(p("good-not-expired"), a,
                                                          not_after=FUTURE)),
        (Case("good-updater", None, "update"), lambda: signed(p("good-updater"), b,
                                                                image=ImageType.UPDATER,
                                                                version=FLOOR + 1)),
        (Case("good-firmware", None, "firmware"), lambda: signed(p("good-firmware"), c,
                                                                  image=ImageType.FIRMWARE)),
        (Case("firmware-in-update-mode", "wrong-image", "update"),
         lambda: signed(p("firmware-in-update"), a, image=ImageType.FIRMWARE, version=FLOOR + 1)),
        # The environment's own version is FLOOR (its build's SOURCE_DATE_EPOCH): not newer.
        (Case("updater-not-newer", "downgrade", "update"),
         lambda: signed(p("updater-not-newer"), a, image=ImageType.UPDATER, version=FLOOR)),
        (Case("good-newer-many-platforms", None), lambda: signed(
            p("good-newer"), a, version=10**18 - 1, platforms=(OTHER_PLATFORM, PLATFORM))),
        (Case("payload-bitflip", "digest-mismatch"), lambda: flip(signed(p("payload-bit"), a), 20)),
        (Case("statement-bitflip", "bad-signature"), lambda: flip(good, digit)),
        (Case("statement-bitflip-syntax", "malformed"),
         lambda: flip(good, statement_offset(good, b"version="), 6)),
        (Case("signature-bitflip", "bad-signature"),
         lambda: flip(good, signature_offset(good))),
        (Case("signature-grafted", "digest-mismatch"),
         lambda: p("signature-grafte!") + other[-BLOCK_SIZE:]),
        (Case("key-id-swapped", "bad-signature"),
         lambda: signed(p("key-id-swapped"), a, key_id=b.public.key_id)),
        (Case("other-key", "unknown-key"), lambda: signed(p("other-key"), keys.x)),
        (Case("revoked-key", "revoked-key"), lambda: signed(p("revoked-key"), keys.r)),
        (Case("revoked-digest", "revoked-digest"), lambda: signed(revoked_payload, a)),
        (Case("downgrade", "rollback"), lambda: signed(p("downgrade"), a, version=MIN_VERSION - 1)),
        (Case("platform-mismatch", "wrong-platform"),
         lambda: signed(p("platform-mismatch"), a, platforms=(OTHER_PLATFORM,))),
        (Case("expired", "expired"), lambda: signed(p("expired"), a, not_after=FLOOR - 1)),
        (Case("truncated", "truncated"), lambda: signed(p("truncated"), a)[:-100]),
        (Case("trailing-bytes", "trailing-bytes"), lambda: signed(p("trailing"), a) + b"junk\n"),
        (Case("nul-before-trailer", "trailing-bytes"),
         lambda: signed(p("nul"), a)[:-TRAILER_SIZE] + b"\0" + signed(p("nul"), a)[-48:-1]),
        (Case("unsigned", "unsigned"), lambda: p("unsigned")),
        (Case("empty", "unsigned"), lambda: b""),
        (Case("updater-in-install-mode", "wrong-image"),
         lambda: signed(p("updater-in-install"), a, image=ImageType.UPDATER)),
        (Case("installer-in-update-mode", "wrong-image", "update"),
         lambda: signed(p("installer-in-update"), a)),
        (Case("installer-in-rescue-mode", "wrong-image", "rescue"),
         lambda: signed(p("installer-in-rescue"), a)),
        (Case("payload-shortened", "size-mismatch"),
         lambda: (lambda d: d[:10] + d[11:])(signed(p("payload-shortened"), a))),
        (Case("padding-nonzero", "malformed"), lambda: bytes(padded)),
        (Case("trailer-lengths-overflow", "malformed"),
         lambda: bad_trailer(signed(p("lengths"), a), 4000, 100)),
        (Case("statement-crlf", "malformed"),
         lambda: render_block(crlf, a.sign(crlf))),
        (Case("platforms-glob", "malformed"), lambda: render_block(glob, a.sign(glob))),
        (Case("block-only", "truncated"), lambda: signed(p("block-only"), a)[-BLOCK_SIZE + 1:]),
    ]
    return [(case, make()) for case, make in table]


def revoked_digests() -> tuple[str, ...]:
    """The payload digests the test trust store revokes."""
    import hashlib

    return (hashlib.sha256(payload("revoked-digest")).hexdigest(),)


def write_cases(keys: Keys, folder: Path) -> list[tuple[Case, Path]]:
    """Write every case's file into ``folder`` (named after the case)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for case, data in build_cases(keys):
        path = folder / case.name
        path.write_bytes(data)
        out.append((case, path))
    return out


def render_verifier(store: TrustStore, trust_dir: Path, *, insecure: bool = False) -> str:
    """templates/guest/lib/verify.sh.j2 rendered for the test platform with ``store``, its keys
    written to ``trust_dir``: what the image carries as /lib/onie/verify.sh, for a host folder."""
    recipe, _ = load_recipe(ROOT / "recipes" / "platforms" / "qemu_x86_64.yaml")
    discovery = {**recipe.discovery.model_dump(), "insecure": insecure}
    recipe = Recipe.model_validate({**recipe.model_dump(), "discovery": discovery})
    (trust_dir / "keys").mkdir(parents=True, exist_ok=True)
    for key in store.keys:
        (trust_dir / "keys" / f"{key.key_id}.pem").write_bytes(key.pem)
    values = {**template_values(recipe, FLOOR), "trust": store, "recipe": recipe,
              "platform": recipe.platform, "builder_version": "test", "trust_dir": str(trust_dir)}
    return render_template(make_environment(), "guest/lib/verify.sh.j2", values)
