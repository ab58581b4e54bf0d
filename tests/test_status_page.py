"""The live status page in headless Chromium: a posted report shows up without a reload."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import fail_or_skip, require_tool
from tests.serving import Running, SimDevice, running, write_site

pytestmark = pytest.mark.lab

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", "--window-size=1400,900"]


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


def post(server: Running, report: tuple[bytes, str]) -> None:
    body, auth = report
    response = requests.post(server.url("status"), data=body, timeout=10,
                             headers={"Authorization": auth})
    assert response.status_code == 200, response.text


def test_a_posted_status_appears_live(browser: Any, tmp_path: Path) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with running(write_site(tmp_path), tmp_path) as server:
        browser.get(server.url("/"))
        # The page re-renders rows on each live update: a row found a moment ago may be gone.
        wait = WebDriverWait(browser, 20, poll_frequency=0.2,
                             ignored_exceptions=(StaleElementReferenceException,))
        wait.until(lambda d: d.find_element(By.ID, "site").text == "test-factory")
        assert browser.find_elements(By.CSS_SELECTOR, "tr[data-device]") == []

        hostile = "<img src=x onerror=document.title='owned'>"
        device = SimDevice("SN-PAGE", "52:54:00:aa:bb:cc")
        post(server, device.report("install", "running", b"step 1\n",
                                   platform="x86_64-qemu_x86_64-r0", message=hostile))
        cells = wait.until(lambda d: [c.text for c in d.find_element(
            By.CSS_SELECTOR, 'tr[data-device="SN-PAGE"]').find_elements(By.TAG_NAME, "td")])
        assert cells[0] == "rack1-leaf2"  # the site's name for this MAC
        assert cells[1:4] == ["SN-PAGE", "52:54:00:aa:bb:cc", "x86_64-qemu_x86_64-r0"]
        assert cells[7] == "install"
        assert hostile in cells[8]  # shown as text, never as markup
        assert browser.find_elements(By.CSS_SELECTOR, "td img") == []

        post(server, device.report("done", "ok", b"installed\n"))
        wait.until(lambda d: d.find_element(
            By.CSS_SELECTOR, 'tr[data-device="SN-PAGE"] td.state').text == "done")
        wait.until(lambda d: "done" in (d.find_element(
            By.CSS_SELECTOR, 'tr[data-device="SN-PAGE"]').get_attribute("class") or ""))
        assert browser.find_element(By.ID, "summary").text == "done: 1"
        assert browser.title == "ONIE provisioning"
        browser.save_screenshot(str(tmp_path / "status-page.png"))
        logs = browser.execute_script("return document.getElementById('error').textContent")
        assert logs == ""
