"""ZooKeeper on loopback from pyspark's own jars: one node, or a three-node ensemble.

pyspark ships ZooKeeper 3.9 (server included), so the tests need neither apt nor Maven:

    with ZooKeeperNode.single(tmp_path) as zk:          # ZooKeeperServerMain
        ... KazooClient(hosts=zk.hosts) ...
    with ZooKeeperEnsemble(tmp_path, 3) as ens:          # QuorumPeerMain x 3
        ens.stop_node(2)                                 # kill -9 one member
        ens.start_node(2)                                # and bring it back

Each node listens only on 127.0.0.1 (client, peer and election ports are distinct free
ports), has a temporary data directory, the admin server off, a short tick (500 ms, so a
session timeout of 3 s is allowed: the minimum is two ticks) and the four-letter words
on (readiness is ``srvr``). Every JVM started here is recorded and killed: by
:meth:`stop`, by the context managers, by an ``atexit`` sweep, and (on Linux) by
``PR_SET_PDEATHSIG`` if the test process itself dies.
"""

from __future__ import annotations

import atexit
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyspark

JARS = Path(pyspark.__file__).resolve().parent / "jars"
JAVA = shutil.which("java") or "java"
JVM_OPTS = ["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.net.preferIPv4Stack=true"]
TICK_MS = 500
START_TIMEOUT_S = 60.0

_LIVE: list["subprocess.Popen[bytes]"] = []


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


def _sweep() -> None:
    for p in _LIVE:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass


atexit.register(_sweep)


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports nobody listens on right now."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def four_letter(port: int, word: str = "srvr", timeout: float = 2.0) -> str:
    """Send a four-letter command to a node; return its answer ('' if none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(word.encode())
        chunks = []
        while True:
            b = s.recv(4096)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks).decode(errors="replace")


def node_mode(port: int) -> str | None:
    """'standalone', 'leader' or 'follower' when the node serves clients; else None."""
    try:
        out = four_letter(port, "srvr")
    except OSError:
        return None
    for line in out.splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None


class ZooKeeperNode:
    """One ZooKeeper JVM (standalone, or member ``myid`` of an ensemble)."""

    def __init__(self, root: Path, client_port: int, myid: int | None = None, servers: str = "") -> None:
        self.root = Path(root)
        self.client_port = client_port
        self.myid = myid
        self.data_dir = self.root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cfg = self.root / "zoo.cfg"
        self.log = self.root / "zk.log"
        lines = [
            f"tickTime={TICK_MS}", f"dataDir={self.data_dir}", f"clientPort={client_port}",
            "clientPortAddress=127.0.0.1", "admin.enableServer=false", "4lw.commands.whitelist=*",
            "initLimit=20", "syncLimit=4", "maxClientCnxns=200", "autopurge.purgeInterval=0",
        ]
        if myid is not None:
            (self.data_dir / "myid").write_text(f"{myid}\n")
            lines += [servers, "standaloneEnabled=false", "reconfigEnabled=false", "quorumListenOnAllIPs=false"]
        self.cfg.write_text("\n".join(lines) + "\n")
        self.popen: subprocess.Popen[bytes] | None = None

    @classmethod
    def single(cls, root: Path) -> "ZooKeeperNode":
        """A standalone node (``ZooKeeperServerMain``) on a free loopback port (not started)."""
        (port,) = free_ports(1)
        return cls(root, port)

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self, wait: bool = True) -> "ZooKeeperNode":
        main = ("org.apache.zookeeper.server.quorum.QuorumPeerMain" if self.myid is not None
                else "org.apache.zookeeper.server.ZooKeeperServerMain")
        out = open(self.log, "ab")
        try:
            self.popen = subprocess.Popen(
                [JAVA, *JVM_OPTS, "-cp", f"{JARS}/*", main, str(self.cfg)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(self.root),
                preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None,
            )
        finally:
            out.close()
        _LIVE.append(self.popen)
        if wait:
            self.wait_serving()
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_serving(self, timeout: float = START_TIMEOUT_S) -> str:
        """Wait until the node answers ``srvr`` with a mode (it serves clients)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"ZooKeeper {self.hosts} exited during start:\n{self.log_tail()}")
            mode = node_mode(self.client_port)
            if mode:
                return mode
            time.sleep(0.1)
        raise AssertionError(f"ZooKeeper {self.hosts} did not serve within {timeout}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Kill the JVM (default SIGKILL: a crashed machine) and reap it."""
        if self.popen is not None and self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> "ZooKeeperNode":
        return self.start() if self.popen is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class ZooKeeperEnsemble:
    """``n`` ZooKeeper members (``QuorumPeerMain``) on distinct loopback ports."""

    def __init__(self, root: Path, n: int = 3) -> None:
        self.root = Path(root)
        ports = free_ports(3 * n)
        client, peer, election = ports[:n], ports[n:2 * n], ports[2 * n:]
        servers = "\n".join(f"server.{i + 1}=127.0.0.1:{peer[i]}:{election[i]}" for i in range(n))
        self.nodes = [ZooKeeperNode(self.root / f"zk{i + 1}", client[i], myid=i + 1, servers=servers) for i in range(n)]

    @property
    def hosts(self) -> str:
        return ",".join(n.hosts for n in self.nodes)

    def start(self) -> "ZooKeeperEnsemble":
        for n in self.nodes:  # all at once: a member serves only once a quorum has formed
            n.start(wait=False)
        for n in self.nodes:
            n.wait_serving()
        return self

    def modes(self) -> dict[int, str | None]:
        return {i: (node_mode(n.client_port) if n.alive() else None) for i, n in enumerate(self.nodes)}

    def leader_index(self) -> int | None:
        for i, m in self.modes().items():
            if m == "leader":
                return i
        return None

    def stop_node(self, i: int, sig: int = signal.SIGKILL) -> None:
        self.nodes[i].stop(sig)

    def start_node(self, i: int) -> None:
        self.nodes[i].start(wait=True)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def logs(self) -> str:
        return "\n".join(f"--- zk{i + 1}\n{n.log_tail(1500)}" for i, n in enumerate(self.nodes))

    def __enter__(self) -> "ZooKeeperEnsemble":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
