"""The provisioning server: per-device installers, Range, status reports, HTTPS, the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, run_cli
from tests.serving import (
    Running,
    SimDevice,
    installer_bytes,
    make_ca,
    make_server_cert,
    running,
    write_site,
)
from tests.test_json import check_envelope

QEMU = {"ONIE-ARCH": "x86_64", "ONIE-MACHINE": "qemu_x86_64", "ONIE-MACHINE-REV": "0",
        "ONIE-VENDOR-ID": "42623", "ONIE-OPERATION": "os-install", "ONIE-VERSION": "2026.11"}
ARM = {"ONIE-ARCH": "arm64", "ONIE-MACHINE": "qemu_arm64", "ONIE-MACHINE-REV": "0"}
SIZE = 100_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("site")
    out = folder / "out"
    (out / "x86_64-qemu_x86_64-r0").mkdir(parents=True)
    (out / "x86_64-qemu_x86_64-r0" / "vmlinuz").write_bytes(b"kernel" * 100)
    (out / "onie-installer-x86_64-static").write_bytes(b"static tree file")
    with running(write_site(folder, installer_size=SIZE), out) as handle:
        yield handle


def get(server: Running, path: str, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.get(server.url(path), headers=headers or {}, timeout=10)


def label(response: requests.Response) -> str:
    """Which installer was served: the label its content starts with."""
    return response.content.split(b":", 1)[0].decode() if response.status_code == 200 else "404"


WATERFALL = [
    # (path, headers, expected installer or 404)
    ("onie-installer-x86_64-qemu_x86_64-r0", {**QEMU, "ONIE-SERIAL-NUMBER": "SN-SPECIAL"}, "special"),
    ("onie-installer-x86_64-qemu_x86_64-r0", {**QEMU, "ONIE-SERIAL-NUMBER": "SN-OTHER"}, "default"),
    ("onie-installer-x86_64-qemu_x86_64-r0.bin", {**QEMU, "ONIE-SERIAL-NUMBER": "SN-OTHER"}, "default"),
    ("onie-installer-x86_64-qemu_x86_64", QEMU, "default"),
    ("onie-installer-qemu_x86_64", QEMU, "default"),
    ("onie-installer-x86_64-qemu", QEMU, "default"),  # <arch>-<switch_asic>
    ("onie-installer-x86_64", QEMU, "default"),
    ("onie-installer", QEMU, "default"),
    ("onie-installer.bin", QEMU, "default"),
    ("onie-installer", {**QEMU, "ONIE-ETH-ADDR": "52:54:00:AA:BB:CC"}, "bymac"),
    ("52-54-00-aa-bb-cc/onie-installer", {}, "bymac"),  # MAC folder, no headers
    ("onie-installer-x86_64-qemu_x86_64-r0", {}, "default"),  # full name alone, as a static tree
    ("onie-updater-x86_64-qemu_x86_64-r0", {**QEMU, "ONIE-OPERATION": "onie-update"}, "updater"),
    # fall through: another platform's names, no installer assigned, nothing identifies the device
    ("onie-installer-arm64", QEMU, "404"),
    ("onie-installer-x86_64-qemu_x86_64-r1", QEMU, "404"),
    ("onie-installer-qemu_arm64", QEMU, "404"),
    ("onie-installer", ARM, "404"),
    ("onie-updater", {**QEMU, "ONIE-SERIAL-NUMBER": "SN-SPECIAL", "ONIE-ARCH": "arm64"}, "404"),
    ("onie-installer", {}, "404"),
    ("onie-installer-x86_64", {}, "404"),
    ("onie-installer-x86_64-qemu_x86_64-r0-evil", QEMU, "404"),
]


@pytest.mark.parametrize(("path", "headers", "expected"), WATERFALL)
def test_waterfall_names_get_the_device_installer(server: Running, path: str,
                                                  headers: dict[str, str], expected: str) -> None:
    response = get(server, path, headers)
    assert label(response) == expected
    if expected != "404":
        assert response.content == installer_bytes(expected, SIZE)
        assert response.headers["Accept-Ranges"] == "bytes"


def test_out_tree_is_served_and_nothing_outside_it(server: Running) -> None:
    assert get(server, "x86_64-qemu_x86_64-r0/vmlinuz").content == b"kernel" * 100
    # A waterfall name with no assignment falls back to the static tree of the same name.
    assert get(server, "onie-installer-x86_64-static").content == b"static tree file"
    assert get(server, "x86_64-qemu_x86_64-r0").status_code == 404  # folders are not listed
    assert get(server, "nothing-here").status_code == 404
    # Traversal out of out/ (raw request line: requests would normalize the path).
    with socket.create_connection(("127.0.0.1", int(server.url().split(":")[2].rstrip("/")))) as s:
        s.sendall(b"GET /../site.yaml HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = s.recv(4096).split(b"\r\n", 1)[0]
    assert head in (b"HTTP/1.1 404 Not Found", b"HTTP/1.1 400 Bad Request")


RANGES = [
    ("bytes=10-19", 206, 10, 20),
    ("bytes=99990-", 206, 99990, SIZE),
    ("bytes=-5", 206, SIZE - 5, SIZE),
    ("bytes=0-", 206, 0, SIZE),
    ("bytes=99999-200000", 206, 99999, SIZE),
    ("bytes=0-0", 206, 0, 1),
    ("bytes=100000-", 416, 0, 0),
    ("bytes=200000-300000", 416, 0, 0),
    ("bytes=0-1,5-6", 200, 0, SIZE),  # several ranges: the whole file (RFC 9110 allows it)
    ("lines=1-2", 200, 0, SIZE),  # not a byte range: ignored
]


@pytest.mark.parametrize(("value", "status", "start", "end"), RANGES)
def test_range_requests(server: Running, value: str, status: int, start: int, end: int) -> None:
    data = installer_bytes("default", SIZE)
    response = get(server, "onie-installer", {**QEMU, "Range": value})
    assert response.status_code == status
    if status == 416:
        assert response.headers["Content-Range"] == f"bytes */{SIZE}"
        return
    assert response.content == data[start:end]
    if status == 206:
        assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{SIZE}"


def test_if_range_with_another_version_sends_the_whole_file(server: Running) -> None:
    first = get(server, "onie-installer", QEMU)
    same = get(server, "onie-installer", {**QEMU, "Range": "bytes=5-9", "If-Range": first.headers["ETag"]})
    assert same.status_code == 206 and same.content == first.content[5:10]
    other = get(server, "onie-installer", {**QEMU, "Range": "bytes=5-9", "If-Range": '"0-0"'})
    assert other.status_code == 200 and other.content == first.content


def test_head_sends_no_body(server: Running) -> None:
    response = requests.head(server.url("onie-installer"), headers=QEMU, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(SIZE) and response.content == b""


BIG = 24 * 1024 * 1024  # far more than the loopback socket buffers hold


def test_a_dropped_download_resumes_with_range_to_identical_bytes(tmp_path: Path) -> None:
    with running(write_site(tmp_path, installer_size=BIG), tmp_path) as big:
        check_resume(big)


def check_resume(server: Running) -> None:
    headers = {**QEMU, "ONIE-SERIAL-NUMBER": "SN-SPECIAL"}  # listed: the server tracks it
    port = int(server.url().split(":")[2].rstrip("/"))
    request = "GET /onie-installer HTTP/1.1\r\nHost: x\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    received = b""
    with socket.socket() as conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.connect(("127.0.0.1", port))
        conn.sendall(request.encode())
        while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < 30_000:
            chunk = conn.recv(4096)
            assert chunk, "server closed early"
            received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    rest = get(server, "onie-installer", {**headers, "Range": f"bytes={len(body)}-"})
    assert rest.status_code == 206
    assert body + rest.content == installer_bytes("special", BIG)
    # The dropped transfer counts what the server handed to the connection before the client
    # vanished (whole chunks, so at least what the client received, even when it vanished
    # during the first); the resumed rest is whole. The server learns of the drop only when
    # a write fails, which may come after the resumed request has ended: wait (bounded).
    resumed = BIG - len(body)
    deadline = time.monotonic() + 20
    device = device_state(server, "SN-SPECIAL")
    while device["bytes_sent"] == resumed and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.1)
        device = device_state(server, "SN-SPECIAL")
    assert device["downloads"] == 1  # only the resumed part reached the end
    assert resumed < device["bytes_sent"] < 2 * BIG  # type: ignore[operator]
    assert device["installer"] == "special.bin"
    assert device["phase"] == "downloaded" and device["platform"] == "x86_64-qemu_x86_64-r0"


def device_state(server: Running, key: str) -> dict[str, object]:
    devices = requests.get(server.url("status.json"), timeout=10).json()["devices"]
    return next(d for d in devices if d["key"] == key)


def post(server: Running, body: bytes, auth: str | None) -> requests.Response:
    headers = {"Authorization": auth} if auth is not None else {}
    return requests.post(server.url("status"), data=body, headers=headers, timeout=10)


def test_status_reports_are_recorded(server: Running) -> None:
    device = SimDevice("SN-REPORT", "52-54-00-00-00-99")
    first = device.report("install", "running", b"x" * 100 + b"\nlast line\n",
                          platform="x86_64-qemu_x86_64-r0")
    assert post(server, *first).status_code == 200
    answer = post(server, *device.report("done", "ok", b"installed\n", message="NOS installed"))
    assert answer.json() == {"device": "SN-REPORT", "phase": "done", "result": "ok"}
    state = device_state(server, "SN-REPORT")
    assert state["state"] == "installed" and state["mac"] == "52:54:00:00:00:99"
    assert state["message"] == "NOS installed" and state["counter"] == 2
    assert state["keystore"] == "disk" and str(state["fingerprint"]).startswith("sha256:")
    assert state["log"] == ("x" * 100 + "\nlast line\ninstalled\n")[-64:]  # log_tail: 64
    assert [p["phase"] for p in state["phases"]] == ["install", "done"]  # type: ignore[union-attr]


def test_status_reports_are_disabled_without_a_status_section(tmp_path: Path) -> None:
    site = write_site(tmp_path)
    site.write_text(site.read_text().replace("status:\n  max_body: 4096\n  log_tail: 64\n", ""))
    with running(site, tmp_path) as handle:
        response = post(handle, *SimDevice("SN-OFF").report("done", "ok"))
    assert response.status_code == 403


def test_https_with_the_site_ca(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    chain, key = make_server_cert(tmp_path / "ca", ca, ["127.0.0.1"])
    other_ca = make_ca(tmp_path / "other", "Another CA")
    site = write_site(tmp_path, tls=(chain, key, ca[0]))
    with running(site, tmp_path) as handle:
        url = handle.url("onie-installer", tls=True)
        response = requests.get(url, headers=QEMU, verify=str(ca[0]), timeout=10)
        assert response.status_code == 200 and label(response) == "default"
        ranged = requests.get(url, headers={**QEMU, "Range": "bytes=7-"}, verify=str(ca[0]), timeout=10)
        assert ranged.content == response.content[7:]
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, headers=QEMU, verify=str(other_ca[0]), timeout=10)
        published = requests.get(handle.url("onie-ca.pem"), timeout=10)
        assert published.content == ca[0].read_bytes()
        assert requests.get(handle.url("onie-installer"), headers=QEMU, timeout=10).ok  # plain HTTP too


def test_cli_serve_and_status(tmp_path: Path) -> None:
    site = write_site(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", "serve", "--site", str(site), "--out", str(tmp_path),
         "--listen", "127.0.0.1", "--http-port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert match, line + proc.stderr.read() if proc.stderr else line
        base = match.group(1)
        body, auth = SimDevice("SN-CLI").report("done", "ok", b"all good\n")
        assert requests.post(f"{base}/status", data=body, timeout=10,
                             headers={"Authorization": auth}).ok
        out = run_cli("status", "--json", base)
        data = check_envelope(out.stdout, "status", True)
        # The site's two devices (never seen: waiting) and the one that reported.
        states = {d["key"]: d["state"] for d in data["devices"]}
        assert states == {"SN-CLI": "installed", "SN-SPECIAL": "waiting",
                          "52:54:00:aa:bb:cc": "waiting"}
        table = run_cli("status", base).stdout
        assert re.search(r"^SN-CLI\s+.*\binstalled\b", table, re.M), table
        # The default state database is the SQLite file beside the site file.
        assert site.with_suffix(".db").is_file()
        history = requests.get(f"{base}/status/SN-CLI.json", timeout=10).json()
        assert [(e["kind"], e["phase"], e["result"]) for e in history["events"]] == [
            ("report", "done", "ok")]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    assert proc.returncode == 0


def test_cli_serve_reports_a_bad_site(tmp_path: Path) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_text("name: x\nserver:\n  address: 10.0.0.999\n")
    proc = run_cli("serve", "--site", str(bad), check=False)
    assert proc.returncode == 2
    assert "site.yaml:3: server.address:" in proc.stderr


def test_cli_status_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_cli("status", f"http://127.0.0.1:{port}", check=False)
    assert proc.returncode == 1 and "cannot reach" in proc.stderr


def test_load_of_200_concurrent_devices_has_no_errors() -> None:
    """bench/serve_load.py, small: 200 devices at once, every request answered right."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "serve_load.py"), "--devices", "200",
                           "--size", "65536", "--deadline", "300", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["errors"] == 0 and summary["devices"] == 200
    assert summary["kinds"]["download-range"]["count"] == 400
    assert summary["kinds"]["status-post"]["count"] == 600


# --- the environment's side: templates/guest/discovery/lib/report.sh.j2 run by BusyBox ash -----


def render_report(tmp_path: Path) -> Path:
    from builder.render import make_environment, render_template

    text = render_template(make_environment(), "guest/discovery/lib/report.sh.j2", {
        "report_enable": str(tmp_path / "enable"), "report_url": str(tmp_path / "no-url"),
        "onie_boot": str(tmp_path / "onie-boot"), "report_ram_dir": str(tmp_path / "ram"),
        "report_log_tail": 40})
    script = tmp_path / "report.sh"
    script.write_text("say() { echo \"say: $*\"; }\n" + text)
    (tmp_path / "enable").touch()
    return script


def busybox() -> str:
    from tests.conftest import require_tool

    return require_tool("busybox", "to run the generated shell (Debian package busybox-static)")


def run_report(script: Path, tmp_path: Path, serial: str, *args: str) -> str:
    """report_status ARGS under BusyBox ash, with the host's openssl as the image's."""
    from tests.conftest import require_tool

    require_tool("openssl", "to sign reports as the image does (Debian package openssl)")
    (tmp_path / "discovery.log").write_text("onie-discovery: try http://x/onie-installer\n")
    (tmp_path / "installer.log").write_text("installing...\nNOS installed OK\n")
    env = {"PATH": os.environ["PATH"], "RUN": str(tmp_path / "run"),
           "LOG": str(tmp_path / "discovery.log"), "INSTALLER_LOG": str(tmp_path / "installer.log"),
           "SERIAL": serial, "ETH_ADDR": "52:54:00:ab:cd:ef", "PLATFORM": "x86_64-qemu_x86_64-r0"}
    return subprocess.run([busybox(), "ash", "-c", '. "$1"; shift; report_status "$@"', "sh",
                           str(script), *args], env=env, check=True, capture_output=True,
                          text=True).stdout


def test_report_status_from_busybox_reaches_the_server(server: Running, tmp_path: Path) -> None:
    script = render_report(tmp_path)
    (tmp_path / "onie-boot" / "onie").mkdir(parents=True)  # a mounted ONIE-BOOT holds onie/
    url = server.url("onie-installer-x86_64-qemu_x86_64-r0")
    for phase, result, message in (("install", "running", ""), ("done", "ok", "rc=0; $(reboot) `x`")):
        assert run_report(script, tmp_path, "SN-ASH", phase, result, url, message) == ""
    device = device_state(server, "SN-ASH")
    assert device["state"] == "installed" and device["mac"] == "52:54:00:ab:cd:ef"
    assert device["platform"] == "x86_64-qemu_x86_64-r0"
    assert device["message"] == "rc=0? ?(reboot) ?x?"  # shell metacharacters made harmless
    assert str(device["log"]).endswith("installing...\nNOS installed OK\n")
    # The key and its counter live on ONIE-BOOT, private; nothing is left in RUN.
    config = tmp_path / "onie-boot" / "onie" / "config"
    assert (config / "counter").read_text() == "2\n" and device["counter"] == 2
    assert (config / "device-key.pem").stat().st_mode & 0o077 == 0
    assert device["keystore"] == "disk" and not (tmp_path / "ram").exists()
    assert not (tmp_path / "run" / "status.body").exists()
    # The next boot (same ONIE-BOOT) signs with the same key and a higher counter.
    assert run_report(script, tmp_path, "SN-ASH", "install", "fail", url, "again") == ""
    assert device_state(server, "SN-ASH")["state"] == "failed"


def test_report_status_without_onie_boot_keeps_its_key_in_ram(server: Running,
                                                              tmp_path: Path) -> None:
    script = render_report(tmp_path)
    url = server.url("onie-installer")
    assert run_report(script, tmp_path, "SN-RAM", "install", "running", url) == ""
    assert device_state(server, "SN-RAM")["keystore"] == "ram"
    assert (tmp_path / "ram" / "counter").read_text() == "1\n"
    # A reboot of a diskless switch: the key is gone, a new one is made, the server shows a
    # conflict (it cannot tell a reboot from an impostor) and does not apply the report.
    (tmp_path / "ram" / "device-key.pem").unlink()
    refused = run_report(script, tmp_path, "SN-RAM", "done", "ok", url)
    assert refused == f"say: status done ok: {server.url('status')} did not take it\n"
    device = device_state(server, "SN-RAM")
    assert device["state"] == "conflict" and device["phase"] == "install"
    [conflict] = device["conflicts"]  # type: ignore[misc]
    assert "kept in RAM" in conflict["note"] and conflict["phase"] == "done"


def test_report_status_is_a_no_op_unless_enabled_and_http(tmp_path: Path) -> None:
    script = render_report(tmp_path)
    args = [busybox(), "ash", "-c", '. "$1"; report_status done ok "$2"; echo rc=$?', "sh", str(script)]
    env = {"PATH": os.environ["PATH"], "RUN": str(tmp_path / "run")}
    tftp = subprocess.run([*args, "tftp://10.0.0.1/x"], capture_output=True, text=True, env=env)
    assert tftp.stdout.strip() == "rc=0"
    (tmp_path / "enable").unlink()
    off = subprocess.run([*args, "http://127.0.0.1:9/x"], capture_output=True, text=True, env=env)
    assert off.stdout.strip() == "rc=0"
    assert not (tmp_path / "ram").exists()  # no key made: reports are off


def test_the_store_counts_unlisted_devices_past_its_limit(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    from builder.factory import status

    monkeypatch.setattr(status, "MAX_DEVICES", 3)
    store = status.StatusStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        for n in range(5):
            store.find(status.Identity(serial=f"S{n}"))
        assert [d["key"] for d in store.snapshot()["devices"]] == ["S0", "S1", "S2"]
        assert store.find(status.Identity(serial="LISTED"), listed=True) is not None  # always
        again = store.find(status.Identity(serial="S1", mac="52:54:00:00:00:01"))
        assert again is not None and again.key == "S1" and again.mac == "52:54:00:00:00:01"
        by_mac = store.find(status.Identity(mac="52:54:00:00:00:01"))
        assert by_mac is not None and by_mac.id == again.id
        assert store.find(status.Identity(), listed=True) is None  # anonymous: never a record
        # A device first known by MAC takes its serial number as key when it tells it.
        first = store.find(status.Identity(mac="52:54:00:00:00:02"), listed=True)
        later = store.find(status.Identity(serial="S9", mac="52:54:00:00:00:02"), listed=True)
        assert first is not None and later is not None and (first.id, later.key) == (later.id, "S9")
    finally:
        store.close()


def test_site_devices_wait_and_a_missing_installer_is_a_failure(tmp_path: Path) -> None:
    """Every device of the site file is listed before any request (waiting); an installer
    the site assigns that is gone from the server fails the device with the server's cause."""
    site = write_site(tmp_path)
    site.write_text(site.read_text().replace("  log_tail: 64\n", "  log_tail: 64\n  silent_after: 60\n"))
    with running(site, tmp_path) as handle:
        first = requests.get(handle.url("status.json"), timeout=10).json()
        assert {d["key"]: (d["state"], d["listed"], d["first_seen"]) for d in first["devices"]} == {
            "SN-SPECIAL": ("waiting", True, None), "52:54:00:aa:bb:cc": ("waiting", True, None)}
        assert first["counts"]["waiting"] == 2 and first["silent_after"] == 60
        (tmp_path / "installers" / "special.bin").unlink()
        answer = get(handle, "onie-installer", {**QEMU, "ONIE-SERIAL-NUMBER": "SN-SPECIAL"})
        assert answer.status_code == 404
        device = device_state(handle, "SN-SPECIAL")
        assert device["state"] == "failed"
        assert device["reason"] == "installer special.bin missing on the server (404)"
        history = requests.get(handle.url("status/SN-SPECIAL.json"), timeout=10).json()
        assert [(e["kind"], e["status"], e["path"]) for e in history["events"]] == [
            ("request", None, "/onie-installer"), ("not-found", 404, "/onie-installer")]
        assert requests.get(handle.url("status/SN-NOBODY.json"), timeout=10).status_code == 404
