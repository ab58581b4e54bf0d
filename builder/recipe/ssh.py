"""The recipe's ``ssh`` section: operator access to a running environment (docs/recipes.md, "SSH").

Dropbear, key-only: on when the recipe lists authorized keys (or says ``enabled: true``, which
then needs keys: a server that refuses every login is no way in). BusyBox telnetd, with no
authentication at all, stays off unless ``telnet: true``; the build then warns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, model_validator

from builder.recipe.base import Model


class Ssh(Model):
    """Dropbear with the recipe's OpenSSH public keys for root; telnet as an opt-in."""

    enabled: bool | None = None  # default: on when authorized_keys lists a file
    authorized_keys: list[Path] = []  # OpenSSH public key files (authorized_keys format)
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    telnet: bool = False  # BusyBox telnetd on port 23: a root shell for anyone on the network

    @model_validator(mode="after")
    def _keys(self) -> Self:
        if self.enabled and not self.authorized_keys:
            raise ValueError("authorized_keys: expected at least one public key file when "
                             "'enabled' is true (logins are key-only)")
        if self.telnet and self.port == 23 and self.on:
            raise ValueError("port: 23 is telnet's when 'telnet' is true")
        return self

    @property
    def on(self) -> bool:
        """Dropbear runs in the environment."""
        return bool(self.authorized_keys) if self.enabled is None else self.enabled
