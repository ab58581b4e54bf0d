"""A small HTTP(S) file server for the lab, run as its own process inside a network namespace.

Started by ``builder.lab.servers.HttpServer`` as ``python httpd.py CONFIG.json`` (standard library
only, so it runs without the package installed). It serves one folder, answers chosen paths
with chosen error codes, can wait before it starts listening (a server that is down at first
and comes up later), and appends one JSON line per request (method, path, headers, client,
status) to a log the tests read. It prints ``httpd: listening on ADDRESS PORT`` once bound.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import ssl
import sys
import threading
import time
from typing import Any, ClassVar

READY = "httpd: listening on"


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the configured folder; records each request before answering it."""

    protocol_version = "HTTP/1.1"  # keep-alive: UEFI HTTP boot needs it
    config: ClassVar[dict[str, Any]] = {}
    lock = threading.Lock()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=self.config["root"], **kwargs)

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        status = self.config["errors"].get(path)
        if status is None:
            local = self.translate_path(self.path)
            status = 200 if os.path.isfile(local) else 404
        self._record(status)
        if status != 200:
            self.send_error(status)
            return
        if head:
            super().do_HEAD()
        else:
            super().do_GET()

    def _record(self, status: int) -> None:
        entry = {
            "time": time.time(),
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "client": self.client_address[0],
            "status": status,
        }
        with self.lock, open(self.config["log"], "a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")

    def log_message(self, format: str, *args: Any) -> None:
        print(f"httpd: {self.address_string()} {format % args}", flush=True)


class Server(http.server.ThreadingHTTPServer):
    """Dual-stack when bound to '::' so one server answers IPv4 and IPv6 clients. A link-local
    address takes its zone: 'fe80::77%tap0'."""

    daemon_threads = True

    def __init__(self, address: str, port: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        where: tuple[Any, ...] = (address, port)
        if "%" in address:  # bind needs the zone as a scope id: getaddrinfo makes the 4-tuple
            where = socket.getaddrinfo(address, port, socket.AF_INET6, socket.SOCK_STREAM)[0][4]
        super().__init__(where, Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def make_tls(config: dict[str, Any]) -> ssl.SSLContext | None:
    """A server TLS context when a certificate is configured (DH params for DHE-only clients)."""
    tls = config.get("tls")
    if not tls:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls["cert"], tls["key"])
    if tls.get("dh_params"):
        context.load_dh_params(tls["dh_params"])
    if tls.get("ciphers"):
        context.set_ciphers(tls["ciphers"])
    return context


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as f:
        config = json.load(f)
    Handler.config = config
    time.sleep(float(config.get("up_after", 0)))
    server = Server(config["address"], int(config["port"]))
    context = make_tls(config)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"{READY} {config['address']} {config['port']}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
