"""Every command's `--json` output is the one envelope of docs/json.md, in success and failure."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest

from builder.cli import main
from builder.cli.envelope import JSON_SCHEMA, SCHEMA
from tests.conftest import ROOT, Built, run_cli

PLATFORM = "x86_64-accton_as7726_32x-r0"


def check_envelope(text: str, command: str, ok: bool) -> Any:
    """``text`` is exactly one envelope for ``command`` with this ``ok``; returns its result."""
    doc = json.loads(text)
    jsonschema.validate(doc, JSON_SCHEMA)
    assert (doc["schema"], doc["command"], doc["ok"]) == (SCHEMA, command, ok), doc
    assert bool(doc["errors"]) != ok, doc  # a failure says why; a success has nothing to say
    return doc["result"]


def json_commands() -> set[str]:
    """Every command that takes --json, as a user types it."""
    found: set[str] = set()

    def walk(command: click.Command, path: str) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}".strip())
        elif any("--json" in p.opts for p in command.params):
            found.add(path)

    walk(main, "")
    return found


# The commands this module checks; a new --json command must be added here (and to docs/json.md).
CHECKED = {"build", "status", "verify", "cache info", "cache prune"}


def test_every_json_command_is_checked_and_documented() -> None:
    assert json_commands() == CHECKED
    doc = (ROOT / "docs" / "json.md").read_text()
    for command in CHECKED:
        assert f"### `{command}`" in doc, command


def test_the_documented_schema_is_the_one_in_the_code() -> None:
    doc = (ROOT / "docs" / "json.md").read_text()
    block = re.search(r"```json\n(\{\n  \"\$schema\".*?)```", doc, re.S)
    assert block, "docs/json.md has no JSON Schema block"
    assert json.loads(block.group(1)) == JSON_SCHEMA


@pytest.mark.network
def test_build(built: Built) -> None:
    out = built("qemu_x86_64")
    result = check_envelope(built.output[out].stdout, "build", True)
    assert [(r["platform"], r["ok"], r["out"]) for r in result] == [(out.name, True, str(out))]
    assert {"initrd.img", "vmlinuz", "manifest.json"} <= set(result[0]["outputs"])


def test_build_failure_is_an_envelope_too(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: nowhere.yaml\n")
    proc = run_cli("build", str(bad), "--json", "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 2
    assert check_envelope(proc.stdout, "build", False) is None
    assert "error: " in proc.stderr  # people still get the message


def test_verify(tmp_path: Path) -> None:
    run_cli("keys", "generate", str(tmp_path / "release"))
    (tmp_path / "nos.bin").write_bytes(b"#!/bin/sh\necho installed\n")
    run_cli("sign", str(tmp_path / "nos.bin"), "--key", str(tmp_path / "release.key"),
            "--version", "7", "--platform", PLATFORM, "-o", str(tmp_path / "signed.bin"))
    args = ("verify", "--key", str(tmp_path / "release.pub"), "--platform", PLATFORM, "--json")
    ok = check_envelope(run_cli(*args, str(tmp_path / "signed.bin")).stdout, "verify", True)
    assert [(v["file"], v["ok"], v["version"]) for v in ok] == [(str(tmp_path / "signed.bin"), True, 7)]
    proc = run_cli(*args, str(tmp_path / "signed.bin"), str(tmp_path / "nos.bin"), check=False)
    assert proc.returncode == 1
    verdicts = check_envelope(proc.stdout, "verify", False)
    assert [v["ok"] for v in verdicts] == [True, False]
    errors = json.loads(proc.stdout)["errors"]
    assert [e["subject"] for e in errors] == [str(tmp_path / "nos.bin")]
    assert errors[0]["message"].startswith("refused ")


def test_status_unreachable() -> None:
    """`status` against a live server is checked in tests/test_serve.py; here its failure."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_cli("status", f"http://127.0.0.1:{port}", "--json", check=False)
    assert proc.returncode == 1
    assert check_envelope(proc.stdout, "status", False) is None
    assert "cannot reach" in json.loads(proc.stdout)["errors"][0]["message"]


def test_cache_info_and_prune(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    proc = run_cli("--cache", str(cache), "cache", "info", "--json")
    info = check_envelope(proc.stdout, "cache info", True)
    assert info["path"] == str(cache) and isinstance(info["kinds"], dict)
    proc = run_cli("--cache", str(cache), "cache", "prune", "--dry-run", "--json",
                   "--out", str(tmp_path / "none"), "--lock", str(tmp_path / "none.lock"))
    plan = check_envelope(proc.stdout, "cache prune", True)
    assert plan["dry_run"] is True and plan["removed"] == [] and plan["bytes_freed"] == 0
