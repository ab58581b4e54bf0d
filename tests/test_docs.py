"""The docs tell the truth: README's sample build output, the documented sizes and entry counts
match a real build of the default platform; every documented `onie-builder` command and option
exists; every relative link points at a file and heading that exist.

Tolerances: entry counts, component names, file lists and the build's step lines are exact;
sizes within 2 % (component figures also within 1 kB / 0.01 MB, the precision they are printed
with), because a Debian point release moves them a little. Timings are bench figures
(bench/build.py) and are not compared.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from builder.cli import main
from tests.conftest import ROOT, Built

MARKDOWN = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "templates" / "README.md",
                   *(ROOT / "docs").glob("*.md")])


def close(documented: float, real: float, slack: float) -> bool:
    """Within 2 % of the real figure, or within the printed precision ``slack``."""
    return abs(documented - real) <= max(0.02 * real, slack)


def readme_sample() -> str:
    """The block under README's "What you get"."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"## What you get\n\n```\n(.*?)```", text, re.S)
    assert match, "README.md has no sample under 'What you get'"
    return match.group(1)


def manifest_of(out: Path) -> dict[str, object]:
    return json.loads((out / "manifest.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.network
def test_readme_sample_output_matches_a_real_build(built: Built) -> None:
    out = built("qemu_x86_64")
    sample = readme_sample()
    log = built.output[out].stderr.replace(str(out.parent), "out").splitlines()
    steps = [line for line in sample.splitlines() if line.startswith("==> ")]
    assert steps and [line for line in log if line.startswith("==> ")] == steps
    summary = re.search(r"built in [\d.]+ s, initramfs ([\d.]+) MB", sample)
    assert summary
    assert close(float(summary.group(1)) * 1e6, (out / "initrd.img").stat().st_size, 0.005e6)
    folded = " ".join(sample[sample.index("compressed alone, by component:"):].split("\n$")[0].split())
    documented = re.findall(r"([\w:.+-]+(?: modules)?) (\d+) kB", folded.split(":", 1)[1])
    real = json.loads(built.output[out].stdout)["result"][0]["components"]
    assert [n for n, _ in documented] == [c["name"] for c in real]
    for (name, kb), component in zip(documented, real, strict=True):
        assert close(int(kb) * 1e3, component["compressed"], 1e3), (name, kb, component)
    listing = re.search(r"\$ ls out/\S+\n(.*?)\n\$", sample, re.S)
    assert listing
    assert sorted(listing.group(1).split()) == sorted(p.name for p in out.iterdir())


@pytest.mark.network
def test_formats_md_sizes_match_a_real_build(built: Built) -> None:
    out = built("qemu_x86_64")
    components = {c["name"]: c["compressed"]
                  for c in manifest_of(out)["initramfs"]["components"]}  # type: ignore[index]
    sizes = (ROOT / "docs" / "formats.md").read_text().split("## Sizes", 1)[1].split("\n## ")[0]
    rows = re.findall(r"^\| ([^|*]+?) \| ([\d.]+)(?: \([\d.]+\))? \| (?:yes)? \|", sizes, re.M)
    assert len(rows) >= 15, rows
    seen = set()
    for label, mb in rows:
        names = [n.strip("` ") for n in label.split(" (")[0].split(", ")]
        keys = [f"debian:{n}" if f"debian:{n}" in components else n for n in names]
        assert all(k in components for k in keys), (label, sorted(components))
        seen.update(keys)
        assert close(float(mb) * 1e6, sum(components[k] for k in keys), 0.01e6), (label, mb)
    assert seen == set(components)  # every component of the build has its row
    total = re.search(r"\*\*([\d,]+) bytes \([\d.]+ MB\)\*\*", sizes)
    assert total
    assert close(int(total.group(1).replace(",", "")), (out / "initrd.img").stat().st_size, 0)


# --- commands and options ----------------------------------------------------------------------

def documented_invocations() -> list[tuple[Path, str]]:
    """Every ``onie-builder ...`` in a code span or code block of the docs, as written."""
    found = []
    for path in MARKDOWN:
        text = path.read_text()
        spans = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
        spans += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for span in spans:
            for line in span.replace("\\\n", " ").splitlines():
                # At a word's start (or after .venv/bin/): not `onie_build_tool="onie-builder X"`.
                for match in re.finditer(r"(?:^|(?<=[\s/]))onie-builder((?: +[^ #]+)*)", line):
                    found.append((path, match.group(1).strip()))
    return found


def resolve(words: list[str]) -> tuple[list[str], click.Command, list[str]]:
    """The command path the words name, the command, and the options written after it."""
    command: click.Command = main
    path: list[str] = []
    rest = words
    while rest and isinstance(command, click.Group):
        names = rest[0].replace("\\|", "|").split("|")
        if not all(n in command.commands for n in names):
            break
        path.append(names[0])
        command = command.commands[names[0]]
        rest = rest[1:]
    options = [re.sub(r"[^\w-].*$", "", w.lstrip("[")) for w in rest if w.lstrip("[").startswith("-")]
    return path, command, options


def test_every_documented_command_and_option_exists() -> None:
    invocations = documented_invocations()
    assert len(invocations) > 20
    helped: set[tuple[str, ...]] = set()
    root_opts = {o for p in main.params for o in p.opts}
    for path, text in invocations:
        words = text.split()
        command_path, command, options = resolve(words)
        if words and not words[0].startswith("-"):
            assert command_path, f"{path.name}: `onie-builder {text}`: no such command"
        known = {o for p in command.params for o in p.opts} | root_opts | {"--help", "-h"}
        for option in options:
            assert option in known, f"{path.name}: `onie-builder {text}`: no option {option}"
        helped.add(tuple(command_path))
    runner = CliRunner()
    for command_path in sorted(helped):
        result = runner.invoke(main, [*command_path, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, (command_path, result.output)


# --- links ---------------------------------------------------------------------------------------

def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (lower case, punctuation dropped, - for space)."""
    slugs: set[str] = set()
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for heading in re.findall(r"^#+ +(.+?) *$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        base, n = slug, 1
        while slug in slugs:
            slug, n = f"{base}-{n}", n + 1
        slugs.add(slug)
    return slugs


def test_every_relative_link_points_at_a_file_and_heading() -> None:
    broken = []
    count = 0
    for path in MARKDOWN:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            count += 1
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}: no such file")
            elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
                broken.append(f"{path.relative_to(ROOT)}: {target}: no such heading")
    assert count > 20
    assert broken == []
