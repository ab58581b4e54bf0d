"""Issue #20 item 2: every check a build would fail on is made first, by `recipes validate`
and by `build` before it downloads or writes anything; each problem at file:line: key,
sorted by file and line, exit 2; an image that trusts no key needs --allow-untrusted."""

from __future__ import annotations

from pathlib import Path

from conftest import ROOT, run_cli

from builder.preflight.packages import _folders, lookup

PLATFORM = ROOT / "recipes" / "platforms" / "qemu_x86_64.yaml"
# A name difflib finds nothing close to, so the message has no "did you mean".
NO_PACKAGE = "qqqqzzzzqqqqzzzz"


def write_recipes(tmp_path: Path) -> None:
    """A parent with a bad kernel module and a child with one error of each other class."""
    (tmp_path / "parent.yaml").write_text(
        f"extends: {PLATFORM}\n"
        "kernel:\n"
        "  modules+:\n"
        "    - no_such_module\n")
    (tmp_path / "bad.pub").write_text("not a key\n")
    (tmp_path / "child.yaml").write_text(
        "extends: parent.yaml\n"
        "trust:\n"
        "  keys: [bad.pub]\n"
        "initramfs:\n"
        "  overlays: [missing-overlay]\n"
        "  components+:\n"
        f"    - debian: {NO_PACKAGE}\n"
        "      binaries: [/bin/x]\n"
        "    - debian: busybox-static\n"
        "      binaries: [/bin/busybox, /bin/no-such-binary]\n")


def errors(stderr: str) -> list[str]:
    return [line.removeprefix("error: ") for line in stderr.splitlines()
            if line.startswith("error: ")]


def test_validate_lists_every_class_sorted_at_file_line_key(tmp_path: Path,
                                                            cache_env: dict[str, str]) -> None:
    write_recipes(tmp_path)
    (tmp_path / "broken.yaml").write_text("platform:\n  vendor: [qemu\n")
    proc = run_cli("recipes", "validate", "child.yaml", "broken.yaml", cwd=tmp_path,
                   env=cache_env, check=False)
    assert proc.returncode == 2, proc.stderr
    found = errors(proc.stderr)
    # Sorted by file, then line; the parent's module error at the parent's line.
    expected = [
        "broken.yaml:3:1: invalid YAML: expected ',' or ']', but got '<stream end>'",
        f"child.yaml:3: trust.keys[0]: {tmp_path}/bad.pub: not a PEM public key (expected "
        "'-----BEGIN PUBLIC KEY-----'",
        f"child.yaml:5: initramfs.overlays[0]: {tmp_path}/missing-overlay: no such overlay folder",
        f"child.yaml:7: initramfs.components[3].debian: Debian package '{NO_PACKAGE}' not found "
        "for amd64 in ",
        "child.yaml:10: initramfs.components[4].binaries[1]: /bin/no-such-binary is not a file "
        "in Debian package busybox-static ",
        "parent.yaml:4: kernel.modules[14]: unknown kernel module 'no_such_module': the kernel "
        "package has no no_such_module.ko",
    ]
    assert len(found) == len(expected), found
    for line, start in zip(found, expected, strict=True):
        assert line.startswith(start), (line, start)
    assert "Traceback" not in proc.stderr
    assert "ok  " not in proc.stdout


def test_shipped_recipes_validate(cache_env: dict[str, str]) -> None:
    proc = run_cli("recipes", "validate", env=cache_env)
    assert sorted(Path(line.split()[1]).resolve() for line in proc.stdout.splitlines()) == sorted(
        p.resolve() for p in (ROOT / "recipes" / "platforms").glob("*.yaml"))


def test_build_fails_before_any_download_and_writes_nothing(tmp_path: Path) -> None:
    """An empty cache and --offline: the recipe's file errors, not a download error."""
    write_recipes(tmp_path)
    cache = tmp_path / "cache"
    proc = run_cli("build", "--offline", "child.yaml", "--out", "out", cwd=tmp_path,
                   env={"ONIE_BUILDER_CACHE": str(cache)}, check=False)
    assert proc.returncode == 2, proc.stderr
    assert errors(proc.stderr)[0].startswith(f"child.yaml:3: trust.keys[0]: {tmp_path}/bad.pub: ")
    assert errors(proc.stderr)[1:] == [
        f"child.yaml:5: initramfs.overlays[0]: {tmp_path}/missing-overlay: no such overlay folder"]
    assert "--offline" not in proc.stderr
    assert not (tmp_path / "out").exists() and not cache.exists()


def test_an_image_that_trusts_no_key_is_refused_on_one_line(tmp_path: Path) -> None:
    proc = run_cli("build", "qemu_x86_64", "--out", str(tmp_path / "out"), "--offline",
                   env={"ONIE_BUILDER_CACHE": str(tmp_path / "cache")}, check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: recipes/platforms/qemu_x86_64.yaml: x86_64-qemu_x86_64-r0 trusts no key (no "
        "trust.keys, discovery.insecure false), so its images refuse every installer; name a "
        "public key in trust.keys (docs/signed-installer.md) or pass --allow-untrusted"]
    assert not (tmp_path / "out").exists()


def test_lookup_follows_links_inside_the_packages() -> None:
    main = {"usr": "d", "usr/sbin/tool": "f", "sbin": "l:usr/sbin", "bin/sh": "l:/usr/bin/dash",
            "bin/loop": "l:loop"}
    dep = {"usr/bin/dash": "f"}
    listings = [main, dep]
    folders = [_folders(main), _folders(dep)]
    assert lookup(listings, folders, "/sbin/tool") == "f"
    assert lookup(listings, folders, "/bin/sh") == "f"
    assert lookup(listings, folders, "/usr/sbin") == "d"
    assert lookup(listings, folders, "/bin/loop") is None
    assert lookup(listings, folders, "/sbin/other") is None
    assert lookup(listings, folders, "/usr/sbin/tool/x") is None
