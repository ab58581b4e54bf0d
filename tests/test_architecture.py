"""The layout holds: the import contract, no cycles, small modules, no test-only product code,
and docs/architecture.md names exactly the packages and modules that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from tests.conftest import ROOT

BUILDER = ROOT / "builder"
DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 400
ENTRY_POINTS = {"builder.cli", "builder.__main__"}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("builder", cache_dir=None)


def packages() -> set[str]:
    return {p.parent.name for p in BUILDER.glob("*/__init__.py")}


def top_modules() -> set[str]:
    return {p.name for p in BUILDER.glob("*.py") if p.name != "__init__.py"}


def test_import_contract_is_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's algorithm over the direct imports between modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.find_modules_directly_imported_by(node)):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            found.append(component)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle(graph: grimp.ImportGraph) -> None:
    cycles = [sorted(c) for c in strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def test_cycle_finder_sees_a_cycle() -> None:
    """The check above can fail: two modules that import each other form one component."""
    fake = grimp.ImportGraph()
    for name in ("x", "x.a", "x.b", "x.c"):
        fake.add_module(name)
    fake.add_import(importer="x.a", imported="x.b")
    fake.add_import(importer="x.b", imported="x.a")
    fake.add_import(importer="x.c", imported="x.a")
    assert [sorted(c) for c in strongly_connected(fake) if len(c) > 1] == [["x.a", "x.b"]]


def test_no_module_over_the_limit() -> None:
    long = {str(p.relative_to(ROOT)): n for p in sorted(BUILDER.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_every_product_module_is_reached_from_the_command_line(graph: grimp.ImportGraph) -> None:
    """Code under builder/ that only tests import belongs under tests/."""
    reached: set[str] = set()
    todo = list(ENTRY_POINTS)
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph.find_modules_directly_imported_by(module))
    modules = {m for m in graph.modules if not (ROOT / m.replace(".", "/") / "__init__.py").exists()
               or m == "builder.cli"}
    modules.discard("builder")
    assert sorted(modules - reached) == []


def test_every_package_has_a_docstring_that_says_what_it_owns() -> None:
    for name in sorted(packages()):
        text = (BUILDER / name / "__init__.py").read_text()
        assert re.match(r'^"""\S', text), f"builder/{name}/__init__.py has no docstring"


def test_architecture_doc_names_every_package_and_module() -> None:
    doc = DOC.read_text()
    named_packages = set(re.findall(r"^### `builder/(\w+)/`$", doc, re.M))
    assert named_packages == packages()
    named_modules = set(re.findall(r"^\| `builder/(\w+\.py)` \|", doc, re.M))
    assert named_modules == top_modules()


def test_paths_named_in_the_architecture_doc_exist() -> None:
    paths = set(re.findall(r"`((?:builder|templates|tests|recipes|docs)/[\w./-]*)`", DOC.read_text()))
    assert paths, "the doc names no paths"
    assert sorted(p for p in paths if not (ROOT / p).exists()) == []
    dotted = set(re.findall(r"`(builder(?:\.\w+)+)", DOC.read_text()))
    missing = []
    for name in sorted(dotted):
        parts = name.split(".")
        # The longest prefix that is a module; the rest must be attributes defined in it.
        for cut in range(len(parts), 0, -1):
            base = ROOT.joinpath(*parts[:cut])
            source = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
            if source.exists():
                text = source.read_text()
                if not all(re.search(rf"^\s*(?:class|def)\s+{a}\b|^{a}\b", text, re.M)
                           or re.search(rf"\bdef {a}\b", text) for a in parts[cut:cut + 1]):
                    missing.append(name)
                break
        else:
            missing.append(name)
    assert missing == []
