"""The recipe's ``ssh`` section (builder/recipe/ssh.py) and what it puts into an image
(builder/initramfs/ssh.py, templates/guest/etc/ssh-rc.j2): off by default, on with keys; the
keys checked with exact messages; root's files and modes; the rc script's syntax; telnet's
warning. tests/test_ssh_boot.py logs in."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from builder.errors import BuildError, RecipeError
from builder.initramfs import ssh
from builder.initramfs.tree import Tree
from builder.recipe.implied import SSH_BINARIES, implied_components
from builder.recipe.load import load_recipe
from builder.recipe.model import Recipe
from builder.render import make_environment, render_template
from tests.conftest import require_tool
from tests.test_recipe import GOOD

OPENSSH = serialization.Encoding.OpenSSH
PUBLIC = serialization.PublicFormat.OpenSSH


def openssh_line(key: object, comment: str = "") -> str:
    public = key.public_key()  # type: ignore[attr-defined]
    text = public.public_bytes(OPENSSH, PUBLIC).decode()
    return f"{text} {comment}".rstrip()


def recipe_with(tmp_path: Path, section: str) -> Recipe:
    (tmp_path / "r.yaml").write_text(GOOD + section)
    return load_recipe(tmp_path / "r.yaml")[0]


def bad_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str) -> list[str]:
    (tmp_path / "r.yaml").write_text(GOOD + section)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "r.yaml")
    return info.value.problems


def test_off_by_default_and_no_dropbear(tmp_path: Path) -> None:
    recipe = recipe_with(tmp_path, "")
    assert not recipe.ssh.on and not recipe.ssh.telnet
    assert all(c.debian != "dropbear-bin" for c in implied_components(recipe))
    assert ssh.templates(recipe) == [] and ssh.render_warnings(recipe) == []
    tree = Tree()
    ssh.install_ssh(tree, recipe)
    assert ssh.PATHS["authorized_keys"] not in tree and "/etc/passwd" not in tree
    assert ssh.describe_ssh(recipe) == {"enabled": False, "port": 22, "telnet": False,
                                        "authorized_keys": []}


def test_keys_turn_it_on_relative_to_the_recipe(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ops.pub").write_text(
        f"# the operators\n\n{openssh_line(key, 'ops@site')}\n")
    recipe = recipe_with(tmp_path, "ssh:\n  authorized_keys: [keys/ops.pub]\n")
    assert recipe.ssh.on and recipe.ssh.authorized_keys == [tmp_path / "keys" / "ops.pub"]
    assert [(c.debian, tuple(c.binaries)) for c in implied_components(recipe)] == [
        ("dropbear-bin", SSH_BINARIES)]
    assert ssh.input_files(recipe) == [tmp_path / "keys" / "ops.pub"]
    tree = Tree()
    ssh.install_ssh(tree, recipe)
    entry = tree.get("/root/.ssh/authorized_keys")
    assert entry is not None and entry.mode == 0o600
    assert entry.data == f"{openssh_line(key, 'ops@site')}\n".encode()
    assert [tree.get(p).mode for p in ("/root", "/root/.ssh")] == [0o700, 0o700]  # type: ignore[union-attr]
    assert tree.get("/etc/passwd").data == b"root:*:0:0:root:/root:/bin/sh\n"  # type: ignore[union-attr]
    assert tree.get("/etc/shells").data == b"/bin/sh\n/bin/ash\n"  # type: ignore[union-attr]
    fingerprint = subprocess.run(
        [require_tool("ssh-keygen", "to check fingerprints (openssh-client)"), "-lf",
         tmp_path / "keys" / "ops.pub"], capture_output=True, text=True, check=True).stdout
    assert ssh.describe_ssh(recipe)["authorized_keys"] == [
        {"type": "ssh-ed25519", "fingerprint": fingerprint.split()[1], "from": "ops.pub:3"}]


def test_enabled_false_wins_over_keys(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text(openssh_line(ed25519.Ed25519PrivateKey.generate()) + "\n")
    recipe = recipe_with(tmp_path, "ssh:\n  enabled: false\n  authorized_keys: [k.pub]\n")
    assert not recipe.ssh.on and ssh.templates(recipe) == []


@pytest.mark.parametrize(("section", "message"), [
    ("ssh:\n  enabled: true\n", "r.yaml:9: ssh: authorized_keys: expected at least one public "
     "key file when 'enabled' is true (logins are key-only)"),
    ("ssh:\n  port: 0\n", "r.yaml:10: ssh.port: expected a number >= 1, got 0"),
    ("ssh:\n  authorized_key: [a.pub]\n",
     "r.yaml:10: ssh.authorized_key: unknown key; did you mean 'authorized_keys'?"),
    ("ssh:\n  telnet: yes please\n", "r.yaml:10: ssh.telnet: expected true or false, "
     "got 'yes please'"),
])
def test_bad_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str,
                      message: str) -> None:
    assert bad_recipe(tmp_path, monkeypatch, section) == [message]


def test_ssh_on_telnets_port_with_telnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "k.pub").write_text(openssh_line(ed25519.Ed25519PrivateKey.generate()) + "\n")
    assert bad_recipe(tmp_path, monkeypatch,
                      "ssh:\n  authorized_keys: [k.pub]\n  port: 23\n  telnet: true\n") == [
        "r.yaml:9: ssh: port: 23 is telnet's when 'telnet' is true"]


def test_accepted_key_types() -> None:
    lines = [openssh_line(ed25519.Ed25519PrivateKey.generate(), "a"),
             openssh_line(ec.generate_private_key(ec.SECP256R1()), "b c"),
             openssh_line(rsa.generate_private_key(65537, 2048))]
    keys = ssh.parse_authorized_keys("\n".join(lines), "/x/ops.pub")
    assert [k.type for k in keys] == ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"]
    assert [k.line() for k in keys] == lines
    assert [k.where for k in keys] == ["ops.pub:1", "ops.pub:2", "ops.pub:3"]


@pytest.mark.parametrize(("text", "message"), [
    ("ssh-ed25519\n", "k.pub:1: ssh.authorized_keys: expected 'TYPE BASE64 [COMMENT]', "
     "got 'ssh-ed25519'"),
    ("\n# x\nfrom=\"10.0.0.1\" ssh-ed25519 AAAA\n",
     "k.pub:3: ssh.authorized_keys: expected a key of type ssh-ed25519, ecdsa-sha2-nistp256, "
     "ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, ssh-rsa (options before the key are not "
     "supported), got 'from=\"10.0.0.1\"'"),
    ("ssh-ed25519 AAAAnotakey x\n", "k.pub:1: ssh.authorized_keys: expected an OpenSSH public "
     "key, got ssh-ed25519 'AAAAnotakey'... ("),
    ("RSA1024\n", "k.pub:1: ssh.authorized_keys: expected an RSA key of at least 2048 bits, "
     "got 1024"),
    ("ssh-dss AAAAB3NzaC1kc3M= old\n", "k.pub:1: ssh.authorized_keys: expected a key of type "
     "ssh-ed25519, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, ssh-rsa "
     "(options before the key are not supported), got 'ssh-dss'"),
])
def test_bad_keys(text: str, message: str) -> None:
    if text == "RSA1024\n":
        text = openssh_line(rsa.generate_private_key(65537, 1024)) + "\n"
    with pytest.raises(BuildError) as info:
        ssh.parse_authorized_keys(text, "k.pub")
    assert info.value.message.startswith(message)


def test_empty_and_repeated_key_files(tmp_path: Path) -> None:
    line = openssh_line(ed25519.Ed25519PrivateKey.generate())
    (tmp_path / "empty.pub").write_text("# nobody yet\n")
    (tmp_path / "a.pub").write_text(line + " a\n")
    (tmp_path / "b.pub").write_text(line + " b\n")
    for files, message in ((["empty.pub"], f"{tmp_path}/empty.pub: ssh.authorized_keys: the file "
                            "holds no key"),
                           (["a.pub", "b.pub"], f"{tmp_path}/b.pub: ssh.authorized_keys: "
                            "b.pub:1 is the same key as a.pub:1")):
        recipe = recipe_with(tmp_path, f"ssh:\n  authorized_keys: {files}\n")
        with pytest.raises(BuildError) as info:
            ssh.load_authorized_keys(recipe)
        assert info.value.message == message


def render_rc(recipe: Recipe) -> str:
    values = {"ssh": ssh.template_values(recipe)["ssh"]}
    return render_template(make_environment(), "guest/etc/ssh-rc.j2", values)


@pytest.mark.parametrize("section", ["ssh:\n  authorized_keys: [k.pub]\n",
                                     "ssh:\n  authorized_keys: [k.pub]\n  telnet: true\n",
                                     "ssh:\n  telnet: true\n"])
def test_rc_script_parses_under_busybox_ash(tmp_path: Path, section: str) -> None:
    (tmp_path / "k.pub").write_text(openssh_line(ed25519.Ed25519PrivateKey.generate()) + "\n")
    recipe = recipe_with(tmp_path, section)
    assert ssh.templates(recipe) == [("guest/etc/ssh-rc.j2", "/etc/rc.d/S02ssh", 0o755)]
    script = render_rc(recipe)
    busybox = require_tool("busybox", "to check the rc script's syntax")
    subprocess.run([busybox, "ash", "-n", "-c", script], check=True)
    assert ("SSH_ENABLED=1\n" in script) == recipe.ssh.on
    assert ("TELNET=1\n" in script) == recipe.ssh.telnet
    assert "dropbear -F -E -s -g -j -k " in script  # passwords refused, no forwarding


def test_telnet_warns(tmp_path: Path) -> None:
    recipe = recipe_with(tmp_path, "ssh:\n  telnet: true\n")
    assert ssh.render_warnings(recipe) == [
        "ssh.telnet is on: BusyBox telnetd on port 23 gives anyone who reaches the switch a "
        "root shell without a password"]
