"""Inheritance rules: maps deep-merge, scalars override, lists replace unless `key+:` appends."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import RecipeError
from builder.recipe.merge import load_merged, render_with_origins


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(tmp_path / "base.yaml", """\
a:
  b: 1
  c: [x, y]
  d: {e: 2}
s: base
l: [1, 2]
""")


def test_maps_deep_merge_and_scalars_override(tmp_path: Path, base: Path) -> None:
    child = write(tmp_path / "child.yaml", "extends: base.yaml\na:\n  b: 5\n  d: {f: 3}\ns: child\n")
    merged = load_merged(child)
    assert merged.data == {"a": {"b": 5, "c": ["x", "y"], "d": {"e": 2, "f": 3}},
                           "s": "child", "l": [1, 2]}
    assert [p.name for p in merged.files] == ["base.yaml", "child.yaml"]


def test_lists_replace(tmp_path: Path, base: Path) -> None:
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nl: [9]\n")
    assert load_merged(child).data["l"] == [9]


def test_plus_appends(tmp_path: Path, base: Path) -> None:
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nl+: [3]\na:\n  c+: [z]\n")
    merged = load_merged(child)
    assert merged.data["l"] == [1, 2, 3]
    assert merged.data["a"]["c"] == ["x", "y", "z"]


def test_plus_on_missing_key_starts_a_list(tmp_path: Path) -> None:
    child = write(tmp_path / "only.yaml", "n+: [1]\n")
    assert load_merged(child).data == {"n": [1]}


def test_three_levels_and_origins(tmp_path: Path, base: Path) -> None:
    write(tmp_path / "mid.yaml", "extends: base.yaml\nl+: [3]\n")
    leaf = write(tmp_path / "sub" / "leaf.yaml", "extends: ../mid.yaml\ns: leaf\n")
    merged = load_merged(leaf)
    assert merged.data["l"] == [1, 2, 3]
    assert merged.origins[("l", 2)].file.endswith("mid.yaml")
    assert merged.origins[("l", 0)].file.endswith("base.yaml")
    assert merged.origins[("s",)].file.endswith("leaf.yaml")
    text = render_with_origins(merged)
    assert "s: leaf  # " in text and "leaf.yaml:2" in text
    assert "- 3  # " in text and "mid.yaml:2" in text


def test_replacing_a_list_forgets_old_origins(tmp_path: Path, base: Path) -> None:
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nl: [7]\n")
    merged = load_merged(child)
    assert ("l", 1) not in merged.origins
    assert merged.origins[("l", 0)].file.endswith("child.yaml")


@pytest.mark.parametrize(("files", "message"), [
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"},
     "b.yaml:1: extends: cycle: a.yaml -> b.yaml -> a.yaml"),
    ({"a.yaml": "extends: missing.yaml\n"}, "a.yaml:1: extends: no such recipe file 'missing.yaml'"),
    ({"a.yaml": "extends: 5\n"},
     "a.yaml:1: extends: expected a recipe name or a path to a recipe file, got 5"),
    ({"a.yaml": "extends: b.yaml\nl+: [1]\n", "b.yaml": "l: 3\n"},
     "a.yaml:2: l+: appending needs a list on both sides, got int and list"),
    ({"a.yaml": "k: 1\nk: 2\n"}, "a.yaml:2: k: key given twice"),
    ({"a.yaml": "k: [1\n"}, "a.yaml:2:1: invalid YAML: expected ',' or ']', but got '<stream end>'"),
    ({"a.yaml": "- 1\n"}, "a.yaml:1: a recipe must be a mapping of keys"),
])
def test_merge_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as info:
        load_merged(tmp_path / "a.yaml")
    assert info.value.problems == [message]
