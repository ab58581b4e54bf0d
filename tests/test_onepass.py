"""One pass (issue #16, lib/onepass.sh.j2): the guest's fetch hashes the payload (all but the
last 4096 bytes) while it downloads. Run under the host's BusyBox ash and openssl against the
fault server on loopback: the digest equals the host's; a resumed transfer, a download without
hashing, a short file and a file replaced after the download give none (verify_installer then
hashes the file itself). tests/test_onepass_boot.py checks the verifier's use of it in a guest."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.faultserver import FaultServer, serve
from tests.test_discovery import kvm, render

BLOCK = 4096
# Three 1 MiB steps of the follower and a partial one, then the signature block's bytes.
BIG = os.urandom(3 * (1 << 20) + 12345 + BLOCK)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[FaultServer]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "big").write_bytes(BIG)
    (root / "tiny").write_bytes(BIG[:BLOCK])
    server, _ = serve(root, log=tmp_path / "requests.jsonl")
    yield server
    server.shutdown()
    server.server_close()


def fetch_digests(tmp_path: Path, server: FaultServer, cases: list[tuple[str, str]]) -> list[str]:
    """For each (path, shell run before fetching it): "ok DIGEST" (DIGEST empty when the
    download gave none) or "fail REASON", after checking the file is the served one."""
    require_tool("busybox", "to run the generated shell (busybox-static)")
    require_tool("openssl", "the image's hashing tool (openssl)")
    lib = tmp_path / "lib.sh"
    lib.write_text(render("guest/discovery.sh.j2", kvm(), tmp_path, library=True))
    (tmp_path / "run").mkdir()
    port = server.server_address[1]
    body = "\n".join(
        f"{before}\nif fetch http://127.0.0.1:{port}{path} got; then "
        f"onepass_digest got; cmp -s got www/{path.rsplit('/', 1)[1]} || echo differs; "
        "echo \"ok $ONEPASS_DIGEST\"; else echo \"fail $FETCH_ERROR\"; fi\nONEPASS_ON=1 ONEPASS_KEEP=0"
        for path, before in cases)
    # ONEPASS_KEEP=0: a follower left behind by a busy host keeps its digest (no timing here).
    script = (f". {shlex.quote(str(lib))}\nSERIAL=SN1 ETH_ADDR=52:54:00:12:34:56 SEC_KEY= "
              "OPERATION=os-install STALL_TIMEOUT=5 TRANSFER_TIMEOUT=30 PROGRESS_INTERVAL=10 "
              f"RESUME_COUNT=2 ONEPASS_KEEP=0\nrun_setup\n{body}\n")
    proc = subprocess.run(["busybox", "ash", "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    lines = [line for line in proc.stdout.splitlines()
             if line.startswith(("ok", "fail", "differs"))]
    assert len(lines) == len(cases), proc.stdout + proc.stderr
    return [line.rstrip() for line in lines]


def test_the_digest_taken_while_downloading_is_the_hosts(tmp_path: Path,
                                                         server: FaultServer) -> None:
    payload = hashlib.sha256(BIG[:-BLOCK]).hexdigest()
    got = fetch_digests(tmp_path, server, [
        ("/good/big", ""),
        ("/good/big", "ONEPASS_ON="),  # the bench's "before": no hashing while downloading
        ("/reset/big", ""),  # broken at 50 %, resumed by Range: verify_installer hashes it
        ("/good/tiny", ""),  # no payload beyond a signature block: nothing to hash
        ("/good/big", "ONEPASS_KEEP=101 ONEPASS_KEEP_FROM=0"),  # "behind": dropped however fast
        ("/good/big", ""),
    ])
    assert got == [f"ok {payload}", "ok", "ok", "ok", "ok", f"ok {payload}"]
    log = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert [e["range"] is None for e in log if e["path"] == "/reset/big"] == [True, False]


def test_no_digest_for_a_file_changed_after_its_download(tmp_path: Path,
                                                         server: FaultServer) -> None:
    """The digest belongs to the download that made the file: another file at the same path
    (a USB copy after a refused download) or a different path gets none."""
    require_tool("busybox", "to run the generated shell (busybox-static)")
    lib = tmp_path / "lib.sh"
    lib.write_text(render("guest/discovery.sh.j2", kvm(), tmp_path, library=True))
    (tmp_path / "run").mkdir()
    port = server.server_address[1]
    script = (f". {shlex.quote(str(lib))}\nSTALL_TIMEOUT=5 TRANSFER_TIMEOUT=30 ONEPASS_KEEP=0\n"
              "run_setup\n"
              f"fetch http://127.0.0.1:{port}/good/big got && onepass_digest other && "
              "echo \"other=$ONEPASS_DIGEST\"\n"
              f"fetch http://127.0.0.1:{port}/good/big got && head -c 100 got > short && "
              "mv short got && onepass_digest got && echo \"changed=$ONEPASS_DIGEST\"\n")
    proc = subprocess.run(["busybox", "ash", "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    assert proc.stdout.splitlines() == ["other=", "changed="], proc.stdout + proc.stderr
