"""templates/guest/discovery/lib/https.sh.j2 under the host's BusyBox ash and Debian's openssl
(the image's build), against TLS servers on loopback: good, wrong CA, wrong name, expired, the
clock floor, pins, redirects, truncation, IPv6, and URLs and headers that must be refused."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from builder.render import make_environment, render_template
from tests.conftest import require_tool
from tests.transportlab import make_ca, make_server_cert, spki_sha256

BODY = os.urandom(200_000)


@dataclass
class Site:
    """What the handler serves: paths to bytes, redirects, and the requests seen."""

    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    short: set[str] = field(default_factory=set)  # announce more bytes than are sent
    seen: list[dict[str, str]] = field(default_factory=list)


class Handler(http.server.BaseHTTPRequestHandler):
    site: ClassVar[Site]

    def do_GET(self) -> None:
        self.site.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        if self.path in self.site.redirects:
            self.send_response(302)
            self.send_header("Location", self.site.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.site.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        extra = 1000 if self.path in self.site.short else 0
        self.send_header("Content-Length", str(len(body) + extra))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], family: int) -> None:
        self.address_family = family
        super().__init__(address, Handler)


@dataclass
class Lab:
    folder: Path
    ca: Path
    ports: dict[str, int]
    site: Site
    pins: dict[str, str]


def serve(chain: Path, key: Path, host: str) -> tuple[Server, int]:
    import socket

    server = Server((host, 0), socket.AF_INET6 if ":" in host else socket.AF_INET)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    folder = tmp_path_factory.mktemp("https")
    good = make_ca(folder, "good ca")
    other = make_ca(folder, "other ca")
    certs = {
        "good": (good, ["127.0.0.1", "localhost"], (-1, 30), "127.0.0.1"),
        "wrong-ca": (other, ["127.0.0.1"], (-1, 30), "127.0.0.1"),
        "wrong-name": (good, ["127.0.0.9", "elsewhere.example"], (-1, 30), "127.0.0.1"),
        "expired": (good, ["127.0.0.1"], (-60, -30), "127.0.0.1"),
        "v6": (good, ["::1"], (-1, 30), "::1"),
    }
    Handler.site = Site(files={"/installer": BODY, "/short": BODY[:5000]},
                        short={"/short"})
    servers, ports, pins = [], {}, {}
    for name, (ca, names, days, host) in certs.items():
        chain, key = make_server_cert(folder, name, ca, names, days=days)
        server, port = serve(chain, key, host)
        servers.append(server)
        ports[name] = port
        pins[name] = spki_sha256(chain)
    Handler.site.redirects = {
        "/hop": f"https://127.0.0.1:{ports['good']}/installer",
        "/relative": "/installer",
        "/downgrade": f"http://127.0.0.1:{ports['good']}/installer",
    }
    yield Lab(folder, good[0], ports, Handler.site, pins)
    for server in servers:
        server.shutdown()


def run_https(lab: Lab, urls: list[str], *, floor: int = 0, pins: tuple[str, ...] = (),
              redirects: int = 0, has_ca: bool = True, clock: int | None = None,
              headers: tuple[str, ...] = ("ONIE-MACHINE: qemu_x86_64",)) -> list[dict[str, Any]]:
    """Fetch each URL with https_get in one ash process; one JSON-ish line per URL."""
    busybox = require_tool("busybox", "to run the generated ash (busybox-static)")
    openssl = require_tool("openssl", "the image's TLS client (openssl)")
    tag = f"{floor}-{len(pins)}-{redirects}-{has_ca}-{clock}-{time.monotonic_ns()}"
    work = lab.folder / tag
    (work / "bin").mkdir(parents=True)
    values = {"https": {"ca_file": str(lab.ca), "has_ca": 1 if has_ca else 0, "pins": list(pins),
                        "floor": floor, "redirects": redirects, "run": str(work / "run")}}
    lib = work / "https.sh"
    # https_get runs under the download watchdog (lib/transfer.sh.j2, with say and nap) and
    # hashes the payload as it arrives (lib/onepass.sh.j2: VERIFY_BLOCK is verify.sh's).
    lib.write_text("VERIFY_BLOCK=4096\n" + "".join(
        render_template(make_environment(), f"guest/discovery/lib/{name}.sh.j2", values) + "\n"
        for name in ("console", "transfer", "onepass", "https")))
    for tool in ("sh", "cat", "head", "tail", "grep", "sed", "awk", "tr", "wc", "rm", "mkdir",
                 "timeout", "sha256sum", "printf", "date", "stat", "df", "mkfifo", "sleep", "dd",
                 "renice"):
        (work / "bin" / tool).symlink_to(busybox)
    (work / "bin" / "openssl").symlink_to(openssl)
    # A switch whose clock is wrong (BusyBox ash runs its own `date` whatever PATH says, so
    # the driver redefines the one function that reads the clock).
    wrong_clock = "" if clock is None else f"https_clock() {{ echo {clock}; }}"
    driver = r"""
. "$LIB"
$WRONG_CLOCK
CONNECT_TIMEOUT=5 TRANSFER_TIMEOUT=20 STALL_TIMEOUT=15 PROGRESS_INTERVAL=5 LOG=/dev/null
NAP_FIFO=$OUT.nap RUN=$OUT.run ONEPASS_KEEP=0
mkdir "$RUN"
mkfifo "$NAP_FIFO"
n=0
for url in "$@"; do
    n=$((n + 1))
    if https_get "$url" "$OUT.$n" $HEADERS_SPLIT; then
        onepass_digest "$OUT.$n"
        echo "ok $(wc -c < "$OUT.$n") $ONEPASS_DIGEST"
    else
        echo "error $FETCH_ERROR"
    fi
done
"""
    env = {"PATH": str(work / "bin"), "LIB": str(lib), "OUT": str(work / "got")}
    driver = driver.replace("$WRONG_CLOCK", wrong_clock).replace(
        "$HEADERS_SPLIT", " ".join(f"'{h}'" for h in headers))
    argv = [busybox, "ash", "-c", driver, "driver", *urls]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    lines = proc.stdout.splitlines()
    assert len(lines) == len(urls), proc.stdout + proc.stderr
    out = []
    for n, line in enumerate(lines, 1):
        status, _, rest = line.partition(" ")
        got = work / f"got.{n}"
        out.append({"ok": status == "ok", "detail": rest,
                    "body": got.read_bytes() if got.exists() else None, "stderr": proc.stderr})
    return out


def url(lab: Lab, name: str, path: str = "/installer", host: str = "127.0.0.1") -> str:
    return f"https://{host}:{lab.ports[name]}{path}"


def test_good_wrong_ca_wrong_name_expired_in_order(lab: Lab) -> None:
    results = run_https(lab, [url(lab, "wrong-ca"), url(lab, "wrong-name"), url(lab, "expired"),
                              url(lab, "good"), url(lab, "good", host="localhost")])
    reasons = [r["detail"] for r in results[:3]]
    assert reasons == ["certificate refused: self-signed certificate in certificate chain",
                       "certificate refused: IP address mismatch",
                       "certificate refused: certificate has expired"]
    for r in results[3:]:
        assert r["ok"] and r["body"] == BODY
    last = lab.site.seen[-1]
    assert last["onie-machine"] == "qemu_x86_64" and last["host"] == f"localhost:{lab.ports['good']}"
    assert all(r["body"] is None for r in results[:3])  # nothing left behind when refused


def test_a_name_is_checked_against_dns_names(lab: Lab) -> None:
    [r] = run_https(lab, [url(lab, "wrong-name", host="localhost")])
    assert r["detail"] == "certificate refused: hostname mismatch"


def test_ipv6_literal(lab: Lab) -> None:
    [r] = run_https(lab, [f"https://[::1]:{lab.ports['v6']}/installer"])
    assert r["ok"] and r["body"] == BODY


def test_the_clock_floor(lab: Lab) -> None:
    now = int(time.time())
    # A switch at 1970 with the build time as floor: checked at the floor, so a valid
    # certificate passes and one that expired before the build is still refused.
    good, expired = run_https(lab, [url(lab, "good"), url(lab, "expired")], floor=now, clock=0)
    assert good["ok"] and "https clock 0 is before the image's floor" in good["stderr"]
    assert expired["detail"] == "certificate refused: certificate has expired"
    # Without a floor (transports.https.floor: none) the same switch refuses everything.
    [none] = run_https(lab, [url(lab, "good")], floor=0, clock=0)
    assert none["detail"] == "certificate refused: certificate is not yet valid"
    # A clock ahead of the floor wins: the expired certificate stays expired.
    [ahead] = run_https(lab, [url(lab, "good")], floor=now - 86400)
    assert ahead["ok"]


def test_pins(lab: Lab) -> None:
    good, other = run_https(lab, [url(lab, "good"), url(lab, "v6", host="[::1]")],
                            pins=(lab.pins["good"],))
    assert good["ok"] and good["body"] == BODY
    assert other["detail"] == "certificate refused: no key in the server's chain matches a pin"
    [ca_pin] = run_https(lab, [url(lab, "v6", host="[::1]")],
                         pins=(spki_sha256(lab.ca),))  # pinning the CA's key admits its servers
    assert ca_pin["ok"]


def test_redirects_only_where_allowed(lab: Lab) -> None:
    refused, relative, downgrade = run_https(lab, [url(lab, "good", "/hop"), url(lab, "good", "/relative"),
                                                   url(lab, "good", "/downgrade")])
    assert refused["detail"] == (f"redirect to https://127.0.0.1:{lab.ports['good']}/installer not "
                                 "followed (transports.https.redirects is 0)")
    assert relative["detail"].startswith("redirect to https://127.0.0.1:")
    assert downgrade["detail"] == "redirect refused: not an https URL"
    hop, relative, downgrade = run_https(lab, [url(lab, "good", "/hop"), url(lab, "good", "/relative"),
                                               url(lab, "good", "/downgrade")], redirects=1)
    assert hop["ok"] and relative["ok"] and hop["body"] == BODY
    assert downgrade["detail"] == "redirect refused: not an https URL"


def test_truncated_and_missing(lab: Lab) -> None:
    short, missing = run_https(lab, [url(lab, "good", "/short"), url(lab, "good", "/nothing")])
    assert short["detail"] == "got 5000 bytes, Content-Length says 6000 (truncated?)"
    assert missing["detail"] == "server answered HTTP/1.0 404 Not Found"


def test_no_ca_no_https(lab: Lab) -> None:
    [r] = run_https(lab, [url(lab, "good")], has_ca=False)
    assert r["detail"] == "no CA certificates in this image (transports.https.ca): https refused"


@pytest.mark.parametrize("bad", ["http://127.0.0.1/x", "https://user@127.0.0.1/x", "https://a b/x",
                                 "https://127.0.0.1:0/x", "https://127.0.0.1:99999/x",
                                 "https://[fe80::1%25eth0;reboot]/x", "https://$(reboot)/x", "https://"])
def test_urls_refused_before_connecting(lab: Lab, bad: str) -> None:
    [r] = run_https(lab, [bad])
    assert r["detail"] == "not an https URL we accept"


def test_header_injection_refused(lab: Lab) -> None:
    [r] = run_https(lab, [url(lab, "good")], headers=("X: a\rInjected: 1",))
    assert r["detail"] == "bad request header"


def test_url_parts_with_zone(tmp_path: Path) -> None:
    busybox = require_tool("busybox", "to run the generated ash (busybox-static)")
    lib = tmp_path / "https.sh"
    lib.write_text(render_template(make_environment(), "guest/discovery/lib/https.sh.j2", {"https": {
        "ca_file": "/x", "has_ca": 1, "pins": [], "floor": 0, "redirects": 0, "run": str(tmp_path)}}))
    script = (f'. {lib}; for u in "$@"; do https_url_parts "$u" && echo "$HTTPS_HOST|$HTTPS_ZONE|'
              '$HTTPS_PORT|$HTTPS_PATH|$HTTPS_KIND|$(https_connect_target)"; done')
    out = subprocess.run([busybox, "ash", "-c", script, "x", "https://[fe80::1%25eth0]:8443/a/b",
                          "https://[fe80::1%eth0]/", "https://switch.example/x?y=1", "https://10.0.0.1"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["fe80::1|eth0|8443|/a/b|ip|[fe80::1%eth0]:8443",
                   "fe80::1|eth0|443|/|ip|[fe80::1%eth0]:443",
                   "switch.example||443|/x?y=1|name|switch.example:443",
                   "10.0.0.1||443|/|ip|10.0.0.1:443"]
    assert json.dumps(out)


def test_payload_hashed_while_downloading(lab: Lab) -> None:
    """lib/onepass.sh.j2 on the HTTPS path: the digest of all but the last 4096 bytes, taken
    as the body arrives, is the host's, also after a redirect; a short body gives none."""
    payload = hashlib.sha256(BODY[:-4096]).hexdigest()
    good, hop, short = run_https(lab, [url(lab, "good"), url(lab, "good", "/hop"),
                                       url(lab, "good", "/short")], redirects=1)
    assert good["detail"] == f"{len(BODY)} {payload}" and hop["detail"] == good["detail"]
    assert short["detail"].startswith("got 5000 bytes, Content-Length says 6000")
