"""The recipe's iSCSI section, the CHAP secrets file, what an enabled iSCSI adds to the image,
and templates/guest/discovery/iscsi.sh.j2's pure functions under the host's BusyBox ash (no QEMU;
the boot is in test_iscsi_boot.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.errors import BuildError, RecipeError
from builder.initramfs.transports import (
    ChapEntry,
    parse_chap,
    render_chap,
    template_values,
)
from builder.recipe.implied import UEFI_MODULE, implied_components, implied_modules
from builder.recipe.load import load_recipe
from builder.recipe.model import Method, Recipe
from builder.render import make_environment, render_template
from tests.conftest import ROOT, require_tool

PLATFORM = ROOT / "recipes" / "platforms" / "qemu_x86_64.yaml"


def load(tmp_path: Path, block: str) -> Recipe:
    path = tmp_path / "r.yaml"
    path.write_text(f"extends: {PLATFORM}\ntransports:\n{block}")
    return load_recipe(path)[0]


def test_iscsi_is_off_by_default_and_adds_nothing() -> None:
    recipe = load_recipe(PLATFORM)[0]
    assert not recipe.transports.iscsi.enabled
    assert Method.ISCSI in recipe.discovery.methods  # present, so an offered root path is logged
    assert [c.debian for c in implied_components(recipe)] == []
    assert implied_modules(recipe) == [UEFI_MODULE]  # the installer toolset's, none of iSCSI's


def test_enabled_iscsi_brings_its_tools_and_modules(tmp_path: Path) -> None:
    recipe = load(tmp_path, "  iscsi:\n    enabled: true\n")
    assert [(c.debian, c.binaries) for c in implied_components(recipe)] == [
        ("open-iscsi", ["/sbin/iscsistart"]), ("open-isns-utils", ["/usr/sbin/isnsadm"])]
    # crc32c_generic first (docs/lab.md: iscsi_tcp fails with "iferror -12" without it).
    assert implied_modules(recipe)[:2] == ["crc32c_generic", "iscsi_tcp"]
    values = template_values(recipe, 1700000000)["iscsi"]
    assert values["enabled"] and values["tpgt"] == 1 and values["timeout"] == 15


@pytest.mark.parametrize(("block", "message"), [
    ("    root_paths: ['iscsi:10.0.0.1:::41869:iqn.2024-01.a:b']",
     "transports.iscsi.root_paths[0]: LUN: expected groups of 1 to 4 hex digits, got '41869'"),
    ("    root_paths: ['iscsi:10.0.0.1::::']",
     "transports.iscsi.root_paths[0]: targetname: required (RFC 4173: it MUST be provided)"),
    ("    root_paths: ['nfs:10.0.0.1:/x']",
     "transports.iscsi.root_paths[0]: expected 'iscsi:' at the start"),
    ("    initiator: 'IQN.bad'",
     "transports.iscsi.initiator: expected an iSCSI name such as 'iqn.2024-01.com.example:switch',"
     " got 'IQN.bad'"),
    ("    isns: ['10.0.0.1:99999999']",
     "transports.iscsi.isns[0]: expected an IPv4 address or host name, optionally ':port', got "
     "'10.0.0.1:99999999'"),
    ("    tpgt: -1", "transports.iscsi.tpgt: expected a number >= 0, got -1"),
    ("    enable: true", "transports.iscsi.enable: unknown key; did you mean 'enabled'?"),
])
def test_bad_iscsi_sections(tmp_path: Path, block: str, message: str) -> None:
    with pytest.raises(RecipeError) as info:
        load(tmp_path, f"  iscsi:\n{block}\n")
    [problem] = info.value.problems
    assert problem.endswith(message), problem
    assert problem.startswith(f"{tmp_path / 'r.yaml'}:")


def test_chap_file() -> None:
    text = """# comment
iqn.2024-01.lab.test:a  onie  twelve-chars!
*  any  another-secret-x  tgt  target-secret-y
"""
    entries = parse_chap(text, "chap.txt")
    assert entries == [ChapEntry("iqn.2024-01.lab.test:a", "onie", "twelve-chars!"),
                       ChapEntry("*", "any", "another-secret-x", "tgt", "target-secret-y")]
    assert render_chap(entries) == (b"iqn.2024-01.lab.test:a onie twelve-chars! - -\n"
                                    b"* any another-secret-x tgt target-secret-y\n")


@pytest.mark.parametrize(("line", "message"), [
    ("iqn.2024-01.a:b onie", "chap.txt:1: expected 'TARGET USER SECRET [TARGET_USER TARGET_SECRET]', "
                             "got 2 fields"),
    ("iqn.2024-01.a:b onie short", "chap.txt:1: a CHAP secret must be 12 to 255 printable characters "
                                   "(RFC 3720 section 8.2.1)"),
    ("iqn.2024-01.a:b onie same-secret-xx tgt same-secret-xx",
     "chap.txt:1: the target's secret must differ from the initiator's (RFC 3720 section 8.2.1)"),
    ("disk0 onie twelve-chars!", "chap.txt:1: expected an iSCSI target name or '*', got 'disk0'"),
    ("* on/ie twelve-chars!", "chap.txt:1: expected a CHAP user name of letters, digits and ._:@-, "
                              "got 'on/ie'"),
])
def test_bad_chap_lines_never_show_the_secret(line: str, message: str) -> None:
    with pytest.raises(BuildError) as info:
        parse_chap(line + "\n", "chap.txt")
    assert info.value.message == message
    assert "short" not in message and "same-secret" not in message


# --- iscsi.sh under BusyBox ash, with discovery's helpers as minimal test doubles -------------

HELPERS = r"""
NL='
'
say() { printf 'say: %s\n' "$*"; }
shown() { printf '%s' "$1"; }
ensure_lease() { return 0; }
is_hex() { case $1 in "" | *[!0-9A-Fa-f]*) return 1 ;; esac; }
hex_ipv4s() {
    local h=$1
    while [ -n "$h" ]; do
        printf '%d.%d.%d.%d\n' "0x${h:0:2}" "0x${h:2:2}" "0x${h:4:2}" "0x${h:6:2}"
        h=${h:8}
    done
}
"""


def ash(tmp_path: Path, recipe: Recipe, script: str, *args: str) -> list[str]:
    busybox = require_tool("busybox", "to run the generated ash (busybox-static)")
    values = {**template_values(recipe, 0), "builder_version": "test"}
    env = make_environment()
    lib = tmp_path / "lib.sh"
    lib.write_text(render_template(env, "guest/discovery/lib/rootpath.sh.j2", values)
                   + render_template(env, "guest/discovery/iscsi.sh.j2", values))
    subprocess.run([busybox, "ash", "-n", str(lib)], check=True)
    proc = subprocess.run([busybox, "ash", "-c", f"{HELPERS}\n. {lib}\n{script}", "x", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_root_paths_come_from_the_command_line_the_recipe_then_dhcp(tmp_path: Path) -> None:
    recipe = load(tmp_path, "  iscsi:\n    enabled: true\n    root_paths: ['iscsi:::::iqn.2024-01.a:r']\n")
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("quiet netroot=iscsi:10.0.0.1::::iqn.2024-01.a:c netroot=nfs:x\n")
    out = ash(tmp_path, recipe, 'CMDLINE=$1 disco_rootpath="iscsi:10.0.0.2:::4186 9:iqn.2024-01.a:d"; '
              'iscsi_root_paths', str(cmdline))
    assert out == ["netroot= iscsi:10.0.0.1::::iqn.2024-01.a:c", "recipe iscsi:::::iqn.2024-01.a:r",
                   "option-17 iscsi:10.0.0.2:::4186 9:iqn.2024-01.a:d"]


def test_disabled_iscsi_only_logs_the_offered_root_path(tmp_path: Path) -> None:
    recipe = load_recipe(PLATFORM)[0]
    out = ash(tmp_path, recipe, f'CMDLINE=/nonexistent ISCSI_RUN={tmp_path}/run '
              'disco_rootpath="iscsi:10.0.0.2::::iqn.2024-01.a:d"; iscsi_method; echo "rc=$?"')
    assert out == ["say: ignore iscsi root path from option-17 iscsi:10.0.0.2::::iqn.2024-01.a:d: "
                   "iSCSI is off (transports.iscsi.enabled, RFC 4173 section 8)", "rc=1"]


def test_chap_lookup_and_initiator_name(tmp_path: Path) -> None:
    recipe = load(tmp_path, "  iscsi:\n    enabled: true\n")
    chap = tmp_path / "chap"
    chap.write_bytes(render_chap(parse_chap(
        "* any default-secret-x\niqn.2024-01.a:m m mutual-secret-1 t target-secret-1\n", "c")))
    script = (f"ISCSI_CHAP={chap}; for t in iqn.2024-01.a:m iqn.2024-01.a:other; do iscsi_chap $t; "
              'echo "$t|$CHAP_USER|${#CHAP_SECRET}|$CHAP_TUSER|${#CHAP_TSECRET}"; done; '
              'H_MACHINE=acme_s1 SERIAL="AB 12/34" ETH_ADDR=; iscsi_initiator; echo; '
              'SERIAL= ETH_ADDR=52:54:00:12:34:56; iscsi_initiator; echo')
    out = ash(tmp_path, recipe, script)
    assert out == ["iqn.2024-01.a:m|m|15|t|15", "iqn.2024-01.a:other|any|16||0",
                   "iqn.2024-01.org.onie-builder:acme-s1:ab-12-34",
                   "iqn.2024-01.org.onie-builder:acme-s1:52-54-00-12-34-56"]


def test_isns_servers_from_the_recipe_then_option_83(tmp_path: Path) -> None:
    recipe = load(tmp_path, "  iscsi:\n    enabled: true\n    isns: [isns.lab, '10.0.0.9:3205']\n")
    option83 = "00" * 10 + "0ac80501" + "0ac80502"
    out = ash(tmp_path, recipe, f"disco_opt83={option83}; iscsi_isns_servers")
    assert out == ["isns.lab", "10.0.0.9:3205", "10.200.5.1", "10.200.5.2"]
