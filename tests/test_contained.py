"""Contained package unpacking (issue #23, item 3): hostile packages, overlays and template
folders, each paired with its exact outcome. No host file outside a package's own tree reaches
the image; setuid, setgid, sticky and world-writable bits reach it only by name."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from builder.components.cache import Cache
from builder.components.deb import unpack_deb
from builder.components.lock import Pin
from builder.components.resolve import Package, ResolvedComponent
from builder.errors import BuildError
from builder.initramfs.assemble import (
    check_keep_modes,
    install_component,
    render_mode_notes,
)
from builder.initramfs.grubdir import install_grub_folder
from builder.initramfs.tree import Kind, Tree
from builder.recipe.component import Component, GrubFolder
from builder.recipe.load import load_recipe
from builder.render import make_environment, render_template
from tests.conftest import ROOT, run_cli
from tests.test_deb import info, raw_deb

SECRET = b"host secret\n"


@pytest.fixture()
def host(tmp_path: Path) -> Path:
    """A folder of the build machine that no package may read from."""
    folder = tmp_path / "host"
    folder.mkdir()
    (folder / "secret").write_bytes(SECRET)
    (folder / "moddep.lst").write_text("normal: \n")
    (folder / "normal.mod").write_bytes(SECRET)
    return folder


def unpack(tmp_path: Path, entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> Path:
    return unpack_deb(raw_deb(tmp_path, entries), Cache(tmp_path / "cache"))


def install(root: Path, files: list[str], keep: tuple[str, ...] = ()) -> Tree:
    recipe, _ = load_recipe(ROOT / "recipes" / "platforms" / "qemu_x86_64.yaml")
    component = Component(path=Path("hostile.deb"), files=files)
    pin = Pin("hostile.deb", "", "amd64", "0" * 64, 0, "hostile.deb")
    tree = Tree(keep)
    install_component(tree, ResolvedComponent("hostile", component, "hostile.deb",
                                               (Package(pin, root),), None, "0" * 64), recipe)
    check_keep_modes(tree)
    return tree


def host_bytes(tree: Tree) -> list[str]:
    """Paths in the tree whose content is the host's secret."""
    return [e.path for e in tree.entries() if e.kind is Kind.FILE and e.content() == SECRET]


def mode_of(tree: Tree, path: str) -> int:
    entry = tree.get(path)
    assert entry is not None
    return entry.mode


def test_files_below_an_absolute_link_to_a_host_folder(tmp_path: Path, host: Path) -> None:
    root = unpack(tmp_path, [info("usr/share/evil", tarfile.SYMTYPE, linkname=str(host))])
    with pytest.raises(BuildError) as err:
        install(root, ["/usr/share/evil/secret"])
    assert err.value.message == "debian:hostile.deb=: the package has no /usr/share/evil/secret"


def test_files_below_a_relative_link_that_climbs_out(tmp_path: Path, host: Path) -> None:
    climb = "../" * 40 + str(host).lstrip("/")
    root = unpack(tmp_path, [info("usr/share/evil", tarfile.SYMTYPE, linkname=climb)])
    with pytest.raises(BuildError) as err:
        install(root, ["/usr/share/evil/secret"])
    assert err.value.message == "debian:hostile.deb=: the package has no /usr/share/evil/secret"


def test_a_link_to_a_host_folder_is_copied_as_a_link(tmp_path: Path, host: Path) -> None:
    root = unpack(tmp_path, [info("usr/share/evil", tarfile.SYMTYPE, linkname=str(host)),
                             info("usr/share/doc/", tarfile.DIRTYPE, 0o755),
                             info("usr/share/doc/leak", tarfile.SYMTYPE,
                                  linkname=f"{host}/secret")])
    tree = install(root, ["/usr/share/evil", "/usr/share/doc"])
    assert host_bytes(tree) == []
    link, leak = tree.get("/usr/share/evil"), tree.get("/usr/share/doc/leak")
    assert link is not None and (link.kind, link.target) == (Kind.SYMLINK, str(host))
    assert leak is not None and (leak.kind, leak.target) == (Kind.SYMLINK, f"{host}/secret")


def test_links_inside_the_package_still_resolve(tmp_path: Path) -> None:
    root = unpack(tmp_path, [info("usr/share/real/", tarfile.DIRTYPE, 0o755),
                             (info("usr/share/real/f"), b"inside\n"),
                             info("usr/share/alias", tarfile.SYMTYPE, linkname="real"),
                             info("lib", tarfile.SYMTYPE, linkname="/usr/share/real")])
    tree = install(root, ["/usr/share/alias/f", "/lib/f"])
    for path in ("/usr/share/alias/f", "/lib/f"):
        entry = tree.get(path)
        assert entry is not None and entry.content() == b"inside\n"


def test_a_link_loop_is_refused(tmp_path: Path) -> None:
    root = unpack(tmp_path, [info("a", tarfile.SYMTYPE, linkname="b"),
                             info("b", tarfile.SYMTYPE, linkname="a")])
    with pytest.raises(BuildError) as err:
        install(root, ["/a/f"])
    assert err.value.message == f"{root}: /a/f: more than 40 symlinks on the way"


MODE_CASES = [
    # (member, mode in the package, keep_modes, mode in the image, the build's note)
    ("usr/bin/su", 0o4755, (), 0o755, "dropped setuid from /usr/bin/su (initramfs.keep_modes "
                                      "keeps a path's)"),
    ("usr/bin/wall", 0o2755, (), 0o755, "dropped setgid from /usr/bin/wall (initramfs.keep_modes "
                                        "keeps a path's)"),
    ("etc/open", 0o666, (), 0o664, "dropped world-writable from /etc/open (initramfs.keep_modes "
                                   "keeps a path's)"),
    ("usr/bin/su", 0o4755, ("/usr/bin/su",), 0o4755, "keeping setuid on /usr/bin/su (mode 4755): "
                                                     "named in initramfs.keep_modes"),
    ("usr/bin/plain", 0o755, (), 0o755, None),
]


@pytest.mark.parametrize(("member", "mode", "keep", "want", "note"), MODE_CASES,
                         ids=["setuid", "setgid", "world-writable", "kept", "plain"])
def test_special_modes(tmp_path: Path, member: str, mode: int, keep: tuple[str, ...], want: int,
                       note: str | None) -> None:
    root = unpack(tmp_path, [(info(member, mode=mode), b"x")])
    assert (root / member).stat().st_mode & 0o7002 == 0  # never special in the cache
    tree = install(root, [f"/{member}"], keep)
    entry = tree.get(f"/{member}")
    assert entry is not None and entry.mode == want
    assert render_mode_notes(tree) == ([note] if note else [])


def test_a_world_writable_sticky_folder(tmp_path: Path) -> None:
    root = unpack(tmp_path, [info("var/spool/", tarfile.DIRTYPE, 0o755),
                             info("var/spool/mail/", tarfile.DIRTYPE, 0o1777),
                             (info("var/spool/mail/f", mode=0o644), b"x")])
    tree = install(root, ["/var/spool"])
    assert mode_of(tree, "/var/spool/mail") == 0o775
    assert render_mode_notes(tree) == ["dropped sticky, world-writable from /var/spool/mail "
                                       "(initramfs.keep_modes keeps a path's)"]


def test_keep_modes_naming_nothing(tmp_path: Path) -> None:
    root = unpack(tmp_path, [(info("usr/bin/su", mode=0o4755), b"x")])
    with pytest.raises(BuildError) as err:
        install(root, ["/usr/bin/su"], ("/usr/bin/sudo",))
    assert err.value.message == ("initramfs.keep_modes: /usr/bin/sudo: no component or overlay "
                                 "puts a file there")


def test_keep_modes_is_validated(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"extends: {ROOT}/recipes/platforms/qemu_x86_64.yaml\n"
                      "initramfs:\n  keep_modes: [bin/mount, /../etc/shadow]\n")
    from builder.errors import RecipeError

    with pytest.raises(RecipeError) as err:
        load_recipe(recipe)
    assert [p.split(": ", 1)[1] for p in err.value.problems] == [
        "initramfs.keep_modes[0]: expected an absolute path inside the image, got 'bin/mount'",
        "initramfs.keep_modes[1]: expected an absolute path inside the image, got "
        "'/../etc/shadow'"]


def test_a_grub_folder_that_is_a_link_to_the_host(tmp_path: Path, host: Path) -> None:
    root = unpack(tmp_path, [info("usr/lib/grub/", tarfile.DIRTYPE, 0o755),
                             info("usr/lib/grub/i386-pc", tarfile.SYMTYPE, linkname=str(host))])
    with pytest.raises(BuildError) as err:
        install_grub_folder(Tree(), root, GrubFolder(folder="/usr/lib/grub/i386-pc",
                                                     modules=["normal"]), "grub")
    assert err.value.message == "grub: /usr/lib/grub/i386-pc is no GRUB platform folder (no " \
                                "moddep.lst)"


def test_grub_modules_that_are_links_to_the_host(tmp_path: Path, host: Path) -> None:
    root = unpack(tmp_path, [info("g/", tarfile.DIRTYPE, 0o755),
                             (info("g/moddep.lst"), b"normal: \n"),
                             info("g/normal.mod", tarfile.SYMTYPE, linkname=f"{host}/normal.mod"),
                             info("g/modinfo.sh", tarfile.SYMTYPE, linkname=f"{host}/secret")])
    tree = Tree()
    install_grub_folder(tree, root, GrubFolder(folder="/g", modules=["normal"]), "grub")
    assert host_bytes(tree) == [] and "/g/normal.mod" not in tree


def test_an_overlay_keeps_links_and_drops_special_bits(tmp_path: Path, host: Path) -> None:
    overlay = tmp_path / "overlay"
    (overlay / "etc").mkdir(parents=True)
    (overlay / "etc/hostdir").symlink_to(host)
    (overlay / "etc/tool").write_bytes(b"x")
    (overlay / "etc/tool").chmod(0o6755)
    os.mkfifo(overlay / "etc/fifo")
    tree = Tree()
    tree.add_host_tree(overlay, "/", origin="overlay:overlay")
    assert host_bytes(tree) == [] and "/etc/hostdir/secret" not in tree
    assert "/etc/fifo" not in tree
    assert mode_of(tree, "/etc/tool") == 0o755
    assert render_mode_notes(tree) == ["dropped setuid, setgid from /etc/tool "
                                       "(initramfs.keep_modes keeps a path's)"]


def test_a_vendor_template_that_links_out(tmp_path: Path, host: Path) -> None:
    vendor = tmp_path / "vendor"
    (vendor / "guest/etc").mkdir(parents=True)
    (vendor / "guest/etc/profile.j2").symlink_to(host / "secret")
    (vendor / "guest/etc/inside.j2").write_text("inside\n")
    (vendor / "guest/etc/os-release.j2").symlink_to("inside.j2")  # a link inside is fine
    env = make_environment([vendor])
    assert render_template(env, "guest/etc/os-release.j2", {}) == "inside\n"
    with pytest.raises(BuildError) as err:
        render_template(env, "guest/etc/profile.j2", {})
    assert err.value.message == (f"template 'guest/etc/profile.j2': {vendor}/guest/etc/profile.j2 "
                                 f"leads out of {vendor}")


def test_a_build_says_which_modes_it_drops_and_keeps(tmp_path: Path,
                                                     cache_env: dict[str, str]) -> None:
    """The shipped toolset's util-linux mount is setuid in Debian: dropped by default, kept
    (and said so) when the recipe names it."""
    recipe = tmp_path / "keep.yaml"
    recipe.write_text(f"extends: {ROOT}/recipes/platforms/qemu_x86_64.yaml\n"
                      "initramfs:\n  keep_modes: [/bin/mount]\n")
    proc = run_cli("build", "--allow-untrusted", str(recipe), "--out", str(tmp_path / "out"), "--no-images",
                   "--no-lock", env=cache_env)
    notes = [line.split(": ", 1)[1] for line in proc.stderr.splitlines()
             if "keep_modes" in line]
    assert notes == ["keeping setuid on /bin/mount (mode 4755): named in initramfs.keep_modes",
                     "dropped setuid from /bin/umount (initramfs.keep_modes keeps a path's)"]
    listed = json.loads((tmp_path / "out/x86_64-qemu_x86_64-r0/manifest.json").read_text())
    modes = {f["path"]: f["mode"] for f in listed["initramfs"]["files"] if f["type"] != "symlink"}
    assert (modes["/bin/mount"], modes["/bin/umount"]) == ("4755", "0755")
    assert not [p for p, m in modes.items() if int(m, 8) & 0o7002 and p not in ("/bin/mount",
                                                                                "/tmp", "/dev/null")]
