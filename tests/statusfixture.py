"""A stand-in for `serve`'s status endpoints: the real page (templates/serve/status.html) and a
status document from tests/data/status-fixture.json, or a chosen fault. For the page's and the
`status` command's tests of states a live server rarely shows (silent, conflict), hostile
values and a server that breaks."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from builder.factory.serve import STATUS_PAGE

FIXTURE = Path(__file__).parent / "data" / "status-fixture.json"


def load_fixture() -> dict[str, Any]:
    """``{"status": <status.json>, "history": {key: <status/key.json>}}``."""
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


class FixtureServer(ThreadingHTTPServer):
    """Answers from ``fixture``; ``fault`` ("html", "500") breaks /status.json on purpose."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.fixture = load_fixture()
        self.fault: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FixtureServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        fixture = self.server.fixture
        if path == "/":
            self.answer(200, "text/html; charset=utf-8", STATUS_PAGE.read_bytes())
        elif path == "/status.json" and self.server.fault == "html":
            self.answer(200, "text/html", b"<!DOCTYPE html><title>captive portal</title>")
        elif path == "/status.json" and self.server.fault == "500":
            self.answer(500, "text/plain", b"database is locked\n")
        elif path == "/status.json":
            self.answer(200, "application/json", json.dumps(fixture["status"]).encode())
        elif path.startswith("/status/") and path.endswith(".json") and \
                path[8:-5] in fixture["history"]:
            self.answer(200, "application/json", json.dumps(fixture["history"][path[8:-5]]).encode())
        else:
            self.answer(404, "text/plain", b"not found\n")

    def answer(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def fixture_server() -> Iterator[FixtureServer]:
    """A FixtureServer on a free loopback port for the block (shut down after)."""
    server = FixtureServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
