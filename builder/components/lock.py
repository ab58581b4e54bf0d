"""The lock file: every Debian package a platform uses, pinned by version and sha256.

Mirror host names never appear in it: a pin holds the archive's pool path, and the
mirror comes from the host's apt sources (or ``--mirror``) when a package is fetched.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.components.cache import write_atomic
from builder.errors import BuildError, MissingPackage

LOCK_VERSION = 1
DEFAULT_LOCK = Path("onie-builder.lock")


@dataclass(frozen=True)
class Pin:
    """One Debian package, exactly."""

    name: str
    version: str
    arch: str
    sha256: str
    size: int
    filename: str


@dataclass
class PlatformLock:
    """Which pinned packages each source of one platform resolved to."""

    kernel: list[str] = field(default_factory=list)
    components: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Lock:
    """All pins, shared by the platforms of an architecture, plus each platform's choices."""

    packages: dict[str, dict[str, Pin]] = field(default_factory=dict)
    platforms: dict[str, PlatformLock] = field(default_factory=dict)

    def pin(self, arch: str, name: str) -> Pin:
        """The pin for a package, or a BuildError telling the user to re-lock."""
        try:
            return self.packages[arch][name]
        except KeyError:
            raise MissingPackage(f"lock file has no pin for {name}:{arch}",
                             hint="run 'onie-builder lock' again") from None

    def add(self, pin: Pin) -> None:
        """Record a pin (the newest resolution of a name wins)."""
        self.packages.setdefault(pin.arch, {})[pin.name] = pin


def read_lock(path: Path) -> Lock:
    """Parse a lock file; errors name the file."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildError(f"{path}: no such lock file", hint="create it with 'onie-builder lock'") from None
    except json.JSONDecodeError as exc:
        raise BuildError(f"{path}:{exc.lineno}: not a valid lock file: {exc.msg}") from None
    if not isinstance(raw, dict) or raw.get("lock-version") != LOCK_VERSION:
        raise BuildError(f"{path}: unsupported lock file (expected lock-version {LOCK_VERSION})")
    try:
        lock = Lock()
        for arch, pins in raw["packages"].items():
            for name, pin in pins.items():
                lock.add(Pin(name=name, arch=arch, **pin))
        for platform, entry in raw["platforms"].items():
            lock.platforms[platform] = PlatformLock(list(entry["kernel"]), dict(entry["components"]))
    except (KeyError, TypeError, AttributeError) as exc:
        raise BuildError(f"{path}: malformed lock file ({exc})") from None
    return lock


def render_lock(lock: Lock) -> str:
    """The lock as stable, sorted JSON (diff-friendly in review)."""
    packages: dict[str, Any] = {}
    for arch in sorted(lock.packages):
        packages[arch] = {}
        for name in sorted(lock.packages[arch]):
            pin = asdict(lock.packages[arch][name])
            del pin["name"], pin["arch"]
            packages[arch][name] = pin
    platforms = {p: asdict(lock.platforms[p]) for p in sorted(lock.platforms)}
    doc = {"lock-version": LOCK_VERSION, "packages": packages, "platforms": platforms}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def write_lock(lock: Lock, path: Path) -> None:
    """Write the lock atomically."""
    write_atomic(path, render_lock(lock).encode())
