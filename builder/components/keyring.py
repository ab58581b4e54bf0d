"""OpenPGP checks of Debian archive indexes: which keyrings to trust and gpgv's verdict."""

from __future__ import annotations

import base64
import hashlib
import tempfile
from pathlib import Path

from builder.errors import BuildError
from builder.process import find_tool, run

DEFAULT_KEYRINGS = (Path("/usr/share/keyrings/debian-archive-keyring.gpg"),)
TRUSTED_KEYRINGS = Path("/etc/apt/trusted.gpg.d")


def keyrings(signed_by: Path | None) -> list[Path]:
    """The keyrings that may sign an index: Signed-By alone, else Debian's and apt's trusted."""
    if signed_by is not None:
        return [signed_by]
    found = [p for p in DEFAULT_KEYRINGS if p.is_file()]
    if TRUSTED_KEYRINGS.is_dir():
        found += sorted(p for p in TRUSTED_KEYRINGS.iterdir() if p.suffix in (".gpg", ".asc"))
    return found


def verify_release(path: Path, rings: list[Path], url: str, hint: str) -> str:
    """The signed text of an InRelease file; gpgv must report a good signature and no bad one."""
    if not rings:
        raise BuildError(f"no OpenPGP keyring to verify {url} with",
                         hint="install the debian-archive-keyring package")
    gpgv = find_tool("gpgv", "to verify the signatures of Debian archive indexes")
    with tempfile.TemporaryDirectory(prefix="onie-gpgv-") as tmp:
        args = [arg for ring in rings for arg in ("--keyring", _binary_keyring(ring, Path(tmp)))]
        out = Path(tmp) / "Release"
        proc = run([gpgv, "--homedir", tmp, "--status-fd", "1", "--output", out, *args, path],
                   check=False)
        status = [line.split()[1] for line in proc.stdout.decode(errors="replace").splitlines()
                  if line.startswith("[GNUPG:] ") and len(line.split()) > 1]
        if "GOODSIG" in status and "BADSIG" not in status and out.is_file():
            return out.read_text(errors="replace")
    if "BADSIG" in status:
        reason = "has a BAD OpenPGP signature"
    elif "NO_PUBKEY" in status:
        reason = f"is signed by no key in {', '.join(map(str, rings))}"
    else:
        reason = "has no valid OpenPGP signature"
    raise BuildError(f"{url}: {reason}", hint=hint)


def _binary_keyring(ring: Path, tmp: Path) -> Path:
    """gpgv reads only binary keyrings, so an armored ``.asc`` one is decoded into ``tmp``."""
    data = ring.read_bytes()
    if not data.lstrip().startswith(b"-----BEGIN PGP"):
        return ring
    out = tmp / f"{hashlib.sha256(str(ring).encode()).hexdigest()[:16]}.gpg"
    out.write_bytes(_dearmor(data.decode(errors="replace")))
    return out


def _dearmor(text: str) -> bytes:
    """The packets of every ASCII-armored block in ``text`` (RFC 4880 section 6.2)."""
    packets = b""
    lines: list[str] | None = None
    for line in map(str.strip, text.splitlines()):
        if line.startswith("-----BEGIN PGP"):
            lines = []
        elif line.startswith("-----END PGP") and lines is not None:
            packets += base64.b64decode("".join(lines))
            lines = None
        # Armor headers hold ':' and the CRC line starts with '='; base64 lines have neither.
        elif lines is not None and line and ":" not in line and not line.startswith("="):
            lines.append(line)
    return packets
