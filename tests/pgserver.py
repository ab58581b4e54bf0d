"""A throwaway PostgreSQL server for tests: Debian's binaries (package postgresql), a data
folder in a fresh temporary directory, TCP on 127.0.0.1 at a free port, its socket in that
directory; as root it runs as the ``postgres`` user. Stopped by its own PID."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import fail_or_skip

READY = "database system is ready to accept connections"


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin folder; fails in CI (skips elsewhere) without."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        fail_or_skip("PostgreSQL's initdb and postgres are missing (Debian package postgresql)")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """Run a PostgreSQL server for the block; yields its URL (user onie, trust on loopback)."""
    binaries = postgres_bin()
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="onie-pg-"))
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            fail_or_skip("runuser (util-linux) is needed to run PostgreSQL as its own user")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    os.chmod(root, 0o700)
    data = root / "data"
    proc: subprocess.Popen[str] | None = None
    try:
        subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "onie",
                        "--auth=trust", "-E", "UTF8", "--no-instructions"], check=True,
                       capture_output=True, text=True, timeout=120)
        port = free_port()
        proc = subprocess.Popen([*as_user, str(binaries / "postgres"), "-D", str(data),
                                 "-k", str(root), "-h", "127.0.0.1", "-p", str(port),
                                 "-c", "max_connections=100", "-c", "fsync=on"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        ready = threading.Event()
        lines: list[str] = []

        def drain() -> None:
            assert proc is not None and proc.stderr is not None
            for line in proc.stderr:
                lines.append(line)
                if READY in line:
                    ready.set()
            ready.set()  # exited

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(60) or proc.poll() is not None:
            raise RuntimeError("PostgreSQL did not start:\n" + "".join(lines[-20:]))
        yield f"postgresql://onie@127.0.0.1:{port}/postgres"
    finally:
        if proc is not None:
            proc.terminate()  # the postmaster by its PID: a fast shutdown
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
