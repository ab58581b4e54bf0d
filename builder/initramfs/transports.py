"""What a recipe's ``transports`` section adds to an image (docs/transports.md).

HTTPS with checked certificates (``templates/guest/discovery/lib/https.sh.j2``), iSCSI boot per
RFC 4173 (``templates/guest/discovery/iscsi.sh.j2`` with
``templates/guest/discovery/lib/rootpath.sh.j2``) and IPv6 with DHCPv6
(``templates/guest/discovery/ipv6.sh.j2``). Each part brings Debian components and kernel modules
(``builder.recipe.implied``), files (``install_transports``: the CA bundle, the CHAP secrets)
and the values its template renders (``template_values``). Seams:
``builder/components/resolve.py`` resolves the implied components with the recipe's own,
``builder/initramfs/assemble.py`` adds the modules, files and values;
``templates/guest/discovery.sh.j2`` includes the templates.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from builder.errors import BuildError
from builder.files import FileRefused, read_bounded
from builder.initramfs.tree import Tree
from builder.recipe.implied import ISCSI_MODULES
from builder.recipe.model import Recipe

PATHS = {
    "ca": "/etc/onie/https/ca.pem",
    "chap": "/etc/onie/iscsi/chap",
    "run": "/run/onie/transports",
    "dhcpcd_conf": "/lib/onie/dhcpcd.conf",
    "dhcpcd_hook": "/lib/onie/dhcpcd.hook",
}
# The prefix of the default initiator name: <prefix>:<machine>:<serial> (RFC 3720 3.2.6.3.1).
MAX_PEM_FILE = 1 << 20  # a CA bundle or CHAP file the recipe names; more is not one
INITIATOR_PREFIX = "iqn.2024-01.org.onie-builder"
CHAP_USER_RE = re.compile(r"[A-Za-z0-9._:@-]{1,255}")
CHAP_TARGET_RE = re.compile(r"\*|(?:iqn|eui|naa)\.[A-Za-z0-9.:-]{1,219}")
CHAP_SECRET_MIN = 12  # RFC 3720 section 8.2.1: at least 96 bits
CHAP_SECRET_MAX = 255  # open-iscsi's AUTH_STR_MAX_LEN less the NUL


@dataclass(frozen=True)
class ChapEntry:
    """One line of the CHAP secrets file: the target ('*' for any), then each direction."""

    target: str
    user: str
    secret: str
    target_user: str | None = None
    target_secret: str | None = None


def input_files(recipe: Recipe) -> list[Path]:
    """Host files a build reads for the transports (a change rebuilds the image)."""
    chap = recipe.transports.iscsi.chap
    return [*recipe.transports.https.ca, *([chap] if chap else [])]


def floor_epoch(floor: str, source_date_epoch: int) -> int:
    """The validity-date floor: the build time, none (0) or a given UTC date."""
    if floor == "build":
        return source_date_epoch
    if floor == "none":
        return 0
    day = datetime.date.fromisoformat(floor)
    return int(datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp())


def make_ca_bundle(paths: list[Path]) -> bytes:
    """The CA certificates of every file, checked and written back as one PEM bundle."""
    out: list[bytes] = []
    for path in paths:
        try:
            certs = x509.load_pem_x509_certificates(read_bounded(path, MAX_PEM_FILE))
        except (FileRefused, ValueError) as exc:
            raise BuildError(f"{path}: transports.https.ca: expected PEM certificates ({exc})") from None
        out += [c.public_bytes(serialization.Encoding.PEM) for c in certs]
    return b"".join(out)


def parse_chap(text: str, where: str) -> list[ChapEntry]:
    """Read a CHAP secrets file (docs/transports.md); errors name the line, never the secret."""
    entries: list[ChapEntry] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        at = f"{where}:{number}"
        if len(fields) not in (3, 5):
            raise BuildError(f"{at}: expected 'TARGET USER SECRET [TARGET_USER TARGET_SECRET]', "
                             f"got {len(fields)} fields")
        if not CHAP_TARGET_RE.fullmatch(fields[0]):
            raise BuildError(f"{at}: expected an iSCSI target name or '*', got {fields[0]!r}")
        for user in fields[1::2]:
            if not CHAP_USER_RE.fullmatch(user):
                raise BuildError(f"{at}: expected a CHAP user name of letters, digits and ._:@-, "
                                 f"got {user!r}")
        for secret in fields[2::2]:
            if not CHAP_SECRET_MIN <= len(secret) <= CHAP_SECRET_MAX or not secret.isprintable():
                raise BuildError(f"{at}: a CHAP secret must be {CHAP_SECRET_MIN} to {CHAP_SECRET_MAX} "
                                 "printable characters (RFC 3720 section 8.2.1)")
        if len(fields) == 5 and fields[2] == fields[4]:
            raise BuildError(f"{at}: the target's secret must differ from the initiator's "
                             "(RFC 3720 section 8.2.1)")
        entries.append(ChapEntry(*fields))
    return entries


def render_chap(entries: list[ChapEntry]) -> bytes:
    """The secrets file as the guest reads it: one entry per line, five fields, '-' for none."""
    lines = [" ".join([e.target, e.user, e.secret, e.target_user or "-", e.target_secret or "-"])
             for e in entries]
    return "".join(f"{line}\n" for line in lines).encode()


def install_transports(tree: Tree, recipe: Recipe) -> None:
    """Put the CA bundle and the CHAP secrets file (mode 0600, marked secret) into the tree."""
    t = recipe.transports
    if t.https.ca:
        tree.add_file(PATHS["ca"], data=make_ca_bundle(t.https.ca), mode=0o644,
                      origin="transports:https.ca")
    if t.iscsi.enabled and t.iscsi.chap is not None:
        try:
            text = read_bounded(t.iscsi.chap, MAX_PEM_FILE).decode()
        except (FileRefused, UnicodeDecodeError) as exc:
            raise BuildError(f"{t.iscsi.chap}: transports.iscsi.chap: cannot read it ({exc})") from None
        tree.add_file(PATHS["chap"], data=render_chap(parse_chap(text, str(t.iscsi.chap))),
                      mode=0o600, origin="transports:iscsi.chap", secret=True)


def template_values(recipe: Recipe, source_date_epoch: int) -> dict[str, Any]:
    """What guest/discovery/lib/https.sh.j2, guest/discovery/iscsi.sh.j2 and
    guest/discovery/ipv6.sh.j2 render."""
    t = recipe.transports
    return {
        "https": {
            "ca_file": PATHS["ca"],
            "has_ca": 1 if t.https.ca else 0,
            "pins": list(t.https.pins),
            "floor": floor_epoch(t.https.floor, source_date_epoch),
            "redirects": t.https.redirects,
            "run": f"{PATHS['run']}/https",
        },
        "iscsi": {
            "enabled": t.iscsi.enabled,
            "root_paths": list(t.iscsi.root_paths),
            "initiator": t.iscsi.initiator or "",
            "initiator_prefix": INITIATOR_PREFIX,
            "chap_file": PATHS["chap"] if t.iscsi.chap is not None else "",
            "isns": list(t.iscsi.isns),
            "tpgt": t.iscsi.tpgt,
            "timeout": t.iscsi.timeout,
            "modules": list(ISCSI_MODULES),
            "run": f"{PATHS['run']}/iscsi",
        },
        "ipv6": {
            "enabled": t.ipv6.enabled,
            "dhcpv6": t.ipv6.enabled and t.ipv6.dhcpv6,
            "wait_ms": round(t.ipv6.wait * 1000),
            "dhcpcd_conf": PATHS["dhcpcd_conf"],
            "dhcpcd_hook": PATHS["dhcpcd_hook"],
            "run": f"{PATHS['run']}/ipv6",
        },
    }
