"""Find the embedded server of this user, or start one: the zero-configuration default.

Layout under ``$SPARK_EXT_HOME`` (default ``~/.spark-ext``, owner-only permissions)::

    secret              the shared secret (created on first start, mode 0600)
    data/               the embedded server's data directory
    run/embedded.json   {pid, host, port, ...} of the running server
    run/start.lock      held while a client checks for or starts the server
    logs/embedded.log   the detached server's log

Two clients starting at once cannot start two servers: the check-and-start runs under an
exclusive ``flock`` of ``run/start.lock``. A run file left by a crashed server (its pid
gone, or its port not answering) is detected and replaced.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from spark_ext.client.connection import Connection
from spark_ext.exceptions import SparkExtError
from spark_ext.wire.kinds import Kind

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0


def home() -> Path:
    """The spark-ext home folder (``$SPARK_EXT_HOME`` or ``~/.spark-ext``)."""
    return Path(os.environ.get("SPARK_EXT_HOME") or Path.home() / ".spark-ext")


def _private_dir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(p, 0o700)
    return p


def load_or_create_secret(path: Path) -> bytes:
    """The secret in ``path``; a new random one is written (mode 0600) if missing."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    _private_dir(path.parent)
    value = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(run_file: Path, secret: bytes | None) -> dict[str, Any] | None:
    """The run info of a live, answering server in ``run_file``, else None."""
    try:
        info = json.loads(run_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not _alive(int(info.get("pid", -1))):
        return None
    try:
        c = Connection(info["host"], int(info["port"]), secret, timeout=5.0)
        try:
            c.request(Kind.PING, {})
        finally:
            c.close()
    except (SparkExtError, OSError, KeyError):
        return None
    return info


def ensure_embedded(start: bool = True, extra_args: list[str] | None = None) -> tuple[tuple[str, int], bytes]:
    """Address and secret of this user's embedded server, starting it when needed.

    Raises:
        SparkExtError: it is not running and ``start`` is False, or it failed to start
            (the message points at its log).
    """
    h = _private_dir(home())
    run = _private_dir(h / "run")
    secret = load_or_create_secret(h / "secret")
    run_file = run / "embedded.json"
    info = running(run_file, secret)
    if info is not None:
        return (info["host"], int(info["port"])), secret
    with open(run / "start.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            info = running(run_file, secret)  # another client may have started it meanwhile
            if info is not None:
                return (info["host"], int(info["port"])), secret
            if not start:
                raise SparkExtError("the embedded spark-ext server is not running (start it: spark-ext server start --embedded)")
            if run_file.exists():
                logger.warning("removing stale run file %s (its server is gone)", run_file)
                run_file.unlink()
            log = _private_dir(h / "logs") / "embedded.log"
            cmd = [sys.executable, "-m", "spark_ext.cli", "server", "start", "--embedded", "--foreground", *(extra_args or [])]
            logger.info("starting the embedded server: %s", " ".join(cmd))
            with open(log, "ab") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, env={**os.environ, "SPARK_EXT_HOME": str(h)})
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise SparkExtError(f"the embedded server exited with code {proc.returncode}; see {log}")
                info = running(run_file, secret)
                if info is not None:
                    return (info["host"], int(info["port"])), secret
                time.sleep(0.1)
            raise SparkExtError(f"the embedded server did not start within {START_TIMEOUT_S:.0f}s; see {log}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def connect(locator: tuple[str, int] | None = None, secret: bytes | None = None) -> Any:
    """A :class:`StoreClient` for ``locator``, or for the embedded server when None."""
    from spark_ext.client.client import StoreClient

    if locator is None:
        locator, secret = ensure_embedded()
    return StoreClient(locator, secret)
