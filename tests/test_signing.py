"""The signed-installer format on the host: statement grammar, block layout, signing (key file
and external signer), `onie-builder sign` / `verify`, and the recipe's trust section."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from builder.errors import BuildError, RecipeError
from builder.initramfs.trust import describe_trust, load_trust
from builder.recipe.load import load_recipe
from builder.signing.format import (
    BLOCK_SIZE,
    ImageType,
    Reason,
    Refusal,
    Statement,
    check_statement,
    read_block,
    render_block,
    sign_installer,
)
from builder.signing.keys import KeyType, load_private_key, make_key_pair
from builder.signing.signers import CommandSigner, KeySigner
from tests.conftest import ROOT, require_tool, run_cli
from tests.tamper import FLOOR, PLATFORM, Keys, make_keys, payload, signed

KEY = "ab" * 32
SHA = "0a" * 32
GOOD = (f"format=onie-signed-installer/1\nimage=installer\nversion=7\nplatforms={PLATFORM}\n"
        f"size=12\nsha256={SHA}\nkey={KEY}\n")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


def test_statement_is_canonical() -> None:
    statement = Statement(ImageType.INSTALLER, 7, (PLATFORM,), 12, SHA, KEY)
    assert statement.render() == GOOD.encode()
    assert check_statement(GOOD.encode()) == statement
    with_expiry = Statement(ImageType.UPDATER, 0, ("*",), 0, SHA, KEY, 1700000000)
    assert with_expiry.render().endswith(b"key=" + KEY.encode() + b"\nnot_after=1700000000\n")
    assert check_statement(with_expiry.render()) == with_expiry


@pytest.mark.parametrize(("text", "message"), [
    (GOOD.replace("version=7", "version=07"), "statement version: expected a decimal number"),
    (GOOD.replace("version=7", "version=1234567890123456789"),
     "statement version: expected a decimal number"),
    (GOOD.replace("size=12", "size=-1"), "statement size: expected a decimal number"),
    (GOOD.replace("image=installer", "image=nos"),
     "statement image: expected installer, updater or firmware"),
    (GOOD.replace("/1", "/2"), "statement format: expected onie-signed-installer/1"),
    (GOOD.replace(PLATFORM, f"{PLATFORM}  x"), "statement platforms: expected '*' or platform "
     "names ([a-z0-9_-]) separated by single spaces"),
    (GOOD.replace(PLATFORM, "X86"), "statement platforms: expected '*' or platform names "
     "([a-z0-9_-]) separated by single spaces"),
    (GOOD.replace(PLATFORM, "* x"), "statement platforms: expected '*' or platform names "
     "([a-z0-9_-]) separated by single spaces"),
    (GOOD.replace(SHA, SHA.upper()), "statement sha256: expected 64 lower-case hex digits"),
    (GOOD.replace(KEY, KEY[:-1]), "statement key: expected 64 lower-case hex digits"),
    (GOOD.replace("image=installer\nversion=7\n", "version=7\nimage=installer\n"),
     "statement line 2: expected 'image=...'"),
    (GOOD.replace("version=7", "version"), "statement line 3: expected 'version=...'"),
    (GOOD + "extra=1\n", "statement line 8: expected no more lines"),
    (GOOD + "not_after=1\nnot_after=2\n", "statement line 9: expected no more lines"),
    (GOOD + "not_after=soon\n", "statement not_after: expected a decimal number"),
    (GOOD.replace(f"key={KEY}\n", ""), "statement: 'key=' missing"),
    (GOOD[:-1], "statement: expected printable ASCII lines, each ending in a line feed"),
    (GOOD.replace("\n", "\r\n"), "statement: expected printable ASCII lines, each ending in a "
     "line feed"),
    (GOOD.replace("7", "\u00e9"), "statement: expected printable ASCII lines, each ending in a "
     "line feed"),
])
def test_malformed_statements(text: str, message: str) -> None:
    with pytest.raises(Refusal) as err:
        check_statement(text.encode())
    assert (err.value.reason, err.value.detail) == (Reason.MALFORMED, message)


def test_block_layout() -> None:
    block = render_block(GOOD.encode(), b"S" * 64)
    assert len(block) == BLOCK_SIZE
    assert block.startswith(GOOD.encode() + b"S" * 64 + b"\0")
    assert block.endswith(b"\0\nONIE-SIGNATURE/1 statement=%04d signature=0064\n" % len(GOOD))
    with pytest.raises(BuildError, match=r"do not fit the 4048 bytes of the signature block"):
        render_block(GOOD.encode() * 10, b"S" * 3000)


def test_sign_appends_a_block_and_keeps_the_installer(keys: Keys, tmp_path: Path) -> None:
    (tmp_path / "inst").write_bytes(payload("x"))
    statement = sign_installer(tmp_path / "inst", tmp_path / "out", KeySigner(keys.a),
                               image=ImageType.INSTALLER, version=3, platforms=(PLATFORM,))
    data = (tmp_path / "out").read_bytes()
    assert data[:-BLOCK_SIZE] == payload("x")
    assert statement.sha256 == hashlib.sha256(payload("x")).hexdigest()
    block = read_block(tmp_path / "out")
    assert block.statement == statement and block.payload_size == len(payload("x"))
    assert keys.a.public.verifies(block.signature, block.statement_bytes)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o644
    with pytest.raises(BuildError, match="out: already signed; sign the original installer"):
        sign_installer(tmp_path / "out", tmp_path / "again", KeySigner(keys.a),
                       image=ImageType.INSTALLER, version=3, platforms=(PLATFORM,))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inst", "out"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"version": -1}, "--version: expected 0 to 999999999999999999, got -1"),
    ({"platforms": ()}, "--platform: name at least one platform, or '*' for any"),
    ({"platforms": ("*", PLATFORM)}, "--platform: '*' (any platform) cannot be combined with names"),
    ({"platforms": ("x86_64 acme",)}, "--platform: expected a platform string like "
     "'x86_64-acme_s1-r0' ([a-z0-9_-]) or '*', got 'x86_64 acme'"),
    ({"not_after": -5}, "--not-after: expected a UTC epoch 0 to 999999999999999999, got -5"),
])
def test_sign_refuses_values_the_statement_cannot_carry(keys: Keys, tmp_path: Path,
                                                        kwargs: dict[str, object],
                                                        message: str) -> None:
    (tmp_path / "inst").write_bytes(b"x")
    args: dict[str, object] = {"image": ImageType.INSTALLER, "version": 1,
                               "platforms": (PLATFORM,), **kwargs}
    with pytest.raises(BuildError) as err:
        sign_installer(tmp_path / "inst", tmp_path / "out", KeySigner(keys.a), **args)  # type: ignore[arg-type]
    assert err.value.message == message
    assert not (tmp_path / "out").exists()


# --- external signers: a script standing in for an HSM -----------------------------------------

def hsm_script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "hsm"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("key_type", [KeyType.ED25519, KeyType.ECDSA_P256, KeyType.RSA_3072],
                         ids=lambda t: t.value)
def test_external_signer_with_openssl_as_the_hsm(key_type: KeyType, tmp_path: Path) -> None:
    """The HSM is openssl with a passphrase-protected key the builder never reads."""
    openssl = require_tool("openssl", "to stand in for an HSM")
    make_key_pair(key_type, tmp_path / "hsm-key", b"pin 1234")
    (tmp_path / "pin").write_text("pin 1234\n")
    # Ed25519 signs the message itself, which openssl wants as a file (it needs the size).
    how = ("pkeyutl -sign -rawin -in $T -inkey" if key_type is KeyType.ED25519
           else "dgst -sha256 -sign")
    script = hsm_script(tmp_path, f'echo "$ONIE_SIGN_KEY_ID" > {tmp_path}/asked\n'
                        f"T={tmp_path}/statement; cat > $T\n"
                        f"exec {openssl} {how} {tmp_path}/hsm-key.key "
                        f"-passin file:{tmp_path}/pin < $T\n")
    (tmp_path / "inst").write_bytes(payload("hsm"))
    run_cli("sign", str(tmp_path / "inst"), "--signer-cmd", f"{script} --slot 0",
            "--public-key", str(tmp_path / "hsm-key.pub"), "--version", "12",
            "--platform", PLATFORM, "-o", str(tmp_path / "inst.signed"))
    key_id = load_private_key(tmp_path / "hsm-key.key", b"pin 1234").public.key_id
    assert (tmp_path / "asked").read_text() == key_id + "\n"
    out = run_cli("verify", str(tmp_path / "inst.signed"), "--key", str(tmp_path / "hsm-key.pub"),
                  "--platform", PLATFORM).stdout
    assert out == f"{tmp_path}/inst.signed: ok installer version 12 key {key_id}\n"


def test_external_signer_raw_ecdsa_is_converted_to_der(keys: Keys, tmp_path: Path) -> None:
    """Many HSMs (PKCS#11 CKM_ECDSA) return r || s; openssl in the guest wants DER."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    class RawHsm(CommandSigner):
        def sign(self, statement: bytes) -> bytes:
            r, s = decode_dss_signature(keys.b.sign(statement))
            raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
            from builder.signing.signers import normalize_signature

            return normalize_signature(self.public_key.type, raw)

    (tmp_path / "inst").write_bytes(b"payload")
    sign_installer(tmp_path / "inst", tmp_path / "out", RawHsm("unused", keys.b.public),
                   image=ImageType.INSTALLER, version=1, platforms=("*",))
    block = read_block(tmp_path / "out")
    assert block.signature[0] == 0x30  # a DER SEQUENCE
    assert keys.b.public.verifies(block.signature, block.statement_bytes)


def test_external_signer_failures(keys: Keys, tmp_path: Path) -> None:
    (tmp_path / "inst").write_bytes(b"payload")
    fails = hsm_script(tmp_path, "echo 'token not present' >&2\nexit 3\n")
    proc = run_cli("sign", str(tmp_path / "inst"), "--signer-cmd", str(fails), "--public-key",
                   str(keys.folder / "a.pub"), "--version", "1", "--platform", "*", check=False)
    assert (proc.returncode, proc.stderr) == (
        1, "error: the signer command failed with exit code 3: token not present\n")
    wrong = hsm_script(tmp_path, "head -c 64 /dev/zero\n")
    proc = run_cli("sign", str(tmp_path / "inst"), "--signer-cmd", str(wrong), "--public-key",
                   str(keys.folder / "a.pub"), "--version", "1", "--platform", "*", check=False)
    assert proc.returncode == 1
    assert proc.stderr == (f"error: the signature does not verify with the public key "
                           f"{keys.a.public.key_id} (is it the signer's key?)\n")
    assert sorted(os.listdir(tmp_path)) == ["hsm", "inst"]  # nothing half-written


def test_sign_cli_options(keys: Keys, tmp_path: Path) -> None:
    (tmp_path / "inst").write_bytes(b"payload")
    both = run_cli("sign", str(tmp_path / "inst"), "--version", "1", "--platform", "*",
                   check=False)
    assert both.stderr == "error: give exactly one of --key and --signer-cmd\n"
    no_pub = run_cli("sign", str(tmp_path / "inst"), "--signer-cmd", "true", "--version", "1",
                     "--platform", "*", check=False)
    assert no_pub.stderr == "error: --signer-cmd needs --public-key (the signer's public key)\n"
    bad_date = run_cli("sign", str(tmp_path / "inst"), "--key", str(keys.folder / "a.key"),
                       "--version", "1", "--platform", "*", "--not-after", "soon", check=False)
    assert bad_date.stderr == ("error: --not-after: expected a UTC epoch or an ISO 8601 date, "
                               "got 'soon'\n")
    run_cli("sign", str(tmp_path / "inst"), "--key", str(keys.folder / "c.key"),
            "--passphrase-file", str(write(tmp_path / "pw", "hunter2\n")), "--version", "4",
            "--platform", PLATFORM, "--platform", "x86_64-other-r0", "--type", "updater",
            "--not-after", "2030-01-01")
    block = read_block(tmp_path / "inst.signed")
    assert block.statement == Statement(ImageType.UPDATER, 4, (PLATFORM, "x86_64-other-r0"), 7,
                                        hashlib.sha256(b"payload").hexdigest(),
                                        keys.c.public.key_id, 1893456000)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- the recipe's trust section and `verify --recipe` ------------------------------------------

def trust_recipe(tmp_path: Path, keys: Keys, extra: str = "") -> Path:
    """A recipe extending the shipped qemu_x86_64 that trusts A and B (relative paths)."""
    (tmp_path / "keys").mkdir(exist_ok=True)
    for name in "ab":
        (tmp_path / "keys" / f"{name}.pub").write_bytes((keys.folder / f"{name}.pub").read_bytes())
    path = tmp_path / "trusting.yaml"
    path.write_text(f"extends: {ROOT}/recipes/platforms/qemu_x86_64.yaml\n"
                    "trust:\n  keys: [keys/a.pub, keys/b.pub]\n  min_version: 10\n" + extra)
    return path


def test_recipe_trust_paths_are_relative_to_the_recipe(keys: Keys, tmp_path: Path) -> None:
    recipe, _ = load_recipe(trust_recipe(tmp_path, keys))
    assert recipe.trust.keys == [tmp_path / "keys" / "a.pub", tmp_path / "keys" / "b.pub"]
    store = load_trust(recipe.trust, FLOOR)
    assert {k.key_id for k in store.keys} == {keys.a.public.key_id, keys.b.public.key_id}
    assert describe_trust(store)["keys"][0]["path"].startswith("/etc/onie/trust/keys/")


@pytest.mark.parametrize(("extra", "message"), [
    ("  revoked_keys: [abc]\n", "trust.revoked_keys[0]: expected 64 lower-case hex digits, "
     "got 'abc'"),
    ("  revoked_digests: [" + "A" * 64 + "]\n", "trust.revoked_digests[0]: expected 64 lower-case "
     "hex digits, got '" + "A" * 64 + "'"),
    ("  min_versoin: 3\n", "trust.min_versoin: unknown key; did you mean 'min_version'?"),
])
def test_bad_trust_sections(keys: Keys, tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(RecipeError) as err:
        load_recipe(trust_recipe(tmp_path, keys, extra))
    assert [p.split(": ", 1)[1] for p in err.value.problems] == [message]
    assert err.value.problems[0].startswith(f"{tmp_path}/trusting.yaml:")


def test_min_version_bounds(keys: Keys, tmp_path: Path) -> None:
    path = trust_recipe(tmp_path, keys)
    path.write_text(path.read_text().replace("min_version: 10", "min_version: -1"))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert err.value.problems == [f"{path}:4: trust.min_version: expected a number >= 0, got -1"]


def test_a_trusted_key_listed_twice(keys: Keys, tmp_path: Path) -> None:
    path = trust_recipe(tmp_path, keys)
    path.write_text(path.read_text().replace("keys/b.pub", "keys/a.pub"))
    recipe, _ = load_recipe(path)
    with pytest.raises(BuildError, match=r"trust.keys: .*/keys/a.pub is the same key as "):
        load_trust(recipe.trust, FLOOR)


def test_a_missing_trusted_key_fails_the_build_step(keys: Keys, tmp_path: Path) -> None:
    path = trust_recipe(tmp_path, keys)
    (tmp_path / "keys" / "b.pub").unlink()
    recipe, _ = load_recipe(path)  # validation does not touch the host; loading the keys does
    with pytest.raises(BuildError) as err:
        load_trust(recipe.trust, FLOOR)
    assert err.value.message == (f"trust.keys: {tmp_path}/keys/b.pub: cannot read public key: "
                                 "no such file")


def test_verify_cli_with_a_recipe(keys: Keys, tmp_path: Path) -> None:
    """Key rotation: A and B both trusted; the verdict is the guest's, reasons included."""
    recipe = trust_recipe(tmp_path, keys)
    files = {"by-a": signed(payload("a"), keys.a), "by-b": signed(payload("b"), keys.b),
             "by-c": signed(payload("c"), keys.c), "old": signed(payload("o"), keys.a, version=9)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    proc = run_cli("verify", "--recipe", str(recipe), *(str(tmp_path / n) for n in files),
                   check=False)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"{tmp_path}/by-a: ok installer version 10 key {keys.a.public.key_id}",
        f"{tmp_path}/by-b: ok installer version 10 key {keys.b.public.key_id}",
        f"{tmp_path}/by-c: refused unknown-key: key {keys.c.public.key_id} is not trusted",
        f"{tmp_path}/old: refused rollback: version 9 is below the floor 10",
    ]
    assert proc.stderr == "error: 2 of 4 refused\n"
    as_json = json.loads(run_cli("verify", "--recipe", str(recipe), "--json",
                                 str(tmp_path / "by-b")).stdout)["result"]
    assert as_json == [{"file": f"{tmp_path}/by-b", "ok": True, "image": "installer",
                        "version": 10, "platforms": [PLATFORM], "size": len(payload("b")),
                        "sha256": hashlib.sha256(payload("b")).hexdigest(),
                        "key": keys.b.public.key_id, "not_after": None}]
    run_cli("verify", "--recipe", str(recipe), str(tmp_path / "by-a"), "--strip",
            str(tmp_path / "stripped"))
    assert (tmp_path / "stripped").read_bytes() == payload("a")


def test_verify_cli_expiry_uses_the_build_time_as_a_floor(keys: Keys, tmp_path: Path) -> None:
    """A clock before the build time (an unset RTC) cannot make an expired installer valid."""
    (tmp_path / "f").write_bytes(signed(payload("e"), keys.a, not_after=FLOOR + 100))
    args = ["verify", "--key", str(keys.folder / "a.pub"), "--platform", PLATFORM]
    assert run_cli(*args, str(tmp_path / "f"), "--now", "0").returncode == 0
    late = run_cli(*args, str(tmp_path / "f"), "--now", str(FLOOR + 101), check=False)
    assert late.stdout == (f"{tmp_path}/f: refused expired: expired at {FLOOR + 100}, "
                           f"now {FLOOR + 101}\n")
    recipe = trust_recipe(tmp_path, keys)  # its floor is SOURCE_DATE_EPOCH (run_cli: 1700000000)
    (tmp_path / "g").write_bytes(signed(payload("g"), keys.a, not_after=FLOOR - 1))
    early = run_cli("verify", "--recipe", str(recipe), str(tmp_path / "g"), "--now", "0",
                    check=False)
    assert early.stdout == f"{tmp_path}/g: refused expired: expired at {FLOOR - 1}, now {FLOOR}\n"


def test_verify_cli_usage_errors(keys: Keys, tmp_path: Path) -> None:
    neither = run_cli("verify", "x", check=False)
    assert neither.stderr == "error: give exactly one of --recipe and --key\n"
    no_platform = run_cli("verify", "x", "--key", str(keys.folder / "a.pub"), check=False)
    assert no_platform.stderr == "error: --key needs --platform (the platform string to check)\n"
