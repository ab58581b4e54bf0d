"""`onie-builder status URL`: order and filter as the page, the table, --json, and one clean
line (no traceback) for every way the server can fail to answer."""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.factory import statusclient
from builder.factory.serve import STATUS_PAGE
from builder.factory.statusclient import ago, format_status, matches, select
from tests.conftest import run_cli
from tests.serving import make_ca, make_server_cert
from tests.statusfixture import FixtureServer, fixture_server, load_fixture
from tests.test_json import check_envelope

# The fixture's devices in the page's order: failures first, then by name (else key).
ORDER = ["SN-EVIL", "SN-A02", "SN-C02", "SN-B02", "SN-B01", "SN-A03", "SN-A04", "SN-B03",
         "SN-B04", "52:54:00:0c:00:01", "SN-A01", "SN-C03"]
NOW = 1796572800 + 3600  # an hour after the fixture's first reports


@pytest.fixture(scope="module")
def server() -> Iterator[FixtureServer]:
    with fixture_server() as handle:
        yield handle


def js_array(name: str) -> str:
    """The text of ``const NAME = [...]`` in the page, whitespace squeezed."""
    match = re.search(rf"const {name} = (\[.*?\]);\n", STATUS_PAGE.read_text(), re.S)
    assert match, name
    return re.sub(r"\s+", " ", match.group(1))


def test_the_page_orders_searches_and_ages_as_the_command() -> None:
    assert json.loads(js_array("ORDER")) == list(statusclient.STATES)
    assert json.loads(js_array("SEARCHED")) == list(statusclient.SEARCHED)
    ages = json.loads(js_array("AGES").replace("2 * 3600", "7200").replace("2 * 86400", "172800"))
    assert [tuple(a) for a in ages] == list(statusclient.AGES)


def test_failures_first_then_by_name() -> None:
    devices = load_fixture()["status"]["devices"]
    assert [d["key"] for d in select(devices)] == ORDER
    assert [d["key"] for d in select(devices, "failed")] == ["SN-EVIL", "SN-A02", "SN-C02"]
    odd = [{"key": "Z", "state": "rebooting"}, {"key": "A", "state": "installed"}]
    assert [d["key"] for d in select(odd)] == ["A", "Z"]  # unknown states after the rest


@pytest.mark.parametrize(("text", "keys"), [
    ("rack-a", ["SN-A02", "SN-A03", "SN-A04", "SN-A01"]),
    ("RACK-A LEAF", ["SN-A02", "SN-A03", "SN-A01"]),  # every word, any case
    ("52:54:00:0b", ["SN-B02", "SN-B01"]),
    ("5254000b0001", ["SN-B01"]),  # a MAC typed without separators
    ("10.200.77.7", ["SN-C02", "SN-C03"]),
    ("arm64", ["SN-B04"]),
    ("404", ["SN-C02"]),  # the reason
    ("silent", ["SN-B01"]),
    ("no such thing", []),
    ("", ORDER),
])
def test_filter(text: str, keys: list[str]) -> None:
    assert [d["key"] for d in select(load_fixture()["status"]["devices"], text=text)] == keys


def test_matches_ignores_missing_and_odd_values() -> None:
    assert matches({"key": "K", "name": None, "mac": 5}, "k")
    assert not matches({}, "x")


@pytest.mark.parametrize(("age", "text"), [
    (0, "0 s ago"), (59, "59 s ago"), (60, "1 min ago"), (7199, "119 min ago"), (7200, "2 h ago"),
    (172799, "47 h ago"), (172800, "2 d ago"), (-5, "0 s ago")])
def test_ago(age: int, text: str) -> None:
    assert ago(NOW - age, NOW) == text


def test_ago_never() -> None:
    assert ago(None, NOW) == ago("yesterday", NOW) == ago(True, NOW) == "never"


def test_table() -> None:
    data = load_fixture()["status"]
    lines = format_status(data, now=NOW).splitlines()
    assert lines[0].split() == ["DEVICE", "NAME", "PLATFORM", "ADDRESS", "STATE", "PROGRESS",
                                "LAST", "SEEN", "REASON"]
    assert [line.split()[0] for line in lines[1:-1]] == ORDER
    assert lines[1].split()[1:8] == ["-", "x86_64-qemu_x86_64-r0", "10.200.77.66", "failed", "-",
                                     "58", "min"]
    # markup stays text; the terminal escape is written out, not sent
    assert lines[1].endswith("<img src=x onerror=document.title='owned'> \\x1b[31mred")
    downloading = next(line for line in lines if line.startswith("SN-A03"))
    assert downloading.split()[4:6] == ["downloading", "42%"]
    waiting = next(line for line in lines if line.startswith("SN-B04"))
    assert waiting.split()[4:7] == ["waiting", "-", "never"]
    assert lines[-1] == ("12 devices (failed: 3, conflict: 1, silent: 1, downloading: 1, "
                         "installing: 1, discovering: 1, waiting: 2, installed: 2)")
    only = format_status(data, select(data["devices"], "installed"), now=NOW).splitlines()
    assert [line.split()[0] for line in only[1:-1]] == ["SN-A01", "SN-C03"]
    assert only[-1].startswith("2 of 12 devices (failed: 3,")


def test_cli_state_filter_and_json(server: FixtureServer) -> None:
    table = run_cli("status", server.url, "--state", "failed", "--filter", "rack").stdout
    assert [line.split()[0] for line in table.splitlines()[1:-1]] == ["SN-A02", "SN-C02"]
    out = run_cli("status", server.url, "--json", "--filter", "rack-b").stdout
    result = check_envelope(out, "status", True)
    assert [d["key"] for d in result["devices"]] == ["SN-B02", "SN-B01", "SN-B03", "SN-B04"]
    assert result["counts"] == server.fixture["status"]["counts"]  # over all devices
    assert result["total"] == 12 and result["silent_after"] == 900
    bad = run_cli("status", server.url, "--state", "done", check=False)
    assert bad.returncode == 2 and "'done' is not one of 'failed', 'conflict'" in bad.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def error_of(*args: str) -> str:
    """The whole stderr of a failing `status`: exactly one line, and no traceback."""
    proc = run_cli("status", *args, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len([line for line in lines if not line.startswith("hint: ")]) == 1, proc.stderr
    return lines[0]


def test_refused() -> None:
    port = free_port()
    assert error_of(f"http://127.0.0.1:{port}") == \
        f"error: cannot reach http://127.0.0.1:{port}/status.json: connection refused"


def test_timeout() -> None:
    with socket.socket() as listener:  # accepts (the kernel's backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        assert error_of(url, "--timeout", "0.5") == \
            f"error: cannot reach {url}/status.json: no answer within 0.5 s"


def test_not_json(server: FixtureServer) -> None:
    server.fault = "html"
    try:
        line = error_of(server.url)
    finally:
        server.fault = None
    assert line == (f"error: {server.url}/status.json: malformed answer: not JSON (text/html, "
                    "Expecting value: line 1 column 1 (char 0))")


def test_http_500(server: FixtureServer) -> None:
    server.fault = "500"
    try:
        line = error_of(server.url)
        proc = run_cli("status", server.url, "--json", check=False)
    finally:
        server.fault = None
    assert line == f"error: {server.url}/status.json answered HTTP 500 Internal Server Error"
    assert proc.returncode == 1
    assert check_envelope(proc.stdout, "status", False) is None
    assert json.loads(proc.stdout)["errors"][0]["message"] == line.removeprefix("error: ")


def test_not_a_url() -> None:
    assert error_of("ftp://127.0.0.1/") == \
        "error: cannot reach ftp://127.0.0.1/status.json: not an http:// or https:// URL"


def test_tls(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    chain, key = make_server_cert(tmp_path / "ca", ca, ["127.0.0.1"])
    other = make_ca(tmp_path / "other", "Another CA")
    server = FixtureServer()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = server.url.replace("http:", "https:")
        assert error_of(url, "--cacert", str(other[0])) == (
            f"error: cannot reach {url}/status.json: TLS certificate not trusted (unable to get "
            "local issuer certificate)")
        table = run_cli("status", url, "--cacert", str(ca[0]), "--state", "silent").stdout
        assert [line.split()[0] for line in table.splitlines()[1:-1]] == ["SN-B01"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
