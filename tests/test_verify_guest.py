"""The guest's verifier (templates/guest/lib/verify.sh.j2) agrees with `onie-builder verify` on
every case of the tamper matrix: first under the host's BusyBox ash with only BusyBox applets and
openssl on PATH (fast), then in the booted image, where discovery is also offered every bad file
before a good one and runs only the good one (lab)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from builder.initramfs.trust import verify_signed
from builder.lab.qemu import Console, clean_output, machine_for, qemu_command
from builder.onie.waterfall import INSTALLER, default_names
from builder.signing.format import BLOCK_SIZE, BootMode, Reason, Refusal
from tests.conftest import require_qemu, require_tool, run_cli, unpack_initramfs
from tests.tamper import (
    FLOOR,
    MIN_VERSION,
    PLATFORM,
    ROOT,
    RUNNING,
    Case,
    Keys,
    make_keys,
    payload,
    render_verifier,
    revoked_digests,
    signed,
    write_cases,
)


def make_bin(folder: Path) -> Path:
    """A PATH folder holding BusyBox's applets and the host's openssl, nothing else."""
    busybox = require_tool("busybox", "to run the guest's verifier under BusyBox ash")
    openssl = require_tool("openssl", "to verify signatures as the guest does")
    folder.mkdir()
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for name in applets.stdout.split():
        os.symlink(busybox, folder / name)
    os.symlink(openssl, folder / "openssl")
    return folder


class Guest:
    """The rendered verifier sourced by BusyBox ash with a guest-like PATH."""

    def __init__(self, root: Path, keys: Keys, insecure: bool = False) -> None:
        self.bin = make_bin(root / "bin")
        self.script = root / "verify.sh"
        self.script.write_text(render_verifier(keys.store(revoked_digests()), root / "trust",
                                               insecure=insecure))
        # Like the guest's / (bin, dev, etc): names a stray glob would expand to.
        self.cwd = root / "cwd"
        (self.cwd / PLATFORM).mkdir(parents=True)

    def shell(self, command: str, *args: str | Path,
              data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run ``command`` after sourcing the verifier; ``args`` are $1, $2, ..."""
        return subprocess.run([self.bin / "ash", "-c", f'. "$0"; {command}', self.script, *args],
                              input=data, env={"PATH": str(self.bin)}, capture_output=True,
                              cwd=self.cwd, timeout=60)

    def verify(self, file: Path, out: Path, mode: str = "install",
               digest: str = "") -> tuple[int, str]:
        """``verify_installer FILE OUT MODE [DIGEST]``: its status and console output."""
        proc = self.shell('verify_installer "$1" "$2" "$3" "$4"', file, out, mode, digest)
        assert proc.stderr == b"", proc.stderr  # every message is the one console line
        return proc.returncode, proc.stdout.decode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Guest:
    return Guest(tmp_path_factory.mktemp("guest"), keys)


def host_reason(keys: Keys, path: Path, mode: str) -> str | None:
    try:
        verify_signed(path, keys.store(revoked_digests()), PLATFORM, BootMode(mode),
                      running=RUNNING)
    except Refusal as exc:
        return exc.reason.value
    return None


def guest_reason(rc: int, out: str) -> str | None:
    """The reason token of the guest's one refusal line (None when it verified)."""
    if rc == 0:
        assert out == ""
        return None
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("onie-discovery: refused "), out
    return lines[0].removeprefix("onie-discovery: refused ").split(":", 1)[0]


def test_matrix_has_every_case_the_issue_names(keys: Keys, tmp_path: Path) -> None:
    reasons = {case.reason for case, _ in write_cases(keys, tmp_path)}
    assert reasons >= {r.value for r in Reason} | {None}
    assert len([c for c, _ in write_cases(keys, tmp_path) if c.reason]) >= 14


def test_guest_and_host_agree_on_every_case(keys: Keys, guest: Guest, tmp_path: Path) -> None:
    cases = write_cases(keys, tmp_path / "cases")
    table = []
    for case, path in cases:
        host = host_reason(keys, path, case.mode)
        work = tmp_path / "work"
        shutil.copyfile(path, work)
        rc, out = guest.verify(work, tmp_path / "out", case.mode)
        table.append((case.name, case.reason, host, guest_reason(rc, out)))
        if case.reason is None:  # the payload is the original installer, byte for byte
            assert (tmp_path / "out").read_bytes() == path.read_bytes()[:-BLOCK_SIZE]
            assert not work.exists()
            (tmp_path / "out").unlink()
        else:
            assert not (tmp_path / "out").exists()
            work.unlink()
    expected = [(name, want, want, want) for name, want, _, _ in table]
    assert table == expected


def test_guest_details_match_the_host(keys: Keys, guest: Guest, tmp_path: Path) -> None:
    """Not just the reason: the whole console line says what `onie-builder verify` says."""
    for case, path in write_cases(keys, tmp_path / "cases"):
        if case.reason is None:
            continue
        try:
            verify_signed(path, keys.store(revoked_digests()), PLATFORM, BootMode(case.mode),
                          now=None, running=RUNNING)
        except Refusal as exc:
            host = f"onie-discovery: refused {exc.reason.value}: {exc.detail}\n"
        rc, out = guest.verify(path, tmp_path / "out", case.mode)
        assert rc == 1
        if case.reason != "expired":  # "now N" is each side's own clock
            assert out == host, case.name


def test_stripping_in_place(keys: Keys, guest: Guest, tmp_path: Path) -> None:
    work = tmp_path / "installer"
    work.write_bytes(signed(payload("in-place"), keys.a))
    assert guest.verify(work, work) == (0, "")
    assert work.read_bytes() == payload("in-place")


def test_digest_taken_while_downloading(keys: Keys, guest: Guest, tmp_path: Path) -> None:
    """verify_save_and_hash hashes the payload on the way in; the verifier then trusts it only
    if it matches the signed statement."""
    data = signed(payload("streamed"), keys.a)
    proc = guest.shell('verify_save_and_hash "$1"', tmp_path / "dl", data=data)
    digest = proc.stdout.decode().strip()
    assert digest == hashlib.sha256(payload("streamed")).hexdigest()
    assert (tmp_path / "dl").read_bytes() == data
    assert guest.verify(tmp_path / "dl", tmp_path / "out", "install", digest) == (0, "")
    (tmp_path / "dl").write_bytes(data)
    rc, out = guest.verify(tmp_path / "dl", tmp_path / "out2", "install", "0" * 64)
    assert guest_reason(rc, out) == "digest-mismatch"


def test_insecure_runs_only_the_unsigned(keys: Keys, tmp_path: Path) -> None:
    insecure = Guest(tmp_path, keys, insecure=True)
    work = tmp_path / "unsigned"
    work.write_bytes(payload("unsigned"))
    rc, out = insecure.verify(work, tmp_path / "out")
    assert (rc, out) == (0, "onie-discovery: warning insecure: running an unsigned installer\n")
    assert (tmp_path / "out").read_bytes() == payload("unsigned")
    for case, path in write_cases(keys, tmp_path / "cases"):
        if case.reason not in (None, "unsigned"):  # a signature that fails still fails
            rc, out = insecure.verify(path, tmp_path / "o", case.mode)
            assert guest_reason(rc, out) == case.reason, case.name


def test_room_check(guest: Guest, tmp_path: Path) -> None:
    def room(size: int) -> tuple[int, str]:
        proc = guest.shell('verify_room "$1" "$2"', str(size), tmp_path)
        return proc.returncode, proc.stdout.decode()

    assert room(4096) == (0, "")
    free = shutil.disk_usage(tmp_path).free
    rc, out = room(free * 2)
    assert rc == 1
    assert out.startswith(f"onie-discovery: refused no-room: {free * 2} bytes announced")


def test_unknown_boot_mode_is_refused(keys: Keys, guest: Guest, tmp_path: Path) -> None:
    work = tmp_path / "x"
    work.write_bytes(signed(payload("x"), keys.a))
    assert guest.verify(work, tmp_path / "out", "bogus") == (
        1, "onie-discovery: refused wrong-image: unknown boot mode\n")


def test_generated_shell_parses(keys: Keys, tmp_path: Path) -> None:
    text = render_verifier(keys.store(), tmp_path)
    (tmp_path / "v.sh").write_text(text)
    busybox = require_tool("busybox", "to check the generated shell")
    subprocess.run([busybox, "sh", "-n", tmp_path / "v.sh"], check=True)


# --- the real image: the same matrix in a booted guest, and discovery offered every bad file --

E2E_GOOD = "e2e-good"


def waiting_installer() -> bytes:
    """The good installer of the boot test: says it ran, then waits for the test's go-ahead
    (so the test can use the guest before discovery powers it off). It has the console (its
    stdin and controlling terminal, docs/discovery.md), so meanwhile it runs the command lines
    typed there itself, as the console's shell would."""
    return (f"#!/bin/sh\necho INSTALLER-RAN {E2E_GOOD}\n"
            'while [ ! -e /tmp/go ] && IFS= read -r line; do eval "$line"; done\nexit 0\n').encode()


def make_disk(folder: Path, files: dict[str, bytes], image: Path) -> Path:
    """An ext2 image holding ``files``, made without mounting (mke2fs -d)."""
    mke2fs = require_tool("mke2fs", "to make the disks that carry installers (e2fsprogs)")
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    size_kib = 1024 + sum(len(d) // 1024 + 8 for d in files.values())
    subprocess.run([mke2fs, "-q", "-F", "-t", "ext2", "-d", folder, image, f"{size_kib}k"],
                   check=True, capture_output=True)
    return image


class Booted:
    """The signed test image booted with four disks: three offering discovery every bad file
    of the matrix under the default names and the good one last, one holding the matrix."""

    def __init__(self, console: Console, offered: list[tuple[str, str | None]],
                 cases: list[tuple[Case, Path]]) -> None:
        self.console = console
        self.offered = offered  # (file:// URL, the host's verdict), in discovery's order
        self.cases = cases
        self.discovery = clean_output(console.transcript)  # up to the good installer's start


@pytest.fixture(scope="module")
def signed_image(tmp_path_factory: pytest.TempPathFactory, keys: Keys,
                 cache_env: dict[str, str]) -> Path:
    """The default platform built trusting A, B, C and R (R revoked), with the test policy."""
    tmp = tmp_path_factory.mktemp("image")
    trust = keys.trust(revoked_digests())
    recipe = tmp / "signed.yaml"  # keys by absolute path: they live in this session's tmp
    recipe.write_text(f"extends: {ROOT}/tests/recipes/signed_x86_64.yaml\n" + yaml.safe_dump(
        {"trust": {**trust.model_dump(), "keys": [str(k) for k in trust.keys]}}))
    out = json.loads(run_cli("build", "--allow-untrusted", str(recipe), "--out", str(tmp / "out"), "--json",
                             "--no-lock", env=cache_env).stdout)["result"][0]["out"]
    return Path(out)


@pytest.mark.network
def test_trust_is_baked_in_and_listed(signed_image: Path, keys: Keys, tmp_path: Path) -> None:
    manifest = json.loads((signed_image / "manifest.json").read_text())
    store = keys.store(revoked_digests())
    assert manifest["trust"] == {
        "keys": [{"id": k.key_id, "type": k.type.value, "file": f"{name}.pub",
                  "path": f"/etc/onie/trust/keys/{k.key_id}.pem"}
                 for k, name in sorted(((k, n) for n in "abcr"
                                        for k in [getattr(keys, n).public]),
                                       key=lambda kn: kn[0].key_id)],
        "revoked_keys": [keys.r.public.key_id], "revoked_digests": list(revoked_digests()),
        "min_version": MIN_VERSION, "clock_floor": FLOOR}
    root = unpack_initramfs(signed_image, tmp_path / "root")
    for key in store.keys:
        assert (root / f"etc/onie/trust/keys/{key.key_id}.pem").read_bytes() == key.pem
    listed = {f["path"] for f in manifest["initramfs"]["files"]}
    assert {f"/etc/onie/trust/keys/{k.key_id}.pem" for k in store.keys} <= listed
    assert "/usr/bin/openssl" in listed and "/lib/onie/verify.sh" in listed
    script = (root / "lib/onie/verify.sh").read_text()
    assert f"VERIFY_MIN_VERSION={MIN_VERSION}\n" in script
    assert f"VERIFY_FLOOR={FLOOR}\n" in script
    assert f"    {keys.r.public.key_id}) return 0 ;;" in script  # revoked
    assert script in (root / "bin/onie-discovery").read_text()  # the included copy is the same


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory, keys: Keys,
           signed_image: Path) -> Iterator[Booted]:
    require_qemu("x86_64")
    tmp = tmp_path_factory.mktemp("boot")
    image = signed_image
    cases = write_cases(keys, tmp / "cases")
    bad = [(c, p) for c, p in cases
           if host_reason(keys, p, "install") is not None]
    names = default_names(INSTALLER, PLATFORM, "x86_64", "qemu_x86_64", "qemu")
    disks: list[dict[str, bytes]] = [{}, {}, {}]
    offered: list[tuple[str, str | None]] = []
    files = [*((p.read_bytes(), host_reason(keys, p, "install")) for _, p in bad),
             (signed(waiting_installer(), keys.b), None)]
    assert len(files) <= len(names) * len(disks)
    for i, (data, verdict) in enumerate(files):
        disk, name = divmod(i, len(names))
        disks[disk][names[name]] = data
        offered.append((f"file:///dev/vd{'abc'[disk]}/{names[name]}", verdict))
    matrix = {c.name: p.read_bytes() for c, p in cases}
    drives = [make_disk(tmp / f"d{i}", files_, tmp / f"d{i}.img")
              for i, files_ in enumerate([*disks, matrix])]
    manifest = json.loads((image / "manifest.json").read_text())
    argv = qemu_command(machine_for("x86_64"), image / "vmlinuz", image / "initrd.img",
                        manifest["kernel"]["cmdline"], netdev=None,
                        extra=[a for d in drives
                               for a in ("-drive", f"file={d},if=virtio,format=raw")])
    with Console.start(argv, log_path=tmp / "console.log") as console:
        console.expect(f"INSTALLER-RAN {E2E_GOOD}", timeout=600)
        yield Booted(console, offered, cases)


@pytest.mark.lab
@pytest.mark.network
def test_booted_guest_agrees_with_the_host(booted: Booted, keys: Keys) -> None:
    """The in-image /lib/onie/verify.sh (Debian's openssl, BusyBox) over every matrix file."""
    console = booted.console
    console.run("mkdir -p /tmp/m && mount -o ro /dev/vdd /tmp/m && . /lib/onie/verify.sh",
                timeout=60)
    table = []
    for case, path in booted.cases:
        status, output = console.run_status(
            f"cp /tmp/m/{case.name} /tmp/x && verify_installer /tmp/x /tmp/out {case.mode}",
            timeout=120)
        guest = guest_reason(status, output)
        if guest is None:
            digest = console.run("sha256sum /tmp/out", timeout=60).split()[0]
            assert digest == hashlib.sha256(path.read_bytes()[:-BLOCK_SIZE]).hexdigest()
        console.run("rm -f /tmp/x /tmp/out")
        table.append((case.name, case.reason, host_reason(keys, path, case.mode), guest))
    assert table == [(name, want, want, want) for name, want, _, _ in table]


@pytest.mark.lab
@pytest.mark.network
def test_discovery_runs_only_the_good_installer(booted: Booted) -> None:
    """Every bad file offered first, the good one last: each refused with the host's reason,
    and only the good one ran (then discovery finished and powered off)."""
    console = booted.console
    text = booted.discovery
    # A line may begin with the console shell's prompt, which comes when the shell is ready.
    tried = re.findall(r"^(?:ONIE:\S* # )?onie-discovery: try (\S+)$", text, re.M)
    refused = re.findall(r"^(?:ONIE:\S* # )?onie-discovery: refused ([a-z-]+): ", text, re.M)
    assert tried == [url for url, _ in booted.offered]
    assert refused == [verdict for _, verdict in booted.offered[:-1]]
    assert re.findall(r"INSTALLER-RAN (\S+)", text) == [E2E_GOOD]
    assert re.search(rf"^onie-discovery: exec {re.escape(booted.offered[-1][0])} ", text, re.M)
    console.run("touch /tmp/go")  # the installer exits 0: discovery is done
    done = console.expect(r"onie-discovery: done (\S+) then poweroff", timeout=120)
    assert done.group(1) == booted.offered[-1][0]
    assert "INSTALLER-RAN" not in clean_output(done.string)
