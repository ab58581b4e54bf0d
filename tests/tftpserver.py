"""A small TFTP server (RFC 1350 reads, RFC 2347-2349 options) for the download tests on
loopback: it answers the options a client asks for (``tsize``, ``blksize``) in an OACK, sends
each block until it is acknowledged (a few retransmissions), and records every request's
options, so a test can see what BusyBox tftp asks.
"""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

RRQ, DATA, ACK, ERROR, OACK = 1, 3, 4, 5, 6


class TftpServer:
    """Serves files under ``root`` from a free loopback port, one thread per transfer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.requests: list[dict[str, str]] = []  # each RRQ's file name and options
        self.errors: list[tuple[int, str]] = []  # ERROR packets clients sent (code, text)
        self.closed = threading.Event()

    def start(self) -> TftpServer:
        threading.Thread(target=self.listen, daemon=True).start()
        return self

    def close(self) -> None:
        self.closed.set()
        self.sock.close()

    def listen(self) -> None:
        while not self.closed.is_set():
            try:
                packet, peer = self.sock.recvfrom(2048)
            except OSError:
                return
            if struct.unpack("!H", packet[:2])[0] != RRQ:
                continue
            fields = packet[2:].split(b"\0")
            name = fields[0].decode()
            options = {fields[i].decode().lower(): fields[i + 1].decode()
                       for i in range(2, len(fields) - 1, 2) if fields[i]}
            self.requests.append({"file": name, **options})
            threading.Thread(target=self.send, args=(name, options, peer), daemon=True).start()

    def send(self, name: str, options: dict[str, str], peer: tuple[str, int]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(1)
            path = self.root / name.lstrip("/")
            if not path.is_file():
                s.sendto(struct.pack("!HH", ERROR, 1) + b"file not found\0", peer)
                return
            data = path.read_bytes()
            size = int(options.get("blksize", "512"))
            answer = {k: v for k, v in (("tsize", str(len(data))), ("blksize", str(size)))
                      if k in options}
            block = 0
            if answer:
                oack = b"".join(f"{k}\0{v}\0".encode() for k, v in answer.items())
                if not self.exchange(s, struct.pack("!H", OACK) + oack, peer, 0):
                    return
            while block * size <= len(data):
                block += 1
                chunk = data[(block - 1) * size:block * size]
                if not self.exchange(s, struct.pack("!HH", DATA, block & 0xFFFF) + chunk, peer,
                                     block & 0xFFFF):
                    return

    def exchange(self, s: socket.socket, packet: bytes, peer: tuple[str, int], block: int) -> bool:
        """Send ``packet`` until ACK ``block`` comes; False on the client's ERROR or silence."""
        for _ in range(5):
            s.sendto(packet, peer)
            try:
                while True:
                    reply = s.recv(2048)
                    op = struct.unpack("!H", reply[:2])[0]
                    if op == ERROR:
                        self.errors.append((struct.unpack("!H", reply[2:4])[0],
                                            reply[4:].rstrip(b"\0").decode(errors="replace")))
                        return False
                    if op == ACK and struct.unpack("!H", reply[2:4])[0] == block:
                        return True
            except TimeoutError:
                continue
            except OSError:
                return False
        return False
