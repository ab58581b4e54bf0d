"""A misbehaving HTTP server for the download tests (issue #16): each top-level path folder
picks a fault, the rest of the path names a file under the served root.

| path | answer |
| --- | --- |
| `/good/F` | F whole; `Range: bytes=N-` gives 206 from N |
| `/hang/F` | the full Content-Length, 90 % of the body, then nothing (the connection stays open) |
| `/huge/F` | `Content-Length: 10737418240`, then zeros for as long as the client reads |
| `/slow/F` | F at one byte per second |
| `/reset/F` | a GET without Range: half of F, then a TCP reset; with `Range: bytes=N-`: 206 from N |
| `/busy/F` | the first GET: 503; later ones: F |
| `/short/F` | a Content-Length 1000 bytes longer than F, F, then the connection closed |
| `/loop/F` | 302 to itself, forever |
| `/seq/F` | the Nth GET without Range as the Nth fault of the server's `sequence` (the last one
  repeats); with Range: 206 (one boot meets every fault, a discovery round each) |

With `tls_stall_port` set, a second listener there accepts TCP connections and never answers
(a TLS server stuck in its handshake). Every request is one JSON line in the log file: method,
path, Range, status, body bytes sent. Run as a script inside a namespace (`FaultServer`), or
in-process with `serve` (the unit tests).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import socketserver
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

READY = "faultserver ready"
HUGE = 10 * 1024 ** 3
SHORT_BY = 1000
CHUNK = 64 * 1024


class Handler(socketserver.StreamRequestHandler):
    """One connection, one request (HTTP/1.0 style: the connection closes after the answer)."""

    server: FaultServer

    def handle(self) -> None:
        request = self.rfile.readline(8192).decode("latin-1").strip()
        headers: dict[str, str] = {}
        while True:
            line = self.rfile.readline(8192).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts = [*request.split(), "", ""]
        self.method, path = parts[0], parts[1]
        self.range_start = parse_range(headers.get("range"))
        fault, _, name = path.lstrip("/").partition("/")
        self.entry: dict[str, Any] = {"method": self.method, "path": path,
                                      "range": headers.get("range"), "status": 0, "sent": 0,
                                      "client": self.client_address[0], "time": time.time()}
        try:
            if self.method in ("GET", "HEAD"):
                self.dispatch(fault, name, path)
            else:
                self.answer(400, b"")
        except OSError:
            pass  # the client went away: that is what several cases are about
        finally:
            if request:  # a bare connect (a liveness probe) is no request
                self.server.record(self.entry)

    def dispatch(self, fault: str, name: str, path: str) -> None:
        if fault == "seq":
            fault = "good" if self.range_start is not None else self.server.next_fault()
            path = f"/{fault}/{name}"
        if fault == "loop":
            self.answer(302, b"", {"Location": path})
            return
        body = self.server.read(name)
        if body is None:
            self.answer(404, b"")
            return
        first = self.server.first_time(path)
        if fault == "busy" and first:
            self.answer(503, b"", {"Retry-After": "1"})
        elif fault in ("good", "busy") or (fault == "reset" and self.range_start is not None):
            self.send_ranged(body)
        elif fault == "reset":
            self.send_head(200, len(body), {"Accept-Ranges": "bytes"})
            self.send_body(body[:len(body) // 2])
            # SO_LINGER with a zero timeout: close() sends a reset instead of a FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif fault == "hang":
            self.send_head(200, len(body))
            self.send_body(body[:len(body) * 9 // 10])
            self.server.stopping.wait()
        elif fault == "huge":
            self.send_head(200, HUGE)
            while self.method == "GET" and not self.server.stopping.is_set():
                self.send_body(bytes(CHUNK))
        elif fault == "slow":
            self.send_head(200, len(body))
            for i in range(len(body) if self.method == "GET" else 0):
                self.send_body(body[i:i + 1])
                if self.server.stopping.wait(1.0):
                    break
        elif fault == "short":
            self.send_head(200, len(body) + SHORT_BY)
            self.send_body(body)
        else:
            self.answer(404, b"")

    def send_ranged(self, body: bytes) -> None:
        start = self.range_start
        if start is None or start == 0:
            self.send_head(200, len(body), {"Accept-Ranges": "bytes"})
            self.send_body(body)
        elif start >= len(body):
            self.answer(416, b"", {"Content-Range": f"bytes */{len(body)}"})
        else:
            self.send_head(206, len(body) - start, {
                "Accept-Ranges": "bytes",
                "Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
            self.send_body(body[start:])

    def answer(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_head(status, len(body), extra)
        self.send_body(body)

    def send_head(self, status: int, length: int, extra: dict[str, str] | None = None) -> None:
        self.entry["status"] = status
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}",
                 f"Content-Length: {length}", "Connection: close",
                 *(f"{k}: {v}" for k, v in (extra or {}).items())]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.wfile.flush()

    def send_body(self, data: bytes) -> None:
        if self.method == "HEAD" or not data:
            return
        self.wfile.write(data)
        self.wfile.flush()
        self.entry["sent"] += len(data)


REASONS = {200: "OK", 206: "Partial Content", 302: "Found", 400: "Bad Request",
           404: "Not Found", 416: "Range Not Satisfiable", 503: "Service Unavailable"}


def parse_range(value: str | None) -> int | None:
    """The start of a `bytes=N-` range, or None."""
    match = re.fullmatch(r"bytes=(\d+)-", value or "")
    return int(match.group(1)) if match else None


class FaultServer(socketserver.ThreadingTCPServer):
    """The listener: files from ``root``, a log of requests, the paths already asked for."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, address: str, port: int, log: Path | None,
                 sequence: tuple[str, ...] = ("good",)) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.address_family = family
        super().__init__((address, port), Handler)
        self.root = root
        self.log = log
        self.stopping = threading.Event()
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        self.held: list[socket.socket] = []
        self.sequence = sequence
        self.served = 0

    def next_fault(self) -> str:
        with self.lock:
            fault = self.sequence[min(self.served, len(self.sequence) - 1)]
            self.served += 1
            return fault

    def read(self, name: str) -> bytes | None:
        path = self.root / name
        if not name or ".." in name.split("/") or not path.is_file():
            return None
        return path.read_bytes()

    def first_time(self, path: str) -> bool:
        with self.lock:
            first = path not in self.seen
            self.seen.add(path)
            return first

    def record(self, entry: dict[str, Any]) -> None:
        if self.log is not None:
            with self.lock, self.log.open("a") as f:
                f.write(json.dumps(entry) + "\n")

    def stall_tls(self, address: str, port: int) -> int:
        """Listen on ``port`` and hold every connection without a byte of answer."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, port))
        listener.listen(16)
        listener.settimeout(0.2)

        def accept() -> None:
            while not self.stopping.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                self.held.append(conn)
                self.record({"method": "TLS", "path": "", "range": None, "status": 0,
                             "sent": 0, "client": conn.getpeername()[0], "time": time.time()})
            listener.close()

        threading.Thread(target=accept, daemon=True).start()
        return int(listener.getsockname()[1])

    def shutdown(self) -> None:
        self.stopping.set()
        super().shutdown()
        for conn in self.held:
            conn.close()


def serve(root: Path, address: str = "127.0.0.1", port: int = 0, log: Path | None = None,
          tls_stall_port: int | None = None,
          sequence: tuple[str, ...] = ("good",)) -> tuple[FaultServer, int | None]:
    """Start a server in a thread; returns it and the stalling TLS port (if asked for)."""
    server = FaultServer(root, address, port, log, sequence)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stall = server.stall_tls(address, tls_stall_port) if tls_stall_port is not None else None
    return server, stall


def main(argv: list[str]) -> int:
    """faultserver.py CONFIG.json: root, address, port, log, tls_stall_port."""
    config = json.loads(Path(argv[1]).read_text())
    server, _ = serve(Path(config["root"]), config["address"], config["port"],
                      Path(config["log"]), config.get("tls_stall_port"),
                      tuple(config.get("sequence", ["good"])))
    print(READY, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
