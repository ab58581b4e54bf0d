"""Tests for builder.initramfs.kmod: .modinfo parsing, module closures and the modules.dep we generate."""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import zstandard

from builder.errors import BuildError
from builder.initramfs.elf import parse_elf
from builder.initramfs.kmod import (
    LoadPlan,
    LoadStep,
    Module,
    find_module_closure,
    index_modules,
    install_modules,
    make_load_plan,
    render_modules_alias,
    render_modules_dep,
)
from builder.initramfs.tree import Kind, Tree

if TYPE_CHECKING:
    from builder.components.apt import Archive

VERSION = "6.1.0-99-test"
COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda data: data,
    ".xz": lambda data: lzma.compress(data, check=lzma.CHECK_CRC32),
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
    ".gz": lambda data: gzip.compress(data, mtime=0),
}


def find_kernel_version(tree_root: Path) -> str:
    """The one kernel version under ``tree_root/lib/modules`` (no build needs it)."""
    modules = tree_root / "lib" / "modules"
    versions = sorted(p.name for p in modules.iterdir() if p.is_dir()) if modules.is_dir() else []
    if len(versions) != 1:
        found = ", ".join(versions) if versions else "none"
        raise BuildError(f"{modules}: expected exactly one kernel version, found {found}")
    return versions[0]


@pytest.fixture(scope="session")
def empty_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A relocatable ELF object with no content, to which each fake module adds a .modinfo."""
    if shutil.which("gcc") is None or shutil.which("objcopy") is None:
        pytest.skip("needs gcc and objcopy (binutils) to build fake modules")
    folder = tmp_path_factory.mktemp("empty")
    (folder / "empty.c").write_text("")
    subprocess.run(["gcc", "-c", "-o", folder / "empty.o", folder / "empty.c"], check=True)
    return folder / "empty.o"


ModuleMaker = Callable[..., Path]


@pytest.fixture
def modules_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "lib/modules" / VERSION
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def make_module(empty_object: Path, modules_dir: Path) -> ModuleMaker:
    """Write ``kernel/<relpath>`` with the given .modinfo entries, compressed by ``suffix``."""

    def make(relpath: str, *modinfo: str, suffix: str = "") -> Path:
        info = modules_dir / f"{relpath}.modinfo"
        info.parent.mkdir(parents=True, exist_ok=True)
        info.write_bytes(b"".join(f"{item}\0".encode() for item in modinfo))
        plain = modules_dir / relpath
        subprocess.run(["objcopy", "--add-section", f".modinfo={info}", empty_object, plain],
                       check=True)
        info.unlink()
        if not suffix:
            return plain
        packed = plain.with_name(plain.name + suffix)
        packed.write_bytes(COMPRESS[suffix](plain.read_bytes()))
        plain.unlink()
        return packed

    return make


def simple(make: ModuleMaker, name: str, depends: str = "", *extra: str,
           suffix: str = "") -> Path:
    return make(f"kernel/drivers/{name}.ko", f"name={name.replace('-', '_')}",
                f"depends={depends}", *extra, suffix=suffix)


def names(modules: list[Module]) -> list[str]:
    return [m.name for m in modules]


@pytest.mark.parametrize("suffix", ["", ".xz", ".zst", ".gz"])
def test_index_reads_modinfo(make_module: ModuleMaker, modules_dir: Path, suffix: str) -> None:
    path = make_module("kernel/net/foo-bar.ko", "alias=pci:v1234*", "softdep=pre: crc32c post: x",
                       "depends=mii,libphy", "alias=foo", "name=foo_bar", suffix=suffix)
    index = index_modules(modules_dir)
    assert list(index) == ["foo_bar"]
    assert index["foo_bar"] == Module(
        name="foo_bar",
        path=path,
        relpath="kernel/net/foo-bar.ko",
        depends=("mii", "libphy"),
        softdeps_pre=("crc32c",),
        aliases=("pci:v1234*", "foo"),
    )


def test_name_defaults_to_file_name(make_module: ModuleMaker, modules_dir: Path) -> None:
    make_module("kernel/fs/my-fs.ko", "depends=")
    assert index_modules(modules_dir)["my_fs"].name == "my_fs"


def test_index_reads_only_what_is_looked_up(make_module: ModuleMaker, modules_dir: Path) -> None:
    simple(make_module, "a", "b")
    simple(make_module, "b")
    (modules_dir / "kernel/drivers/broken.ko").write_bytes(b"not an ELF file")
    index = index_modules(modules_dir)
    assert "broken" in index and len(index) == 3
    assert names(find_module_closure(index, ["a"])) == ["b", "a"]
    with pytest.raises(BuildError) as err:
        index["broken"]
    assert err.value.message == (
        f"{modules_dir}/kernel/drivers/broken.ko: not a kernel module "
        "(bad ELF: Magic number does not match)"
    )


def test_updates_override_kernel(make_module: ModuleMaker, modules_dir: Path) -> None:
    make_module("kernel/drivers/e1000.ko", "name=e1000", "depends=")
    make_module("updates/e1000.ko", "name=e1000", "depends=", suffix=".xz")
    assert index_modules(modules_dir)["e1000"].relpath == "updates/e1000.ko"


def test_index_of_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as err:
        index_modules(tmp_path / "nope")
    assert err.value.message == f"{tmp_path}/nope: no such kernel modules folder"


def test_find_kernel_version(tmp_path: Path) -> None:
    (tmp_path / "lib/modules" / VERSION / "kernel").mkdir(parents=True)
    assert find_kernel_version(tmp_path) == VERSION


@pytest.mark.parametrize(("versions", "found"), [
    ([], "none"),
    (["6.1.0-1-amd64", "6.1.0-2-amd64"], "6.1.0-1-amd64, 6.1.0-2-amd64"),
])
def test_find_kernel_version_needs_one(tmp_path: Path, versions: list[str], found: str) -> None:
    (tmp_path / "lib/modules").mkdir(parents=True)
    for version in versions:
        (tmp_path / "lib/modules" / version).mkdir()
    with pytest.raises(BuildError) as err:
        find_kernel_version(tmp_path)
    assert err.value.message == (
        f"{tmp_path}/lib/modules: expected exactly one kernel version, found {found}"
    )


@pytest.fixture
def diamond(make_module: ModuleMaker, modules_dir: Path) -> Path:
    """top needs zeta and alpha, both need base; crc32c_generic is top's pre-softdep."""
    simple(make_module, "top", "zeta,alpha", "softdep=pre: crypto-crc32c missing_soft")
    simple(make_module, "zeta", "base", suffix=".zst")
    simple(make_module, "alpha", "base", suffix=".xz")
    simple(make_module, "base", "", "alias=base-alias")
    simple(make_module, "crc32c_generic", "", "alias=crc32c")
    simple(make_module, "e1000")
    simple(make_module, "e1000e")
    simple(make_module, "virtio-net", "base")
    return modules_dir


def test_closure_diamond_order(diamond: Path) -> None:
    closure = find_module_closure(index_modules(diamond), ["top"])
    assert names(closure) == ["base", "alpha", "crc32c_generic", "zeta", "top"]


def test_closure_dashes_and_duplicates(diamond: Path) -> None:
    closure = find_module_closure(index_modules(diamond), ["virtio-net", "e1000", "virtio_net"])
    assert names(closure) == ["base", "e1000", "virtio_net"]


def test_unknown_modules_are_all_reported(diamond: Path) -> None:
    with pytest.raises(BuildError) as err:
        find_module_closure(index_modules(diamond), ["e1001", "virtio-nett", "zzzzzz"])
    assert err.value.message == (
        "unknown kernel module 'e1001' (did you mean 'e1000'?)\n"
        "unknown kernel module 'virtio-nett' (did you mean 'virtio_net'?)\n"
        "unknown kernel module 'zzzzzz'"
    )
    assert err.value.hint == "module names are file names without .ko, '-' and '_' alike"


def test_missing_hard_dependency(make_module: ModuleMaker, modules_dir: Path) -> None:
    simple(make_module, "a", "gone")
    with pytest.raises(BuildError) as err:
        find_module_closure(index_modules(modules_dir), ["a"])
    assert err.value.message == (
        "kernel module 'a' (kernel/drivers/a.ko) depends on 'gone', "
        "which is not among the kernel's modules"
    )


def test_cycle(make_module: ModuleMaker, modules_dir: Path) -> None:
    simple(make_module, "a", "b")
    simple(make_module, "b", "", "softdep=pre: a")
    with pytest.raises(BuildError) as err:
        find_module_closure(index_modules(modules_dir), ["a"])
    assert err.value.message == "kernel modules depend on each other in a cycle: a, b"


def test_render_modules_dep(diamond: Path) -> None:
    closure = find_module_closure(index_modules(diamond), ["top", "virtio_net"])
    # Softdeps are not dependencies for depmod either; modprobe loads each list from its end.
    assert render_modules_dep(closure) == (
        "kernel/drivers/base.ko:\n"
        "kernel/drivers/alpha.ko: kernel/drivers/base.ko\n"
        "kernel/drivers/crc32c_generic.ko:\n"
        "kernel/drivers/virtio-net.ko: kernel/drivers/base.ko\n"
        "kernel/drivers/zeta.ko: kernel/drivers/base.ko\n"
        "kernel/drivers/top.ko: kernel/drivers/zeta.ko kernel/drivers/alpha.ko"
        " kernel/drivers/base.ko\n"
    )


def test_render_modules_dep_needs_every_dependency(diamond: Path) -> None:
    top = index_modules(diamond)["top"]
    with pytest.raises(BuildError) as err:
        render_modules_dep([top])
    assert err.value.message == (
        "kernel module 'top' depends on 'zeta', which is not among the modules to install"
    )


def test_render_modules_alias(diamond: Path) -> None:
    closure = find_module_closure(index_modules(diamond), ["top"])
    assert render_modules_alias(closure) == (
        "# Aliases extracted from modules themselves.\n"
        "alias base-alias base\n"
        "alias crc32c crc32c_generic\n"
    )


def test_install_modules(diamond: Path) -> None:
    closure = find_module_closure(index_modules(diamond), ["top"])
    tree = Tree()
    install_modules(tree, VERSION, closure, "debian:linux-image")
    base = f"/lib/modules/{VERSION}"
    zeta = tree.get(f"{base}/kernel/drivers/zeta.ko")
    assert zeta is not None and zeta.kind is Kind.FILE and zeta.mode == 0o644
    assert zeta.content()[:4] == b"\x7fELF"
    assert zeta.origin == "debian:linux-image"
    assert tree.get(f"{base}/kernel/drivers/alpha.ko.xz") is None

    def text(name: str) -> str:
        entry = tree.get(f"{base}/{name}")
        assert entry is not None
        return entry.content().decode()

    assert text("modules.dep") == render_modules_dep(closure)
    assert text("modules.alias") == render_modules_alias(closure)
    assert text("modules.builtin") == ""
    assert text("modules.order") == "".join(f"{m.relpath}\n" for m in closure)


# --- the real Debian kernel ----------------------------------------------------------------


def need_tool(name: str) -> str:
    """The tool's path; missing in CI is a failure, locally a skip."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        message = f"needs '{name}' on the host"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def write_tree(tree: Tree, dest: Path) -> None:
    """Write the tree's folders, files and links under ``dest``."""
    for entry in tree.entries():
        path = dest / entry.path.lstrip("/")
        if entry.kind is Kind.DIR:
            path.mkdir(parents=True, exist_ok=True)
        elif entry.kind is Kind.FILE:
            path.write_bytes(entry.content())
            path.chmod(entry.mode)
        elif entry.kind is Kind.SYMLINK:
            path.symlink_to(entry.target)


def parse_dep(text: str) -> dict[str, set[str]]:
    """modules.dep lines as module -> set of dependencies."""
    deps = {}
    for line in text.splitlines():
        if match := re.fullmatch(r"(\S+\.ko):(.*)", line):
            deps[match[1]] = set(match[2].split())
    return deps


@pytest.fixture(scope="session")
def debian_kernel(debian_archive: Callable[[str], Archive],
                  debian_roots: Callable[..., list[Path]]) -> Path:
    """The unpacked linux-image-6.1...-amd64 package that linux-image-amd64 points at."""
    meta = debian_archive("amd64").find("linux-image-amd64")
    name = next(m[1] for d in meta.depends if (m := re.match(r"(linux-image-[\w.+-]+)", d)))
    [root] = debian_roots("amd64", [name], depends=False)
    return root


@pytest.mark.network
def test_real_kernel_closure(debian_kernel: Path, tmp_path: Path) -> None:
    version = find_kernel_version(debian_kernel)
    index = index_modules(debian_kernel / "lib/modules" / version)
    assert len(index) > 3000
    closure = find_module_closure(index, ["e1000", "virtio_net"])
    order = names(closure)
    assert "e1000" in order
    assert order.index("failover") < order.index("net_failover") < order.index("virtio_net")

    tree = Tree()
    install_modules(tree, version, closure, "debian:linux-image")
    assert tree.get(f"/lib/modules/{version}/kernel/drivers/net/ethernet/intel/e1000/e1000.ko")
    write_tree(tree, tmp_path / "root")
    ours = (tmp_path / "root/lib/modules" / version / "modules.dep").read_text()
    depmod = subprocess.run([need_tool("depmod"), "-b", tmp_path / "root", "-n", version],
                            capture_output=True, text=True, check=True).stdout
    assert parse_dep(depmod) == parse_dep(ours)


@pytest.mark.network
def test_busybox_modprobe_resolves_our_files(debian_kernel: Path, tmp_path: Path) -> None:
    """BusyBox modprobe -D (print, never load) in a chroot reads our modules.dep and alias."""
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    busybox = need_tool("busybox")
    info = parse_elf(Path(busybox))
    if info is None or info.interpreter is not None:
        pytest.skip("needs a static busybox (busybox-static) to run in a chroot")
    version = find_kernel_version(debian_kernel)
    closure = find_module_closure(index_modules(debian_kernel / "lib/modules" / version),
                                  ["e1000", "virtio_net"])
    tree = Tree()
    install_modules(tree, version, closure, "debian:linux-image")
    tree.add_file("/bin/busybox", source=Path(busybox), mode=0o755, origin="host")
    root = tmp_path / "root"
    write_tree(tree, root)
    # modprobe looks in /lib/modules/$(uname -r): point the host's release at our version.
    release = os.uname().release
    if release != version:
        (root / "lib/modules" / release).symlink_to(version)

    def modprobe(name: str) -> list[str]:
        out = subprocess.run([need_tool("setpriv"), "--bounding-set", "-sys_module", "chroot",
                              root, "/bin/busybox", "modprobe", "-D", name],
                             capture_output=True, text=True, check=True).stdout
        return [line.split()[1].rsplit("/", 1)[-1] for line in out.splitlines()]

    assert modprobe("virtio_net") == ["failover.ko", "net_failover.ko", "virtio_ring.ko",
                                      "virtio.ko", "virtio_net.ko"]
    assert modprobe("pci:v00008086d0000100Esv00008086sd0000001Ebc02sc00i00") == ["e1000.ko"]


def test_load_plan_groups_modules_by_when_init_needs_them() -> None:
    """/init's module groups (guest/init.j2): network drivers and the virtio bus first, filesystems
    on their own, everything else (disks, USB, unknown names) as storage; only host-bus
    aliases tell which hardware a module waits for; fs- aliases name the mount types."""
    def module(name: str, relpath: str, *aliases: str) -> Module:
        return Module(name, Path("/x") / relpath, relpath, (), (), aliases)

    modules = [
        module("e1000", "kernel/drivers/net/ethernet/intel/e1000/e1000.ko",
               "pci:v00008086d0000100Esv*sd*bc*sc*i*"),
        module("virtio_pci", "kernel/drivers/virtio/virtio_pci.ko", "pci:v00001AF4d*sv*sd*bc*sc*i*"),
        module("virtio_net", "kernel/drivers/net/virtio_net.ko", "virtio:d00000001v*"),
        module("xhci_pci", "kernel/drivers/usb/host/xhci-pci.ko", "pci:v*d*sv*sd*bc0Csc03i30*"),
        module("usb_storage", "kernel/drivers/usb/storage/usb-storage.ko",
               "usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*"),
        module("sd_mod", "kernel/drivers/scsi/sd_mod.ko", "scsi:t-0x00*", "block-major-8-*"),
        module("vfat", "kernel/fs/fat/vfat.ko", "fs-vfat"),
        module("nls_cp437", "kernel/fs/nls/nls_cp437.ko"),
        module("ext4", "kernel/fs/ext4/ext4.ko", "fs-ext4", "ext3", "fs-ext3", "fs-ext2"),
    ]
    wanted = ["e1000", "virtio-pci", "virtio_net", "xhci_pci", "usb_storage", "sd_mod", "vfat",
              "nls_cp437", "ext4", "not_installed"]
    plan = make_load_plan(wanted, modules)
    assert [s.module for s in plan.network] == ["e1000", "virtio_pci", "virtio_net"]
    assert [s.module for s in plan.storage] == ["xhci_pci", "usb_storage", "sd_mod", "not_installed"]
    assert [s.module for s in plan.filesystems] == ["vfat", "nls_cp437", "ext4"]
    assert plan.network[2] == LoadStep("virtio_net", ("virtio:d00000001v*",))
    # usb:, scsi: and block-major aliases name devices that appear only once a driver is in.
    assert [s.aliases for s in plan.storage] == [("pci:v*d*sv*sd*bc0Csc03i30*",), (), (), ()]
    assert plan.storage_aliases == ("pci:v*d*sv*sd*bc0Csc03i30*",)
    assert plan.filesystem_types == ("vfat", "ext4")
    # A stick's filesystem: the first typed module and the tables with no type, not ext4.
    assert plan.stick_filesystem == ("vfat", "nls_cp437")
    assert make_load_plan([], modules) == LoadPlan()
    # With no typed filesystem module there is nothing to preload for a stick.
    assert make_load_plan(["nls_cp437"], modules).stick_filesystem == ()
