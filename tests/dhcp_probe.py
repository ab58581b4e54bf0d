"""A one-shot DHCPDISCOVER client for the DHCP lab test: ``python dhcp_probe.py IFACE MAC
VENDOR_CLASS [ARCH]`` sends one broadcast DISCOVER (RFC 2131) and prints the first OFFER as
JSON: ``{"yiaddr", "file", "options": {code: hex}}``. Standard library only; it runs inside the
client's network namespace."""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time

COOKIE = b"\x63\x82\x53\x63"
ASKED = bytes([1, 3, 6, 17, 43, 60, 66, 67, 114, 125])


def discover(mac: bytes, xid: int, vendor_class: bytes, arch: int | None) -> bytes:
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4,
                         b"\0" * 4, b"\0" * 4, b"\0" * 4, mac.ljust(16, b"\0"), b"", b"")
    options = bytes([53, 1, 1, 60, len(vendor_class)]) + vendor_class
    options += bytes([55, len(ASKED)]) + ASKED
    if arch is not None:
        options += bytes([93, 2]) + struct.pack("!H", arch)
    return header + COOKIE + options + b"\xff"


def parse(packet: bytes) -> dict[str, object]:
    yiaddr = socket.inet_ntoa(packet[16:20])
    file = packet[108:236].split(b"\0", 1)[0].decode(errors="replace")
    options: dict[int, str] = {}
    data, i = packet[240:], 0
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        code, size = data[i], data[i + 1]
        options[code] = options.get(code, "") + data[i + 2:i + 2 + size].hex()
        i += 2 + size
    return {"yiaddr": yiaddr, "file": file, "options": options}


def main() -> int:
    iface, mac_text, vendor_class = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    arch = int(sys.argv[4]) if len(sys.argv) > 4 else None
    mac = bytes.fromhex(mac_text.replace(":", ""))
    xid = int.from_bytes(os.urandom(4), "big")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    sock.bind(("0.0.0.0", 68))
    deadline = time.monotonic() + 20
    packet = discover(mac, xid, vendor_class, arch)
    while time.monotonic() < deadline:
        sock.sendto(packet, ("255.255.255.255", 67))
        sock.settimeout(2)
        try:
            while True:
                reply, _ = sock.recvfrom(4096)
                if len(reply) > 240 and reply[0] == 2 and struct.unpack("!I", reply[4:8])[0] == xid:
                    print(json.dumps(parse(reply)))
                    return 0
        except TimeoutError:
            continue
    print(json.dumps({"error": "no offer"}))
    return 1


if __name__ == "__main__":
    sys.exit(main())
