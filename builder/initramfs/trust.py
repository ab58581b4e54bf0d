"""The trust store baked into an image, and verifying a signed installer against it on the host.

``verify_signed`` applies the same checks, in the same order, as ``verify_installer`` in
``templates/guest/lib/verify.sh.j2`` does in the guest (docs/signed-installer.md, "Verification
order"), so host and guest give the same verdict and reason for every file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import BuildError
from builder.files import open_regular
from builder.initramfs.tree import Tree
from builder.recipe.model import Recipe, Trust
from builder.signing.format import (
    BLOCK_SIZE,
    TRAILER_SIZE,
    BootMode,
    ImageType,
    Reason,
    Refusal,
    Statement,
    hash_payload,
    read_block,
)
from builder.signing.keys import PublicKey, load_public_key

TRUST_DIR = "/etc/onie/trust"


@dataclass(frozen=True)
class TrustStore:
    """Trusted keys by id, revocations, the rollback floor and the clock floor (build time)."""

    keys: tuple[PublicKey, ...] = ()
    revoked_keys: frozenset[str] = frozenset()
    revoked_digests: frozenset[str] = frozenset()
    min_version: int = 0
    floor: int = 0

    def find_key(self, key_id: str) -> PublicKey | None:
        """The trusted key with this id, or None."""
        return next((k for k in self.keys if k.key_id == key_id), None)


def load_trust(trust: Trust, floor: int) -> TrustStore:
    """Read the recipe's public keys; ``floor`` (the build time) bounds the clock for expiry."""
    keys: dict[str, PublicKey] = {}
    for path in trust.keys:
        try:
            key = load_public_key(path)
        except BuildError as exc:
            raise BuildError(f"trust.keys: {exc.message}", hint=exc.hint) from None
        if key.key_id in keys:
            raise BuildError(f"trust.keys: {path} is the same key as {keys[key.key_id].source}")
        keys[key.key_id] = key
    return TrustStore(tuple(sorted(keys.values(), key=lambda k: k.key_id)),
                      frozenset(trust.revoked_keys), frozenset(trust.revoked_digests),
                      trust.min_version, floor)


@dataclass(frozen=True)
class Verdict:
    """A verified installer: its statement and the key that signed it."""

    statement: Statement
    key: PublicKey


def verify_signed(path: Path, store: TrustStore, platform: str, mode: BootMode,
                  now: int | None = None, running: int | None = None) -> Verdict:
    """Check ``path`` as the guest does; raise a Refusal naming the first failed check.

    ``running`` is the version of the environment an updater would replace (its build's
    SOURCE_DATE_EPOCH, what its own updater is signed with): in the update and embed modes an
    updater must be newer. None skips that check (an operator's explicit downgrade)."""
    block = read_block(path)
    statement = block.statement
    key_id = statement.key_id
    if key_id in store.revoked_keys:
        raise Refusal(Reason.REVOKED_KEY, f"key {key_id} is revoked")
    key = store.find_key(key_id)
    if key is None:
        raise Refusal(Reason.UNKNOWN_KEY, f"key {key_id} is not trusted")
    if not key.verifies(block.signature, block.statement_bytes):
        raise Refusal(Reason.BAD_SIGNATURE, f"the signature does not verify with key {key_id}")
    check_policy(statement, block.payload_size, store, platform, mode, now, running)
    if hash_payload(path, block.payload_size) != statement.sha256:
        raise Refusal(Reason.DIGEST_MISMATCH, "the payload's sha256 differs from the statement's")
    return Verdict(statement, key)


def check_policy(statement: Statement, payload_size: int, store: TrustStore, platform: str,
                 mode: BootMode, now: int | None, running: int | None = None) -> None:
    """The checks on a signed statement's values, in the guest's order."""
    if payload_size != statement.size:
        raise Refusal(Reason.SIZE_MISMATCH, f"the payload is {payload_size} bytes, the statement "
                      f"says {statement.size}")
    if statement.sha256 in store.revoked_digests:
        raise Refusal(Reason.REVOKED_DIGEST, f"installer {statement.sha256} is revoked")
    if mode.image_type is not statement.image:
        raise Refusal(Reason.WRONG_IMAGE, f"an {statement.image.value} cannot run in "
                      f"{mode.value} mode")
    if not statement.allows(platform):
        raise Refusal(Reason.WRONG_PLATFORM, f"signed for {' '.join(statement.platforms)}, "
                      f"not {platform}")
    if statement.version < store.min_version:
        raise Refusal(Reason.ROLLBACK, f"version {statement.version} is below the floor "
                      f"{store.min_version}")
    if running is not None and mode.image_type is ImageType.UPDATER and statement.version <= running:
        raise Refusal(Reason.DOWNGRADE, f"version {statement.version} is not newer than the "
                      f"running environment's {running}")
    clock = max(int(time.time()) if now is None else now, store.floor)
    if statement.not_after is not None and clock > statement.not_after:
        raise Refusal(Reason.EXPIRED, f"expired at {statement.not_after}, now {clock}")


def strip_signature(path: Path, verdict: Verdict, out: Path) -> None:
    """Write the verified payload (the original installer bytes) to ``out``."""
    size = verdict.statement.size
    if out.resolve() == path.resolve():
        os.truncate(path, size)
        return
    with open_regular(path) as fin, out.open("wb") as fout:
        left = size
        while left and (chunk := fin.read(min(1 << 20, left))):
            fout.write(chunk)
            left -= len(chunk)


def trusted_key_path(key: PublicKey) -> str:
    """Where a trusted key lives in the image."""
    return f"{TRUST_DIR}/keys/{key.key_id}.pem"


def install_trust(tree: Tree, store: TrustStore) -> None:
    """Put the trusted public keys into the tree (revocations and floors are in verify.sh)."""
    tree.add_dir(TRUST_DIR)
    tree.add_dir(f"{TRUST_DIR}/keys")
    for key in store.keys:
        tree.add_file(trusted_key_path(key), data=key.pem, mode=0o644,
                      origin=f"trust:{key.source.name if key.source else key.key_id}")


def describe_trust(store: TrustStore) -> dict[str, Any]:
    """The manifest's ``trust`` section."""
    return {
        "keys": [{"id": k.key_id, "type": k.type.value, "path": trusted_key_path(k),
                  "file": k.source.name if k.source else None} for k in store.keys],
        "revoked_keys": sorted(store.revoked_keys),
        "revoked_digests": sorted(store.revoked_digests),
        "min_version": store.min_version,
        "clock_floor": store.floor,
    }


def template_values(recipe: Recipe, source_date_epoch: int) -> dict[str, Any]:
    """What templates/guest/lib/verify.sh.j2 needs: the trust store, the block's sizes, and
    the environment's own version (its updater is signed with SOURCE_DATE_EPOCH)."""
    return {"trust": load_trust(recipe.trust, source_date_epoch), "block_size": BLOCK_SIZE,
            "trailer_size": TRAILER_SIZE, "running_version": source_date_epoch}
