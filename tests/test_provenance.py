"""The signed provenance: DSSE's pre-authentication encoding, the in-toto statement a build
writes, `verify-provenance` accepting it and refusing any changed, missing or added byte,
and two builds giving the same SBOM, manifest and provenance bytes."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import pytest

from builder.errors import BuildError
from builder.provenance.dsse import IN_TOTO, pae, render_envelope
from builder.provenance.statement import PREDICATE_TYPE, STATEMENT_TYPE
from builder.provenance.verify import PROVENANCE, verify_provenance
from builder.signing.keys import KeyType, load_private_key, load_public_key, make_key_pair
from builder.signing.signers import KeySigner
from tests.conftest import ROOT, digest, run_cli


def test_pae_is_the_specs() -> None:
    # The example of the DSSE specification (protocol.md).
    assert pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def make_folder(tmp_path: Path, key_type: KeyType = KeyType.ED25519,
                subjects: dict[str, str] | None = None, signed: bool = True) -> Path:
    """An output folder with two files and a provenance over them."""
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"alpha\n")
    (folder / "sub" / "b.bin").write_bytes(bytes(range(256)))
    names = subjects or {n: hashlib.sha256((folder / n).read_bytes()).hexdigest()
                         for n in ("a.txt", "sub/b.bin")}
    statement = {"_type": STATEMENT_TYPE, "predicateType": PREDICATE_TYPE, "predicate": {},
                 "subject": [{"name": n, "digest": {"sha256": d}} for n, d in names.items()]}
    make_key_pair(key_type, tmp_path / "release")
    signer = KeySigner(load_private_key(tmp_path / "release.key")) if signed else None
    (folder / PROVENANCE).write_text(render_envelope(IN_TOTO, json.dumps(statement).encode(), signer))
    return folder


@pytest.mark.parametrize("key_type", [KeyType.ED25519, KeyType.ECDSA_P256, KeyType.RSA_3072])
def test_a_signed_folder_verifies(tmp_path: Path, key_type: KeyType) -> None:
    folder = make_folder(tmp_path, key_type)
    key = load_public_key(tmp_path / "release.pub")
    verdict = verify_provenance(folder, [key])
    assert verdict.key.key_id == key.key_id
    assert sorted(verdict.subjects) == ["a.txt", "sub/b.bin"]
    envelope = json.loads((folder / PROVENANCE).read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert envelope["signatures"][0]["keyid"] == key.key_id
    assert key.verifies(base64.b64decode(envelope["signatures"][0]["sig"]),
                        pae(IN_TOTO, base64.b64decode(envelope["payload"])))


def refusal(folder: Path, key: Path) -> str:
    with pytest.raises(BuildError) as err:
        verify_provenance(folder, [load_public_key(key)])
    return err.value.message


def test_every_change_is_refused(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    pub = tmp_path / "release.pub"
    data = bytearray((folder / "sub" / "b.bin").read_bytes())
    data[100] ^= 1
    (folder / "sub" / "b.bin").write_bytes(bytes(data))
    assert refusal(folder, pub).startswith(f"{folder}: sub/b.bin: sha256 ")
    assert refusal(folder, pub).endswith("differs from the provenance's "
                                         f"{hashlib.sha256(bytes(range(256))).hexdigest()}: "
                                         "the file changed after the build")
    (folder / "sub" / "b.bin").write_bytes(bytes(range(256)))
    (folder / "a.txt").unlink()
    assert refusal(folder, pub) == f"{folder}: a.txt: missing (the provenance lists it)"
    (folder / "a.txt").write_bytes(b"alpha\n")
    (folder / "extra").write_bytes(b"")
    assert refusal(folder, pub) == f"{folder}: extra: not covered by the provenance"
    (folder / "extra").unlink()
    envelope = json.loads((folder / PROVENANCE).read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (folder / PROVENANCE).write_text(json.dumps(envelope))
    assert refusal(folder, pub).startswith(f"{folder / PROVENANCE}: bad signature: no signature "
                                           "verifies with ")


def test_unsigned_foreign_and_escaping_provenances_are_refused(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "unsigned", signed=False)
    assert refusal(folder, tmp_path / "unsigned" / "release.pub") == \
        f"{folder / PROVENANCE}: unsigned: the envelope has no signature"
    folder = make_folder(tmp_path / "other")
    make_key_pair(KeyType.ED25519, tmp_path / "stranger")
    assert "bad signature" in refusal(folder, tmp_path / "stranger.pub")
    folder = make_folder(tmp_path / "escape", subjects={"../secret": "0" * 64})
    assert refusal(folder, tmp_path / "escape" / "release.pub") == \
        f"{folder / PROVENANCE}: subject '../secret' is not a path inside the folder"
    (folder / PROVENANCE).write_text("not json")
    assert refusal(folder, tmp_path / "escape" / "release.pub").startswith(
        f"{folder / PROVENANCE}: not a DSSE envelope")


def run_git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


# --- a real build ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed_builds(tmp_path_factory: pytest.TempPathFactory,
                  cache_env: dict[str, str]) -> tuple[Path, Path, Path]:
    """The default platform with a provenance key, built twice a wall-clock second apart;
    returns both output folders and the public key."""
    work = tmp_path_factory.mktemp("signed")
    make_key_pair(KeyType.ED25519, work / "release")
    (work / "signed.yaml").write_text(f"extends: {ROOT}/recipes/platforms/qemu_x86_64.yaml\n"
                                      "provenance:\n  key: release.key\n")
    outs = []
    for name in ("one", "two"):
        proc = run_cli("build", "--allow-untrusted",
                       str(work / "signed.yaml"), "--out", str(work / name), "--json",
                       "--no-lock", "--force", env=cache_env)
        outs.append(Path(json.loads(proc.stdout)["result"][0]["out"]))
        time.sleep(1.1)  # another wall-clock second must not matter
    return outs[0], outs[1], work / "release.pub"


@pytest.mark.network
def test_provenance_sboms_and_manifest_are_reproducible(
        signed_builds: tuple[Path, Path, Path]) -> None:
    one, two, _ = signed_builds
    for name in ("sbom.spdx.json", "sbom.cdx.json", "manifest.json", PROVENANCE):
        assert digest(one / name) == digest(two / name), name


@pytest.mark.network
def test_the_statement_covers_every_output(signed_builds: tuple[Path, Path, Path]) -> None:
    folder = signed_builds[0]
    envelope = json.loads((folder / PROVENANCE).read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert sorted(s["name"] for s in statement["subject"]) == [f for f in files if f != PROVENANCE]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["provenance"] == {"file": PROVENANCE, "signed": True,
                                      "sbom": {"spdx": "sbom.spdx.json", "cyclonedx": "sbom.cdx.json"}}
    build = statement["predicate"]["buildDefinition"]
    assert build["externalParameters"] == {"recipe": "signed.yaml", "platform": "x86_64-qemu_x86_64-r0",
                                           "sourceDateEpoch": 1700000000, "images": True}
    recipes = build["resolvedDependencies"][:4]
    # Shipped recipes by their path in this repository, at its commit; the test's own by name.
    assert [d["name"] for d in recipes] == ["recipes/base/toolset.yaml", "recipes/base/x86_64.yaml",
                                            "recipes/platforms/qemu_x86_64.yaml", "signed.yaml"]
    commit = run_git("rev-parse", "HEAD")
    assert [d["digest"].get("gitCommit") for d in recipes] == [commit, commit, commit, None]
    assert recipes[2]["digest"]["sha256"] == hashlib.sha256(
        (ROOT / "recipes/platforms/qemu_x86_64.yaml").read_bytes()).hexdigest()
    purls = {d.get("uri", "") for d in build["resolvedDependencies"]}
    assert {c["name"] for c in manifest["components"]} == \
        {unquote(p.split("/")[2].split("@")[0]) for p in purls if p.startswith("pkg:deb/")}
    assert statement["predicate"]["runDetails"]["builder"]["version"] == \
        {"onie-builder": manifest["builder_version"]}


@pytest.mark.network
def test_verify_provenance_accepts_the_build_and_refuses_any_changed_byte(
        signed_builds: tuple[Path, Path, Path], tmp_path: Path) -> None:
    folder, _, pub = signed_builds
    proc = run_cli("verify-provenance", str(folder), "--key", str(pub))
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != PROVENANCE]
    assert proc.stdout.strip() == f"{folder}: ok: {len(files)} files signed by key " \
                                  f"{load_public_key(pub).key_id}"
    for file in files:
        name = file.relative_to(folder).as_posix()
        copy = tmp_path / name.replace("/", "_")
        shutil.copytree(folder, copy)
        data = bytearray((copy / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (copy / name).write_bytes(bytes(data))
        proc = run_cli("verify-provenance", str(copy), "--key", str(pub), check=False)
        assert proc.returncode == 1, name
        assert proc.stderr.startswith(f"error: {copy}: {name}: sha256 "), proc.stderr
        shutil.rmtree(copy)


@pytest.mark.network
def test_an_unsigned_build_does_not_verify(built: Callable[[str], Path], tmp_path: Path) -> None:
    make_key_pair(KeyType.ED25519, tmp_path / "release")
    folder = built("qemu_x86_64")
    proc = run_cli("verify-provenance", str(folder), "--key", str(tmp_path / "release.pub"),
                   check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: {folder / PROVENANCE}: unsigned: the envelope has no signature",
        "hint: name a key in the recipe (provenance.key) and build again"]


def test_kept_images_are_checked_against_the_signed_manifest(tmp_path: Path) -> None:
    """A `--no-images` build's folder: the images an earlier build made are not subjects, but
    the signed manifest lists them (kept_images) and their bytes must match it."""
    folder = tmp_path / "out"
    folder.mkdir()
    image = folder / "onie.iso"
    image.write_bytes(b"an earlier build's image")
    kept = {"onie.iso": {"sha256": hashlib.sha256(image.read_bytes()).hexdigest(), "size": 24,
                         "initrd_sha256": "1" * 64}}
    (folder / "manifest.json").write_text(json.dumps({"kept_images": kept}))
    subjects = {"a.txt": hashlib.sha256(b"alpha\n").hexdigest(),
                "sub/b.bin": hashlib.sha256(bytes(range(256))).hexdigest(),
                "manifest.json": hashlib.sha256((folder / "manifest.json").read_bytes())
                .hexdigest()}
    make_folder(tmp_path, subjects=subjects)
    pub = tmp_path / "release.pub"
    assert sorted(verify_provenance(folder, [load_public_key(pub)]).subjects) == sorted(subjects)
    image.write_bytes(b"an earlier build's imagE")
    assert refusal(folder, pub) == (
        f"{folder}: onie.iso: sha256 {hashlib.sha256(image.read_bytes()).hexdigest()} differs "
        f"from the signed manifest's kept image {kept['onie.iso']['sha256']}")
    image.write_bytes(b"an earlier build's image")
    (folder / "other.img").write_bytes(b"")
    assert refusal(folder, pub) == f"{folder}: other.img: not covered by the provenance"
