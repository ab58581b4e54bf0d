"""Tests for builder.initramfs.elf: ELF headers and shared-library closures inside unpacked packages."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.initramfs.elf import ElfInfo, expand_runpath, install_elf_closure, parse_elf, usrmerge_twin
from builder.initramfs.tree import Kind, Tree

HOST_LIBS = Path("/usr/lib/x86_64-linux-gnu")
LS = Path("/usr/bin/ls")
GCC = shutil.which("gcc")
TRIPLET_DIRS = "/lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu, /lib, /usr/lib, /lib64"

pytestmark = pytest.mark.skipif(not (HOST_LIBS / "libc.so.6").exists(),
                                reason="needs an x86_64 Debian host")


def origin(root: Path) -> str:
    return f"debian:{root.name}"


def copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src.resolve(), dest)


def link(path: Path, target: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


@pytest.fixture
def sysroot(tmp_path: Path) -> list[Path]:
    """Three fake packages holding /usr/bin/ls and its libraries, laid out like Debian's."""
    coreutils, libc6, libselinux1 = (tmp_path / n for n in ("coreutils", "libc6", "libselinux1"))
    copy(LS, coreutils / "bin/ls")
    for name in ("libc.so.6", "ld-linux-x86-64.so.2"):
        copy(HOST_LIBS / name, libc6 / "lib/x86_64-linux-gnu" / name)
    link(libc6 / "lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    copy(HOST_LIBS / "libselinux.so.1", libselinux1 / "lib/x86_64-linux-gnu/libselinux.so.1")
    copy(HOST_LIBS / "libpcre2-8.so.0", libselinux1 / "usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.9")
    link(libselinux1 / "usr/lib/x86_64-linux-gnu/libpcre2-8.so.0", "libpcre2-8.so.0.9")
    return [coreutils, libc6, libselinux1]


LS_CLOSURE = [
    "/bin/ls",
    "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libselinux.so.1",
    "/lib64/ld-linux-x86-64.so.2",
    "/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0",
    "/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.9",
]


def test_parse_elf_program() -> None:
    info = parse_elf(LS)
    assert info is not None
    assert (info.machine, info.elfclass) == ("EM_X86_64", 64)
    assert info.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert info.needed == ("libselinux.so.1", "libc.so.6")
    assert (info.runpath, info.soname) == ((), None)


def test_parse_elf_library() -> None:
    info = parse_elf(HOST_LIBS / "libc.so.6")
    assert info is not None
    assert info.soname == "libc.so.6"
    assert info.needed == ("ld-linux-x86-64.so.2",)


def test_parse_elf_not_elf(tmp_path: Path) -> None:
    (tmp_path / "script").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "empty").write_bytes(b"")
    assert parse_elf(tmp_path / "script") is None
    assert parse_elf(tmp_path / "empty") is None


def test_parse_elf_truncated(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(LS.read_bytes()[:20])
    with pytest.raises(BuildError) as err:
        parse_elf(tmp_path / "bad")
    assert err.value.message.startswith(f"{tmp_path / 'bad'}: not a valid ELF file: ")


def test_closure_of_ls(sysroot: list[Path]) -> None:
    tree = Tree()
    assert install_elf_closure(tree, sysroot, ["/bin/ls"], origin) == LS_CLOSURE
    ld = tree.get("/lib64/ld-linux-x86-64.so.2")
    assert ld is not None and ld.kind is Kind.SYMLINK
    assert ld.target == "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    pcre = tree.get("/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0")
    assert pcre is not None and (pcre.kind, pcre.target) == (Kind.SYMLINK, "libpcre2-8.so.0.9")
    libc = tree.get("/lib/x86_64-linux-gnu/libc.so.6")
    assert libc is not None and libc.kind is Kind.FILE and libc.origin == "debian:libc6"
    assert libc.source == sysroot[1] / "lib/x86_64-linux-gnu/libc.so.6"
    ls = tree.get("/bin/ls")
    assert ls is not None and ls.mode == 0o755 and ls.origin == "debian:coreutils"


def test_dest_puts_a_binary_elsewhere(sysroot: list[Path]) -> None:
    """A second BusyBox beside busybox-static's /bin/busybox: the component's ``dest``."""
    tree = Tree()
    tree.add_file("/bin/ls", data=b"another ls", origin="debian:other")
    installed = install_elf_closure(tree, sysroot, ["/bin/ls"], origin,
                                    {"/bin/ls": "/usr/lib/onie/ls"})
    assert installed == sorted(["/usr/lib/onie/ls", *(p for p in LS_CLOSURE if p != "/bin/ls")])
    moved, kept = tree.get("/usr/lib/onie/ls"), tree.get("/bin/ls")
    assert moved is not None and moved.source == sysroot[0] / "bin/ls" and moved.mode == 0o755
    assert kept is not None and kept.data == b"another ls"
    link(sysroot[0] / "bin/dir", "ls")
    with pytest.raises(BuildError, match="/bin/dir: 'dest' needs a regular file"):
        install_elf_closure(Tree(), sysroot, ["/bin/dir"], origin, {"/bin/dir": "/x/dir"})


def test_closure_is_deterministic(sysroot: list[Path]) -> None:
    first, second = Tree(), Tree()
    install_elf_closure(first, sysroot, ["/bin/ls", "/bin/ls"], origin)
    install_elf_closure(second, sysroot, ["/bin/ls"], origin)
    assert list(first.entries()) == list(second.entries())


def test_usrmerge_twin_gets_a_link(sysroot: list[Path]) -> None:
    tree = Tree()
    installed = install_elf_closure(tree, sysroot, ["/usr/bin/ls"], origin)
    assert installed == sorted([*LS_CLOSURE, "/usr/bin/ls"])
    entry = tree.get("/usr/bin/ls")
    assert entry is not None and (entry.kind, entry.target) == (Kind.SYMLINK, "/bin/ls")


@pytest.mark.parametrize(("path", "twin"), [
    ("/usr/sbin/ethtool", "/sbin/ethtool"),
    ("/lib/ld-linux-aarch64.so.1", "/usr/lib/ld-linux-aarch64.so.1"),
    ("/usr/share/x", None),
    ("/opt/bin/x", None),
])
def test_usrmerge_twin(path: str, twin: str | None) -> None:
    assert usrmerge_twin(path) == twin


def test_missing_library(sysroot: list[Path]) -> None:
    shutil.rmtree(sysroot[2] / "usr")
    with pytest.raises(BuildError) as err:
        install_elf_closure(Tree(), sysroot, ["/bin/ls"], origin)
    assert err.value.message == (
        "/bin/ls: cannot find libpcre2-8.so.0 (needed by /lib/x86_64-linux-gnu/libselinux.so.1)"
        f" in {TRIPLET_DIRS}"
    )
    assert err.value.hint == "add the package that ships it to the recipe"


def test_missing_binary(sysroot: list[Path]) -> None:
    with pytest.raises(BuildError) as err:
        install_elf_closure(Tree(), sysroot, ["/sbin/ethtool"], origin)
    assert err.value.message == "/sbin/ethtool: not found in the unpacked packages"


def test_absolute_links_stay_inside_the_roots(sysroot: list[Path]) -> None:
    # The host has /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2; the link must not reach it.
    (sysroot[1] / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").unlink()
    with pytest.raises(BuildError) as err:
        install_elf_closure(Tree(), sysroot, ["/bin/ls"], origin)
    assert err.value.message == "/bin/ls: cannot find its interpreter /lib64/ld-linux-x86-64.so.2"


def test_links_in_another_root_do_not_reach_the_host(sysroot: list[Path], tmp_path: Path) -> None:
    # One root has a real /lib64, the next a link /lib64 -> /usr/lib64 that, followed by the
    # host, would find the host's own loader.
    (sysroot[1] / "lib64/ld-linux-x86-64.so.2").unlink()
    (tmp_path / "base/lib64").mkdir(parents=True)
    link(tmp_path / "evil/lib64", "/usr/lib64")
    with pytest.raises(BuildError) as err:
        install_elf_closure(Tree(), [*sysroot, tmp_path / "base", tmp_path / "evil"],
                            ["/bin/ls"], origin)
    assert err.value.message == "/bin/ls: cannot find its interpreter /lib64/ld-linux-x86-64.so.2"


def set_machine(path: Path, machine: int) -> None:
    """Rewrite e_machine (offset 18, little endian) to fake a library of another architecture."""
    data = bytearray(path.read_bytes())
    data[18:20] = machine.to_bytes(2, "little")
    path.write_bytes(bytes(data))


def test_wrong_machine_is_skipped(sysroot: list[Path]) -> None:
    libc6 = sysroot[1]
    copy(libc6 / "lib/x86_64-linux-gnu/libc.so.6", libc6 / "usr/lib/x86_64-linux-gnu/libc.so.6")
    set_machine(libc6 / "lib/x86_64-linux-gnu/libc.so.6", 183)  # EM_AARCH64
    installed = install_elf_closure(Tree(), sysroot, ["/bin/ls"], origin)
    assert "/usr/lib/x86_64-linux-gnu/libc.so.6" in installed
    assert "/lib/x86_64-linux-gnu/libc.so.6" not in installed


def test_only_wrong_machine_is_an_error(sysroot: list[Path]) -> None:
    set_machine(sysroot[1] / "lib/x86_64-linux-gnu/libc.so.6", 183)
    with pytest.raises(BuildError) as err:
        install_elf_closure(Tree(), sysroot, ["/bin/ls"], origin)
    assert err.value.message == f"/bin/ls: cannot find libc.so.6 (needed by /bin/ls) in {TRIPLET_DIRS}"
    assert err.value.hint == (
        "skipped /lib/x86_64-linux-gnu/libc.so.6 (EM_AARCH64/64): wanted EM_X86_64/64"
    )


def test_script_is_installed_without_libraries(tmp_path: Path) -> None:
    script = tmp_path / "pkg/usr/bin/hello"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\necho hello\n")
    script.chmod(0o755)
    tree = Tree()
    assert install_elf_closure(tree, [tmp_path / "pkg"], ["/usr/bin/hello"], origin) == [
        "/usr/bin/hello"]


X86 = ElfInfo("EM_X86_64", 64, None, (), (), None)


@pytest.mark.parametrize(("entry", "expanded"), [
    ("$ORIGIN/../lib", ["/opt/app/lib"]),
    ("${ORIGIN}/plugins", ["/opt/app/bin/plugins"]),
    ("/usr/$LIB/app", ["/usr/lib/x86_64-linux-gnu/app", "/usr/lib/app"]),
    ("/opt/$PLATFORM", ["/opt/x86_64"]),
    ("", []),
    ("relative/lib", []),
])
def test_expand_runpath(entry: str, expanded: list[str]) -> None:
    assert expand_runpath(entry, "/opt/app/bin", X86) == expanded


def compile_app(root: Path, dtags: str) -> None:
    """An app in /opt/app/bin linking libfoo.so.1 from /opt/app/lib through $ORIGIN."""
    assert GCC is not None
    src = root.parent / "src"
    src.mkdir(exist_ok=True)
    (src / "foo.c").write_text("int foo(void) { return 42; }\n")
    (src / "app.c").write_text("int foo(void);\nint main(void) { return foo() - 42; }\n")
    (root / "opt/app/lib").mkdir(parents=True)
    (root / "opt/app/bin").mkdir(parents=True)
    subprocess.run([GCC, "-shared", "-fPIC", "-Wl,-soname,libfoo.so.1", "-o",
                    root / "opt/app/lib/libfoo.so.1", src / "foo.c"], check=True)
    os.symlink("libfoo.so.1", root / "opt/app/lib/libfoo.so")
    subprocess.run([GCC, "-o", root / "opt/app/bin/app", src / "app.c",
                    f"-L{root}/opt/app/lib", "-lfoo", "-Wl,-rpath,$ORIGIN/../lib", f"-Wl,{dtags}"],
                   check=True)


@pytest.mark.skipif(GCC is None, reason="needs gcc")
@pytest.mark.parametrize(("dtags", "runpath"), [
    ("--enable-new-dtags", "RUNPATH"),
    ("--disable-new-dtags", "RPATH"),
])
def test_origin_runpath(sysroot: list[Path], tmp_path: Path, dtags: str, runpath: str) -> None:
    app = tmp_path / "app"
    compile_app(app, dtags)
    readelf = subprocess.run(["readelf", "-d", app / "opt/app/bin/app"], capture_output=True,
                             text=True, check=True).stdout
    assert f"({runpath})" in readelf
    info = parse_elf(app / "opt/app/bin/app")
    assert info is not None and info.runpath == ("$ORIGIN/../lib",)
    # A decoy in a default folder: the runpath comes first.
    decoy = sysroot[1] / "usr/lib/x86_64-linux-gnu/libfoo.so.1"
    copy(app / "opt/app/lib/libfoo.so.1", decoy)
    tree = Tree()
    installed = install_elf_closure(tree, [app, *sysroot], ["/opt/app/bin/app"], origin)
    assert installed == [
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
        "/opt/app/bin/app",
        "/opt/app/lib/libfoo.so.1",
    ]
    entry = tree.get("/opt/app/lib/libfoo.so.1")
    assert entry is not None and entry.origin == "debian:app"


@pytest.mark.network
def test_arm64_ethtool_closure(debian_roots: Callable[..., list[Path]]) -> None:
    roots = debian_roots("arm64", ["ethtool"])
    tree = Tree()
    installed = install_elf_closure(tree, roots, ["/usr/sbin/ethtool"], origin)
    wanted = ["/usr/sbin/ethtool", "/lib/ld-linux-aarch64.so.1",
              "/lib/aarch64-linux-gnu/libc.so.6", "/usr/lib/aarch64-linux-gnu/libmnl.so.0"]
    assert set(wanted) <= set(installed)
    for path in wanted:
        info = parse_elf(resolve_in_tree(tree, path))
        assert info is not None and (info.machine, info.elfclass) == ("EM_AARCH64", 64), path
    program = parse_elf(resolve_in_tree(tree, "/usr/sbin/ethtool"))
    assert program is not None and program.interpreter == "/lib/ld-linux-aarch64.so.1"


def resolve_in_tree(tree: Tree, path: str) -> Path:
    """The host file behind ``path`` in the tree, following the tree's own symlinks."""
    for _ in range(40):
        entry = tree.get(path)
        assert entry is not None, path
        if entry.kind is Kind.FILE:
            assert entry.source is not None
            return entry.source
        assert entry.kind is Kind.SYMLINK, path
        target = entry.target
        path = target if target.startswith("/") else f"{os.path.dirname(path)}/{target}"
    raise AssertionError(f"symlink loop at {path}")
