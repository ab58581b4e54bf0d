"""The status page in the distribution's headless Chromium driven by Selenium: counts, failures
first, the filter box, a device's history, auto-refresh and the banner of a server that stopped
answering; against a real `serve` subprocess and against tests/data/status-fixture.json (states
a short run does not reach: silent, conflict). Screenshots go to $ONIE_TEST_ARTIFACTS."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from builder.factory.statusclient import select
from tests.conftest import ROOT, fail_or_skip, require_tool, run_cli
from tests.serving import SimDevice, installer_bytes
from tests.statusfixture import fixture_server, load_fixture

pytestmark = pytest.mark.lab

# Debian's Chromium as root in a container, with nothing reaching outside loopback.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,900"]
PNG = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<img src=x onerror=document.title='owned'>"
QEMU = {"ONIE-ARCH": "x86_64", "ONIE-MACHINE": "qemu_x86_64", "ONIE-MACHINE-REV": "0"}
SIZE = 100_000


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium = require_tool("chromium", "to test the status page (Debian package chromium)")
    driver_path = require_tool("chromedriver", "to drive Chromium (Debian package chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        fail_or_skip("selenium is not installed: pip install -e '.[test]'")
    options = Options()
    options.binary_location = chromium
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def wait(browser: Any, timeout: float = 20) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page re-renders rows on each refresh: a row found a moment ago may be gone.
    return WebDriverWait(browser, timeout, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,))


def shown(browser: Any) -> list[str]:
    """The keys of the device rows, top to bottom."""
    keys: list[str] = browser.execute_script(
        "return [...document.querySelectorAll('tr.device')].map(r => r.dataset.device)")
    return keys


def counts(browser: Any) -> dict[str, int]:
    """The count buttons at the top, ``{"all": 12, "failed": 2, ...}`` (zeros left out)."""
    texts: list[str] = browser.execute_script(
        "return [...document.querySelectorAll('#counts button')].map(b => b.textContent)")
    pairs = (t.rsplit(": ", 1) for t in texts)
    return {state: int(n) for state, n in pairs if int(n)}


def cells(browser: Any, key: str) -> dict[str, str]:
    """A device row's cells by class (name, serial, mac, ..., state, progress, seen, reason)."""
    found: dict[str, str] = browser.execute_script(
        "const row = [...document.querySelectorAll('tr.device')].find(r => r.dataset.device === "
        "arguments[0]); return row ? Object.fromEntries([...row.cells].map(c => [c.className, "
        "c.textContent])) : {}", key)
    return found


def type_filter(browser: Any, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = browser.find_element(By.ID, "filter")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    if text:
        box.send_keys(text)


def click(browser: Any, selector: str) -> None:
    from selenium.webdriver.common.by import By

    wait(browser).until(lambda d: d.find_element(By.CSS_SELECTOR, selector)).click()


def refreshed(browser: Any) -> None:
    """Wait for the page's next successful refresh."""
    before = browser.execute_script("return lastGood")
    wait(browser).until(lambda d: d.execute_script("return lastGood") != before)


def history(browser: Any, key: str) -> list[dict[str, str]]:
    """The events of the unfolded history of ``key``, each by column."""
    events: list[dict[str, str]] = browser.execute_script(
        "const row = [...document.querySelectorAll('tr.history')].find(r => r.dataset.history === "
        "arguments[0]); return row ? [...row.querySelectorAll('tr.event')].map(e => "
        "Object.fromEntries([...e.cells].map(c => [c.className, c.textContent]))) : []", key)
    return events


def screenshot(browser: Any, name: str) -> Path:
    """Save the page to $ONIE_TEST_ARTIFACTS/NAME (out/test-artifacts/ by default): a real PNG
    of the window, not an empty or error image."""
    folder = Path(os.environ.get("ONIE_TEST_ARTIFACTS") or ROOT / "out" / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert browser.save_screenshot(str(path))
    data = path.read_bytes()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert data[:8] == PNG and width >= 1000 and height >= 500, (width, height)
    assert len(data) > 30_000, len(data)  # a page of text and colour, not a blank window
    return path


def test_the_page_against_the_fixture_document(browser: Any) -> None:
    with fixture_server() as server:
        devices = server.fixture["status"]["devices"]
        browser.set_window_size(1400, 420)  # shorter than the table: scrolling is kept
        browser.get(server.url + "/")
        order = [d["key"] for d in select(devices)]
        wait(browser).until(lambda d: shown(d) == order)  # the command's order, failures first
        assert counts(browser) == {"all": 12, "failed": 3, "conflict": 1, "silent": 1,
                                   "downloading": 1, "installing": 1, "discovering": 1,
                                   "waiting": 2, "installed": 2}
        evil = cells(browser, "SN-EVIL")
        assert evil["reason"] == HOSTILE + " \x1b[31mred"  # shown as text, never as markup
        assert browser.execute_script("return document.querySelectorAll('tbody img').length") == 0
        assert cells(browser, "SN-B01")["reason"] == "no word for 17 min"
        assert cells(browser, "SN-A03")["progress"] == " 42 %"
        assert browser.execute_script("return document.querySelector('tr.downloading progress')"
                                      ".value") == 42

        type_filter(browser, "rack-a leaf")
        wait(browser).until(lambda d: shown(d) == ["SN-A02", "SN-A03", "SN-A01"])
        type_filter(browser, "5254000b0001")  # a MAC without separators
        wait(browser).until(lambda d: shown(d) == ["SN-B01"])
        type_filter(browser, "")
        click(browser, '#counts button[data-state="failed"]')
        wait(browser).until(lambda d: shown(d) == ["SN-EVIL", "SN-A02", "SN-C02"])
        assert browser.execute_script("return location.hash") == "#state=failed"

        click(browser, 'tr.device[data-device="SN-A02"] td.state')
        wait(browser).until(lambda d: len(history(d, "SN-A02")) == 4)
        events = history(browser, "SN-A02")
        assert [e["kind"] for e in events] == ["request", "download", "report", "report"]
        assert events[1]["bytes"] == "100000 / 100000"
        assert events[3]["result"] == "fail" and events[3]["message"] == "installer exit status 3"
        from selenium.webdriver.common.keys import Keys

        browser.find_element("css selector", 'tr.device[data-device="SN-C02"]').send_keys(Keys.ENTER)
        wait(browser).until(lambda d: d.execute_script(
            "return document.querySelector('tr.history[data-history=\"SN-C02\"]')?.textContent")
            == "history unavailable: HTTP 404 Not Found")  # the fixture has none for it
        refreshed(browser)
        assert len(history(browser, "SN-A02")) == 4  # still open after a refresh
        focused = browser.execute_script("return document.activeElement.dataset.device")
        assert focused == "SN-C02"  # the keyboard's place survives the refresh too
        browser.switch_to.active_element.send_keys(Keys.ENTER)  # folds it again
        wait(browser).until(lambda d: not d.find_elements(
            "css selector", 'tr.history[data-history="SN-C02"]'))
        assert shown(browser) == ["SN-EVIL", "SN-A02", "SN-C02"]  # still filtered

        click(browser, '#counts button[data-state=""]')
        wait(browser).until(lambda d: shown(d) == order)
        browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        scrolled = browser.execute_script("return window.scrollY")
        assert scrolled > 100
        refreshed(browser)
        assert browser.execute_script("return window.scrollY") == scrolled

        server.fault = "500"
        wait(browser).until(lambda d: d.find_element("id", "banner").is_displayed())
        banner = browser.find_element("id", "banner").text
        assert banner.startswith("The server is not answering since ")
        assert "(HTTP 500 Internal Server Error). The table shows the state of " in banner
        assert shown(browser) == order  # the last good data stays, greyed
        server.fault = None
        wait(browser).until(lambda d: not d.find_element("id", "banner").is_displayed())
        assert browser.title == "ONIE provisioning"
        browser.set_window_size(1400, 900)
        browser.execute_script("window.scrollTo(0, 0)")
        screenshot(browser, "status-page-fixture.png")



def test_a_large_site_draws_the_first_thousand_rows(browser: Any) -> None:
    """10,000 rows cost the browser ~0.5 s per refresh: the page draws the first 1,000 (failures
    first) and says so; the filter still reaches every device."""
    with fixture_server() as server:
        model = server.fixture["status"]["devices"][0]
        devices = [{**model, "key": f"SN-{n:05d}", "serial": f"SN-{n:05d}", "name": None,
                    "state": "failed" if n == 1100 else "installed"} for n in range(1200)]
        server.fixture["status"] = {**server.fixture["status"], "devices": devices, "total": 1200,
                                    "counts": {"installed": 1199, "failed": 1}}
        browser.get(server.url + "/")
        wait(browser).until(lambda d: len(shown(d)) == 1000)
        assert shown(browser)[:2] == ["SN-01100", "SN-00000"]  # the failure first
        assert browser.find_element("id", "shown").text == \
            "1200 devices: the first 1000 shown, narrow with the filter"
        type_filter(browser, "SN-0119")
        wait(browser).until(lambda d: shown(d) == [f"SN-0119{n}" for n in range(10)])
        assert browser.find_element("id", "shown").text == "10 of 1200 devices"

# Twelve listed devices; the test makes each reach a state (the comments) through the server.
DEVICES = [(f"SN-L{n:02d}", f"52:54:00:19:00:{n:02x}", f"rack-{'ab'[n > 6]}-sw{n:02d}")
           for n in range(1, 13)]
FAILED, INSTALLING, INSTALLED, DOWNLOADING, CONFLICT = (1, 7), (2, 8), (3, 9), (4, 10), 6
# 5, 11 and 12 are never seen (waiting); 12 reports later, while the page is open.
SITE = """\
name: line-19
server:
  address: 127.0.0.1
  listen: [127.0.0.1]
  http_port: 8080
status:
  max_body: 4096
  log_tail: 256
subnets:
  - network: 10.200.77.0/24
    pool: [10.200.77.50, 10.200.77.60]
platforms:
  - platform: x86_64-qemu_x86_64-r0
    installer: installers/default.bin
devices:
"""


def write_line_site(folder: Path) -> Path:
    (folder / "installers").mkdir(parents=True, exist_ok=True)
    (folder / "installers" / "default.bin").write_bytes(installer_bytes("default", SIZE))
    path = folder / "site.yaml"
    path.write_text(SITE + "".join(
        f'  - serial: {serial}\n    mac: "{mac}"\n    name: {name}\n'
        f"    platform: x86_64-qemu_x86_64-r0\n" for serial, mac, name in DEVICES))
    return path


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`onie-builder serve` as an operator starts it: (process, base URL)."""
    site = write_line_site(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", "serve", "--site", str(site), "--out", str(tmp_path),
         "--listen", "127.0.0.1", "--http-port", "0"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert match, f"serve said {line!r}"
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def report(base: str, device: SimDevice, phase: str, result: str, **fields: str) -> None:
    body, auth = device.report(phase, result, f"{phase} {result}\n".encode(), **fields)
    answer = requests.post(f"{base}/status", data=body, headers={"Authorization": auth}, timeout=10)
    assert answer.status_code == 200, answer.text


def download_half(base: str, serial: str, mac: str) -> None:
    """Half the installer with Range, as a device whose transfer was cut does."""
    headers = {**QEMU, "ONIE-SERIAL-NUMBER": serial, "ONIE-ETH-ADDR": mac,
               "Range": f"bytes=0-{SIZE // 2 - 1}"}
    answer = requests.get(f"{base}/onie-installer", headers=headers, timeout=10)
    assert answer.status_code == 206 and len(answer.content) == SIZE // 2


def device(n: int) -> tuple[str, str, str]:
    return DEVICES[n - 1]


def test_the_page_of_a_running_server(browser: Any, serve: tuple[subprocess.Popen[str], str]) -> None:
    proc, base = serve
    sims = {n: SimDevice(device(n)[0], device(n)[1]) for n in range(1, 13)}
    for n in FAILED:
        report(base, sims[n], "install", "running")
        report(base, sims[n], "install", "fail",
               message=HOSTILE if n == 7 else "installer exit status 3")
    for n in INSTALLING:
        report(base, sims[n], "install", "running")
    for n in INSTALLED:
        report(base, sims[n], "install", "running")
        report(base, sims[n], "done", "ok")
    for n in DOWNLOADING:
        download_half(base, *device(n)[:2])
    report(base, sims[CONFLICT], "install", "running")
    impostor = SimDevice(*device(CONFLICT)[:2])  # the same serial and MAC, another key
    body, auth = impostor.report("done", "ok")
    answer = requests.post(f"{base}/status", data=body, headers={"Authorization": auth}, timeout=10)
    assert answer.status_code == 409 and answer.text.startswith("key conflict: "), answer.text

    browser.get(base + "/")
    expected = {"all": 12, "failed": 2, "conflict": 1, "downloading": 2, "installing": 2,
                "waiting": 3, "installed": 2}
    wait(browser).until(lambda d: counts(d) == expected)
    serials = [device(n)[0] for n in (1, 7, 6, 4, 10, 2, 8, 5, 11, 12, 3, 9)]
    assert shown(browser) == serials  # failed, conflict, downloading, installing, waiting, ...
    table = run_cli("status", base).stdout.splitlines()
    assert [line.split()[0] for line in table[1:-1]] == serials  # the command agrees
    assert cells(browser, device(1)[0])["reason"] == "installer exit status 3"
    assert cells(browser, device(7)[0])["reason"] == HOSTILE
    assert browser.execute_script("return document.querySelectorAll('tbody img').length") == 0
    assert cells(browser, device(4)[0])["progress"] == " 50 %"
    assert cells(browser, device(5)[0])["seen"] == "never"
    assert cells(browser, device(CONFLICT)[0])["reason"] != ""

    type_filter(browser, "rack-b")
    wait(browser).until(lambda d: shown(d) == [device(n)[0] for n in (7, 10, 8, 11, 12, 9)])
    click(browser, '#counts button[data-state="installed"]')  # and the state clicked
    wait(browser).until(lambda d: shown(d) == [device(9)[0]])
    click(browser, '#counts button[data-state="installed"]')  # a second click: all states
    type_filter(browser, device(3)[1])  # a MAC
    wait(browser).until(lambda d: shown(d) == [device(3)[0]])
    type_filter(browser, "")
    wait(browser).until(lambda d: shown(d) == serials)

    click(browser, f'tr.device[data-device="{device(1)[0]}"]')
    wait(browser).until(lambda d: len(history(d, device(1)[0])) >= 2)
    reports = [e for e in history(browser, device(1)[0]) if e["kind"] == "report"]
    assert [(e["source"], e["phase"], e["result"]) for e in reports] == \
        [("device", "install", "running"), ("device", "install", "fail")]
    assert reports[-1]["message"] == "installer exit status 3"
    click(browser, f'tr.device[data-device="{device(4)[0]}"]')
    wait(browser).until(lambda d: any(e["kind"] == "download" for e in history(d, device(4)[0])))

    browser.execute_script("window.notReloaded = true")
    report(base, sims[12], "install", "running")  # a waiting device starts installing
    wait(browser).until(lambda d: cells(d, device(12)[0]).get("state") == "installing")
    assert counts(browser)["installing"] == 3 and counts(browser)["waiting"] == 2
    assert browser.execute_script("return window.notReloaded") is True
    assert len(history(browser, device(1)[0])) >= 2  # the open histories stay open
    assert browser.find_element("id", "updated").text.startswith("last updated ")
    screenshot(browser, "status-page.png")

    check_fixture_shape(base, device(1)[0])

    proc.kill()  # the server is gone: the operator must see it
    proc.wait(10)
    wait(browser).until(lambda d: d.find_element("id", "banner").is_displayed())
    assert "(no connection). The table shows the state of " in browser.find_element("id", "banner").text
    screenshot(browser, "status-page-server-down.png")


def check_fixture_shape(base: str, key: str) -> None:
    """tests/data/status-fixture.json has the fields of a real answer (no field the server
    does not send), so the page's test against it tests what `serve` sends."""
    fixture = load_fixture()
    real = requests.get(f"{base}/status.json", timeout=10).json()
    assert set(fixture["status"]) <= set(real)
    assert set(fixture["status"]["devices"][0]) <= set(real["devices"][0])
    events = requests.get(f"{base}/status/{key}.json", timeout=10).json()["events"]
    assert {tuple(sorted(e)) for e in fixture["history"]["SN-A02"]["events"]} == \
        {tuple(sorted(e)) for e in events}
