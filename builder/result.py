"""What a platform build produced; light enough for the CLI's no-op fast path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BuildResult:
    """One platform's outcome: where it went, its outputs, whether it was already up to date."""

    platform: str
    out: Path
    outputs: dict[str, dict[str, Any]]
    skipped: bool
    seconds: float
    sizes: tuple[tuple[str, int], ...] = ()  # each component's compressed bytes (initramfs.sizes)
