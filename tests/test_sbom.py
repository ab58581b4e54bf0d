"""The SBOMs of every shipped platform: valid for the standards' own validators, and naming
every component and every initramfs file of the manifest with the same digests."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from builder.provenance import inventory
from builder.provenance.drafts import placeholder
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.network

PLATFORMS = sorted(p.stem for p in (ROOT / "recipes" / "platforms").glob("*.yaml"))


def load(folder: Path, name: str) -> Any:
    return json.loads((folder / name).read_text())


def spdx_index(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str], dict[str, set[str]]]:
    """Packages by purl, file SPDX ids by path, and CONTAINS targets by container id."""
    packages = {ref["referenceLocator"]: p for p in doc["packages"] for ref in p.get("externalRefs", [])}
    files = {f["fileName"].removeprefix("."): f["SPDXID"] for f in doc["files"]}
    contains: dict[str, set[str]] = {}
    for r in doc["relationships"]:
        if r["relationshipType"] == "CONTAINS":
            contains.setdefault(r["spdxElementId"], set()).add(r["relatedSpdxElement"])
    return packages, files, contains


def cdx_walk(components: list[dict[str, Any]], parent: str, out: dict[str, tuple[str, dict[str, Any]]]
             ) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every nested component by bom-ref, with the bom-ref of the component holding it."""
    for c in components:
        out[c["bom-ref"]] = (parent, c)
        cdx_walk(c.get("components", []), c["bom-ref"], out)
    return out


def sha256_of(entry: dict[str, Any], key: str = "checksums") -> str:
    if key == "checksums":
        return next(c["checksumValue"] for c in entry["checksums"] if c["algorithm"] == "SHA256")
    return next(h["content"] for h in entry["hashes"] if h["alg"] == "SHA-256")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_sboms_pass_the_official_validators(built: Callable[[str], Path], platform: str) -> None:
    folder = built(platform)
    assert validate_full_spdx_document(parse_file(str(folder / "sbom.spdx.json"))) == []
    cli = Path(sys.executable).with_name("pyspdxtools")
    proc = subprocess.run([str(cli), "-i", str(folder / "sbom.spdx.json")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (folder / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    assert load(folder, "sbom.cdx.json")["specVersion"] == "1.6"
    assert load(folder, "sbom.spdx.json")["spdxVersion"] == "SPDX-2.3"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_component_and_file_appears_with_its_digest(built: Callable[[str], Path],
                                                          platform: str) -> None:
    folder = built(platform)
    check_against_manifest(folder)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_outputs_appear_with_their_real_digests(built: Callable[[str], Path],
                                                platform: str) -> None:
    """The SBOMs are drafted before the images exist, each output's digest a placeholder
    swapped for the real one at the end: every output the manifest lists (but the SBOMs,
    the manifest and the statement) is in both with the digest of its file, no placeholder
    is left, and the serial is the one the real outputs give."""
    folder = built(platform)
    manifest, spdx, cdx = (load(folder, n) for n in ("manifest.json", "sbom.spdx.json", "sbom.cdx.json"))
    described = {name: info["sha256"] for name, info in manifest["outputs"].items()
                 if name not in {"sbom.spdx.json", "sbom.cdx.json", "manifest.json",
                                 "provenance.intoto.jsonl"}}
    assert {"vmlinuz", "initrd.img"} < set(described)
    for name, digest in described.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    spdx_outputs = {p["packageFileName"].removeprefix("./"): sha256_of(p)
                    for p in spdx["packages"] if "packageFileName" in p}
    assert spdx_outputs == described
    cdx_outputs = {c["name"]: c["hashes"][0]["content"] for c in cdx["components"]
                   if c["bom-ref"].startswith("output:")}
    cdx_outputs["initrd.img"] = next(c["hashes"][0]["content"] for c in cdx["components"]
                                     if c["bom-ref"] == "initramfs")
    assert cdx_outputs == described
    text = (folder / "sbom.spdx.json").read_text() + (folder / "sbom.cdx.json").read_text()
    assert not [name for name in described if placeholder(name) in text]
    serial = uuid.uuid5(inventory.NAMESPACE, "\n".join(
        [manifest["platform"], *(f"{n} {d}" for n, d in sorted(described.items()))]))
    assert cdx["serialNumber"] == f"urn:uuid:{serial}"
    assert spdx["documentNamespace"].endswith(f"-{serial}")


def check_against_manifest(folder: Path) -> None:
    """Each manifest component is in both SBOMs by package URL with its sha256; each file with a
    digest is in both with its sha256, held by the component its origin names."""
    manifest, spdx, cdx = (load(folder, n) for n in ("manifest.json", "sbom.spdx.json", "sbom.cdx.json"))
    for name in ("sbom.spdx.json", "sbom.cdx.json"):
        assert manifest["outputs"][name]["size"] == (folder / name).stat().st_size
    packages, files, contains = spdx_index(spdx)
    nested = cdx_walk(cdx["components"], "image", {})
    by_purl = {c["purl"]: (ref, c) for ref, (_, c) in nested.items() if "purl" in c
               and "arch=source" not in c["purl"]}
    # The origin each SBOM component stands for (the manifest's origin of its files).
    origins = {prop["value"]: (packages[purl]["SPDXID"], ref) for purl, (ref, c) in by_purl.items()
               for prop in c.get("properties", []) if prop["name"] == "onie-builder:origin"}
    for component in manifest["components"]:
        # The package URL percent-encodes the name ('+' is %2B: libstdc++6).
        wanted = (f"/{quote(component['name'], safe='')}@" if component["source"] == "debian"
                  else f"?checksum=sha256:{component['sha256']}")
        purls = [p for p in packages if wanted in p and "arch=source" not in p]
        assert len(purls) == 1, component["name"]
        purl = purls[0]
        assert sha256_of(packages[purl]) == component["sha256"]
        assert packages[purl].get("versionInfo", "") == component["version"]
        ref, entry = by_purl[purl]
        assert sha256_of(entry, "hashes") == component["sha256"]
        if component["source"] == "debian":
            assert purl.startswith(f"pkg:deb/debian/{quote(component['name'], safe='')}@")
            assert purl.endswith(f"?arch={component['arch']}")
            origin = f"debian:{component['name']}={component['version']}"
        else:
            origin = component["name"]
        assert origins[origin] == (packages[purl]["SPDXID"], ref)
    listed = [f for f in manifest["initramfs"]["files"] if f["type"] == "file" and "sha256" in f]
    assert listed
    spdx_files = {f["SPDXID"]: f for f in spdx["files"]}
    for file in listed:
        spdx_id = files[file["path"]]
        assert sha256_of(spdx_files[spdx_id]) == file["sha256"], file["path"]
        holder, cdx_holder = origins.get(file["origin"], ("SPDXRef-Initramfs", "initramfs"))
        assert spdx_id in contains[holder], file["path"]
        parent, entry = nested[f"file:{file['path']}"]
        assert parent == cdx_holder, file["path"]
        assert sha256_of(entry, "hashes") == file["sha256"]
    # image -> initramfs -> component -> file
    assert "SPDXRef-Initramfs" in contains["SPDXRef-Image"]
    assert {h for h, _ in origins.values()} & contains["SPDXRef-Initramfs"]
    initrd = manifest["outputs"]["initrd.img"]["sha256"]
    assert nested["initramfs"][1]["hashes"][0]["content"] == initrd


def test_licences_and_sources_of_the_default_platform(built: Callable[[str], Path]) -> None:
    spdx = load(built("qemu_x86_64"), "sbom.spdx.json")
    by_name = {p["name"]: p for p in spdx["packages"] if p.get("primaryPackagePurpose") != "SOURCE"}
    kernel = next(p for n, p in by_name.items() if n.startswith("linux-image-"))
    assert kernel["licenseDeclared"].startswith("GPL-2.0-only")
    assert by_name["openssl"]["licenseDeclared"].startswith("Apache-2.0")
    # BusyBox's copyright file is free-form: no guess.
    assert by_name["busybox-static"]["licenseDeclared"] == "NOASSERTION"
    assert "not machine-readable" in by_name["busybox-static"]["licenseComments"]
    sources = {p["name"]: p["SPDXID"] for p in spdx["packages"] if p.get("primaryPackagePurpose") == "SOURCE"}
    assert {"busybox", "glibc", "linux", "linux-signed-amd64"} <= set(sources)
    generated = {(r["spdxElementId"], r["relatedSpdxElement"]) for r in spdx["relationships"]
                 if r["relationshipType"] == "GENERATED_FROM"}
    assert (kernel["SPDXID"], sources["linux"]) in generated
    assert (by_name["busybox-static"]["SPDXID"], sources["glibc"]) in generated


def make_deb(tmp_path: Path) -> Path:
    """A vendor's own .deb with a file and a machine-readable copyright file."""
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: acme-tools\nVersion: 1.2-3\nArchitecture: amd64\n"
        "Maintainer: Acme <ops@acme.invalid>\nDescription: demo\n")
    (root / "usr/share/acme").mkdir(parents=True)
    (root / "usr/share/acme/tool.conf").write_text("setting=1\n")
    (root / "usr/share/doc/acme-tools").mkdir(parents=True)
    (root / "usr/share/doc/acme-tools/copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2026 Acme\nLicense: Expat\n")
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root),
                    str(tmp_path / "acme-tools.deb")], check=True, capture_output=True)
    return tmp_path / "acme-tools.deb"


def test_an_added_component_appears(tmp_path: Path, cache_env: dict[str, str]) -> None:
    (tmp_path / "note.txt").write_text("vendor note\n")
    make_deb(tmp_path)
    recipe = tmp_path / "plus.yaml"
    recipe.write_text(f"extends: {ROOT}/recipes/platforms/qemu_x86_64.yaml\n"
                      "initramfs:\n  components+:\n"
                      "    - debian: lsscsi\n      binaries: [/usr/bin/lsscsi]\n"
                      "    - path: note.txt\n      dest: /etc/vendor-note\n"
                      "    - path: acme-tools.deb\n      files: [/usr/share/acme/tool.conf]\n")
    proc = run_cli("build", "--allow-untrusted",
                   str(recipe), "--out", str(tmp_path / "out"), "--json", "--no-lock",
                   "--no-images", env=cache_env)
    folder = Path(json.loads(proc.stdout)["result"][0]["out"])
    check_against_manifest(folder)
    spdx = load(folder, "sbom.spdx.json")
    assert any(ref["referenceLocator"].startswith("pkg:deb/debian/lsscsi@")
               for p in spdx["packages"] for ref in p.get("externalRefs", []))
    assert "/usr/bin/lsscsi" in {f["fileName"].removeprefix(".") for f in spdx["files"]}
    nested = cdx_walk(load(folder, "sbom.cdx.json")["components"], "image", {})
    assert nested["file:/etc/vendor-note"][0] == "path:note.txt"
    assert nested["path:note.txt"][1]["purl"].startswith("pkg:generic/note.txt?checksum=sha256:")
    # A vendor .deb: named by its file (not a Debian package URL), its DEP-5 licence read.
    acme = nested["path:acme-tools.deb"][1]
    assert acme["purl"].startswith("pkg:generic/acme-tools@1.2-3?checksum=sha256:")
    assert acme["licenses"] == [{"expression": "MIT"}]
    assert nested["file:/usr/share/acme/tool.conf"][0] == "path:acme-tools.deb"
