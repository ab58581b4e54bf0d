"""A small misbehaving FTP server for the download tests (issue #16): passive mode, binary,
the commands BusyBox wget sends (USER, PASS, TYPE, SIZE, PASV, EPSV, REST, RETR, QUIT); the
first path folder picks a fault, the rest names a file under the served root.

| path | answer |
| --- | --- |
| `/good/F` | F; `SIZE` answers its length, `REST N` is honoured |
| `/hang/F` | without REST: 90 % of F, then nothing (both connections stay open); with REST: from N |
| `/nosize/F` | F, but `SIZE` is refused (550), as servers without RFC 3659 do |
| `/huge/F` | `SIZE` answers 10 GiB; the data is zeros for as long as the client reads |
| `/reset/F` | without REST: half of F, then the data connection is reset; with REST: from N |

Every command is one JSON line in the log file (command, argument; never PASS's argument).
``serve`` runs it in-process on loopback (the unit tests).
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import struct
import threading
import time
from pathlib import Path

HUGE = 10 * 1024 ** 3
CHUNK = 64 * 1024


class FtpHandler(socketserver.StreamRequestHandler):
    """One control connection."""

    server: FtpServer

    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        self.passive: socket.socket | None = None
        self.rest = 0
        with contextlib.suppress(OSError):  # the client went away: several cases are about that
            self.session()

    def session(self) -> None:
        self.reply("220 onie-builder test ftp")
        while True:
            line = self.rfile.readline(1024).decode("latin-1").strip()
            if not line:
                return
            command, _, arg = line.partition(" ")
            command = command.upper()
            self.server.record({"command": command, "arg": "" if command == "PASS" else arg})
            if command == "QUIT":
                self.reply("221 bye")
                return
            self.dispatch(command, arg)

    def dispatch(self, command: str, arg: str) -> None:
        simple = {"USER": "331 password please", "PASS": "230 logged in", "TYPE": "200 binary",
                  "CWD": "250 ok", "NOOP": "200 ok"}
        if command in simple:
            self.reply(simple[command])
        elif command == "SIZE":
            fault, data = self.lookup(arg)
            if fault == "nosize" or (data is None and fault != "huge"):
                self.reply("550 no size")
            else:
                self.reply(f"213 {HUGE if fault == 'huge' else len(data or b'')}")
        elif command in ("PASV", "EPSV"):
            self.open_passive(command)
        elif command == "REST":
            self.rest = int(arg) if arg.isdigit() else 0
            self.reply(f"350 restarting at {self.rest}")
        elif command == "RETR":
            self.retrieve(arg)
        else:
            self.reply("502 not implemented")

    def lookup(self, arg: str) -> tuple[str, bytes | None]:
        fault, _, name = arg.lstrip("/").partition("/")
        path = self.server.root / name
        if fault == "huge":
            return fault, b""
        return fault, path.read_bytes() if name and path.is_file() else None

    def open_passive(self, command: str) -> None:
        if self.passive is not None:
            self.passive.close()
        self.passive = socket.socket()
        self.passive.bind((self.server.server_address[0], 0))
        self.passive.listen(1)
        self.passive.settimeout(10)
        port = self.passive.getsockname()[1]
        if command == "EPSV":
            self.reply(f"229 passive (|||{port}|)")
        else:
            host = self.server.server_address[0].replace(".", ",")
            self.reply(f"227 passive ({host},{port >> 8},{port & 255})")

    def retrieve(self, arg: str) -> None:
        fault, data = self.lookup(arg)
        if data is None or self.passive is None:
            self.reply("550 no such file")
            return
        try:
            conn, _ = self.passive.accept()
        except TimeoutError:
            self.reply("425 no data connection")
            return
        start, self.rest = self.rest, 0
        self.reply("150 sending")
        with conn:
            if fault == "huge":
                while True:
                    conn.sendall(bytes(CHUNK))
            if fault == "hang" and start == 0:
                conn.sendall(data[:len(data) * 9 // 10])
                self.server.stop.wait()
                return
            if fault == "reset" and start == 0:
                conn.sendall(data[:len(data) // 2])
                time.sleep(0.2)  # let the half reach the client before the reset
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.reply("426 connection reset")
                return
            conn.sendall(data[start:])
        self.reply("226 done")


class FtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, log: Path, address: str = "127.0.0.1") -> None:
        super().__init__((address, 0), FtpHandler)
        self.root = root
        self.log = log
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def record(self, entry: dict[str, str]) -> None:
        with self.lock, self.log.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def commands(self) -> list[tuple[str, str]]:
        """(command, argument) for every command received so far."""
        if not self.log.exists():
            return []
        return [(e["command"], e["arg"]) for e in map(json.loads, self.log.read_text().splitlines())]


def serve(root: Path, log: Path) -> FtpServer:
    """Start an FtpServer on a free loopback port in a thread; ``shutdown`` it after."""
    server = FtpServer(root, log)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
