"""Assemble the initramfs tree: skeleton, components, kernel modules, templates and overlays."""

from __future__ import annotations

import dataclasses
import datetime
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import __version__
from builder.components.resolve import Resolution, ResolvedComponent
from builder.components.unpacked import package_mode, resolve_inside
from builder.errors import BuildError
from builder.initramfs import discovery, eeprom, netservices, ssh, transports, trust
from builder.initramfs.applets import find_shadowed, find_shell_busybox
from builder.initramfs.elf import install_elf_closure, parse_elf
from builder.initramfs.grubdir import install_grub_folder
from builder.initramfs.kmod import Module, find_module_closure, index_modules, install_modules, make_load_plan
from builder.initramfs.tree import Kind, Tree
from builder.recipe.implied import implied_modules
from builder.recipe.model import Recipe
from builder.render import make_environment, render_template, template_sources

SKELETON_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/etc", "/proc", "/sys", "/dev",
                 "/run", "/tmp", "/var/log", "/root", "/mnt", "/lib/modules")

# Nodes the kernel needs before devtmpfs is mounted (the console for /init's first output).
DEVICE_NODES = (("/dev/console", Kind.CHAR, 5, 1, 0o600), ("/dev/null", Kind.CHAR, 1, 3, 0o666))

# (template name, path in the image, mode): the rendered part of the environment.
TEMPLATES = (
    ("guest/init.j2", "/init", 0o755),
    ("guest/etc/machine.conf.j2", "/etc/machine.conf", 0o644),
    ("guest/etc/os-release.j2", "/etc/os-release", 0o644),
    ("guest/etc/profile.j2", "/etc/profile", 0o644),
    ("guest/etc/modprobe.conf.j2", "/etc/modprobe.d/onie.conf", 0o644),  # module options (usb-storage)
    # Discovery (builder/initramfs/discovery.py): /bin/onie-discovery and its udhcpc event script.
    *((name, discovery.PATHS[key], mode) for name, key, mode in discovery.TEMPLATES),
    # Signed installers (builder/initramfs/trust.py): the verifier, also included in /bin/onie-discovery.
    ("guest/lib/verify.sh.j2", "/lib/onie/verify.sh", 0o644),
    # Transports (builder/initramfs/transports.py): dhcpcd's configuration and hook for DHCPv6.
    ("guest/lib/dhcpcd.conf.j2", transports.PATHS["dhcpcd_conf"], 0o644),
    ("guest/lib/dhcpcd.hook.j2", transports.PATHS["dhcpcd_hook"], 0o755),
    # Embed (builder/images, docs/images.md): install onto the disk from the ISO's embed entry.
    ("guest/commands/embed.sh.j2", "/usr/sbin/onie-embed", 0o755),
    ("guest/etc/embed-rc.j2", "/etc/rc.d/S05embed", 0o755),
    # ONIE's runtime contract (docs/onie-contract.md): lsb-release, the EEPROM and onie-sysinfo.
    ("guest/etc/lsb-release.j2", "/etc/lsb-release", 0o644),
    ("guest/commands/onie-syseeprom.sh.j2", "/usr/bin/onie-syseeprom", 0o755),
    ("guest/commands/onie-sysinfo.sh.j2", "/bin/onie-sysinfo", 0o755),
    # ONIE's commands (docs/commands.md): ONIE-BOOT mounted before discovery, then one file each.
    ("guest/etc/onie-boot-rc.j2", "/etc/rc.d/S01onie-boot", 0o755),
    ("guest/commands/nos-install.sh.j2", "/bin/onie-nos-install", 0o755),
    ("guest/commands/self-update.sh.j2", "/bin/onie-self-update", 0o755),
    ("guest/commands/start.sh.j2", "/bin/onie-discovery-start", 0o755),
    ("guest/commands/stop.sh.j2", "/bin/onie-discovery-stop", 0o755),
    ("guest/commands/stop.sh.j2", "/bin/onie-stop", 0o755),
    ("guest/commands/support.sh.j2", "/bin/onie-support", 0o755),
    ("guest/commands/boot-mode.sh.j2", "/bin/onie-boot-mode", 0o755),
    ("guest/commands/nos-mode.sh.j2", "/bin/onie-nos-mode", 0o755),
    # Modes (docs/modes.md): firmware packages staged and applied by an update boot; an
    # updated slot confirmed once it gets as far as discovery.
    ("guest/commands/fwpkg.sh.j2", "/bin/onie-fwpkg", 0o755),
    ("guest/etc/fwpkg-rc.j2", "/etc/rc.d/S50onie-fwpkg", 0o755),
    ("guest/etc/slot-rc.j2", "/etc/rc.d/S90onie-slot", 0o755),
    # Uninstall mode (docs/modes.md): the command, and the rc script that runs it.
    ("guest/commands/uninstaller.sh.j2", "/bin/onie-uninstaller", 0o755),
    ("guest/etc/uninstall-rc.j2", "/etc/rc.d/S10uninstall", 0o755),
)
# (template, path, mode, platform key): rendered only when the recipe sets that key.
PLATFORM_TEMPLATES = (
    ("guest/etc/fw_env.config.j2", "/etc/fw_env.config", 0o644, "uboot_env"),  # fw_printenv
)


@dataclass(frozen=True)
class Context:
    """Values known at build time that templates use."""

    recipe: Recipe
    resolution: Resolution
    source_date_epoch: int
    modules: tuple[Module, ...] = ()  # the installed kernel modules (make_tree fills it in)

    def template_values(self) -> dict[str, Any]:
        """The variables every template sees."""
        date = datetime.datetime.fromtimestamp(self.source_date_epoch, datetime.UTC)
        return {
            "recipe": self.recipe,
            "platform": self.recipe.platform,
            "builder_version": __version__,
            "build_date": date.strftime("%Y-%m-%dT%H:%M%z"),  # ONIE's `date -Imin`
            "kernel_version": self.resolution.kernel.release,
            # The firmware that boots the platform; /init writes uefi instead when UEFI booted it.
            "firmware": "u-boot" if self.recipe.platform.arch.value == "arm64" else "bios",
            "partition_type": self.recipe.images.partition_type.value,  # builder/images/disk.py
            "modules": self.recipe.kernel.modules,
            # /init loads them by need (kmod.make_load_plan, docs/discovery.md "Boot timing").
            "module_load": make_load_plan(self.recipe.kernel.modules, self.modules),
            # BusyBox applet links (builder.initramfs.applets); install_templates reads the tree.
            "shell_busybox": None,
            "shadowed_applets": [],
            **discovery.template_values(self.recipe, self.resolution.kernel.release, __version__),
            **trust.template_values(self.recipe, self.source_date_epoch),
            **transports.template_values(self.recipe, self.source_date_epoch),
            **eeprom.template_values(self.recipe),
            **netservices.template_values(self.recipe, self.source_date_epoch),
            **ssh.template_values(self.recipe),
        }


def make_tree(context: Context) -> Tree:
    """Build the complete initramfs tree for a recipe."""
    tree = Tree(context.recipe.initramfs.keep_modes)
    install_skeleton(tree)
    for component in context.resolution.components:
        before = tree.paths()
        install_component(tree, component, context.recipe)
        for path in tree.paths() - before:
            tree.owners[path] = component.name
    context = dataclasses.replace(context, modules=install_kernel_modules(tree, context))
    install_templates(tree, context)
    trust.install_trust(tree, trust.load_trust(context.recipe.trust, context.source_date_epoch))
    transports.install_transports(tree, context.recipe)
    eeprom.install_eeprom(tree, context.recipe)
    ssh.install_ssh(tree, context.recipe)
    for overlay in context.recipe.initramfs.overlays:
        if not overlay.is_dir():
            raise BuildError(f"{overlay}: overlay folder does not exist")
        tree.add_host_tree(overlay, "/", origin=f"overlay:{overlay.name}")
    check_keep_modes(tree)
    return tree


def check_keep_modes(tree: Tree) -> None:
    """Refuse an ``initramfs.keep_modes`` path that nothing installs, so a typo is no silence."""
    for path in sorted(tree.keep_modes):
        if path not in tree:
            raise BuildError(f"initramfs.keep_modes: {path}: no component or overlay puts a "
                             "file there")


def render_mode_notes(tree: Tree) -> list[str]:
    """What the build says about special modes: each one kept (the recipe named it), and
    the ones dropped, grouped by the bits dropped."""
    notes = [f"keeping {describe_bits(mode)} on {path} (mode {mode:04o}): named in "
             "initramfs.keep_modes" for path, mode in sorted(tree.kept.items())]
    dropped: dict[str, list[str]] = {}
    for path, mode in sorted(tree.dropped.items()):
        if path in tree and path not in tree.kept:
            dropped.setdefault(describe_bits(mode), []).append(path)
    notes += [f"dropped {bits} from {', '.join(paths)} (initramfs.keep_modes keeps a path's)"
              for bits, paths in sorted(dropped.items())]
    return notes


def describe_bits(mode: int) -> str:
    """``0o4755`` -> ``setuid``; ``0o1777`` -> ``sticky, world-writable``."""
    names = ((0o4000, "setuid"), (0o2000, "setgid"), (0o1000, "sticky"), (0o002, "world-writable"))
    return ", ".join(name for bit, name in names if mode & bit)


def install_skeleton(tree: Tree) -> None:
    """The folders and device nodes every environment has."""
    for path in SKELETON_DIRS:
        tree.add_dir(path)
    tree.add_dir("/tmp", 0o1777)
    for path, kind, major, minor, mode in DEVICE_NODES:
        tree.add_device(path, kind, major, minor, mode=mode, origin="builtin")


def install_component(tree: Tree, resolved: ResolvedComponent, recipe: Recipe) -> None:
    """Put a component's files in the tree (ELF binaries bring their library closure), then
    its links."""
    component = resolved.component
    if resolved.file is not None:
        assert component.dest is not None
        tree.add_file(component.dest, source=resolved.file, mode=component.mode,
                      origin=resolved.origin)
        origin = resolved.origin
    else:
        origin = install_package_files(tree, resolved, recipe)
    for link, target in component.links.items():
        tree.add_symlink(link, target, origin=origin)


def install_package_files(tree: Tree, resolved: ResolvedComponent, recipe: Recipe) -> str:
    """A package component's files, GRUB folder and binaries; returns the main package's origin."""
    component = resolved.component
    roots = [p.root for p in resolved.packages]
    origins = {p.root: p.origin for p in resolved.packages}
    main = resolved.packages[0]
    for path in component.files:
        _install_package_file(tree, main.root, path, main.origin)
    if component.grub is not None:
        install_grub_folder(tree, main.root, component.grub, main.origin)
    if component.binaries:
        dests = {component.binaries[0]: component.dest} if component.dest else {}
        installed = install_elf_closure(tree, roots, component.binaries,
                                        lambda root: origins.get(root, "debian"), dests)
        check_machine(tree, installed, recipe)
    return main.origin


def _install_package_file(tree: Tree, root: Path, path: str, origin: str) -> None:
    # Links on the way are followed inside the package, never to the build machine's folders.
    host = resolve_inside(root, path)
    if host.is_symlink():
        tree.add_symlink(path, os.readlink(host), origin=origin)
    elif host.is_file():
        tree.add_file(path, source=host, mode=tree.host_mode(path, package_mode(root, host)),
                      origin=origin)
    elif host.is_dir():
        tree.add_host_tree(host, path, origin=origin, mode_of=lambda p: package_mode(root, p))
    else:
        raise BuildError(f"{origin}: the package has no {path}")


def check_machine(tree: Tree, paths: list[str], recipe: Recipe) -> None:
    """Refuse an ELF file built for another architecture than the platform's."""
    want = recipe.platform.arch.elf_machine
    for path in paths:
        entry = tree.get(path)
        if entry is None or entry.source is None or entry.kind is not Kind.FILE:
            continue
        info = parse_elf(entry.source)
        if info is not None and info.machine != want:
            raise BuildError(f"{path} from {entry.origin} is {info.machine}, but "
                             f"{recipe.platform_string} needs {want}")


def install_kernel_modules(tree: Tree, context: Context) -> tuple[Module, ...]:
    """The wanted modules and their dependency closure, with a generated modules.dep."""
    kernel = context.resolution.kernel
    wanted = [*context.recipe.kernel.modules, *implied_modules(context.recipe)]
    if not wanted:
        return ()
    if kernel.modules_dir is None:
        raise BuildError(f"kernel {kernel.release} has no lib/modules folder")
    index = index_modules(kernel.modules_dir)
    modules = find_module_closure(index, list(wanted))
    origin = kernel.packages[0].origin if kernel.packages else "kernel"
    install_modules(tree, kernel.release, modules, origin)
    return tuple(modules)


def install_templates(tree: Tree, context: Context) -> None:
    """Render /init, /etc/machine.conf and the other templates into the tree."""
    env = make_environment(context.recipe.templates)
    shell = find_shell_busybox(tree)
    values = {**context.template_values(), "shell_busybox": shell,
              "shadowed_applets": find_shadowed(tree, tree.owners) if shell else []}
    platform = context.recipe.platform
    wanted = [*TEMPLATES, *((name, dest, mode) for name, dest, mode, key in PLATFORM_TEMPLATES
                            if getattr(platform, key) is not None),
              *ssh.templates(context.recipe)]
    names = [name for name, _, _ in wanted]
    files = template_sources(env, names)
    for name, dest, mode in wanted:
        text = render_template(env, name, values)
        tree.add_file(dest, data=text.encode(), mode=mode,
                      origin=f"template:{_template_origin(files[name], context.recipe)}")


def _template_origin(filename: str, recipe: Recipe) -> str:
    """A template's origin without build-machine paths: builtin name or vendor folder name."""
    path = Path(filename)
    for folder in recipe.templates:
        if path.is_relative_to(folder):
            return posixpath.join(folder.name, path.relative_to(folder).as_posix())
    return path.name
