"""The site file: the example loads; every bad input gets its exact message."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import RecipeError
from builder.factory.sitefile import check_site_files, load_site
from tests.conftest import ROOT

GOOD = """\
name: lab
server:
  address: 10.200.5.1
subnets:
  - network: 10.200.5.0/24
    pool: [10.200.5.50, 10.200.5.60]
"""


def load(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_site(path)
    return [p.replace(str(path), "site.yaml") for p in info.value.problems]


def test_the_example_site_loads() -> None:
    site, _ = load_site(ROOT / "examples" / "site.yaml")
    assert site.name == "example-factory"
    assert site.devices[0].mac == "52:54:00:12:34:56"  # unquoted in YAML: read as base 60, undone
    assert site.devices[0].installer == ROOT / "examples" / "installers" / "nos-x86_64-canary.bin"
    assert site.tls is not None and site.tls.ca == ROOT / "examples" / "tls" / "ca.pem"
    assert site.url("onie-installer-x86_64-accton_as7726_32x-r0") == \
        "http://192.0.2.1:8080/onie-installer-x86_64-accton_as7726_32x-r0"
    assert site.url("onie-installer", family=6) == "http://[2001:db8:0:1::1]:8080/onie-installer"
    found = site.find_device(mac="52-54-00-12-34-56")
    assert found is not None and found.name == "rack1-leaf1"
    assert site.find_device(serial="AS4564-0042") is site.devices[1]
    assert site.find_device(serial="nope", mac="nope") is None


def test_a_minimal_site(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(GOOD)
    site, _ = load_site(path)
    assert site.name == "lab" and site.server.http_port == 8080
    assert site.url("x") == "http://10.200.5.1:8080/x"
    assert site.status is None  # reports off


def test_extends_and_https_urls(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(GOOD)
    (tmp_path / "tls").mkdir()
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nname: child\nserver:\n  name: onie.factory.test\n"
                     "  https_port: 443\n  scheme: https\ntls:\n  cert: tls/a.pem\n  key: tls/a.key\n")
    site, _ = load_site(child)
    assert site.url("onie-installer") == "https://onie.factory.test/onie-installer"
    assert site.tls is not None and site.tls.cert == tmp_path / "tls" / "a.pem"
    with pytest.raises(RecipeError) as info:
        check_site_files(site)
    assert info.value.problems == [f"site 'child': tls.cert: no such file '{tmp_path}/tls/a.pem'",
                                   f"site 'child': tls.key: no such file '{tmp_path}/tls/a.key'"]


def test_status_reports_need_no_token(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(GOOD + "status:\n  max_body: 2048\n")
    site, _ = load_site(path)
    assert site.status is not None and site.status.max_body == 2048 and site.status.log_tail == 16384


BAD = [
    ("server:\n  address: 10.200.5.1\n  adress6: ::1\n",
     "site.yaml:4: server.adress6: unknown key; did you mean 'address6'?"),
    ("server:\n  address: 10.200.5.999\n",
     "site.yaml:3: server.address: expected an IPv4 address, got '10.200.5.999'"),
    ("server:\n  address: 10.200.5.1\n  http_port: 70000\n",
     "site.yaml:4: server.http_port: expected a number <= 65535, got 70000"),
    ("server:\n  address: 10.200.5.1\n  scheme: https\n",
     "site.yaml:2: server: scheme: 'https' needs 'https_port' (and a 'tls' section)"),
    ("server:\n  address: 10.200.5.1\n  https_port: 8443\n",
     "site.yaml:1: (top level): server.https_port needs a 'tls' section (cert and key)"),
    ("server:\n  address: 10.200.5.1\n  scheme: ftp\n",
     "site.yaml:4: server.scheme: expected one of 'http' or 'https', got 'ftp'"),
    ("server:\n  address: 10.200.5.1\nstatus:\n  token_file: status.token\n",
     "site.yaml:4: status: 'token' and 'token_file' are gone: a token baked into the image can "
     "be downloaded by anyone; devices now sign reports with keys of their own "
     "(docs/factory.md, \"Status protocol\")"),
    ("server:\n  address: 10.200.5.1\nsubnets:\n  - network: 10.200.5.0/24\n"
     "    pool: [10.200.6.1, 10.200.6.9]\n",
     "site.yaml:5: subnets[0]: pool: 10.200.6.1 is not in 10.200.5.0/24"),
    ("server:\n  address: 10.200.5.1\nsubnets:\n  - network: 10.200.5.0/24\n"
     "    pool: [10.200.5.9, 10.200.5.1]\n",
     "site.yaml:5: subnets[0]: pool: the first address must not come after the last, "
     "got 10.200.5.9 - 10.200.5.1"),
    ("server:\n  address: 10.200.5.1\nplatforms:\n  - platform: x86_64-qemu-r0\n",
     "site.yaml:5: platforms[0].platform: expected an ONIE platform string "
     "'<arch>-<vendor>_<model>-r<rev>' such as 'x86_64-qemu_x86_64-r0', got 'x86_64-qemu-r0'"),
    ("server:\n  address: 10.200.5.1\nplatforms:\n  - platform: x86_64-qemu_x86_64-r0\n"
     "    instaler: a.bin\n",
     "site.yaml:6: platforms[0].instaler: unknown key; did you mean 'installer'?"),
    ("server:\n  address: 10.200.5.1\ndevices:\n  - name: sw1\n",
     "site.yaml:5: devices[0]: expected 'mac', 'serial' or both to identify the device"),
    ("server:\n  address: 10.200.5.1\ndevices:\n  - mac: 52:54:00:12:34\n",
     "site.yaml:5: devices[0].mac: expected a MAC address like '52:54:00:12:34:56' (quote it)"),
    ("server:\n  address: 10.200.5.1\ndevices:\n  - mac: 'zz:54:00:12:34:56'\n",
     "site.yaml:5: devices[0].mac: expected a MAC address like '52:54:00:12:34:56', "
     "got 'zz:54:00:12:34:56'"),
    ("server:\n  address: 10.200.5.1\ndevices:\n  - serial: 'a b'\n",
     "site.yaml:5: devices[0].serial: expected 1-64 letters, digits, '.', '_' or '-', got 'a b'"),
    ("server:\n  address: 10.200.5.1\ndevices:\n  - serial: A1\n    address: 10.200.5.7\n",
     "site.yaml:5: devices[0]: address: a fixed address needs 'mac' (DHCP knows devices by MAC)"),
    ("server:\n  address: 10.200.5.1\ndevices:\n  - serial: A1\n    iscsi_root: 'iscsi:10.0.0.1'\n",
     "site.yaml:6: devices[0].iscsi_root: expected an RFC 4173 root path 'iscsi:<server>:<protocol>:"
     "<port>:<LUN>:<target>', got 'iscsi:10.0.0.1'"),
    ("server:\n  address: 10.200.5.1\ndevices:\n  - serial: A1\n    iscsi_root: 'iscsi:a::3260:1:t \"x\"'\n",
     "site.yaml:6: devices[0].iscsi_root: expected an iSCSI root path without spaces, quotes or "
     "commas, got 'iscsi:a::3260:1:t \"x\"'"),
    ("server:\n  address: 10.200.5.1\nhttp_boot:\n  - arch: x86_64\n    image: ../etc/passwd\n",
     "site.yaml:6: http_boot[0].image: expected a relative path inside out/, got '../etc/passwd'"),
    ("server:\n  address: 10.200.5.1\nstatus:\n  silent_after: 5\n",
     "site.yaml:5: status.silent_after: expected whole seconds from 10 to 604800 (7 days), got 5: "
     "a download's progress reaches the state database every 3 s, so a shorter silence would "
     "call running downloads silent"),
    ("server:\n  address: 10.200.5.1\nstatus:\n  silent_after: 15m\n",
     "site.yaml:5: status.silent_after: expected an integer, got '15m'"),
    ("server:\n  address: 10.200.5.1\nhttp_boot:\n  - arch: mips\n    image: a.efi\n",
     "site.yaml:5: http_boot[0].arch: expected one of 'x86_64' or 'arm64', got 'mips'"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_site_files(tmp_path: Path, text: str, message: str) -> None:
    assert load(tmp_path, "name: lab\n" + text) == [message]


def test_cross_checks_report_every_problem(tmp_path: Path) -> None:
    problems = load(tmp_path, GOOD + """\
  - network: 10.200.5.128/25
    pool: [10.200.5.130, 10.200.5.140]
  - network: fd00:5::/64
    pool: ["fd00:5::10", "fd00:5::20"]
platforms:
  - platform: x86_64-qemu_x86_64-r0
  - platform: x86_64-qemu_x86_64-r0
devices:
  - mac: "52:54:00:00:00:01"
    serial: S1
    address: 10.200.9.9
  - mac: "52-54-00-00-00-01"
    serial: S1
http_boot:
  - {arch: x86_64, image: a.efi}
  - {arch: x86_64, image: b.efi}
""")
    assert problems == [  # sorted by file and line (#20)
        "site.yaml:2: server: an IPv6 subnet needs 'server.address6' for its URLs",
        "site.yaml:7: subnets[1].network: 10.200.5.128/25 overlaps subnets[0] (10.200.5.0/24)",
        "site.yaml:13: platforms[1].platform: 'x86_64-qemu_x86_64-r0' is already listed at platforms[0]",
        "site.yaml:17: devices[0].address: 10.200.9.9 is in none of the subnets",
        "site.yaml:18: devices[1].mac: '52:54:00:00:00:01' is already used by devices[0]",
        "site.yaml:19: devices[1].serial: 'S1' is already used by devices[0]",
        "site.yaml:22: http_boot[1].arch: 'x86_64' is listed twice",
    ]


def test_missing_site_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as info:
        load_site(tmp_path / "nope.yaml")
    assert info.value.problems == [f"{tmp_path / 'nope.yaml'}: no such site file"]
