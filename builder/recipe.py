"""The recipe model: loading, inheritance, validation and the frozen ``Recipe`` value.

Validation goes through pydantic (typed, frozen models with ``extra="forbid"``); every
problem is reported at once as ``file:line: key.path: message, got 'value'``.
"""

from __future__ import annotations

import difflib
import enum
import re
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from builder.cpio import Compression
from builder.document import KeyPath, Location, format_path
from builder.errors import RecipeError
from builder.merge import Merged, load_merged

NAME_RE = re.compile(r"^[a-z0-9]+$")
MACHINE_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)


class Arch(enum.Enum):
    """A target architecture, named as ONIE names it, with what each tool calls it."""

    X86_64 = "x86_64"
    ARM64 = "arm64"

    @property
    def debian(self) -> str:
        """Debian's name for the architecture."""
        return {"x86_64": "amd64", "arm64": "arm64"}[self.value]

    @property
    def elf_machine(self) -> str:
        """The ELF ``e_machine`` every binary of this architecture must carry."""
        return {"x86_64": "EM_X86_64", "arm64": "EM_AARCH64"}[self.value]


class Model(BaseModel):
    """Base of every recipe section: frozen, no unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Console(Model):
    """The serial console the environment talks on."""

    device: str = "ttyS0"
    speed: int = 115200

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"tty[A-Za-z]*[0-9]+", v):
            raise ValueError(f"expected a tty device name like 'ttyS0', got {v!r}")
        return v

    @field_validator("speed")
    @classmethod
    def _speed(cls, v: int) -> int:
        if v not in BAUD_RATES:
            raise ValueError(f"expected one of {', '.join(map(str, BAUD_RATES))}, got {v!r}")
        return v


class Platform(Model):
    """A platform's identity, named by ONIE's rules (machine is ``<vendor>_<model>``)."""

    vendor: str
    machine: str
    machine_rev: Annotated[int, Field(ge=0, le=255)] = 0
    arch: Arch
    switch_asic: str
    vendor_id: Annotated[int, Field(ge=1, le=4294967295)]
    console: Console = Console()
    description: str = ""

    @field_validator("vendor")
    @classmethod
    def _vendor(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"expected lower-case letters and digits (ONIE vendor name), got {v!r}")
        return v

    @field_validator("machine", "switch_asic")
    @classmethod
    def _lower_name(cls, v: str) -> str:
        if not MACHINE_RE.match(v):
            raise ValueError(f"expected lower-case letters, digits and '_', got {v!r}")
        return v

    @model_validator(mode="after")
    def _machine_prefix(self) -> Self:
        if not self.machine.startswith(self.vendor + "_"):
            raise ValueError(f"machine: expected '<vendor>_<model>' starting with "
                             f"'{self.vendor}_', got {self.machine!r}")
        return self

    @property
    def platform_string(self) -> str:
        """ONIE's platform string ``<arch>-<machine>-r<rev>``."""
        return f"{self.arch.value}-{self.machine}-r{self.machine_rev}"


class Source(Model):
    """Where a component comes from: a Debian package, a URL pinned by sha256, or a local file."""

    debian: str | None = None
    version: str | None = None
    url: str | None = None
    sha256: str | None = None
    path: Path | None = None

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: str | None) -> str | None:
        if v is not None and not SHA256_RE.match(v):
            raise ValueError(f"expected 64 lower-case hex digits, got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [k for k in ("debian", "url", "path") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("expected exactly one of 'debian', 'url' or 'path'"
                             + (f", got {' and '.join(given)}" if given else ""))
        if self.url is not None and self.sha256 is None:
            raise ValueError("a 'url' source needs 'sha256' to pin its content")
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError(f"url: expected an http(s) URL, got {self.url!r}")
        if self.version is not None and self.debian is None:
            raise ValueError("'version' applies only to a 'debian' source")
        return self

    @property
    def is_package(self) -> bool:
        """True when the source is a .deb (from Debian, a URL or a local file)."""
        if self.debian is not None:
            return True
        name = self.url if self.url is not None else str(self.path)
        return name.endswith(".deb")


def _in_tree(v: str) -> str:
    if not v.startswith("/") or ".." in v.split("/"):
        raise ValueError(f"expected an absolute path inside the image, got {v!r}")
    return v


InTreePath = Annotated[str, AfterValidator(_in_tree)]


class Component(Source):
    """Files for the initramfs: ELF ``binaries`` (with their libraries) or plain ``files``."""

    binaries: list[InTreePath] = []
    files: list[InTreePath] = []
    dest: InTreePath | None = None
    mode: Annotated[int, Field(ge=0, le=0o7777)] = 0o644

    @model_validator(mode="after")
    def _what_to_install(self) -> Self:
        if self.is_package and not (self.binaries or self.files):
            raise ValueError("a package component needs 'binaries' or 'files' to install")
        if not self.is_package and self.dest is None:
            raise ValueError("a single-file component needs 'dest'")
        return self


class Kernel(Source):
    """The kernel: a Debian kernel package (or metapackage), the modules wanted, the command line."""

    modules: list[str] = []
    cmdline: str = ""


class Initramfs(Model):
    """What goes into the initramfs besides the kernel modules and rendered templates."""

    @model_validator(mode="after")
    def _level(self) -> Self:
        levels = self.compression.levels
        if self.compression_level is not None and self.compression_level not in levels:
            span = f"{levels.start} to {levels.stop - 1}" if levels else "no level"
            raise ValueError(f"compression_level: {self.compression.value} takes {span}, "
                             f"got {self.compression_level}")
        return self

    compression: Compression = Compression.XZ
    compression_level: int | None = None
    components: list[Component] = []
    overlays: list[Path] = []


class DebianArchive(Model):
    """Which Debian archive packages come from; by default the host's apt sources."""

    mirror: str | None = None
    suites: list[str] = []
    components: list[str] = ["main"]


class Discovery(Model):
    """What the environment does after boot (issue #3 extends this)."""

    shell: bool = True
    after_install: str = "reboot"


class Recipe(Model):
    """A fully resolved platform recipe."""

    name: str
    version: str = "2026.11"
    platform: Platform
    debian: DebianArchive = DebianArchive()
    kernel: Kernel
    initramfs: Initramfs = Initramfs()
    templates: list[Path] = []
    discovery: Discovery = Discovery()

    @property
    def platform_string(self) -> str:
        """ONIE's platform string, e.g. ``x86_64-qemu_x86_64-r0``."""
        return self.platform.platform_string


# pydantic's wording for the common type errors, said the way the rest of our messages are.
PLAIN_MESSAGES = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "string_type": "expected a string",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "greater_than_equal": "expected a number >= {ge}",
    "less_than_equal": "expected a number <= {le}",
    "path_type": "expected a path",
}

PATH_FIELDS: tuple[KeyPath, ...] = (("templates",), ("initramfs", "overlays"))


def load_recipe(path: Path) -> tuple[Recipe, Merged]:
    """Load, merge and validate a recipe file; raise RecipeError listing every problem."""
    merged = load_merged(path)
    data = dict(merged.data)
    data.setdefault("name", path.stem)
    _resolve_paths(data, merged)
    try:
        return Recipe.model_validate(data), merged
    except ValidationError as exc:
        raise RecipeError([_describe(err, merged) for err in exc.errors()]) from None


def _resolve_paths(data: dict[str, Any], merged: Merged) -> None:
    """Make relative paths relative to the file that wrote them, not the current folder."""

    def resolve(value: Any, where: KeyPath) -> Any:
        if not isinstance(value, str) or value.startswith("/"):
            return value
        origin = merged.origins.get(where)
        base = Path(origin.file).parent if origin else Path.cwd()
        return str((base / value).resolve())

    for key in PATH_FIELDS:
        node: Any = data
        for part in key[:-1]:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        items = node.get(key[-1]) if isinstance(node, dict) else None
        if isinstance(items, list):
            node[key[-1]] = [resolve(v, (*key, i)) for i, v in enumerate(items)]
    for section, listed in (("kernel", False), ("initramfs", True)):
        block = data.get(section)
        if not isinstance(block, dict):
            continue
        entries = block.get("components") if listed else [block]
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            if isinstance(entry, dict) and "path" in entry:
                where = (section, "components", i, "path") if listed else (section, "path")
                entry["path"] = resolve(entry["path"], where)


def _describe(err: Any, merged: Merged) -> str:
    """Turn one pydantic error into ``file:line: key.path: message``."""
    loc: KeyPath = tuple(err["loc"])
    kind = err["type"]
    where = _location(loc, merged)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(known)}"
        return f"{where}: {format_path(loc)}: unknown key{hint}"
    if kind == "missing":
        return f"{where}: {format_path(loc)}: required key missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind in PLAIN_MESSAGES:
        msg = PLAIN_MESSAGES[kind].format(**err.get("ctx", {}))
        return f"{where}: {format_path(loc)}: {msg}, got {err['input']!r}"
    if kind == "enum":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{where}: {format_path(loc)}: expected one of {expected}, got {err['input']!r}"
    if kind.startswith("value_error") or "got " in msg:
        return f"{where}: {format_path(loc)}: {msg}"
    return f"{where}: {format_path(loc)}: {msg[0].lower()}{msg[1:]}, got {err['input']!r}"


def _location(loc: KeyPath, merged: Merged) -> Location | str:
    """The location of the deepest known part of ``loc``."""
    for n in range(len(loc), -1, -1):
        if (found := merged.origins.get(loc[:n])) is not None:
            return found
    return str(merged.files[-1]) if merged.files else "recipe"


def _known_keys(loc: KeyPath) -> list[str]:
    """The keys the model at ``loc`` accepts, for "did you mean"."""
    model: type[BaseModel] = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        inner = getattr(ann, "__args__", (ann,))
        found = [t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)]
        if not found:
            return []
        model = found[0]
    return sorted(model.model_fields)
