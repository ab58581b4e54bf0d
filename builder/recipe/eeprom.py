"""The recipe's ``platform.eeprom`` section: where the switch's ONIE TlvInfo EEPROM lives, and
for a virtual one the values the build encodes into the image (docs/recipes.md, "EEPROM").

Each value is checked with ONIE's own rules (``builder.onie.tlvinfo.Field.of``) when the
recipe loads, so a bad MAC address or date is a recipe error, not a build failure later.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from builder.onie.tlvcodes import Code, TlvInfoError
from builder.onie.tlvinfo import Field as Tlv
from builder.onie.tlvinfo import encode
from builder.recipe.base import Model

PATH_RE = re.compile(r"/[A-Za-z0-9._/@:+-]*")
# Where the `file` source keeps the image unless the recipe says otherwise: ONIE's persistent
# configuration folder on ONIE-BOOT.
DEFAULT_FILE = "/mnt/onie-boot/onie/config/eeprom.bin"


class EepromSource(enum.Enum):
    """Where the EEPROM's bytes are read from and written to at run time."""

    VIRTUAL = "virtual"  # built into the image from `fields`; a QEMU fw_cfg blob overrides it per VM
    SYSFS = "sysfs"  # a kernel EEPROM file, e.g. /sys/bus/i2c/devices/0-0050/eeprom (at24)
    FILE = "file"  # a file on ONIE-BOOT (mounted at /mnt/onie-boot)


# Field name -> TLV code, in the order the build writes them (ONIE's code order).
FIELD_CODES: dict[str, Code] = {
    "product_name": Code.PRODUCT_NAME,
    "part_number": Code.PART_NUMBER,
    "serial_number": Code.SERIAL_NUMBER,
    "base_mac": Code.MAC_BASE,
    "manufacture_date": Code.MANUFACTURE_DATE,
    "device_version": Code.DEVICE_VERSION,
    "label_revision": Code.LABEL_REVISION,
    "platform_name": Code.PLATFORM_NAME,
    "onie_version": Code.ONIE_VERSION,
    "mac_addresses": Code.MAC_ADDRESSES,
    "manufacturer": Code.MANUFACTURER,
    "country_code": Code.COUNTRY_CODE,
    "vendor_name": Code.VENDOR_NAME,
    "diag_version": Code.DIAG_VERSION,
    "service_tag": Code.SERVICE_TAG,
}


class EepromFields(Model):
    """The TLVs of a virtual EEPROM, by name; unset ones are left out of the image."""

    product_name: str | None = None
    part_number: str | None = None
    serial_number: str | None = None
    base_mac: str | None = None  # XX:XX:XX:XX:XX:XX, unicast
    manufacture_date: str | None = None  # MM/DD/YYYY hh:mm:ss
    device_version: int | None = None  # 0-255
    label_revision: str | None = None
    platform_name: str | None = None  # default: the platform string
    onie_version: str | None = None  # default: the recipe's version
    mac_addresses: int | None = None  # 1-65535
    manufacturer: str | None = None
    country_code: str | None = None  # ISO 3166-1 alpha-2
    vendor_name: str | None = None
    diag_version: str | None = None
    service_tag: str | None = None
    # Vendor Extension TLVs (0xFD), each a list of byte values as `onie-syseeprom -s` takes
    # them: "0x00 0x00 0xa6 0x7f 0x01" (the IANA enterprise number first).
    vendor_extensions: list[str] = []

    @field_validator(*FIELD_CODES, mode="after")
    @classmethod
    def _tlv(cls, v: str | int | None, info: ValidationInfo) -> str | int | None:
        if v is not None:
            assert info.field_name is not None
            _check(FIELD_CODES[info.field_name], v)
        return v

    @field_validator("vendor_extensions", mode="after")
    @classmethod
    def _extensions(cls, v: list[str]) -> list[str]:
        for item in v:
            _check(Code.VENDOR_EXTENSION, item)
        return v

    def tlvs(self, platform_name: str, onie_version: str) -> list[Tlv]:
        """The TLVs in code order; Platform Name and ONIE Version default to the given values."""
        defaults = {"platform_name": platform_name, "onie_version": onie_version}
        out: list[Tlv] = []
        for name, code in FIELD_CODES.items():
            value = getattr(self, name)
            value = defaults.get(name) if value is None else value
            if value is not None:
                out.append(Tlv.of(code, value))
        out += [Tlv.of(Code.VENDOR_EXTENSION, item) for item in self.vendor_extensions]
        return out


def _check(code: Code, value: str | int) -> None:
    try:
        Tlv.of(code, value)
    except TlvInfoError as exc:
        message = str(exc)
        raise ValueError(message if repr(value) in message else f"{message}, got {value!r}") from None


class Eeprom(Model):
    """The switch's ONIE TlvInfo EEPROM: its source, its path, and a virtual one's fields."""

    source: EepromSource = EepromSource.VIRTUAL
    path: Annotated[str, Field(max_length=255)] | None = None
    fields: EepromFields = EepromFields()

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and (not PATH_RE.fullmatch(v) or ".." in v.split("/")):
            raise ValueError(f"expected an absolute path in the running environment, got {v!r}")
        return v

    @model_validator(mode="after")
    def _source(self) -> Self:
        if self.source is EepromSource.SYSFS and self.path is None:
            raise ValueError("a 'sysfs' EEPROM needs 'path', e.g. /sys/bus/i2c/devices/0-0050/eeprom")
        if self.source is EepromSource.VIRTUAL and self.path is not None:
            raise ValueError("a 'virtual' EEPROM has no 'path': the build makes it from 'fields'")
        if self.source is not EepromSource.VIRTUAL and self.fields != EepromFields():
            raise ValueError(f"'fields' apply only to a 'virtual' EEPROM, not to {self.source.value!r}")
        try:
            encode(self.fields.tlvs("", ""))
        except TlvInfoError as exc:
            raise ValueError(f"fields: {exc}") from None
        return self

    @property
    def file(self) -> str:
        """The path the guest reads and writes (sysfs, file); empty for a virtual EEPROM."""
        if self.source is EepromSource.FILE:
            return self.path or DEFAULT_FILE
        return self.path or ""
