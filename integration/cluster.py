"""Real spark-ext processes on loopback for the integration tests.

:class:`Cluster` starts a locator and N store servers as separate ``python -m
spark_ext.cli ... --foreground`` processes, each on a free port (port 0, read back from
its run file), with a temporary ``SPARK_EXT_HOME``, a secret file, and one data
directory per server. It can ``kill -9`` a server and restart it with the same id and
data directory, restart the locator on its old port, and run separate client
applications (``python -c``) against the cluster.

Every process started here is recorded. :meth:`Cluster.stop` (called by the fixtures'
finalizers, also when a test failed) terminates them, then kills whatever did not
exit; an ``atexit`` hook kills anything still left, and on Linux every child gets
``PR_SET_PDEATHSIG`` so it dies with the test process even if that is killed. Embedded
servers started detached by ``connect()`` are found by their ``SPARK_EXT_HOME`` (see
:class:`EmbeddedHome`) and killed by pid.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from spark_ext.client.client import StoreClient
from spark_ext.client.connection import Connection
from spark_ext.wire.kinds import Kind

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
START_TIMEOUT_S = 60.0

_ALL: list["Proc"] = []  # every process started by this module, for the atexit sweep
_APPS: list["subprocess.Popen[str]"] = []  # client applications, likewise
_HOMES: list["EmbeddedHome"] = []  # homes whose detached embedded servers must die too


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the test process
    except OSError:
        pass


def _sweep() -> None:
    for p in _ALL:
        p.kill()
    for a in _APPS:
        if a.poll() is None:
            a.kill()
    for h in _HOMES:
        try:
            h.kill_all()
        except Exception:
            pass


atexit.register(_sweep)


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``pred`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # the thing waited for may not be reachable yet
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def free_port() -> int:
    """A port nobody listens on right now (for "connection refused" run files)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    """One started process: its command, log, run file and run info."""

    name: str
    args: list[str]
    run_file: Path
    log: Path
    popen: subprocess.Popen[bytes]
    info: dict[str, Any]

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def port(self) -> int:
        return int(self.info["port"])

    @property
    def address(self) -> tuple[str, int]:
        return (str(self.info["host"]), self.port)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL) and, for SIGKILL, reap the process."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGKILL:
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait for a clean exit; SIGKILL if it does not come. Returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM; killed. Log:\n{self.log_tail()}")
        return int(self.popen.returncode)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"


def start_process(name: str, args: list[str], run_file: Path, log: Path, env: dict[str, str]) -> Proc:
    """Start ``python -m spark_ext.cli *args`` (no wait). See :func:`wait_ready`."""
    try:
        run_file.unlink()  # a stale one (kill -9) must not be mistaken for the new process
    except FileNotFoundError:
        pass
    out = open(log, "ab")
    try:
        popen = subprocess.Popen(
            [PYTHON, "-m", "spark_ext.cli", *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=str(REPO), preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None,
        )
    finally:
        out.close()
    p = Proc(name, args, run_file, log, popen, {})
    _ALL.append(p)
    return p


def wait_ready(p: Proc, timeout: float = START_TIMEOUT_S) -> Proc:
    """Wait until ``p`` wrote its run file (it is listening); fail with its log if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.popen.poll() is not None:
            raise AssertionError(f"{p.name} exited with code {p.popen.returncode} during start. Log:\n{p.log_tail()}")
        try:
            info = json.loads(p.run_file.read_text())
            if info.get("pid") == p.pid:
                p.info = info
                return p
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    p.kill()
    raise AssertionError(f"{p.name} did not become ready within {timeout}s. Log:\n{p.log_tail()}")


class Cluster:
    """A locator and ``n_servers`` store servers (ids ``s0``, ``s1``...) on 127.0.0.1.

    Args:
        root: an empty directory for everything (home, data, logs, run files).
        n_servers: store servers to start.
        secret: the cluster's shared secret (None: no authentication).
        lost_after: seconds of heartbeat silence after which the locator declares a
            server lost.
        server_args: extra ``server start`` arguments (e.g. ``--txn-timeout 2``).
    """

    def __init__(self, root: Path, n_servers: int = 3, secret: bytes | None = b"integration-secret",
                 lost_after: float = 3.0, server_args: Iterable[str] = ()) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.home = self.root / "home"
        self.home.mkdir(mode=0o700, exist_ok=True)
        self.logs = self.root / "logs"
        self.logs.mkdir(exist_ok=True)
        self.secret = secret
        self.secret_file: Path | None = None
        if secret is not None:
            self.secret_file = self.root / "secret"
            fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secret)
        self.lost_after = lost_after
        self.server_args = list(server_args)
        self.server_ids = [f"s{i}" for i in range(n_servers)]
        self.locator: Proc | None = None
        self.servers: dict[str, Proc] = {}
        self.procs: list[Proc] = []
        self._clients: list[StoreClient] = []
        self._admin: StoreClient | None = None
        self.env = {**os.environ, "SPARK_EXT_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        self.env.pop("SPARK_EXT_SECRET", None)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> "Cluster":
        self.start_locator()
        started = [self._spawn_server(sid) for sid in self.server_ids]  # start in parallel
        for p in started:
            wait_ready(p)
        for sid in self.server_ids:
            self.wait_server(sid, up=True)
        return self

    def _auth_args(self) -> list[str]:
        return ["--secret-file", str(self.secret_file)] if self.secret_file is not None else []

    def start_locator(self, port: int | None = None) -> Proc:
        """Start the locator (on ``port``, default: the port it had before, else a free one)."""
        if port is None:
            port = self.locator.port if self.locator is not None else 0
        args = ["locator", "start", "--foreground", "--port", str(port), "--lost-after", str(self.lost_after),
                "--data-dir", str(self.root / "locator"), "--run-file", str(self.root / "locator.json"),
                *self._auth_args()]
        p = start_process("locator", args, self.root / "locator.json", self.logs / "locator.log", self.env)
        self.procs.append(p)
        self.locator = wait_ready(p)
        return p

    @property
    def locator_address(self) -> tuple[str, int]:
        assert self.locator is not None
        return self.locator.address

    @property
    def locator_arg(self) -> str:
        host, port = self.locator_address
        return f"{host}:{port}"

    def _spawn_server(self, sid: str) -> Proc:
        args = ["server", "start", "--foreground", "--locator", self.locator_arg, "--server-id", sid,
                "--data-dir", str(self.data_dir(sid)), "--run-file", str(self.root / f"{sid}.json"),
                *self._auth_args(), *self.server_args]
        p = start_process(sid, args, self.root / f"{sid}.json", self.logs / f"{sid}.log", self.env)
        self.procs.append(p)
        self.servers[sid] = p
        return p

    def data_dir(self, sid: str) -> Path:
        return self.root / "data" / sid

    def start_server(self, sid: str) -> Proc:
        """Start (or restart) server ``sid`` with its data directory; wait until the locator lists it up."""
        p = wait_ready(self._spawn_server(sid))
        self.wait_server(sid, up=True)
        return p

    def kill_server(self, sid: str, sig: int = signal.SIGKILL) -> None:
        self.servers[sid].kill(sig)

    def restart_server(self, sid: str) -> Proc:
        return self.start_server(sid)

    def stop_server(self, sid: str) -> int:
        return self.servers[sid].terminate()

    def wait_server(self, sid: str, up: bool, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the locator reports ``sid`` up (at its current port) or not up."""
        want_port = self.servers[sid].port if up and sid in self.servers else None

        def check() -> dict[str, Any] | None:
            for s in self.admin().servers():
                if s["server_id"] == sid and bool(s["up"]) == up and (want_port is None or s["port"] == want_port):
                    return s
            return None

        return wait_until(check, timeout, f"locator to report {sid} {'up' if up else 'down'}")

    def stop(self) -> None:
        """Close clients, SIGTERM every live process, SIGKILL what does not exit."""
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self._clients.clear()
        self._admin = None
        live = [p for p in self.procs if p.alive()]
        for p in live:
            try:
                p.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in live:
            try:
                p.popen.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        for p in self.procs:
            p.kill()

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- clients ------------------------------------------------------------------------

    def client(self, timeout: float = 30.0) -> StoreClient:
        """A new client of this cluster (closed by :meth:`stop`)."""
        c = StoreClient(self.locator_address, self.secret, timeout=timeout)
        self._clients.append(c)
        return c

    def admin(self) -> StoreClient:
        """A shared client for checks made by the tests themselves (re-made after a locator restart)."""
        if self._admin is None or self._admin.locator_address != self.locator_address:
            self._admin = self.client()
        return self._admin

    def connection(self, sid: str | None = None, secret: bytes | None | str = "default") -> Connection:
        """A raw authenticated connection to a server (or the locator when ``sid`` is None)."""
        host, port = self.locator_address if sid is None else self.servers[sid].address
        return Connection(host, port, self.secret if secret == "default" else secret, timeout=30.0)  # type: ignore[arg-type]

    def request(self, sid: str | None, kind: Kind, metadata: dict[str, Any], body: bytes = b"", flags: int = 0) -> Any:
        """One request on a fresh connection; returns the reply frame (raises typed errors)."""
        c = self.connection(sid)
        try:
            return c.request(kind, metadata, body, flags)
        finally:
            c.close()

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``spark-ext *args`` as a separate process with this cluster's home."""
        return subprocess.run([PYTHON, "-m", "spark_ext.cli", *args], capture_output=True, text=True,
                              env=self.env, cwd=str(REPO), timeout=timeout)

    def run_app(self, code: str, timeout: float = 120.0, **params: Any) -> Any:
        """Run ``code`` as a separate client application; see :func:`run_app`."""
        return run_app(code, self.app_env(), timeout=timeout, **params)

    def app_env(self) -> dict[str, str]:
        env = dict(self.env)
        env["IT_LOCATOR"] = self.locator_arg
        env["IT_SECRET_FILE"] = str(self.secret_file or "")
        return env

    def spawn_app(self, code: str, **params: Any) -> "App":
        return spawn_app(code, self.app_env(), **params)


# --- separate client applications ------------------------------------------------------

APP_PRELUDE = '''
import json, os, sys
PARAMS = json.loads(os.environ["IT_PARAMS"])
def cluster_client():
    if not os.environ.get("IT_LOCATOR"):  # no address: the embedded default (connect())
        from spark_ext.client.embedded import connect
        return connect()
    from spark_ext.client.client import StoreClient
    host, port = os.environ["IT_LOCATOR"].rsplit(":", 1)
    sf = os.environ.get("IT_SECRET_FILE")
    secret = open(sf, "rb").read().strip() if sf else None
    return StoreClient((host, int(port)), secret)
def emit(obj):
    sys.stdout.write("IT-RESULT " + json.dumps(obj, default=str) + "\\n")
    sys.stdout.flush()
'''


@dataclass
class App:
    """A client application running as its own Python process."""

    popen: subprocess.Popen[str]

    def result(self, timeout: float = 120.0) -> Any:
        """Wait for the application; return what it passed to ``emit`` (the last call)."""
        try:
            out, err = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            out, err = self.popen.communicate()
            raise AssertionError(f"client application timed out after {timeout}s:\n{out}\n{err}")
        if self.popen.returncode != 0:
            raise AssertionError(f"client application failed with code {self.popen.returncode}:\n{out}\n{err[-6000:]}")
        lines = [ln for ln in out.splitlines() if ln.startswith("IT-RESULT ")]
        assert lines, f"client application emitted no result:\n{out}\n{err[-3000:]}"
        return json.loads(lines[-1][len("IT-RESULT "):])


def spawn_app(code: str, env: dict[str, str], **params: Any) -> App:
    """Start ``code`` (with :data:`APP_PRELUDE`: ``PARAMS``, ``cluster_client()``, ``emit()``)."""
    e = dict(env)
    e["IT_PARAMS"] = json.dumps(params)
    popen = subprocess.Popen([PYTHON, "-c", APP_PRELUDE + code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=e, cwd=str(REPO), stdin=subprocess.DEVNULL,
                             preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None)
    _APPS.append(popen)
    return App(popen)


def run_app(code: str, env: dict[str, str], timeout: float = 120.0, **params: Any) -> Any:
    return spawn_app(code, env, **params).result(timeout)


# --- the embedded server -----------------------------------------------------------------


class EmbeddedHome:
    """A private ``SPARK_EXT_HOME`` for embedded-server tests, and cleanup of its servers."""

    def __init__(self, root: Path) -> None:
        self.home = Path(root) / "spark-ext-home"
        self.env = {**os.environ, "SPARK_EXT_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        self.env.pop("SPARK_EXT_SECRET", None)
        _HOMES.append(self)

    @property
    def run_file(self) -> Path:
        return self.home / "run" / "embedded.json"

    def run_info(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.run_file.read_text()))
        except (OSError, ValueError):
            return None

    def server_pids(self) -> list[int]:
        """Pids of every live embedded server process whose SPARK_EXT_HOME is this home."""
        want = f"SPARK_EXT_HOME={self.home}".encode()
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
                if b"spark_ext.cli" not in cmd or b"--embedded" not in cmd:
                    continue
                if want not in Path(f"/proc/{d}/environ").read_bytes().split(b"\0"):
                    continue
            except OSError:
                continue
            if pid_alive(int(d)):
                out.append(int(d))
        return sorted(out)

    def kill_all(self) -> None:
        """SIGKILL every embedded server of this home (by pid)."""
        for pid in self.server_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not self.server_pids(), 10, "embedded servers to die")

    def cli(self, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PYTHON, "-m", "spark_ext.cli", *args], capture_output=True, text=True,
                              env=self.env, cwd=str(REPO), timeout=timeout)

    def spawn_app(self, code: str, **params: Any) -> App:
        return spawn_app(code, self.env, **params)

    def run_app(self, code: str, timeout: float = 120.0, **params: Any) -> Any:
        return run_app(code, self.env, timeout=timeout, **params)


def spark_home(tmp: Path) -> str:
    """A SPARK_HOME of symlinks to pyspark's folders, so executor logs and work directories go to
    ``tmp`` instead of site-packages."""
    import pyspark

    src = Path(pyspark.__file__).parent
    home = tmp / "spark-home"
    home.mkdir()
    for d in ("bin", "sbin", "jars", "python", "conf"):
        if (src / d).exists():
            (home / d).symlink_to(src / d)
    return str(home)
