"""onie-nos-install and onie-self-update under the host's BusyBox ash: one URL fetched,
verified and run by discovery's own path (/bin/onie-discovery --url), with discovery's
trust store, checks and refusal lines (the same lines `onie-builder verify` gives), in the
boot modes ONIE allows. Runs drop CAP_SYS_BOOT; the successful ones replace reboot and
poweroff with shell functions."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from builder.initramfs.trust import verify_signed
from builder.signing.format import BootMode, ImageType, Refusal
from tests.guestcmd import Guest, platform_recipe
from tests.tamper import FLOOR, PLATFORM, RUNNING, Keys, flip, make_keys, revoked_digests, signed

COOKIE = "# ONIE-UPDATER-COOKIE\n"


def installer(tag: str, updater: bool = False) -> bytes:
    """A tiny installer (or, with the cookie, updater) that says it ran and with what."""
    return ("#!/bin/sh\n" + (COOKIE if updater else "")
            + f'echo "TEST-RAN {tag} mode=$onie_boot_reason url=$onie_exec_url'
              f' verbose=${{onie_verbose:-n}}"\nexit 0\n').encode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


class Installing(Guest):
    """A guest with discovery rendered trusting the test keys, and its library for main --url."""

    def __init__(self, root: Path, keys: Keys, boot_reason: str = "rescue") -> None:
        self.keys = keys
        store = keys.store(revoked_digests())
        super().__init__(root, platform_recipe("qemu_x86_64"), trust=store,
                         trust_dir=str(root / "trust"))
        (root / "trust" / "keys").mkdir(parents=True)
        for key in store.keys:
            (root / "trust" / "keys" / f"{key.key_id}.pem").write_bytes(key.pem)
        self.cmdline.write_text(f"console=ttyS0 boot_reason={boot_reason} dhcp=none0\n")
        self.install("onie-discovery", self.render("guest/discovery.sh.j2"))
        self.values["library"] = True
        self.library = root / "discovery-lib.sh"
        self.library.write_text(self.render("guest/discovery.sh.j2"))
        self.files = root / "files"
        self.files.mkdir()

    def file(self, name: str, data: bytes) -> Path:
        path = self.files / name
        path.write_bytes(data)
        return path

    def succeed(self, mode: str, url: str | Path) -> subprocess.CompletedProcess[str]:
        """main --url MODE URL with reboot and poweroff as functions that only say so."""
        body = (f". {shlex.quote(str(self.library))}\n"
                'reboot() { echo "FAKE-REBOOT $*"; }\npoweroff() { echo "FAKE-POWEROFF $*"; }\n'
                'main --url "$1" "$2"')
        return self.sh(body, mode, url)


@pytest.fixture
def guest(tmp_path: Path, keys: Keys) -> Installing:
    return Installing(tmp_path, keys)


def host_line(path: Path, keys: Keys, mode: str) -> str:
    """The refusal line discovery prints for ``path``, from the host's verifier."""
    with pytest.raises(Refusal) as info:
        verify_signed(path, keys.store(revoked_digests()), PLATFORM, BootMode(mode), now=FLOOR,
                      running=RUNNING)
    return f"onie-discovery: refused {info.value.reason.value}: {info.value.detail}"


def said(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert proc.stderr == "", proc.stderr
    return proc.stdout.splitlines()


def test_nos_install_runs_a_signed_installer(guest: Installing, keys: Keys) -> None:
    path = guest.file("good", signed(installer("good"), keys.a))
    lines = said(guest.succeed("install", path))  # a local path, as ONIE takes it
    url = f"file://{path}"
    assert lines[0].startswith("onie-discovery: command onie-nos-install mode=install boot=rescue ")
    assert lines[1] == f"onie-discovery: try {url}"
    assert lines[2].startswith(f"onie-discovery: exec {url} type=nos uptime=")
    # The installer sees the boot's mode, as under ONIE; then discovery's finish.
    assert f"TEST-RAN good mode=rescue url={url} verbose=n" in lines
    assert lines[-2:] == [f"onie-discovery: done {url} then reboot", "FAKE-REBOOT -f"]


@pytest.mark.parametrize(("case", "mode"), [("unsigned", "install"), ("tampered", "install"),
                                            ("updater", "install"), ("other-key", "install"),
                                            ("installer", "update")])
def test_refused_exactly_as_discovery_refuses(guest: Installing, keys: Keys, case: str,
                                              mode: str) -> None:
    data = {"unsigned": lambda: installer("unsigned"),
            "tampered": lambda: flip(signed(installer("tampered"), keys.a), 20),
            "updater": lambda: signed(installer("updater", updater=True), keys.a,
                                      image=ImageType.UPDATER),
            "other-key": lambda: signed(installer("other"), keys.x),
            "installer": lambda: signed(installer("installer", updater=True), keys.a)}[case]()
    path = guest.file(case, data)
    command = "onie-nos-install" if mode == "install" else "onie-self-update"
    proc = guest.command(command, f"file://{path}")
    lines = said(proc)
    assert proc.returncode == 1
    refusal = host_line(path, keys, mode)
    assert lines[1:] == [f"onie-discovery: try file://{path}", refusal,
                         f"onie-discovery: fail file://{path} refused: {refusal.split('refused ', 1)[1]}"]
    assert "TEST-RAN" not in proc.stdout


def test_self_update_runs_a_signed_updater(guest: Installing, keys: Keys) -> None:
    path = guest.file("updater", signed(installer("up", updater=True), keys.b,
                                        image=ImageType.UPDATER))
    lines = said(guest.succeed("update", f"file://{path}"))
    assert f"TEST-RAN up mode=update url=file://{path} verbose=n" in lines
    assert lines[-1] == "FAKE-REBOOT -f"
    path.write_bytes(signed(installer("up", updater=True), keys.b, image=ImageType.UPDATER))
    lines = said(guest.succeed("embed", f"file://{path}"))
    assert f"TEST-RAN up mode=embed url=file://{path} verbose=n" in lines


def test_self_update_wants_an_updater_and_onies_modes(tmp_path: Path, keys: Keys) -> None:
    guest = Installing(tmp_path / "rescue", keys)
    path = guest.file("nos", signed(installer("nos"), keys.a))
    proc = guest.command("onie-self-update", "-v", path)
    assert proc.returncode == 1
    assert said(proc)[-1] == (f"onie-discovery: fail file://{path} not an ONIE updater"
                              " (no ONIE-UPDATER-COOKIE) in update mode")
    install = Installing(tmp_path / "install", keys, boot_reason="install")
    proc = install.command("onie-self-update", path)
    assert (proc.returncode, said(proc)) == (1, [
        "onie-discovery: fail onie-self-update unavailable in install mode"
        " (only in update, embed and rescue modes)"])


@pytest.mark.parametrize(("args", "first"), [
    ([], "Error: Installer URL not specified."),
    (["a", "b"], "Error: one URL expected, got 2 arguments."),
    (["gopher://x/y"], "onie-discovery: reject gopher://x/y (not a plain URL)"),
    (["http://x/$(touch pwned)"], "onie-discovery: reject http://x/??touch?pwned? (not a plain URL)"),
    (["no-such-file"], "onie-discovery: reject no-such-file (not a plain URL)"),
])
def test_nos_install_refuses_bad_arguments(guest: Installing, args: list[str], first: str) -> None:
    proc = guest.command("onie-nos-install", *args)
    assert (proc.returncode, said(proc)[0]) == (1, first)
    assert not (guest.root / "pwned").exists()


def test_nos_install_stops_discovery_first(guest: Installing, keys: Keys) -> None:
    from tests.test_commands import FAKE_DISCOVERY, session_members

    pid_file = guest.run_dir / "discovery.pid"
    real = (guest.bin / "onie-discovery").read_text()
    guest.install("onie-discovery", FAKE_DISCOVERY.format(pid_file=pid_file))
    assert said(guest.command("onie-discovery-start")) == ["Starting: onie-discovery... done."]
    pid = int(pid_file.read_text())
    guest.install("onie-discovery", real)  # what onie-nos-install runs next: the real one
    path = guest.file("unsigned", installer("unsigned"))
    proc = guest.command("onie-nos-install", path)
    assert proc.returncode == 1 and "refused unsigned" in proc.stdout
    assert session_members(pid) == [] and not pid_file.exists()
