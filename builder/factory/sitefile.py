"""Reading a site file: loaded like a recipe (``extends:`` works, errors read
``file:line: key.path: message``) into a frozen ``Site``, paths relative to the file that wrote
them. ``check_site_files`` is the separate step that touches the host (installers,
certificates exist)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from builder.errors import RecipeError
from builder.factory.site import Site
from builder.recipe.document import KeyPath, display_name, format_path
from builder.recipe.merge import Merged, load_merged
from builder.recipe.validation import describe_error, resolve_relative

PATH_KEYS = ("installer", "updater")


def load_site(path: Path) -> tuple[Site, Merged]:
    """Load and validate a site file; raise RecipeError listing every problem at once."""
    if not path.is_file():
        raise RecipeError([f"{display_name(path)}: no such site file"])
    merged = load_merged(path)
    data = dict(merged.data)
    data.setdefault("name", path.stem)
    _resolve_paths(data, merged)
    try:
        site = Site.model_validate(data)
    except ValidationError as exc:
        raise RecipeError([describe_error(err, merged, Site) for err in exc.errors()]) from None
    problems = _cross_check(site, merged)
    if problems:
        raise RecipeError(problems)
    return site, merged


def _resolve_paths(data: dict[str, Any], merged: Merged) -> None:
    """Make relative paths relative to the site file that wrote them."""

    def resolve(value: Any, where: KeyPath) -> Any:
        return resolve_relative(value, where, merged)

    for section, keys in (("tls", ("cert", "key", "ca")),):
        block = data.get(section)
        if isinstance(block, dict):
            for key in keys:
                if key in block:
                    block[key] = resolve(block[key], (section, key))
    for section in ("platforms", "devices"):
        entries = data.get(section)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(entry, dict):
                for key in PATH_KEYS:
                    if key in entry:
                        entry[key] = resolve(entry[key], (section, i, key))


def _cross_check(site: Site, merged: Merged) -> list[str]:
    """Problems between entries: duplicates, addresses outside every subnet."""
    problems: list[str] = []

    def where(*loc: str | int) -> str:
        for n in range(len(loc), -1, -1):
            if (found := merged.origins.get(loc[:n])) is not None:
                return f"{found}: {format_path(loc)}"
        return format_path(loc)

    seen: dict[tuple[str, str], int] = {}
    for i, platform in enumerate(site.platforms):
        if (first := seen.setdefault(("platform", platform.platform), i)) != i:
            problems.append(f"{where('platforms', i, 'platform')}: {platform.platform!r} is "
                            f"already listed at platforms[{first}]")
    for i, device in enumerate(site.devices):
        for key in ("mac", "serial", "name", "address"):
            value = getattr(device, key)
            if value is None:
                continue
            if (first := seen.setdefault((key, str(value)), i)) != i:
                problems.append(f"{where('devices', i, key)}: {str(value)!r} is already used by "
                                f"devices[{first}]")
        if device.address is not None and not any(
                s.family == device.address.version and device.address in s.network
                for s in site.subnets):
            problems.append(f"{where('devices', i, 'address')}: {device.address} is in none of "
                            f"the subnets")
    for i, subnet in enumerate(site.subnets):
        for j, other in enumerate(site.subnets[:i]):
            if subnet.family == other.family and subnet.network.overlaps(other.network):
                problems.append(f"{where('subnets', i, 'network')}: {subnet.network} overlaps "
                                f"subnets[{j}] ({other.network})")
    if any(s.family == 6 for s in site.subnets) and site.server.address6 is None:
        problems.append(f"{where('server')}: an IPv6 subnet needs 'server.address6' for its URLs")
    arches = [h.arch for h in site.http_boot]
    for i, arch in enumerate(arches):
        if arch in arches[:i]:
            problems.append(f"{where('http_boot', i, 'arch')}: {arch.value!r} is listed twice")
    return problems


def check_site_files(site: Site) -> None:
    """Raise RecipeError naming every file the site needs that does not exist."""
    wanted: list[tuple[str, Path | None]] = []
    if site.tls is not None:
        wanted += [("tls.cert", site.tls.cert), ("tls.key", site.tls.key), ("tls.ca", site.tls.ca)]
    for section, entries in (("platforms", site.platforms), ("devices", site.devices)):
        for i, entry in enumerate(entries):
            for key in PATH_KEYS:
                wanted.append((f"{section}[{i}].{key}", getattr(entry, key)))
    problems = [f"{key}: no such file {str(path)!r}" for key, path in wanted
                if path is not None and not path.is_file()]
    if problems:
        raise RecipeError([f"site {site.name!r}: {p}" for p in problems])
