"""A test NOS and its installer, written the way NOS installers for ONIE are (SONiC's, ONIE's
demo): a self-extracting shell archive whose install.sh checks it runs under ONIE
(/etc/lsb-release, /etc/machine.conf, onie-sysinfo -p), finds the ONIE disk with blkid, adds
its partition after the last one with sgdisk (and a diagnostics partition after it, marked as
ONIE marks them), makes ext4, installs GRUB with grub-install
(BIOS or UEFI, as the machine booted) and appends what ONIE's 50_onie_grub prints to its
grub.cfg. The NOS itself is the environment's own kernel with a tiny initramfs that prints
``TEST-NOS <tag> booted`` and powers off.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from builder.initramfs.cpio import render_cpio
from builder.initramfs.tree import Kind, Tree

NOS_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "TEST-NOS {tag} booted: $(/bin/busybox cat /proc/cmdline)"
/bin/busybox poweroff -f
"""

INSTALL_SH = r"""#!/bin/sh
# Test NOS installer ({tag}): what a NOS installer for ONIE does, step by step.
set -e
say() {{ echo "NOS-INSTALLER {tag}: $*"; }}
here=$(cd "$(dirname "$0")" && pwd)

# 1. Running under ONIE?
grep -q '^DISTRIB_ID=onie$' /etc/lsb-release || {{ say "not running under ONIE"; exit 1; }}
. /etc/machine.conf
platform=$(onie-sysinfo -p)
[ "$platform" = "$onie_platform" ] || {{ say "platform mismatch: $platform"; exit 1; }}
say "platform $platform firmware $onie_firmware"

# 2. The ONIE disk: the one holding ONIE-BOOT.
boot_dev=$(blkid -L ONIE-BOOT)
disk_name=$(basename "$(readlink -f "/sys/class/block/${{boot_dev#/dev/}}/..")")
disk=/dev/$disk_name
say "ONIE-BOOT is $boot_dev on $disk"

# 3. A partition after the last one, ext4: sgdisk on GPT, parted on msdos (as ONIE's demo).
table=$(onie-sysinfo -t)
# add_partition NAME MIB: sets part (its number) and dev (its device), formatted as ext4.
add_partition() {{
    if [ "$table" = msdos ]; then
        table_now=$(parted -s -m "$disk" unit s print)
        part=$(( $(echo "$table_now" | grep -c '^[0-9][0-9]*:') + 1 ))
        last_end=$(echo "$table_now" | awk -F: '/^[0-9]+:/ {{ e = $3 }} END {{ sub("s", "", e); print e }}')
        parted -s "$disk" unit s mkpart primary ext4 $((last_end + 1))s $((last_end + $2 * 2048))s
    else
        last=$(sgdisk -p "$disk" | awk '/^ +[0-9]+ / {{ n = $1 }} END {{ print n }}')
        part=$((last + 1))
        sgdisk --new=$part::+$2M --change-name=$part:$1 --typecode=$part:8300 "$disk" > /dev/null
    fi
    partprobe "$disk"
    dev=
    for q in /sys/class/block/"$disk_name"/"$disk_name"*; do
        [ "$(cat "$q/partition")" = "$part" ] && dev=/dev/${{q##*/}}
    done
    [ -b "$dev" ] || {{ say "no device for partition $part"; exit 1; }}
    mkfs.ext4 -q -F -L "$1" "$dev"
}}
add_partition NOS-ROOT 64
nos_dev=$dev
mkdir -p /mnt/nos
mount -t ext4 "$nos_dev" /mnt/nos
mkdir -p /mnt/nos/nos /mnt/nos/boot
cp "$here/nos-vmlinuz" /mnt/nos/nos/vmlinuz
cp "$here/nos-initrd" /mnt/nos/nos/initrd.img
say "partition $part ($nos_dev) ready on $table"

# 3b. A diagnostics partition, marked the way ONIE marks them (GPT: a name ending -DIAG and
# attribute bit 0; msdos: an ext4 label ending -DIAG): uninstall keeps it.
add_partition NOS-DIAG 8
[ "$table" = msdos ] || sgdisk -A $part:set:0 "$disk" > /dev/null
mkdir -p /mnt/diag
mount -t ext4 "$dev" /mnt/diag
echo "diagnostics of {tag}" > /mnt/diag/diag.txt
umount /mnt/diag
say "diagnostics partition $part ($dev) ready"

# 4. GRUB: BIOS into the MBR and GRUB-BOOT, UEFI onto the ESP's removable path.
if [ -d /sys/firmware/efi ]; then
    esp=
    for n in 1 2 3 4 5 6 7 8; do
        if sgdisk -i $n "$disk" 2>/dev/null | grep -q C12A7328-F81F-11D2-BA4B-00A0C93EC93B; then
            esp=$n; break
        fi
    done
    [ -n "$esp" ] || {{ say "no EFI System partition"; exit 1; }}
    mkdir -p /mnt/esp
    for q in /sys/class/block/"$disk_name"/"$disk_name"*; do
        [ "$(cat "$q/partition")" = "$esp" ] && mount "/dev/${{q##*/}}" /mnt/esp
    done
    # As SONiC does: its own folder on the ESP and an NVRAM boot entry first in BootOrder;
    # and the removable path too, so the firmware boots the NOS whichever entry it tries.
    grub-install --target=x86_64-efi --efi-directory=/mnt/esp --boot-directory=/mnt/nos/boot \
        --bootloader-id=testnos "$disk"
    grub-install --target=x86_64-efi --efi-directory=/mnt/esp --boot-directory=/mnt/nos/boot \
        --bootloader-id=testnos --removable --no-nvram "$disk"
    efibootmgr | grep -q ' testnos$' || {{ say "no NVRAM boot entry testnos"; exit 1; }}
    umount /mnt/esp
else
    grub-install --target=i386-pc --boot-directory=/mnt/nos/boot "$disk"
fi
cat > /mnt/nos/boot/grub/grub.cfg << 'EOF_CFG'
if [ "$grub_platform" = "pc" ]; then
    serial --unit=0 --speed=115200
    terminal_input serial
    terminal_output serial
fi
set timeout=3
set default=0
if [ -s $prefix/grubenv ]; then
    load_env
fi
if [ -n "$next_entry" ]; then
    set default="$next_entry"
    set next_entry=
    save_env next_entry
fi
menuentry 'Test NOS {tag}' {{
    search --no-floppy --label --set=root NOS-ROOT
    linux /nos/vmlinuz console=ttyS0,115200 panic=-1
    initrd /nos/initrd.img
}}
EOF_CFG
# 5. ONIE's entries, as ONIE hands them to a NOS.
if [ ! -x /mnt/onie-boot/onie/grub.d/50_onie_grub ]; then
    mkdir -p /mnt/onie-boot
    mount LABEL=ONIE-BOOT /mnt/onie-boot
fi
/mnt/onie-boot/onie/grub.d/50_onie_grub >> /mnt/nos/boot/grub/grub.cfg
grub-editenv /mnt/nos/boot/grub/grubenv create
if [ -x /bin/onie-nos-mode ]; then
    /bin/onie-nos-mode -s
fi
sync
umount /mnt/nos
say "installed"
"""

SHARCH = """#!/bin/sh
# Test NOS {tag}: a self-extracting archive as NOS installers for ONIE are.
payload_sha1={sha1}
sha1=$(sed -e '1,/^exit_marker$/d' "$0" | sha1sum | awk '{{ print $1 }}')
[ "$sha1" = "$payload_sha1" ] || {{ echo "NOS-INSTALLER {tag}: payload damaged"; exit 1; }}
tmp_dir=$(mktemp -d)
sed -e '1,/^exit_marker$/d' "$0" | tar xf - -C "$tmp_dir" || exit 1
"$tmp_dir/installer/install.sh"
rc=$?
rm -rf "$tmp_dir"
exit $rc
exit_marker
"""


def make_nos_initrd(tag: str) -> bytes:
    """An uncompressed cpio: the host's busybox-static as /bin/busybox and an /init that prints
    the marker and powers off."""
    tree = Tree()
    for folder in ("/bin", "/proc", "/dev"):
        tree.add_dir(folder, mode=0o755, origin="test")
    tree.add_device("/dev/console", Kind.CHAR, 5, 1, origin="test", mode=0o600)
    tree.add_file("/bin/busybox", source=Path("/bin/busybox"), mode=0o755, origin="test")
    tree.add_file("/init", data=NOS_INIT.format(tag=tag).encode(), mode=0o755, origin="test")
    return render_cpio(tree, 1700000000)


def nos_installer(path: Path, kernel: Path, tag: str) -> Path:
    """The installer file: SHARCH header, then a tar of installer/{install.sh,nos-*}."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, mode in (
                ("installer/install.sh", INSTALL_SH.format(tag=tag).encode(), 0o755),
                ("installer/nos-vmlinuz", kernel.read_bytes(), 0o644),
                ("installer/nos-initrd", make_nos_initrd(tag), 0o644)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 1700000000
            tar.addfile(info, io.BytesIO(data))
    payload = raw.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(SHARCH.format(tag=tag, sha1=hashlib.sha1(payload).hexdigest()).encode() + payload)
    path.chmod(0o755)
    return path
