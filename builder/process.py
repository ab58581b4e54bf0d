"""The one way onie-builder runs a subprocess: logged, minimal environment, failures reported once."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path

from builder.errors import BuildError, MissingToolError

log = logging.getLogger(__name__)

Arg = str | os.PathLike[str]


def find_tool(name: str, why: str) -> str:
    """Return the absolute path of a host tool, or raise saying what it is needed for.

    Looks in PATH, then in this Python environment's scripts folder (a tool pip installed
    beside onie-builder, when the virtualenv is not activated), then in the sbin folders."""
    path = (shutil.which(name) or shutil.which(name, path=sysconfig.get_path("scripts"))
            or shutil.which(name, path="/usr/sbin:/sbin"))
    if path is None:
        raise MissingToolError(
            f"Could not find '{name}', which is required {why}",
            hint="install it with apt-get (see README.md, 'Host packages')",
        )
    return path


def minimal_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment with only what tools need, so host settings cannot leak into outputs."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
    }
    if "SOURCE_DATE_EPOCH" in os.environ:
        env["SOURCE_DATE_EPOCH"] = os.environ["SOURCE_DATE_EPOCH"]
    if extra:
        env.update(extra)
    return env


def run(
    cmd: Sequence[Arg],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Arg | None = None,
    input: bytes | None = None,
    capture: bool = True,
    check: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd``; log it at debug level and raise one BuildError with stderr when it fails."""
    argv = [os.fspath(a) for a in cmd]
    log.debug("+ %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            argv,
            env=minimal_env(env),
            cwd=os.fspath(cwd) if cwd is not None else None,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            check=False,
            timeout=timeout,
        )
    except FileNotFoundError as exc:
        raise MissingToolError(f"Could not run '{argv[0]}': not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"'{shlex.join(argv)}' did not finish within {timeout} s") from exc
    if check and proc.returncode != 0:
        stderr = (proc.stderr or b"").decode(errors="replace").strip()
        raise BuildError(
            f"'{shlex.join(argv)}' failed with exit code {proc.returncode}"
            + (f":\n{stderr}" if stderr else "")
        )
    return proc


def workdir_path(path: Arg) -> Path:
    """Return ``path`` as an absolute Path (tools get absolute paths; cwd may differ)."""
    return Path(os.fspath(path)).absolute()
