"""`serve` against an attacker on the factory network (issue #23): hostile requests and
reports each paired with their exact outcome, forgery from everything served, replays,
changed keys, made-up identities and idle connections against a small descriptor limit."""

from __future__ import annotations

import logging
import os
import re
import resource
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from builder.factory import status
from builder.factory.db.engine import Database
from builder.factory.registry import Binding, DbRegistry, Raced
from builder.factory.reports import accept_report
from builder.factory.serve import Provisioner, tracked_device
from builder.factory.sitefile import load_site
from builder.factory.status import StatusStore, identity_from_headers
from tests.conftest import ROOT
from tests.serving import Running, SimDevice, installer_bytes, running, write_site

QEMU = {"ONIE-ARCH": "x86_64", "ONIE-MACHINE": "qemu_x86_64", "ONIE-MACHINE-REV": "0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("hostile")
    out = folder / "out"
    (out / "x86_64-qemu_x86_64-r0").mkdir(parents=True)
    (out / "x86_64-qemu_x86_64-r0" / "initrd.img").write_bytes(b"initramfs" * 1000)
    (out / "x86_64-qemu_x86_64-r0" / "manifest.json").write_text('{"platform": "x"}')
    with running(write_site(folder, installer_size=5000), out) as handle:
        yield handle


def port(server: Running) -> int:
    return int(server.url().split(":")[2].rstrip("/"))


def raw(server: Running, request: bytes) -> bytes:
    """The status line of the answer to raw request bytes (no client library normalizing)."""
    with socket.create_connection(("127.0.0.1", port(server)), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def get_line(path: bytes, *headers: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers) \
        + b"Connection: close\r\n\r\n"


REQUESTS = [
    # (raw request, status line); aiohttp answers what its parser refuses with HTTP/1.0
    (get_line(b"/a%00b"), b"HTTP/1.1 400 Bad Request"),
    (get_line(b"/x86_64-qemu_x86_64-r0/%1b[2Jinitrd.img"), b"HTTP/1.1 400 Bad Request"),
    (get_line(b"/" + b"n" * 300), b"HTTP/1.1 404 Not Found"),  # longer than a file name may be
    (get_line(b"/" + b"a/" * 600), b"HTTP/1.1 414 Request-URI Too Long"),
    (get_line(b"/" + b"a" * 9000), b"HTTP/1.0 400 Bad Request"),  # past aiohttp's line limit
    (get_line(b"/../site.yaml"), b"HTTP/1.1 404 Not Found"),
    (get_line(b"/%2e%2e/site.yaml"), b"HTTP/1.1 404 Not Found"),
    (get_line(b"/x86_64-qemu_x86_64-r0/../../site.yaml"), b"HTTP/1.1 404 Not Found"),
    (get_line(b"/x86_64-qemu_x86_64-r0/"), b"HTTP/1.1 404 Not Found"),
    (get_line(b"/status.json?limit=abc"), b"HTTP/1.1 400 Bad Request"),
    (get_line(b"/status.json?limit=99999999"), b"HTTP/1.1 400 Bad Request"),
    (get_line(b"/status.json?offset=%D9%A3"), b"HTTP/1.1 400 Bad Request"),  # an Arabic digit
    (get_line(b"/onie-installer", b"ONIE-ARCH: x86_64", b"ONIE-MACHINE: qemu_x86_64",
              b"ONIE-MACHINE-REV: \xd9\xa3"), b"HTTP/1.1 404 Not Found"),
    (get_line(b"/onie-installer", b"ONIE-SERIAL-NUMBER: \xff\xfe\x00"), b"HTTP/1.0 400 Bad Request"),
    (get_line(b"/onie-installer", b"X-Long: " + b"h" * 9000), b"HTTP/1.0 400 Bad Request"),
    (b"\x00\x01\x02 / HTTP/1.1\r\n\r\n", b"HTTP/1.0 400 Bad Request"),
    (b"POST /status HTTP/1.1\r\nHost: x\r\nAuthorization: ONIE-ED25519 \xc3\xa9\xc3\xa9\r\n"
     b"Content-Length: 10\r\nConnection: close\r\n\r\nphase=x\n\nx", b"HTTP/1.1 400 Bad Request"),
    (b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\nConnection: close\r\n\r\n",
     b"HTTP/1.1 413 Request Entity Too Large"),
    (b"POST /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
     b"zz\r\n", b"HTTP/1.0 400 Bad Request"),
]


@pytest.mark.parametrize(("request_bytes", "line"), REQUESTS, ids=range(len(REQUESTS)))
def test_hostile_requests(server: Running, caplog: pytest.LogCaptureFixture,
                          request_bytes: bytes, line: bytes) -> None:
    with caplog.at_level(logging.INFO):
        assert raw(server, request_bytes) == line
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def good(device: SimDevice, **fields: str) -> tuple[bytes, str]:
    return device.report("install", "running", b"log\n", **fields)


def other_key_signs(body: bytes) -> str:
    return SimDevice().sign(body)


def swap(body: bytes, old: bytes, new: bytes) -> bytes:
    assert old in body
    return body.replace(old, new)


Decided = tuple[StatusStore, DbRegistry, Callable[[bytes, str | None], tuple[int, str]]]
REPORTS: list[tuple[str, Callable[[SimDevice], tuple[bytes, str | None]], int, str]] = [
    # (case, how to make (body, authorization) from a fresh device, status, text)
    ("no authorization", lambda d: (good(d)[0], None), 401,
     "bad signature: expected 'Authorization: ONIE-ED25519 <base64 signature>'"),
    ("the old shared-token scheme", lambda d: (good(d)[0], "ONIE-HMAC-SHA256 " + "0" * 64), 401,
     "bad signature: expected 'Authorization: ONIE-ED25519 <base64 signature>'"),
    ("non-ASCII signature", lambda d: (good(d)[0], "ONIE-ED25519 \u00e9" * 3), 401,
     "bad signature: the signature is not 64 bytes of base64"),
    ("truncated signature", lambda d: (good(d)[0], good(d)[1][:-8]), 401,
     "bad signature: the signature is not 64 bytes of base64"),
    ("signed by another key", lambda d: (good(d)[0], other_key_signs(good(d)[0])), 401,
     "bad signature: the signature does not verify under the report's key"),
    ("signature of another body", lambda d: (swap(good(d)[0], b"running", b"ok\nmessage=x"),
                                             good(d)[1]), 401,
     "bad signature: the signature does not verify under the report's key"),
    ("no counter", lambda d: (re.sub(rb"counter=\d+\n", b"", good(d)[0]), None), 400,
     "bad status report: counter: expected a positive decimal number, got ''"),
    ("counter zero", lambda d: (d.body("install", "running", counter=0), None), 400,
     "bad status report: counter: expected a positive decimal number, got '0'"),
    ("counter not decimal", lambda d: (re.sub(rb"counter=\d+", b"counter=1e9", good(d)[0]), None),
     400, "bad status report: counter: expected a positive decimal number, got '1e9'"),
    ("no key", lambda d: (re.sub(rb"key=\S+\n", b"", good(d)[0]), None), 400,
     "bad status report: key: expected the base64 SubjectPublicKeyInfo of an Ed25519 key"),
    ("key that is no Ed25519 key", lambda d: (re.sub(rb"key=\S+", b"key=" + b"A" * 59 + b"=",
                                                      good(d)[0]), None), 400,
     "bad status report: key: expected the base64 SubjectPublicKeyInfo of an Ed25519 key"),
    ("no identity", lambda d: (SimDevice().body("install", "running"), None), 400,
     "bad status report: expected 'serial', 'mac' or both: the signed body names the device"),
    ("a key twice", lambda d: (b"phase=a\nphase=b\n\n", None), 400,
     "bad status report: line 2: phase given twice"),
    ("escape sequence", lambda d: (good(d, message="\x1b[2Jhi")[0], None), 400,
     "bad status report: control characters in the key=value lines"),
    ("carriage return", lambda d: (good(d, message="a\rphase=done")[0], None), 400,
     "bad status report: control characters in the key=value lines"),
    ("non-ASCII line", lambda d: (good(d, message="caf\u00e9")[0], None), 400,
     "bad status report: the key=value lines must be ASCII"),
    ("unknown key", lambda d: (b"phase=a\nrole=admin\n\n", None), 400,
     "bad status report: line 2: unknown key 'role'; expected one of phase, result, serial, mac, "
     "platform, version, message, counter, key, keystore"),
    ("bad keystore", lambda d: (swap(good(d)[0], b"keystore=disk", b"keystore=tpm"), None), 400,
     "bad status report: keystore: expected one of disk, ram, got 'tpm'"),
    ("bad mac", lambda d: (SimDevice("S1", "52:54:00:zz:00:01").body("a", "ok"), None), 400,
     "bad status report: mac: expected a MAC address, got '52:54:00:zz:00:01'"),
    ("bad result", lambda d: (d.body("install", "maybe"), None), 400,
     "bad status report: result: expected one of running, ok, fail, got 'maybe'"),
    ("bad phase", lambda d: (d.body("Install!", "ok"), None), 400,
     "bad status report: phase: expected lower-case letters, digits, '_' or '-' (at most 32), "
     "got 'Install!'"),
]


@pytest.fixture
def decide(tmp_path: Path) -> Iterator[Decided]:
    site, _ = load_site(write_site(tmp_path))
    store = StatusStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    registry = DbRegistry(store.db)

    def call(body: bytes, auth: str | None) -> tuple[int, str]:
        outcome = accept_report(store, registry, site, body, auth, "192.0.2.7")
        return outcome.status, outcome.text

    yield store, registry, call
    store.close()


@pytest.mark.parametrize(("case", "make", "code", "text"), REPORTS, ids=[r[0] for r in REPORTS])
def test_hostile_reports(decide: Decided, case: str,
                         make: Callable[[SimDevice], tuple[bytes, str | None]], code: int,
                         text: str) -> None:
    store, registry, call = decide
    body, auth = make(SimDevice("SN-HOSTILE", "52:54:00:00:00:07"))
    assert call(body, auth) == (code, text)
    assert store.snapshot()["total"] == 0 and len(registry) == 0


def test_replays_and_changed_keys(decide: Decided,
                                  tmp_path: Path) -> None:
    store, _registry, call = decide
    device = SimDevice("SN-SPECIAL", "52:54:00:12:00:01")
    failed = device.report("install", "fail")
    assert call(*failed)[0] == 200  # first contact: the key is registered
    assert call(*device.report("done", "ok"))[0] == 200
    # A captured failure replayed after the success does not roll the device back.
    assert call(*failed) == (409, "replayed report: counter 1 is not above 2, the last accepted "
                                  "from SN-SPECIAL")
    old = device.body("install", "fail", counter=2)
    assert call(old, device.sign(old))[0] == 409
    record = device_of(store, "SN-SPECIAL")
    assert record["state"] == "installed" and record["counter"] == 2
    assert record["address"] == "192.0.2.7"
    # Another key for the same device: a conflict, shown, not applied; the record keeps its MAC.
    impostor = SimDevice("SN-SPECIAL", "52:54:00:66:66:66")
    code, text = call(*impostor.report("done", "fail"))
    assert code == 409 and text.startswith("key conflict: SN-SPECIAL is registered with key sha256:")
    record = device_of(store, "SN-SPECIAL")
    assert record["state"] == "conflict" and record["result"] == "ok"
    assert record["mac"] == "52:54:00:12:00:01" and record["conflicts"][0]["result"] == "fail"
    assert "kept on ONIE-BOOT" in record["conflicts"][0]["note"]
    assert str(record["reason"]).startswith("a report signed by another key (sha256:")
    # The registry outlives a restart of serve (the same database): the replay is refused.
    again = DbRegistry(Database(store.db.url))
    found = again.find("SN-SPECIAL", None)
    assert found is not None and found.counter == 2 and found.key == device.public
    again.db.close()


def device_of(store: StatusStore, key: str) -> dict[str, object]:
    history = store.history(key)
    assert history is not None, key
    device: dict[str, object] = history["device"]
    return device


def test_two_servers_race_for_a_binding_and_a_counter(decide: Decided) -> None:
    """The database decides: a second first registration and a counter that is no longer
    above the stored one raise Raced (the report is then judged again)."""
    store, registry, _call = decide
    other = DbRegistry(Database(store.db.url))  # a second server on the same database
    binding = Binding("SN-RACE", "SN-RACE", None, "KEY", "disk", 1, 0.0)
    registry.register(binding)
    with pytest.raises(Raced):
        other.register(Binding("SN-RACE", "SN-RACE", None, "OTHER", "disk", 1, 0.0))
    seen_first, seen_second = registry.find("SN-RACE", None), other.find("SN-RACE", None)
    assert seen_first is not None and seen_second is not None
    registry.advance(seen_first, 5)  # both saw counter 1 and accept counter 5: one wins
    with pytest.raises(Raced):
        other.advance(seen_second, 5)
    final = other.find("SN-RACE", None)
    assert final is not None and (final.key, final.counter) == ("KEY", 5)
    other.db.close()


def test_everything_served_without_credentials_forges_no_report(server: Running) -> None:
    """Download all that serve offers, then try to make reports for a registered device."""
    device = SimDevice("SN-SPECIAL")
    assert post(server, *device.report("install", "running"))[0] == 200
    seen = [requests.get(server.url(p), timeout=10) for p in
            ("/", "status.json", "onie-ca.pem", "x86_64-qemu_x86_64-r0/initrd.img",
             "x86_64-qemu_x86_64-r0/manifest.json")]
    names = ["onie-installer", "onie-updater", "onie-installer-x86_64-qemu_x86_64-r0"]
    for name in names:
        for headers in ({**QEMU}, {**QEMU, "ONIE-SERIAL-NUMBER": "SN-SPECIAL"},
                        {**QEMU, "ONIE-ETH-ADDR": "52:54:00:aa:bb:cc"}):
            seen.append(requests.get(server.url(name), headers=headers, timeout=10))
    loot = b"".join(r.content for r in seen)
    assert b"PRIVATE KEY" not in loot and installer_bytes("special", 5000) in loot
    # Every 16-64 character run of what was served, tried as the old shared token: refused.
    body = device.body("done", "fail", counter=99)
    candidates = set(re.findall(rb"[!-~]{16,64}", loot))
    assert candidates
    import hashlib
    import hmac

    for token in list(candidates)[:200]:
        auth = "ONIE-HMAC-SHA256 " + hmac.new(token, body, hashlib.sha256).hexdigest()
        assert post(server, body, auth)[0] == 401
    # The device's public key is served (status.json shows its fingerprint, the report carried
    # the key): signing needs the private one. A key of the attacker's own is a conflict.
    forged = SimDevice("SN-SPECIAL")
    assert post(server, *forged.report("done", "fail"))[0] == 409
    state = next(d for d in requests.get(server.url("status.json"), timeout=10).json()["devices"]
                 if d["key"] == "SN-SPECIAL")
    assert state["state"] == "conflict" and state["result"] == "running"


def post(server: Running, body: bytes, auth: str | None) -> tuple[int, str]:
    headers = {"Authorization": auth} if auth is not None else {}
    response = requests.post(server.url("status"), data=body, headers=headers, timeout=10)
    return response.status_code, response.text


def test_made_up_serials_are_counted_not_stored(server: Running, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests with made-up serials leave no record, only a counter: 1,000 through the
    server, 100,000 through the same identity path of its request handler; past MAX_DEVICES
    (made 1,000 here: each report is a synced commit) devices that report get 503."""
    before = requests.get(server.url("status.json"), timeout=10).json()
    with requests.Session() as session:
        for n in range(1000):
            answer = session.get(server.url("onie-installer"), timeout=10, headers={
                **QEMU, "ONIE-SERIAL-NUMBER": f"MADEUP{n:06d}", "ONIE-ETH-ADDR": mac(n)})
            assert answer.status_code == 200
    after = requests.get(server.url("status.json"), timeout=10).json()
    assert after["total"] == before["total"]
    assert after["unknown"]["requests"] - before["unknown"]["requests"] == 1000
    assert after["unknown"]["downloads"] - before["unknown"]["downloads"] == 1000

    site, _ = load_site(write_site(tmp_path))
    store = StatusStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    registry = DbRegistry(store.db)
    provisioner = Provisioner(site, tmp_path, store, registry)
    for n in range(100_000):
        who = identity_from_headers({**QEMU, "ONIE-SERIAL-NUMBER": f"MADEUP{n:06d}",
                                     "ONIE-ETH-ADDR": mac(n)}, "192.0.2.9")
        store.note_request(tracked_device(provisioner, who, waterfall=True), "/onie-installer")
    assert store.snapshot()["total"] == 0 and store.unknown["requests"] == 100_000
    # Signed reports from devices the site does not list: stored up to MAX_DEVICES, then 503.
    monkeypatch.setattr(status, "MAX_DEVICES", 1000)
    for n in range(1001):
        sim = SimDevice(f"REPORTER{n:05d}")
        outcome = accept_report(store, registry, site, *sim.report("install", "running"), None)
        assert outcome.status == (200 if n < 1000 else 503), outcome.text
    page = store.snapshot(0, 100)
    assert page["total"] == 1000 and len(page["devices"]) == 100
    assert page["devices"][0]["key"] == "REPORTER00000"
    assert page["counts"]["installing"] == 1000 == sum(page["counts"].values())
    assert page["unknown"] == {"requests": 100_000, "downloads": 0, "reports": 1}
    last = store.snapshot(990, 50)
    assert [d["key"] for d in last["devices"]] == [f"REPORTER{n:05d}" for n in range(990, 1000)]
    store.close()


def mac(n: int) -> str:
    return f"02:00:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"


SERVE = ("import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)); "
         "sys.path.insert(0, sys.argv.pop(1)); from builder.cli import main; main()")


def test_2000_idle_connections_do_not_starve_a_1024_descriptor_serve(tmp_path: Path) -> None:
    site = write_site(tmp_path, installer_size=200_000)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2200:
        pytest.skip(f"this test holds 2,000 sockets; the descriptor limit here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2200), hard))
    try:
        hold_idle_connections(site)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def hold_idle_connections(site: Path) -> None:
    tmp_path = site.parent
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(ROOT), "serve", "--site", str(site),
                             "--out", str(tmp_path), "--listen", "127.0.0.1", "--http-port", "0"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    idle: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        match = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
        assert match, proc.stderr.read()
        port = int(match.group(1))
        for _ in range(2000):
            conn = socket.socket()
            conn.connect(("127.0.0.1", port))
            idle.append(conn)
        # The installer, from another address while the 2,000 are held open.
        with socket.socket() as conn:
            conn.bind(("127.0.0.2", 0))
            conn.settimeout(30)
            conn.connect(("127.0.0.1", port))
            conn.sendall(b"GET /onie-installer HTTP/1.1\r\nHost: x\r\nONIE-ARCH: x86_64\r\n"
                         b"ONIE-MACHINE: qemu_x86_64\r\nONIE-MACHINE-REV: 0\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200") and body == installer_bytes("default", 200_000)
        assert proc.poll() is None
    finally:
        for conn in idle:
            conn.close()
        proc.terminate()
        proc.wait(10)
    log = proc.stderr.read()
    refused = log.count("refused a connection from 127.0.0.1")
    assert 1 <= refused <= 21, log[-2000:]  # rate-limited: 20 lines a minute, then counted
    assert "Traceback" not in log and "Too many open files" not in log


def test_a_slow_report_body_times_out(tmp_path: Path) -> None:
    from builder.factory.limits import Limits

    with running(write_site(tmp_path), tmp_path, limits=Limits(body_timeout=0.5)) as handle:
        line = raw(handle, b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\nphase=")
    assert line == b"HTTP/1.1 408 Request Timeout"


def test_a_connection_without_headers_is_closed(tmp_path: Path) -> None:
    from builder.factory.limits import Limits

    with running(write_site(tmp_path), tmp_path, limits=Limits(header_timeout=0.5)) as handle:
        with socket.create_connection(("127.0.0.1", port(handle)), timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
            assert conn.recv(100) == b""  # closed by the server, before the client's timeout
        assert handle.server.tracker.expired == 1 and handle.server.tracker.total == 0

