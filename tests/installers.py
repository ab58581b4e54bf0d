"""Test installers for discovery's boot tests: plain scripts and an ONIE-format sharch.

Each prints ``TEST-INSTALLER <tag> ...`` lines on the guest's console (its environment as
ONIE gives it), then exits with the status asked for. The sharch follows ONIE's self-extracting
format: a shell header that checks the SHA-1 of the tar payload appended after a marker line,
extracts it to a temporary folder and runs ``installer/install.sh``, which sources
``/etc/machine.conf`` as ONIE's installers do.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

REPORT = """echo "TEST-INSTALLER {tag} url=$onie_exec_url platform=$onie_platform machine=$onie_machine \
mode=$onie_boot_reason serial=$onie_serial_num mac=$onie_eth_addr ip=$onie_disco_ip \
server=$onie_disco_serverid installer=$onie_installer"
if [ -e /tmp/pwned ] || [ -e /tmp/pwned2 ] || [ -e /tmp/pwned3 ]; then
    echo "TEST-INSTALLER {tag} PWNED"
else
    echo "TEST-INSTALLER {tag} clean"
fi
"""


def script_installer(path: Path, tag: str, status: int = 0) -> Path:
    """A plain shell installer that reports and exits with ``status``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + REPORT.format(tag=tag) + f"exit {status}\n")
    path.chmod(0o755)
    return path


ASKING = """#!/bin/sh
set -e
tty=no
if (: < /dev/tty) 2> /dev/null; then tty=yes; fi
echo "TEST-INSTALLER {tag} stdin=$(readlink /proc/self/fd/0) ctty=$tty"
read -r -p "Do you still wish to install this image? [y/n]: " answer
echo "TEST-INSTALLER {tag} answer=$answer"
[ "$answer" = y ]
"""


def asking_installer(path: Path, tag: str) -> Path:
    """An installer that asks SONiC's y/n question (``read -r -p`` under ``set -e``, which ends
    the install at end of input) and succeeds on "y"; it reports its stdin and whether it has
    a controlling terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ASKING.format(tag=tag))
    path.chmod(0o755)
    return path


SHARCH_HEADER = """#!/bin/sh
# ONIE-format self-extracting installer (test fixture).
echo "TEST-INSTALLER {tag} verifying payload checksum"
payload_sha1={sha1}
sha1=$(sed -e '1,/^exit_marker$/d' "$0" | sha1sum | awk '{{ print $1 }}')
if [ "$sha1" != "$payload_sha1" ]; then
    echo "TEST-INSTALLER {tag} checksum mismatch"
    exit 1
fi
tmp_dir=$(mktemp -d)
cd "$tmp_dir" || exit 1
sed -e '1,/^exit_marker$/d' "$0" | tar xf - || exit 1
"$tmp_dir/installer/install.sh"
rc=$?
cd /
rm -rf "$tmp_dir"
exit $rc
exit_marker
"""

INSTALL_SH = """#!/bin/sh
. /etc/machine.conf
echo "TEST-INSTALLER {tag} sharch install.sh platform_from_machine_conf=$onie_platform"
""" + REPORT + "exit 0\n"


def sharch_installer(path: Path, tag: str) -> Path:
    """An ONIE-format sharch: header + uncompressed tar of ``installer/install.sh``."""
    data = INSTALL_SH.format(tag=tag).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("installer/install.sh")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        tar.addfile(info, io.BytesIO(data))
    payload = buf.getvalue()
    header = SHARCH_HEADER.format(tag=tag, sha1=hashlib.sha1(payload).hexdigest())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode() + payload)
    path.chmod(0o755)
    return path
