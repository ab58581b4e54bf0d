#!/usr/bin/env python3
"""Cost of the status page in the browser (issue #19): a status document of N synthetic
devices served by tests/statusfixture.py on loopback, the page in Debian's headless Chromium
(Selenium); prints the JSON size, the time to the first table, one refresh's fetch and parse,
and one render (fastest and slowest of five), all devices and filtered.

    python bench/status_page.py [--devices 1000 --devices 10000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.statusfixture import FixtureServer, fixture_server
from tests.test_status_page import FLAGS

STATES = ("failed", "conflict", "silent", "downloading", "installing", "discovering", "waiting",
          "installed")
MAX_ROWS = 1000  # templates/serve/status.html draws at most this many rows


def synthetic(server: FixtureServer, count: int) -> int:
    """Make the server's document ``count`` devices, every state; its size in bytes."""
    model = server.fixture["status"]["devices"][0]
    devices = []
    for n in range(count):
        state = STATES[n % len(STATES)]
        devices.append({**model, "key": f"SN-{n:05d}", "serial": f"SN-{n:05d}",
                        "name": f"rack-{n // 40:03d}-sw{n % 40:02d}", "state": state,
                        "mac": f"52:54:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}",
                        "percent": n % 100 if state == "downloading" else None,
                        "reason": "installer exit status 3" if state == "failed" else None,
                        "last_seen": time.time() - n})
    server.fixture["status"] = {**server.fixture["status"], "devices": devices, "total": count,
                                "counts": {s: count // len(STATES) for s in STATES}}
    return len(json.dumps(server.fixture["status"]))


def measure(driver: Any, server: FixtureServer, count: int) -> str:
    size = synthetic(server, count)
    driver.get(server.url + "/")
    started = time.monotonic()
    rows = "return document.querySelectorAll('tr.device').length"
    while driver.execute_script(rows) != min(count, MAX_ROWS):
        if time.monotonic() - started > 60:
            raise SystemExit("the page drew no table within 60 s")
        time.sleep(0.05)
    first = time.monotonic() - started
    renders = driver.execute_script(
        "const t = []; for (let k = 0; k < 5; k++) { const a = performance.now(); render(); "
        "t.push(performance.now() - a); } return t")
    fetch = driver.execute_script(
        "const a = performance.now(); await fetchAll(); return performance.now() - a")
    filtered = driver.execute_script(
        "view.text = 'rack-01'; const a = performance.now(); render(); "
        "const r = performance.now() - a; view.text = ''; render(); return r")
    return (f"{count} devices: status.json {size / 1e6:.2f} MB, first table {first:.2f} s, "
            f"fetch+parse {fetch:.0f} ms, render {min(renders):.0f}-{max(renders):.0f} ms, "
            f"filtered render {filtered:.0f} ms")


def main() -> None:
    """Print one line per --devices."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, action="append")
    counts = parser.parse_args().devices or [1000, 10000]
    with tempfile.TemporaryDirectory(prefix="status-page-") as profile:
        options = Options()
        options.binary_location = "/usr/bin/chromium"
        for flag in [*FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            with fixture_server() as server:
                for count in counts:
                    print(measure(driver, server, count), flush=True)
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
