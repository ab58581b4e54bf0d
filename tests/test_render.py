"""Template rendering: vendor folders override by name, values are shell-quoted, typos fail."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.render import make_environment, render_template, shquote, template_sources


@pytest.mark.parametrize(("value", "quoted"), [
    ("plain", "plain"),
    ("two words", "'two words'"),
    ("$(reboot)", "'$(reboot)'"),
    ("it's", "'it'\"'\"'s'"),
    ("", "''"),
    (42, "42"),
])
def test_shquote(value: object, quoted: str) -> None:
    assert shquote(value) == quoted


@pytest.mark.parametrize("value", ["$(touch /tmp/x)", "`id`", "a; reboot", "line\nbreak", "'\"\\"])
def test_shquote_round_trips_through_a_shell(value: str) -> None:
    out = subprocess.run(["sh", "-c", f"printf %s {shquote(value)}"], capture_output=True,
                         text=True, check=True).stdout
    assert out == value


def test_vendor_folder_overrides_builtin_by_name(tmp_path: Path) -> None:
    vendor = tmp_path / "acme"
    (vendor / "guest/etc").mkdir(parents=True)
    (vendor / "guest/etc/profile.j2").write_text("# acme profile for {{ name }}\n")
    env = make_environment([vendor])
    assert render_template(env, "guest/etc/profile.j2", {"name": "s1"}) == "# acme profile for s1\n"
    sources = template_sources(env, ["guest/etc/profile.j2", "guest/init.j2"])
    assert sources["guest/etc/profile.j2"] == str(vendor / "guest/etc/profile.j2")
    assert sources["guest/init.j2"].endswith("templates/guest/init.j2")


def test_undefined_variable_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("{{ platfrom.machine }}\n")
    with pytest.raises(BuildError, match=r"template 't.j2': 'platfrom' is undefined"):
        render_template(make_environment([tmp_path]), "t.j2", {})


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text("ok\n{% if %}\n")
    with pytest.raises(BuildError) as info:
        render_template(make_environment([tmp_path]), "t.j2", {})
    assert info.value.message.startswith(f"{tmp_path / 't.j2'}:2: template syntax error:")


def test_missing_template(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"template 'nope\.j2' not found in "):
        render_template(make_environment([tmp_path]), "nope.j2", {})
