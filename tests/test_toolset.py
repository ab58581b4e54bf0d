"""The installer toolset: its recipe keys, GRUB folder pruning, BusyBox applet links beside real
tools, /etc/fw_env.config and the per-component sizes (no downloads; the built image is checked
in tests/test_build.py and booted in tests/test_toolset_boot.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from builder.cli.build import render_sizes
from builder.errors import BuildError, RecipeError
from builder.initramfs.applets import find_shadowed, find_shell_busybox
from builder.initramfs.cpio import render_entries
from builder.initramfs.grubdir import install_grub_folder, module_closure, prune_list, read_moddep
from builder.initramfs.sizes import measure_components
from builder.initramfs.tree import Tree
from builder.recipe.component import GrubFolder
from builder.recipe.implied import UEFI_MODULE, implied_modules
from builder.recipe.load import load_recipe
from builder.render import make_environment, render_template
from tests.test_discovery import values
from tests.test_recipe import GOOD

ROOT = Path(__file__).resolve().parent.parent
PLATFORMS = ROOT / "recipes" / "platforms"
SHARED = ["shell", "util-linux", "mount", "fdisk", "gdisk", "parted", "e2fsprogs", "dosfstools",
          "psmisc"]


def vendor(tmp_path: Path, platform: str, text: str) -> Path:
    path = tmp_path / "vendor.yaml"
    path.write_text(f"extends: {PLATFORMS / platform}.yaml\n{text}")
    return path


def test_base_recipes_declare_the_toolset_per_arch() -> None:
    x86 = load_recipe(PLATFORMS / "qemu_x86_64.yaml")[0]
    arm = load_recipe(PLATFORMS / "qemu_arm64.yaml")[0]
    assert [n for n, _ in x86.initramfs.tools] == [
        *SHARED, "grub-install", "grub-tools", "grub-bios", "grub-uefi", "efibootmgr", "efivar"]
    assert [n for n, _ in arm.initramfs.tools] == [*SHARED, "uboot-env", "mtd-utils"]
    shell = dict(x86.initramfs.tools)["shell"]
    assert (shell.debian, shell.binaries, shell.dest) == ("busybox", ["/bin/busybox"],
                                                          "/usr/lib/onie/busybox")
    assert shell.links == {"/bin/sh": "/usr/lib/onie/busybox", "/bin/ash": "/usr/lib/onie/busybox"}
    bios = dict(x86.initramfs.tools)["grub-bios"].grub
    assert bios is not None and bios.folder == "/usr/lib/grub/i386-pc"
    assert {"biosdisk", "part_gpt", "ext2", "normal", "linux", "loadenv"} <= set(bios.modules)
    # UEFI installers need efivarfs: implied on x86_64 with the toolset, never on arm64.
    assert UEFI_MODULE in implied_modules(x86) and UEFI_MODULE not in implied_modules(arm)


def test_vendor_recipe_drops_and_adds_tools(tmp_path: Path) -> None:
    recipe = load_recipe(vendor(tmp_path, "qemu_x86_64", """\
initramfs:
  toolset:
    parted: null
    ethtool:
      debian: ethtool
      binaries: [/sbin/ethtool]
"""))[0]
    names = [n for n, _ in recipe.initramfs.tools]
    assert "parted" not in names and names[-1] == "ethtool"
    assert recipe.initramfs.toolset["parted"] is None  # kept as dropped, so a child may add it back


def test_discovery_only_leaves_the_toolset_out(tmp_path: Path) -> None:
    recipe = load_recipe(vendor(tmp_path, "qemu_x86_64", "initramfs:\n  discovery_only: true\n"))[0]
    assert recipe.initramfs.discovery_only and recipe.initramfs.tools == []
    assert recipe.initramfs.toolset  # still declared: the switch alone decides
    assert implied_modules(recipe) == []
    # discovery's own: busybox-static, openssl (signatures, HTTPS), rdate (the clock, #18)
    assert [c.debian for c in recipe.initramfs.components] == ["busybox-static", "openssl", "rdate"]


BAD = [
    ("initramfs:\n  toolset:\n    Bad Name:\n      debian: x\n      binaries: [/x]\n", 4,
     "initramfs.toolset.Bad Name.[key]: string should match pattern '^[a-z0-9][a-z0-9_.+-]*$', "
     "got 'Bad Name'"),
    ("initramfs:\n  toolset:\n    sh:\n      debian: busybox\n      binaries: [/a, /b]\n"
     "      dest: /usr/lib/x\n", 4,
     "initramfs.toolset.sh: 'dest' on a package component renames its one binary: expected "
     "exactly one binary and no files, got 2 binaries and 0 files"),
    ("initramfs:\n  toolset:\n    g:\n      debian: grub-pc-bin\n      grub:\n"
     "        folder: /usr/lib/grub/i386-pc\n        modules: [part-gpt]\n", 8,
     "initramfs.toolset.g.grub.modules[0]: expected a GRUB module name such as 'part_gpt', "
     "got 'part-gpt'"),
    ("initramfs:\n  toolset:\n    g:\n      debian: grub-pc-bin\n      grub:\n"
     "        folder: /usr/lib/grub/i386-pc\n        modules: []\n", 8,
     "initramfs.toolset.g.grub.modules: list should have at least 1 item after validation, "
     "not 0, got []"),
    ("initramfs:\n  toolset:\n    l:\n      debian: x\n      binaries: [/x]\n"
     "      links: {bin/sh: /x}\n", 7,
     "initramfs.toolset.l.links.bin/sh.[key]: expected an absolute path inside the image, "
     "got 'bin/sh'"),
    ("platform:\n  uboot_env:\n    device: mtd0\n    size: 0x10000\n", 4,
     "platform.uboot_env.device: string should match pattern '^/dev/[A-Za-z0-9_.:/-]+$', "
     "got 'mtd0'"),
    ("platform:\n  uboot_env:\n    device: /dev/mtd1\n", 3,
     "platform.uboot_env.size: required key missing"),
    ("initramfs:\n  discovery_only: maybe\n", 3,
     "initramfs.discovery_only: expected true or false, got 'maybe'"),
]


@pytest.mark.parametrize(("override", "line", "message"), BAD, ids=[b[2][:40] for b in BAD])
def test_bad_toolset_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, override: str,
                            line: int, message: str) -> None:
    (tmp_path / "base.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text("extends: base.yaml\n" + override)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "bad.yaml")
    assert info.value.problems == [f"bad.yaml:{line}: {message}"]


def test_fw_env_config_from_the_platform(tmp_path: Path) -> None:
    recipe = load_recipe(PLATFORMS / "qemu_arm64.yaml")[0]
    text = render_template(make_environment([]), "guest/etc/fw_env.config.j2", values(recipe))
    assert [line for line in text.splitlines() if not line.startswith("#")] == [
        "/dev/mtd0  0x4000000  0x40000  0x40000"]
    recipe = load_recipe(vendor(tmp_path, "qemu_arm64", """\
platform:
  uboot_env: {device: /dev/mmcblk0boot1, offset: 0x3e0000, size: 0x20000, sector: null}
"""))[0]
    text = render_template(make_environment([]), "guest/etc/fw_env.config.j2", values(recipe))
    assert text.splitlines()[-1] == "/dev/mmcblk0boot1  0x3e0000  0x20000"


MODDEP = "normal: extcmd boot\nextcmd:\nboot:\nlinux: boot relocator\nrelocator:\nvideo:\n"


def test_grub_module_closure_and_lists() -> None:
    deps = read_moddep(MODDEP)
    assert module_closure(deps, ["normal"], "here") == {"normal", "extcmd", "boot"}
    with pytest.raises(BuildError, match=r"here: no GRUB module 'nope' in its moddep.lst"):
        module_closure(deps, ["normal", "nope"], "here")
    kept = {"normal", "extcmd", "boot"}
    assert prune_list("moddep.lst", MODDEP, kept) == "normal: extcmd boot\nextcmd:\nboot:\n"
    assert prune_list("command.lst", "*echo: echo\nboot: boot\nlinux: linux\n", kept) == "boot: boot\n"
    assert prune_list("fs.lst", "ext2\nnormal\n", kept) == "normal\n"


def test_grub_folder_keeps_modules_images_and_modinfo(tmp_path: Path) -> None:
    folder = tmp_path / "usr/lib/grub/i386-pc"
    folder.mkdir(parents=True)
    (folder / "moddep.lst").write_text(MODDEP)
    (folder / "command.lst").write_text("linux: linux\nboot: boot\n")
    for name in ("normal", "extcmd", "boot", "linux", "relocator", "video"):
        (folder / f"{name}.mod").write_bytes(b"\x7fELF" + name.encode())
    for name in ("kernel.img", "boot.img", "modinfo.sh", "config.h", "grub-bios-setup"):
        (folder / name).write_bytes(b"x")
    tree = Tree()
    grub = GrubFolder(folder="/usr/lib/grub/i386-pc", modules=["normal"])
    assert install_grub_folder(tree, tmp_path, grub, "debian:grub-pc-bin=2") == {
        "normal", "extcmd", "boot"}
    names = sorted(p.rsplit("/", 1)[1] for p in tree.paths() if p.startswith(grub.folder + "/"))
    assert names == ["boot.img", "boot.mod", "command.lst", "extcmd.mod", "kernel.img",
                     "moddep.lst", "modinfo.sh", "normal.mod"]
    command = tree.get(grub.folder + "/command.lst")
    assert command is not None and command.content() == b"boot: boot\n"
    with pytest.raises(BuildError, match="is no GRUB platform folder"):
        install_grub_folder(tree, tmp_path, GrubFolder(folder="/usr", modules=["x"]), "d")


def toolset_tree() -> tuple[Tree, dict[str, str]]:
    """A tree with busybox-static, the dynamic BusyBox as /bin/sh and a few real tools."""
    tree = Tree()
    tree.add_file("/bin/busybox", data=b"static", mode=0o755, origin="t")
    tree.add_file("/usr/lib/onie/busybox", data=b"dynamic", mode=0o755, origin="t")
    tree.add_symlink("/bin/sh", "/usr/lib/onie/busybox", origin="t")
    tree.add_file("/sbin/partprobe", data=b"real", mode=0o755, origin="t")
    tree.add_file("/sbin/mke2fs", data=b"real", mode=0o755, origin="t")
    tree.add_symlink("/sbin/mkfs.ext4", "mke2fs", origin="t")
    tree.add_file("/usr/sbin/sgdisk", data=b"real", mode=0o755, origin="t")
    tree.add_file("/usr/bin/sgdisk", data=b"real too", mode=0o755, origin="t")
    owners = {p: "x" for p in ("/bin/busybox", "/usr/lib/onie/busybox", "/bin/sh",
                               "/sbin/partprobe", "/sbin/mke2fs", "/sbin/mkfs.ext4",
                               "/usr/sbin/sgdisk", "/usr/bin/sgdisk")}
    return tree, owners


def test_applet_links_make_way_for_real_tools() -> None:
    tree, owners = toolset_tree()
    assert find_shell_busybox(tree) == "/usr/lib/onie/busybox"
    assert find_shadowed(tree, owners) == [
        "/usr/sbin/mke2fs", "/usr/sbin/mkfs.ext4", "/usr/sbin/partprobe",
        "/usr/bin/mke2fs", "/usr/bin/mkfs.ext4", "/usr/bin/partprobe",
        "/sbin/sgdisk",
        "/bin/mke2fs", "/bin/mkfs.ext4", "/bin/partprobe", "/bin/sgdisk",
    ]
    # A discovery-only image: /bin/sh is busybox-static's applet link, made at boot.
    plain = Tree()
    plain.add_file("/bin/busybox", data=b"static", mode=0o755, origin="t")
    assert find_shell_busybox(plain) is None


def test_init_installs_applets_shell_first_and_removes_shadows(tmp_path: Path) -> None:
    recipe = load_recipe(PLATFORMS / "qemu_x86_64.yaml")[0]
    text = render_template(make_environment([]), "guest/init.j2", {
        **values(recipe), "shell_busybox": "/usr/lib/onie/busybox",
        "shadowed_applets": ["/usr/sbin/partprobe", "/bin/mkfs.ext4"]})
    order = [text.index(s) for s in ("/usr/lib/onie/busybox --install -s\n",
                                     "/bin/busybox --install -s\n",
                                     "rm -f \\\n    /usr/sbin/partprobe /bin/mkfs.ext4\n",
                                     "export PATH=")]
    assert order == sorted(order)
    plain = render_template(make_environment([]), "guest/init.j2", values(recipe))
    assert "--install -s" in plain and "rm -f" not in plain and "onie/busybox" not in plain


def test_sizes_count_each_entry_once_in_recipe_order() -> None:
    tree, _ = toolset_tree()
    tree.owners.update({"/bin/busybox": "busybox-static", "/usr/lib/onie/busybox": "shell",
                        "/bin/sh": "shell", "/sbin/partprobe": "parted"})
    tree.add_file("/lib/modules/6.1/kernel/a.ko", data=b"module", origin="debian:linux")
    squeezed: list[tuple[bytes, bool]] = []

    def squeeze(archive: bytes, x86: bool) -> bytes:
        squeezed.append((archive, x86))
        return gzip.compress(archive, mtime=0)

    sizes = measure_components(tree, 0, squeeze, x86=True)
    assert [s.name for s in sizes] == ["busybox-static", "shell", "parted", "kernel modules",
                                       "environment"]
    by_name = {s.name: s for s in sizes}
    assert (by_name["shell"].entries, by_name["shell"].bytes) == (2, len(b"dynamic"))
    shell = [e for e in tree.entries() if e.path in ("/bin/sh", "/usr/lib/onie/busybox")]
    assert by_name["shell"].compressed == len(gzip.compress(render_entries(shell, 0), mtime=0))
    assert sum(s.entries for s in sizes) == len(tree)
    # The branch filter for programs only, as the image's layers have it.
    assert [x86 for _, x86 in squeezed].count(False) == 2


def test_build_summary_lists_components() -> None:
    sizes = (("debian:busybox-static", 836_000), ("grub-bios", 213_400), ("gdisk", 981_000))
    assert render_sizes(sizes, width=70) == (
        "  compressed alone, by component: debian:busybox-static 836 kB,\n"
        "    grub-bios 213 kB, gdisk 981 kB")
