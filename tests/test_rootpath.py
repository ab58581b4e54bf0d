"""The RFC 4173 root-path grammar: builder/recipe/rootpath.py and
templates/guest/discovery/lib/rootpath.sh.j2 (under the host's BusyBox ash) against the one table
of vectors, then against each other on random input."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from builder.recipe.rootpath import (
    RootPath,
    RootPathError,
    ServerKind,
    format_root_path,
    parse_lun,
    parse_root_path,
)
from builder.render import make_environment, render_template
from tests.conftest import require_tool

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "rootpath_vectors.json").read_text())["vectors"]
GOOD = [v for v in VECTORS if "error" not in v]
BAD = [v for v in VECTORS if "error" in v]
FIELDS = ("server", "kind", "protocol", "port", "lun", "linux_lun", "target", "canonical")
# One ash process parses every argument; one tab-separated line per input.
DRIVER = r"""
. "$RP_LIB"
for text in "$@"; do
    if rootpath_parse "$text"; then
        printf 'ok\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$RP_SERVER" "$RP_KIND" "$RP_PROTOCOL" \
            "$RP_PORT" "$RP_LUN" "$RP_LINUX_LUN" "$RP_TARGET" "$(rootpath_format)"
    else
        printf 'error\t%s\n' "$RP_ERROR"
    fi
done
"""


def python_result(text: str) -> dict[str, Any]:
    try:
        path = parse_root_path(text)
    except RootPathError as exc:
        return {"error": str(exc)}
    return {"server": path.server, "kind": path.server_kind.value if path.server_kind else None,
            "protocol": path.protocol, "port": path.port, "lun": path.lun_text,
            "linux_lun": path.linux_lun, "target": path.target, "canonical": format_root_path(path)}


def expected(vector: dict[str, Any]) -> dict[str, Any]:
    if "error" in vector:
        return {"error": vector["error"]}
    return {k: vector[k] for k in FIELDS}


@pytest.fixture(scope="module")
def ash_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = render_template(make_environment(), "guest/discovery/lib/rootpath.sh.j2",
                           {"builder_version": "test"})
    lib = tmp_path_factory.mktemp("rootpath") / "rootpath.sh"
    lib.write_text(text)
    return lib


def ash_results(lib: Path, inputs: list[str]) -> list[dict[str, Any]]:
    busybox = require_tool("busybox", "to run the generated ash (busybox-static)")
    proc = subprocess.run([busybox, "ash", "-c", DRIVER, "driver", *inputs], capture_output=True,
                          text=True, env={"RP_LIB": str(lib), "PATH": "/usr/bin:/bin"},
                          check=True, timeout=120)
    assert proc.stderr == ""
    out = []
    for line in proc.stdout.splitlines():
        status, *values = line.split("\t")
        if status == "error":
            out.append({"error": values[0]})
            continue
        got = dict(zip(FIELDS, values, strict=True))
        out.append({**got, "server": got["server"] or None, "kind": got["kind"] or None,
                    "protocol": int(got["protocol"]), "port": int(got["port"]) if got["port"] else None,
                    "linux_lun": int(got["linux_lun"])})
    assert len(out) == len(inputs)
    return out


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: repr(v["input"][:60]))
def test_python_parser_follows_the_vectors(vector: dict[str, Any]) -> None:
    assert python_result(vector["input"]) == expected(vector)


def test_ash_parser_follows_the_vectors(ash_lib: Path) -> None:
    got = ash_results(ash_lib, [v["input"] for v in VECTORS])
    for vector, result in zip(VECTORS, got, strict=True):
        assert result == expected(vector), vector["input"]


def test_the_rfc_examples_are_in_the_table() -> None:
    luns = {v["input"].split(":")[4]: v["lun"] for v in GOOD if v["input"].count(":") >= 5}
    assert luns["4752-3A4F-6b7e-2F99"] == luns["4752 3A4F 6b7e 2F99"] == "4752-3a4f-6b7e-2f99"
    assert luns["6734-9-156f-127"] == luns["6734 9 156f 127"] == "6734-0009-156f-0127"
    assert luns["4186-9"] == luns["4186 9"] == "4186-0009-0000-0000"
    assert len({v["error"] for v in BAD}) >= 25  # each malformed kind has its own vectors


def test_canonical_text_parses_back_to_the_same_value() -> None:
    for vector in GOOD:
        path = parse_root_path(vector["input"])
        assert parse_root_path(format_root_path(path)) == path
        assert str(path) == vector["canonical"]


def test_typed_value() -> None:
    path = parse_root_path("iscsi:[2001:db8::7]::3261:1:iqn.2024-01.lab.test:onie")
    assert path == RootPath(target="iqn.2024-01.lab.test:onie", server="2001:db8::7",
                            server_kind=ServerKind.IPV6, port=3261, lun=(1, 0, 0, 0))
    assert path.effective_port == 3261 and path.linux_lun == 1
    blank = parse_root_path("iscsi:::::iqn.2024-01.lab.test:onie")
    assert blank.server is None and blank.effective_port == 3260 and blank.lun_text == "0000-0000-0000-0000"
    assert parse_lun("4186 9") == (0x4186, 9, 0, 0)


def random_root_paths(count: int, seed: int) -> list[str]:
    """Near-miss root paths: valid and invalid pieces recombined, then some cut or mutated."""
    rng = random.Random(seed)
    pieces = [  # (valid choices, invalid choices) for each field
        (["10.200.1.1", "[2001:db8::1]", "[::ffff:1.2.3.4]", "host.example", "", "x.y1",
          "[1:2:3:4:5:6:7:8]", "[::]"],
         ["[fe80::1", "1.2.3.04", "a-", "[1::2::3]", "256.1.1.1", "[::1.2.3]", "1.2.3", "[:1::]"]),
        (["", "6"], ["17", "06", " 6"]),
        (["", "3260", "65535", "1"], ["0", "65536", "0326", "12a"]),
        (["", "1", "4186-9", "4186 9", "1-2-3-4", "ffff-ffff", "0"],
         ["1-2-3-4-5", "12345", "a--b", "f  f", "-1", "1-2 3"]),
        (["iqn.2024-01.lab.test:onie", "eui.0123456789ABCDEF", "naa.0123456789abcdef",
          "iqn.2024-01.x:a:b"],
         ["", "iqn.2024-01.", "IQN.2024-01.x", "naa.123", "iqn.2024-01.x y"]),
    ]
    out = []
    for _ in range(count):
        fields = [rng.choice(bad if rng.random() < 0.15 else good) for good, bad in pieces]
        text = ":".join(["iscsi", *fields])
        roll = rng.random()
        if roll < 0.2:
            text = text[:rng.randrange(len(text) + 1)]
        elif roll < 0.4:
            i = rng.randrange(len(text) + 1)
            text = text[:i] + rng.choice(":[] -.0aZ%") + text[i:]
        out.append(text)
    return out


def test_ash_and_python_agree_on_random_input(ash_lib: Path) -> None:
    inputs = random_root_paths(600, seed=4173)
    got = ash_results(ash_lib, inputs)
    for text, result in zip(inputs, got, strict=True):
        assert result == python_result(text), text
    assert sum("error" not in r for r in got) > 100  # the mix has valid ones too


def test_generated_ash_is_valid_shell(ash_lib: Path) -> None:
    busybox = require_tool("busybox", "to check the generated ash (busybox-static)")
    subprocess.run([busybox, "ash", "-n", str(ash_lib)], check=True)
    assert "eval" not in ash_lib.read_text()
