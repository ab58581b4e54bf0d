"""What a recipe's ``ssh`` section adds to an image (docs/commands.md, "SSH").

Dropbear (``dropbear-bin``, brought by ``builder.recipe.implied``) for root with the recipe's
OpenSSH public keys, key-only; its rc script (``templates/guest/etc/ssh-rc.j2``) makes the host
key on first boot, keeps it on ONIE-BOOT when it is mounted, and starts the server, and BusyBox
telnetd only when the recipe turns telnet on. Here: the keys checked and written as
``/root/.ssh/authorized_keys``, the account files dropbear looks root up in, the rc script's
values, the manifest's ``ssh`` section and the build's warning for telnet.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from builder.errors import BuildError
from builder.files import FileRefused, read_bounded
from builder.initramfs.tree import Tree
from builder.recipe.model import Recipe

PATHS = {
    "home": "/root",
    "ssh_dir": "/root/.ssh",
    "authorized_keys": "/root/.ssh/authorized_keys",
    "passwd": "/etc/passwd",
    "group": "/etc/group",
    "shells": "/etc/shells",
    "run": "/run/onie/ssh",
    "log": "/var/log/dropbear.log",
}
# The rc script: after S01onie-boot (the host key may live on ONIE-BOOT), before the embed and
# uninstall rc scripts, so an operator can watch those over SSH.
TEMPLATES = (("guest/etc/ssh-rc.j2", "/etc/rc.d/S02ssh", 0o755),)
MAX_KEYS_FILE = 1 << 20  # an authorized_keys file the recipe names; more is not one
MIN_RSA_BITS = 2048
# What dropbear and today's OpenSSH both take: no DSA (OpenSSH dropped it), no certificates.
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "ssh-rsa")
TELNET_PORT = 23
# root has no password ('*' matches none: dropbear's -s/-g refuse passwords anyway); its shell
# must be listed in /etc/shells or dropbear refuses the login.
PASSWD = b"root:*:0:0:root:/root:/bin/sh\n"
GROUP = b"root:x:0:\n"
SHELLS = b"/bin/sh\n/bin/ash\n"


@dataclass(frozen=True)
class AuthorizedKey:
    """One checked public key: its type, base64 blob and comment, and where it came from."""

    type: str
    blob: str
    comment: str
    where: str

    @property
    def fingerprint(self) -> str:
        """OpenSSH's ``SHA256:`` fingerprint (``ssh-keygen -lf``)."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def line(self) -> str:
        """The key as an authorized_keys line."""
        return " ".join(x for x in (self.type, self.blob, self.comment) if x)


def parse_authorized_keys(text: str, where: str) -> list[AuthorizedKey]:
    """Read an OpenSSH authorized_keys file: one key a line, ``#`` comments; errors name the
    file and line. Options before a key (``command=``...) and weak key types are refused."""
    keys: list[AuthorizedKey] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        at = f"{where}:{number}: ssh.authorized_keys"
        fields = line.split(None, 2)
        if len(fields) < 2:
            raise BuildError(f"{at}: expected 'TYPE BASE64 [COMMENT]', got {line[:40]!r}")
        if fields[0] not in KEY_TYPES:
            raise BuildError(f"{at}: expected a key of type {', '.join(KEY_TYPES)} (options "
                             f"before the key are not supported), got {fields[0][:40]!r}")
        try:
            key = load_ssh_public_key(" ".join(fields[:2]).encode())
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise BuildError(f"{at}: expected an OpenSSH public key, got {fields[0]} "
                             f"{fields[1][:20]!r}... ({exc})") from None
        check_strength(key, at)
        comment = fields[2] if len(fields) == 3 else ""
        if not comment.isprintable():
            raise BuildError(f"{at}: the comment has control characters")
        keys.append(AuthorizedKey(fields[0], fields[1], comment, f"{Path(where).name}:{number}"))
    return keys


def check_strength(key: object, at: str) -> None:
    """RSA keys of 2048 bits or more (the types are checked by name before)."""
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise BuildError(f"{at}: expected an RSA key of at least {MIN_RSA_BITS} bits, "
                         f"got {key.key_size}")


def load_authorized_keys(recipe: Recipe) -> list[AuthorizedKey]:
    """Every key of every file the recipe lists, checked; a key listed twice is an error."""
    keys: list[AuthorizedKey] = []
    seen: dict[str, str] = {}
    for path in recipe.ssh.authorized_keys:
        try:
            text = read_bounded(path, MAX_KEYS_FILE).decode()
        except (FileRefused, UnicodeDecodeError) as exc:
            raise BuildError(f"{path}: ssh.authorized_keys: cannot read it ({exc})") from None
        found = parse_authorized_keys(text, str(path))
        if not found:
            raise BuildError(f"{path}: ssh.authorized_keys: the file holds no key")
        for key in found:
            if key.blob in seen:
                raise BuildError(f"{path}: ssh.authorized_keys: {key.where} is the same key "
                                 f"as {seen[key.blob]}")
            seen[key.blob] = key.where
        keys += found
    return keys


def input_files(recipe: Recipe) -> list[Path]:
    """Host files a build reads for SSH (a change rebuilds the image)."""
    return list(recipe.ssh.authorized_keys)


def templates(recipe: Recipe) -> list[tuple[str, str, int]]:
    """The rc script, when SSH or telnet is on."""
    return list(TEMPLATES) if recipe.ssh.on or recipe.ssh.telnet else []


def install_ssh(tree: Tree, recipe: Recipe) -> None:
    """Root's authorized keys (0600 in a 0700 folder) and the account files dropbear reads."""
    if not recipe.ssh.on:
        return
    keys = load_authorized_keys(recipe)
    tree.add_dir(PATHS["home"], 0o700)
    tree.add_dir(PATHS["ssh_dir"], 0o700)
    data = "".join(f"{k.line()}\n" for k in keys).encode()
    tree.add_file(PATHS["authorized_keys"], data=data, mode=0o600, origin="ssh:authorized_keys")
    for key, data in (("passwd", PASSWD), ("group", GROUP), ("shells", SHELLS)):
        if PATHS[key] not in tree:
            tree.add_file(PATHS[key], data=data, mode=0o644, origin="ssh")


def render_warnings(recipe: Recipe) -> list[str]:
    """What the build warns about: telnet gives a root shell without a password."""
    if not recipe.ssh.telnet:
        return []
    return [f"ssh.telnet is on: BusyBox telnetd on port {TELNET_PORT} gives anyone who reaches "
            "the switch a root shell without a password"]


def describe_ssh(recipe: Recipe) -> dict[str, Any]:
    """The manifest's ``ssh`` section: on or off, the port, each key's fingerprint, telnet."""
    keys = load_authorized_keys(recipe) if recipe.ssh.on else []
    return {"enabled": recipe.ssh.on, "port": recipe.ssh.port, "telnet": recipe.ssh.telnet,
            "authorized_keys": [{"type": k.type, "fingerprint": k.fingerprint, "from": k.where}
                                for k in keys]}


def template_values(recipe: Recipe) -> dict[str, Any]:
    """What guest/etc/ssh-rc.j2 renders."""
    return {"ssh": {"enabled": recipe.ssh.on, "port": recipe.ssh.port,
                    "telnet": recipe.ssh.telnet, "telnet_port": TELNET_PORT,
                    "run": PATHS["run"], "log": PATHS["log"]}}
