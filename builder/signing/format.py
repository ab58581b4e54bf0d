"""The signed-installer format: a statement, its signature and a trailer appended to an installer.

Layout (docs/signed-installer.md has it byte by byte)::

    payload       the original installer, unchanged (N bytes)
    block         exactly BLOCK_SIZE bytes:
      statement   S bytes: key=value lines (STATEMENT_KEYS order), ASCII, each ending in LF
      signature   G bytes: over the statement bytes, by the key the statement names
      padding     BLOCK_SIZE - S - G - TRAILER_SIZE zero bytes
      trailer     TRAILER_SIZE ASCII bytes: "\\nONIE-SIGNATURE/1 statement=SSSS signature=GGGG\\n"

The block's fixed size lets the guest hash the payload while downloading (every byte but the
last BLOCK_SIZE) and find the statement by reading the file's tail.
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from builder.errors import BuildError
from builder.files import FileRefused, open_regular, public_mode
from builder.signing.keys import PublicKey

BLOCK_SIZE = 4096
TRAILER_SIZE = 48
FORMAT = "onie-signed-installer/1"
TRAILER_FORMAT = b"\nONIE-SIGNATURE/1 statement=%04d signature=%04d\n"
# What a misplaced trailer or a cut-off block still shows (searched for in the last bytes).
TRAILER_MARK = b"ONIE-SIGNATURE/1 statement="
STATEMENT_MARK = f"format={FORMAT}".encode()
# How far from the end a misplaced trailer or statement is looked for (diagnosis only).
SEARCH_WINDOW = 65536
MAX_NUMBER = 10**18 - 1  # 18 digits: fits BusyBox ash's 64-bit arithmetic
CHUNK = 1 << 20

TRAILER_RE = re.compile(rb"\nONIE-SIGNATURE/1 statement=([0-9]{4}) signature=([0-9]{4})\n")
NUMBER_RE = re.compile(r"0|[1-9][0-9]{0,17}")
HEX64_RE = re.compile(r"[0-9a-f]{64}")
PLATFORM_RE = re.compile(r"[a-z0-9_-]+")
STATEMENT_KEYS = ("format", "image", "version", "platforms", "size", "sha256", "key", "not_after")
OPTIONAL_KEYS = ("not_after",)


class ImageType(enum.Enum):
    """What a signed image is for: a NOS installer, an updater of the environment itself, or a
    firmware update package (onie-fwpkg: the vendor's flash step, run by an update boot)."""

    INSTALLER = "installer"
    UPDATER = "updater"
    FIRMWARE = "firmware"


class BootMode(enum.Enum):
    """The environment's boot mode (``onie_boot_mode=`` on the kernel command line)."""

    INSTALL = "install"
    UPDATE = "update"
    EMBED = "embed"  # ONIE's mode that installs the environment itself: an updater's job
    RESCUE = "rescue"
    UNINSTALL = "uninstall"
    FIRMWARE = "firmware"  # not a boot mode: how onie-fwpkg checks a firmware package

    @property
    def image_type(self) -> ImageType | None:
        """The image type this mode runs; rescue and uninstall run none."""
        return {"install": ImageType.INSTALLER, "update": ImageType.UPDATER,
                "embed": ImageType.UPDATER, "firmware": ImageType.FIRMWARE}.get(self.value)


class Reason(enum.Enum):
    """Why an installer is refused; the token the guest prints is the value."""

    UNSIGNED = "unsigned"
    TRUNCATED = "truncated"
    TRAILING_BYTES = "trailing-bytes"
    MALFORMED = "malformed"
    REVOKED_KEY = "revoked-key"
    UNKNOWN_KEY = "unknown-key"
    BAD_SIGNATURE = "bad-signature"
    SIZE_MISMATCH = "size-mismatch"
    REVOKED_DIGEST = "revoked-digest"
    WRONG_IMAGE = "wrong-image"
    WRONG_PLATFORM = "wrong-platform"
    ROLLBACK = "rollback"
    DOWNGRADE = "downgrade"
    EXPIRED = "expired"
    DIGEST_MISMATCH = "digest-mismatch"


class Refusal(BuildError):
    """An installer that must not run: the reason token and a one-line detail."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"refused {reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Statement:
    """What a signature vouches for. ``platforms == ("*",)`` means any platform."""

    image: ImageType
    version: int
    platforms: tuple[str, ...]
    size: int
    sha256: str
    key_id: str
    not_after: int | None = None

    def render(self) -> bytes:
        """The canonical statement bytes, the exact bytes that are signed."""
        values = {"format": FORMAT, "image": self.image.value, "version": str(self.version),
                  "platforms": " ".join(self.platforms), "size": str(self.size),
                  "sha256": self.sha256, "key": self.key_id}
        if self.not_after is not None:
            values["not_after"] = str(self.not_after)
        text = "".join(f"{k}={values[k]}\n" for k in STATEMENT_KEYS if k in values)
        data = text.encode("ascii")
        check_statement(data)  # what we write, we must be able to read back
        return data

    def allows(self, platform: str) -> bool:
        """Whether this statement lets the installer run on ``platform``."""
        return self.platforms == ("*",) or platform in self.platforms


@dataclass(frozen=True)
class Block:
    """A parsed signature block: the statement bytes, the statement and the signature."""

    statement_bytes: bytes
    statement: Statement
    signature: bytes
    payload_size: int


def malformed(detail: str) -> Refusal:
    """A Refusal for a block or statement that breaks the format."""
    return Refusal(Reason.MALFORMED, detail)


def check_number(key: str, value: str) -> int:
    """A canonical decimal of at most 18 digits."""
    if not NUMBER_RE.fullmatch(value):
        raise malformed(f"statement {key}: expected a decimal number")
    return int(value)


def check_platforms(value: str) -> tuple[str, ...]:
    """``*`` or platform strings separated by single spaces."""
    if value == "*":
        return ("*",)
    names = tuple(value.split(" "))
    if not all(PLATFORM_RE.fullmatch(n) for n in names):
        raise malformed("statement platforms: expected '*' or platform names "
                        "([a-z0-9_-]) separated by single spaces")
    return names


def check_hex(key: str, value: str) -> str:
    """64 lower-case hex digits."""
    if not HEX64_RE.fullmatch(value):
        raise malformed(f"statement {key}: expected 64 lower-case hex digits")
    return value


def check_statement(data: bytes) -> Statement:
    """Parse statement bytes by the strict grammar; raise a ``malformed`` Refusal otherwise."""
    if not data.endswith(b"\n") or re.search(rb"[^\x20-\x7e\n]", data):
        raise malformed("statement: expected printable ASCII lines, each ending in a line feed")
    lines = data[:-1].decode("ascii").split("\n")
    values: dict[str, str] = {}
    wanted = [k for k in STATEMENT_KEYS]
    for n, line in enumerate(lines, 1):
        key, eq, value = line.partition("=")
        while wanted and key != wanted[0] and wanted[0] in OPTIONAL_KEYS:
            wanted.pop(0)
        if not eq or not wanted or key != wanted[0]:
            raise malformed(f"statement line {n}: expected "
                            + (f"'{wanted[0]}=...'" if wanted else "no more lines"))
        wanted.pop(0)
        values[key] = value
    missing = [k for k in wanted if k not in OPTIONAL_KEYS]
    if missing:
        raise malformed(f"statement: '{missing[0]}=' missing")
    if values["format"] != FORMAT:
        raise malformed(f"statement format: expected {FORMAT}")
    if values["image"] not in {t.value for t in ImageType}:
        raise malformed("statement image: expected installer, updater or firmware")
    not_after = values.get("not_after")
    return Statement(
        image=ImageType(values["image"]),
        version=check_number("version", values["version"]),
        platforms=check_platforms(values["platforms"]),
        size=check_number("size", values["size"]),
        sha256=check_hex("sha256", values["sha256"]),
        key_id=check_hex("key", values["key"]),
        not_after=check_number("not_after", not_after) if not_after is not None else None,
    )


def render_block(statement: bytes, signature: bytes) -> bytes:
    """The BLOCK_SIZE bytes appended to the payload."""
    room = BLOCK_SIZE - TRAILER_SIZE
    if not statement or not signature or len(statement) + len(signature) > room:
        raise BuildError(f"the statement ({len(statement)} bytes) and signature "
                         f"({len(signature)} bytes) do not fit the {room} bytes of the "
                         "signature block: name fewer platforms, or '*'")
    trailer = TRAILER_FORMAT % (len(statement), len(signature))
    padding = bytes(room - len(statement) - len(signature))
    block = statement + signature + padding + trailer
    assert len(trailer) == TRAILER_SIZE and len(block) == BLOCK_SIZE
    return block


def read_block(path: Path) -> Block:
    """Find and check the signature block at the end of ``path``; the statement is parsed but
    not yet trusted. Raises a Refusal (unsigned, truncated, trailing-bytes, malformed)."""
    # A FIFO would block and /dev/zero never ends: only a regular file, and only its tail.
    with open_regular(path) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(size - SEARCH_WINDOW, 0))
            window = f.read(SEARCH_WINDOW)
        except OSError as exc:
            raise FileRefused(path, f"cannot read: {exc.strerror}") from None
    match = TRAILER_RE.fullmatch(window[-TRAILER_SIZE:]) if size >= TRAILER_SIZE else None
    if match is None:
        raise classify_unsigned(window)
    if size < BLOCK_SIZE:
        raise Refusal(Reason.TRUNCATED, f"{size} bytes, shorter than a {BLOCK_SIZE}-byte "
                      "signature block")
    s_len, g_len = int(match.group(1)), int(match.group(2))
    if s_len == 0 or g_len == 0 or s_len + g_len > BLOCK_SIZE - TRAILER_SIZE:
        raise malformed(f"trailer: statement {s_len} and signature {g_len} bytes do not fit "
                        "the signature block")
    block = window[-BLOCK_SIZE:]
    if block[s_len + g_len : -TRAILER_SIZE].count(0) != BLOCK_SIZE - TRAILER_SIZE - s_len - g_len:
        raise malformed("padding: expected zero bytes between the signature and the trailer")
    statement_bytes = block[:s_len]
    return Block(statement_bytes, check_statement(statement_bytes), block[s_len : s_len + g_len],
                 size - BLOCK_SIZE)


def classify_unsigned(window: bytes) -> Refusal:
    """Why a file without a trailer at its end is refused: the trailer is there but not at the
    end (trailing bytes), only the statement is left (truncated), or nothing (unsigned)."""
    if TRAILER_MARK in window:
        return Refusal(Reason.TRAILING_BYTES, "bytes follow the signature trailer")
    if STATEMENT_MARK in window:
        return Refusal(Reason.TRUNCATED, "the signature block is cut short")
    return Refusal(Reason.UNSIGNED, "no signature block at the end of the file")


def find_signed(path: Path) -> bool:
    """Whether ``path`` already ends with a signature trailer."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < TRAILER_SIZE:
            return False
        f.seek(size - TRAILER_SIZE)
        return TRAILER_RE.fullmatch(f.read()) is not None


def copy_hashing(src: Path, dest: Path) -> tuple[str, int]:
    """Copy ``src`` to ``dest`` (an open-for-create path) returning its sha256 and size."""
    digest = hashlib.sha256()
    size = 0
    with src.open("rb") as fin, dest.open("wb") as fout:
        while chunk := fin.read(CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def hash_payload(path: Path, size: int) -> str:
    """The sha256 of the first ``size`` bytes of ``path``."""
    digest = hashlib.sha256()
    left = size
    with open_regular(path) as f:
        while left and (chunk := f.read(min(CHUNK, left))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def make_temp_beside(dest: Path) -> Path:
    """A new empty file next to ``dest``, so the final rename stays on one filesystem."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    os.close(fd)
    return Path(tmp)


class Signer(Protocol):
    """Something that signs statement bytes with the private half of ``public_key``
    (builder.signing.signers has a local key and an external command)."""

    @property
    def public_key(self) -> PublicKey:
        """The key whose id goes into the statement and that must verify the signature."""
        ...

    def sign(self, statement: bytes) -> bytes:
        """The signature over the exact statement bytes."""
        ...


def check_sign_inputs(version: int, platforms: tuple[str, ...], not_after: int | None) -> None:
    """Refuse values the statement grammar cannot carry, naming the option."""
    if not 0 <= version <= MAX_NUMBER:
        raise BuildError(f"--version: expected 0 to {MAX_NUMBER}, got {version}")
    if not platforms:
        raise BuildError("--platform: name at least one platform, or '*' for any")
    if "*" in platforms and len(set(platforms)) > 1:
        raise BuildError("--platform: '*' (any platform) cannot be combined with names")
    if platforms != ("*",):
        for name in platforms:
            if not PLATFORM_RE.fullmatch(name):
                raise BuildError(f"--platform: expected a platform string like "
                                 f"'x86_64-acme_s1-r0' ([a-z0-9_-]) or '*', got {name!r}")
    if not_after is not None and not 0 <= not_after <= MAX_NUMBER:
        raise BuildError(f"--not-after: expected a UTC epoch 0 to {MAX_NUMBER}, got {not_after}")


def sign_installer(src: Path, dest: Path, signer: Signer, *, image: ImageType, version: int,
                   platforms: tuple[str, ...], not_after: int | None = None) -> Statement:
    """Write ``dest`` = ``src`` + signature block; nothing is left behind on failure."""
    check_sign_inputs(version, platforms, not_after)
    if not src.is_file():
        raise BuildError(f"{src}: no such installer file")
    if find_signed(src):
        raise BuildError(f"{src}: already signed; sign the original installer")
    tmp = make_temp_beside(dest)
    try:
        sha256, size = copy_hashing(src, tmp)
        statement = Statement(image, version, tuple(dict.fromkeys(platforms)), size, sha256,
                              signer.public_key.key_id, not_after)
        data = statement.render()
        signature = signer.sign(data)
        if not signer.public_key.verifies(signature, data):
            raise BuildError("the signature does not verify with the public key "
                             f"{signer.public_key.key_id} (is it the signer's key?)")
        with tmp.open("ab") as f:
            f.write(render_block(data, signature))
        os.chmod(tmp, public_mode())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return statement
