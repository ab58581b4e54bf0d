"""Hostile inputs for the host-side commands (issue #23, items 4-6): recipes, site files,
signed files and status answers, each paired with its exact outcome. Every case runs the real
command in a child process held to MAX_MEMORY and MAX_SECONDS, so an input that expands or
blocks fails the test instead of the machine, and no case may print a traceback."""

from __future__ import annotations

import http.server
import json
import os
import resource
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import EPOCH, ROOT
from tests.test_site import GOOD

MAX_MEMORY = 1 << 30  # address space of the command: the alias bomb took 2 GiB before
MAX_SECONDS = 30  # and 30-40 s

SITE = GOOD  # the smallest valid site file (tests/test_site.py)


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MAX_MEMORY, MAX_MEMORY))


def bounded_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``onie-builder ARGS`` within the memory and time bounds; a traceback fails the test."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "builder", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=MAX_SECONDS,
                          preexec_fn=_limit)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def errors(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")]


# --- recipes and site files (item 4) -----------------------------------------------------------

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))

# (file text, the one error line it gets as bad.yaml)
YAML_CASES = [
    (LAUGHS, "bad.yaml:2: b[0]: YAML aliases are not allowed (*a): write the value out"),
    ("kernel:\n  modules: " + "[" * 5000 + "]" * 5000 + "\n",
     "bad.yaml:2: kernel.modules" + "[0]" * 31 + ": nested deeper than 32 levels"),
    ("kernel:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 40)),
     "bad.yaml:" + "33: kernel." + ".".join(f"k{i}" for i in range(1, 33)) +
     ": nested deeper than 32 levels"),
    ("name: ok\x1b[2J\n", "bad.yaml:1: control character '\\x1b' in the file"),
    ("name: ok\x00\n", "bad.yaml:1: control character '\\x00' in the file"),
    ("name: ok\u202eevil\n", "bad.yaml:1: control character '\\u202e' in the file"),
    ('name: "a\\eb"\n', "bad.yaml:1: name: control character '\\x1b' in 'a\\x1bb'"),
    ('name: "a\\rb"\n', "bad.yaml:1: name: control character '\\r' in 'a\\rb'"),
    ('"k\\x07": 1\n', "bad.yaml:1: (top level): control character '\\x07' in 'k\\x07'"),
    ("version: " + "9" * 5000 + "\n",
     "bad.yaml:1: version: cannot read '" + "9" * 40 + "': exceeds the limit (4300 digits) for "
     "integer string conversion: value has 5000 digits"),
    ("version: 2001-02-30\n",
     "bad.yaml:1: version: cannot read '2001-02-30': day is out of range for month"),
    ("? [a, b]\n: 1\n", "bad.yaml:1: (top level): expected a plain key, got a list or mapping "
                        "as a key"),
    ("name: [\n", "bad.yaml:2:1: invalid YAML: expected the node content, but found '<stream end>'"),
    ("x: " + "y" * (256 * 1024) + "\n", "bad.yaml: larger than 256 KiB, the most this file may be"),
]


@pytest.mark.parametrize(("text", "message"), YAML_CASES,
                         ids=["aliases", "deep-list", "deep-map", "escape", "nul", "bidi",
                              "quoted-escape", "quoted-cr", "key-bell", "huge-int", "bad-date",
                              "complex-key", "unclosed", "oversized"])
def test_hostile_recipe(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    proc = bounded_cli("recipes", "validate", "bad.yaml", cwd=tmp_path)
    assert (proc.returncode, errors(proc)) == (2, [f"error: {message}"])


@pytest.mark.parametrize(("text", "message"), YAML_CASES[:1] + YAML_CASES[3:4] + YAML_CASES[6:7],
                         ids=["aliases", "escape", "quoted-escape"])
def test_hostile_site_file(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    proc = bounded_cli("dhcp-config", "--site", "bad.yaml", cwd=tmp_path)
    assert (proc.returncode, errors(proc)) == (2, [f"error: {message}"])


def test_extends_chain_is_bounded(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"r{i}.yaml").write_text(f"extends: r{i + 1}.yaml\n")
    (tmp_path / "r20.yaml").write_text("name: end\n")
    proc = bounded_cli("recipes", "validate", "r0.yaml", cwd=tmp_path)
    assert (proc.returncode, errors(proc)) == (
        2, ["error: r15.yaml:1: extends: more than 16 files in one chain"])


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_recipe_that_is_no_file(tmp_path: Path, kind: str) -> None:
    what = {"fifo": "a FIFO", "device": "a character device", "folder": "a folder"}[kind]
    target = {"fifo": tmp_path / "r.yaml", "device": Path("/dev/zero"),
              "folder": tmp_path / "d.yaml"}[kind]
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    proc = bounded_cli("recipes", "validate", str(target), cwd=tmp_path)
    name = target.relative_to(tmp_path) if target.is_relative_to(tmp_path) else target
    assert (proc.returncode, errors(proc)) == (2, [f"error: {name}: not a regular file ({what})"])


def test_a_token_file_that_is_a_fifo_is_never_opened(tmp_path: Path) -> None:
    """Status tokens are gone (reports are signed by device keys): a site naming one, even a
    FIFO that would block a reader, is refused from the YAML alone."""
    os.mkfifo(tmp_path / "token")
    (tmp_path / "site.yaml").write_text(SITE + "status:\n  token_file: token\n")
    proc = bounded_cli("dhcp-config", "--site", "site.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert errors(proc)[0].startswith("error: site.yaml:")
    assert "'token' and 'token_file' are gone" in proc.stderr


# --- generated DHCP configurations (item 5) ----------------------------------------------------

NAME_CASES = [
    ('name: "lab\\ndhcp-script=/tmp/x"\n', "bad.yaml:1: name: expected 1-64 letters, digits, "
     "'.', '_' or '-' (starting with a letter or digit), got 'lab\\ndhcp-script=/tmp/x'"),
    ('name: "lab } host x {"\n', "bad.yaml:1: name: expected 1-64 letters, digits, '.', '_' or "
     "'-' (starting with a letter or digit), got 'lab } host x {'"),
    ("name: -lab\n", "bad.yaml:1: name: expected 1-64 letters, digits, '.', '_' or '-' (starting "
     "with a letter or digit), got '-lab'"),
]


@pytest.mark.parametrize(("first", "message"), NAME_CASES, ids=["newline", "brace", "dash"])
@pytest.mark.parametrize("fmt", ["dnsmasq", "isc", "kea"])
def test_site_names_that_would_inject(tmp_path: Path, first: str, message: str, fmt: str) -> None:
    (tmp_path / "bad.yaml").write_text(first + SITE.split("\n", 1)[1])
    proc = bounded_cli("dhcp-config", "--site", "bad.yaml", "--format", fmt, cwd=tmp_path)
    assert (proc.returncode, errors(proc)) == (2, [f"error: {message}"])


# --- signed files (item 6, `verify`) -----------------------------------------------------------

@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from builder.signing.keys import KeyType, make_key_pair

    folder = tmp_path_factory.mktemp("key")
    make_key_pair(KeyType.ED25519, folder / "k")
    return folder / "k.pub"


def test_verify_refuses_what_is_no_regular_file(tmp_path: Path, key: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "plain").write_bytes(b"#!/bin/sh\n")
    proc = bounded_cli("verify", "--key", str(key), "--platform", "x86_64-acme_a-r0",
                       "fifo", "/dev/zero", ".", "missing", "plain", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "fifo: refused unreadable: not a regular file (a FIFO)",
        "/dev/zero: refused unreadable: not a regular file (a character device)",
        ".: refused unreadable: not a regular file (a folder)",
        "missing: refused unreadable: no such file",
        "plain: refused unsigned: no signature block at the end of the file",
    ]
    assert errors(proc) == ["error: 5 of 5 refused"]


# --- status answers (item 6, `status URL`) -----------------------------------------------------

DEVICE = ('{"key": "SN1", "platform": "x86_64-acme_a-r0", "address": "10.0.0.5", '
          '"state": "failed", "percent": 100, "reason": "exit 3", "last_seen": null}')
STATUS_CASES = [
    (b"<html>oops</html>", 1, ["error: {url}/status.json: malformed answer: not JSON (Expecting "
                               "value: line 1 column 1 (char 0))"], []),
    (b"[1, 2]", 1, ["error: {url}/status.json: malformed answer: expected a JSON object, got "
                    "list"], []),
    (b'{"devices": {"a": 1}}', 1, ["error: {url}/status.json: malformed answer: devices: "
                                   "expected a list, got dict"], []),
    (b'{"devices": ["x"]}', 1, ["error: {url}/status.json: malformed answer: devices[0]: "
                                "expected an object, got str"], []),
    (b'{"devices": [], "counts": 3}', 1, ["error: {url}/status.json: malformed answer: counts: "
                                          "expected an object"], []),
    (b"[" * 100_000 + b"]" * 100_000, 1, ["error: {url}/status.json: malformed answer: not JSON "
                                          "(nested too deeply)"], []),
    (b'{"devices": [{}]}', 0, [], ["DEVICE  NAME  PLATFORM  ADDRESS  STATE  PROGRESS  LAST SEEN  REASON",
                                   "?       -     -         -        ?      -         never",
                                   "1 devices"]),
    (('{"devices": [' + DEVICE.replace('"SN1"', '"SN\\u001b[2J\\u009b31m\\u202e"')
      .replace('"percent": 100', '"percent": "x"').replace('exit 3', 'exit\\u001b]0;owned\\u0007')
      + '], "counts": {"failed\\u0007": 1}}').encode(), 0, [],
     ["DEVICE                  NAME  PLATFORM          ADDRESS   STATE   PROGRESS  LAST SEEN  REASON",
      "SN\\x1b[2J\\x9b31m\\u202e  -     x86_64-acme_a-r0  10.0.0.5  failed  -         never      "
      "exit\\x1b]0;owned\\x07",
      "1 devices (failed\\x07: 1)"]),
]


@pytest.fixture()
def answer() -> Iterator[Callable[[bytes], str]]:
    """A loopback HTTP server answering /status.json with the bytes given; returns its URL."""
    body = [b""]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body[0])))
            self.end_headers()
            self.wfile.write(body[0])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(data: bytes) -> str:
        body[0] = data
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize(("body", "code", "errs", "out"), STATUS_CASES,
                         ids=["html", "list", "devices-dict", "device-str", "counts-int",
                              "deep", "empty-device", "escapes"])
def test_status_answers(tmp_path: Path, answer: Callable[[bytes], str], body: bytes, code: int,
                        errs: list[str], out: list[str]) -> None:
    url = answer(body)
    proc = bounded_cli("status", url, cwd=tmp_path)
    assert (proc.returncode, errors(proc), proc.stdout.splitlines()) == (
        code, [e.format(url=url) for e in errs], out)
    assert not any(c in proc.stdout for c in "\x1b\x07\x9b\u202e")


def test_status_answer_size_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from builder.factory import statusclient
    from builder.factory.statusclient import MalformedAnswer, _read_capped

    monkeypatch.setattr(statusclient, "MAX_ANSWER", 1 << 20)
    with pytest.raises(MalformedAnswer) as info:
        _read_capped(iter([b"x" * (1 << 16)] * 17), "http://h/status.json", 1e18, 10)
    assert info.value.message == "http://h/status.json: malformed answer: larger than 1 MiB"


def test_status_client_follows_the_pages(tmp_path: Path) -> None:
    """serve pages /status.json: the client asks for every page and joins them."""
    from builder.factory.statusclient import fetch_status

    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            query = dict(p.split("=") for p in self.path.split("?", 1)[1].split("&"))
            offset = int(query.get("offset", "0"))
            names = [f"SN{i}" for i in range(offset, min(offset + 2, 5))]  # pages of 2 of 5
            body = json.dumps({"devices": [{"key": n, "state": "done"} for n in names],
                               "counts": {"done": 5}, "total": 5, "offset": offset}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        data = fetch_status(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert [d["key"] for d in data["devices"]] == ["SN0", "SN1", "SN2", "SN3", "SN4"]
    assert asked == ["/status.json?limit=10000", "/status.json?offset=2&limit=10000",
                     "/status.json?offset=4&limit=10000"]


def test_key_and_certificate_files_that_are_fifos(tmp_path: Path) -> None:
    """Every other file a recipe or command names (keys, CA bundles) is read the same bounded
    way: a FIFO is refused at once instead of blocking the build."""
    from builder.errors import BuildError
    from builder.signing.keys import load_private_key, load_public_key, read_passphrase

    fifo = tmp_path / "key.pem"
    os.mkfifo(fifo)
    for load, what in ((load_public_key, "public key"), (load_private_key, "private key"),
                       (read_passphrase, "passphrase file")):
        with pytest.raises(BuildError) as info:
            load(fifo)
        assert info.value.message == f"{fifo}: cannot read {what}: not a regular file (a FIFO)"
