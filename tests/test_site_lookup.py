"""Finding a device and a platform in a large site (#19): the indexes a Site builds once answer
as the scan over its lists did (serial first, then MAC in any spelling, the first entry wins)."""

from __future__ import annotations

from pathlib import Path

from builder.factory.site import Device, Site
from builder.factory.sitefile import load_site

COUNT = 1000
HEAD = """\
name: big-factory
server:
  address: 10.200.5.1
subnets:
  - network: 10.200.0.0/16
    pool: [10.200.5.50, 10.200.5.60]
platforms:
  - platform: x86_64-acme_a-r0
  - platform: arm64-acme_b-r1
devices:
"""


def mac_of(i: int) -> str:
    return f"52:54:00:{i >> 16 & 0xff:02x}:{i >> 8 & 0xff:02x}:{i & 0xff:02x}"


def device_lines(i: int) -> str:
    """Every third device has only a MAC, every third after it only a serial, the rest both."""
    lines = f"  - name: sw{i}\n"
    if i % 3 != 1:
        lines += f'    mac: "{mac_of(i)}"\n'
    if i % 3 != 0:
        lines += f"    serial: SN{i:05d}\n"
    return lines


def big_site(tmp_path: Path) -> Site:
    path = tmp_path / "site.yaml"
    path.write_text(HEAD + "".join(device_lines(i) for i in range(COUNT)))
    site, _ = load_site(path)
    assert len(site.devices) == COUNT
    return site


def test_a_site_of_1000_devices_finds_each_by_serial_and_by_mac(tmp_path: Path) -> None:
    site = big_site(tmp_path)
    first, last = site.devices[0], site.devices[-1]  # sw0: MAC only; sw999: MAC only
    assert (first.name, first.serial, last.name, last.serial) == ("sw0", None, "sw999", None)
    assert site.find_device(mac=mac_of(0)) is first
    assert site.find_device(mac=mac_of(COUNT - 1)) is last
    assert site.find_device(serial="SN00001") is site.devices[1]
    assert site.find_device(serial="SN00998") is site.devices[998]
    for i, device in enumerate(site.devices):
        if device.serial is not None:
            assert site.find_device(serial=device.serial) is device, i
        if device.mac is not None:
            assert site.find_device(mac=device.mac) is device, i


def test_a_mac_is_found_in_any_spelling(tmp_path: Path) -> None:
    site = big_site(tmp_path)
    last = site.devices[-1]
    plain = mac_of(COUNT - 1)  # 52:54:00:00:03:e7
    for spelling in (plain, plain.upper(), plain.replace(":", "-"), plain.upper().replace(":", "-")):
        assert site.find_device(mac=spelling) is last, spelling
    for wrong in ("5254000003e7", "52:54:00:00:03", "52:54:00:00:03:e7:00", "zz:54:00:00:03:e7",
                  mac_of(COUNT)):
        assert site.find_device(mac=wrong) is None, wrong


def test_serial_first_then_mac(tmp_path: Path) -> None:
    site = big_site(tmp_path)
    by_serial, by_mac = site.devices[2], site.devices[999]
    assert by_serial.serial == "SN00002" and by_serial.mac == mac_of(2)
    # The serial number wins over a MAC that belongs to another device.
    assert site.find_device(serial="SN00002", mac=mac_of(999)) is by_serial
    # An unknown serial number falls back to the MAC; so does an empty one.
    assert site.find_device(serial="SN-UNKNOWN", mac=mac_of(999).upper()) is by_mac
    assert site.find_device(serial="", mac=mac_of(999)) is by_mac
    # A malformed MAC is not looked up: the serial number alone decides.
    assert site.find_device(serial="SN00002", mac="not-a-mac") is by_serial
    assert site.find_device(serial="SN-UNKNOWN", mac="not-a-mac") is None
    assert site.find_device(serial=None, mac=None) is None
    # Serial numbers are compared as written (the status store's keys are too).
    assert site.find_device(serial="sn00002") is None


def test_platforms_are_found_by_name(tmp_path: Path) -> None:
    site = big_site(tmp_path)
    entry = site.platform("arm64-acme_b-r1")
    assert entry is not None and entry is site.platforms[1]
    assert site.platform("arm64-acme_b-r0") is None


def test_the_first_entry_wins_and_a_copy_gets_its_own_indexes() -> None:
    # load_site refuses duplicates; a Site made in code keeps the scan's answer (the first).
    one = Device(serial="SN1", mac="52:54:00:00:00:01", name="one")
    two = Device(serial="SN1", mac="52:54:00:00:00:02", name="two")
    site = Site.model_validate({"name": "dup", "server": {"address": "10.0.0.1"},
                                "devices": [one, two]})
    assert site.find_device(serial="SN1") is site.devices[0]
    assert site.find_device(mac="52:54:00:00:00:02") is site.devices[1]
    three = Device(serial="SN3", name="three")
    copy = site.model_copy(update={"devices": [three]})
    assert copy.find_device(serial="SN3") is three
    assert copy.find_device(serial="SN1") is None
    assert site.find_device(serial="SN3") is None
