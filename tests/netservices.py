"""Small UDP servers for the network-behaviour lab tests: an SNTP responder (RFC 4330) that
answers with the host's clock, and a syslog listener (RFC 3164 lines over UDP) that keeps every
message it receives. Each runs as its own process (``python -m tests.netservices``) inside a
test's namespace and writes what it saw to a file the test reads."""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time
from pathlib import Path

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP's era 0) to 1970-01-01
MODE_CLIENT, MODE_SERVER = 3, 4


def ntp_stamp(t: float) -> bytes:
    """A 64-bit NTP timestamp: seconds since 1900 and a 32-bit fraction."""
    seconds = int(t) + NTP_EPOCH_OFFSET
    return struct.pack("!II", seconds & 0xFFFFFFFF, int((t % 1) * 2**32) & 0xFFFFFFFF)


def sntp_answer(request: bytes, received: float) -> bytes | None:
    """The server's answer to one client request, or None for anything else."""
    if len(request) < 48 or request[0] & 0x07 != MODE_CLIENT:
        return None
    version = (request[0] >> 3) & 0x07
    header = bytes([(version << 3) | MODE_SERVER, 1, request[2], 0xEC])  # LI 0, stratum 1, 2^-20 s
    root = struct.pack("!II", 0, 0) + b"LAB\0"  # root delay and dispersion, reference id
    return (header + root + ntp_stamp(received) + request[40:48] + ntp_stamp(received)
            + ntp_stamp(time.time()))


def serve_ntp(address: str, port: int, log: Path) -> None:
    """Answer SNTP requests for ever; one line per answered client in ``log``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    log.write_text("ready\n")
    while True:
        data, peer = sock.recvfrom(512)
        answer = sntp_answer(data, time.time())
        if answer is not None:
            sock.sendto(answer, peer)
            with log.open("a") as f:
                f.write(f"answered {peer[0]}\n")


def serve_syslog(address: str, port: int, log: Path) -> None:
    """Keep every syslog datagram, one per line (newlines inside one made visible)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    log.write_text("ready\n")
    while True:
        data, peer = sock.recvfrom(4096)
        text = data.decode(errors="replace").rstrip("\n").replace("\n", "\\n")
        with log.open("a") as f:
            f.write(f"{peer[0]} {text}\n")


def main(argv: list[str]) -> None:
    """``ntp|syslog ADDRESS PORT LOG``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["ntp", "syslog"])
    parser.add_argument("address")
    parser.add_argument("port", type=int)
    parser.add_argument("log", type=Path)
    args = parser.parse_args(argv)
    serve = serve_ntp if args.kind == "ntp" else serve_syslog
    serve(args.address, args.port, args.log)


if __name__ == "__main__":
    main(sys.argv[1:])
