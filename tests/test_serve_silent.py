"""`silent` on a live server (#19): a real `serve` process with a short `status.silent_after`,
one report from a listed device, then the real `status URL --json` shows it `discovering`
and, once it has said nothing for longer than `silent_after`, `silent` with its reason; the
page's /status.json agrees, and the device's next report ends the silence."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, run_cli
from tests.serving import SimDevice, write_site
from tests.test_json import check_envelope

SILENT_AFTER = 10  # seconds: the smallest the site file takes (docs/factory.md)
POLL = 0.5  # seconds between two `status` runs while waiting for the state to change
KEY, OTHER = "SN-SPECIAL", "52:54:00:aa:bb:cc"  # the two devices of tests/serving.py's site


@contextmanager
def serve(tmp_path: Path) -> Iterator[str]:
    """`onie-builder serve` as its own process on a free port; yields its base URL."""
    site = write_site(tmp_path)
    site.write_text(site.read_text().replace(
        "  log_tail: 64\n", f"  log_tail: 64\n  silent_after: {SILENT_AFTER}\n"))
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "builder", "serve", "--site", str(site), "--out", str(tmp_path),
             "--listen", "127.0.0.1", "--http-port", "0"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
            stderr=stderr, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, f"serve did not start: {line!r}\n{log.read_text()}"
        yield match.group(0) + "/"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def status(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`onie-builder status URL --json`: (its result, the devices by key)."""
    result = check_envelope(run_cli("status", url, "--json").stdout, "status", True)
    return result, {d["key"]: d for d in result["devices"]}


def post(url: str, device: SimDevice, phase: str, result: str) -> None:
    body, auth = device.report(phase, result)
    answer = requests.post(url + "status", data=body, headers={"Authorization": auth}, timeout=10)
    assert answer.status_code == 200, answer.text


def quiet_seconds(reason: str | None) -> int:
    match = re.fullmatch(r"no word for (\d+) s", reason or "")
    assert match, reason
    return int(match.group(1))


@pytest.mark.timeout(120)
def test_a_device_that_stops_reporting_turns_silent(tmp_path: Path) -> None:
    with serve(tmp_path) as url:
        device = SimDevice(KEY)
        post(url, device, "discovery", "running")
        reported = time.time()
        result, devices = status(url)
        assert result["silent_after"] == SILENT_AFTER
        assert (devices[KEY]["state"], devices[KEY]["reason"]) == ("discovering", None)
        assert devices[OTHER]["state"] == "waiting"  # never seen: never silent
        last_seen = devices[KEY]["last_seen"]
        assert abs(last_seen - reported) < 5

        # Wait for the state to change: `status` again and again, until a deadline.
        deadline = time.monotonic() + SILENT_AFTER + 60
        while devices[KEY]["state"] == "discovering":
            assert time.monotonic() < deadline, f"still discovering after {SILENT_AFTER + 60} s"
            time.sleep(POLL)
            result, devices = status(url)
        seen_silent = time.time()
        mine = devices[KEY]
        assert mine["state"] == "silent", mine
        assert mine["last_seen"] == last_seen  # the polls are not the device's word
        assert seen_silent - last_seen > SILENT_AFTER
        assert SILENT_AFTER <= quiet_seconds(mine["reason"]) <= seen_silent - last_seen + 1
        assert result["counts"]["silent"] == 1 and result["counts"]["waiting"] == 1
        assert devices[OTHER]["state"] == "waiting"

        # The page's data says the same (its reason counts on from the same last word).
        page = requests.get(url + "status.json", timeout=10).json()
        shown = {d["key"]: d for d in page["devices"]}
        assert {k: shown[KEY][k] for k in ("state", "last_seen", "first_seen", "percent")} == \
            {k: mine[k] for k in ("state", "last_seen", "first_seen", "percent")}
        assert quiet_seconds(shown[KEY]["reason"]) >= quiet_seconds(mine["reason"])
        assert page["counts"] == result["counts"]
        assert page["silent_after"] == SILENT_AFTER
        one = requests.get(url + f"status/{KEY}.json", timeout=10).json()["device"]
        assert (one["state"], one["last_seen"]) == ("silent", last_seen)

        # The device's next word ends the silence.
        post(url, device, "install", "running")
        _result, devices = status(url)
        assert (devices[KEY]["state"], devices[KEY]["reason"]) == ("installing", None)
        assert devices[KEY]["last_seen"] > last_seen
