"""A driver program for the HA tests, run as its own process.

    python -m integration.ha.driver --group G --name primary --backend locator \
        --locator 127.0.0.1:PORT [--secret-file F] [--zk HOSTS] [--ttl 3] [--zombie]

It takes the leadership of group ``G`` (blocking as a standby while someone else leads),
then loops committing statements, each fenced with its token:

* ``events``: one row ``(id=seq, writer, token, mono)`` put on the server of its key;
* ``ledger``: two rows ``(seq*16+j, seq, token, writer)`` chosen on two different
  servers, i.e. a multi-server transaction (stage, prepare, commit on both).

On taking over it announces its token to every store server (a fenced PING, so a
deposed leader is refused even where the new one has not written yet), creates the
tables if missing (fenced DDL), reads ``events`` and reports what it found, and
continues the sequence after the highest id it found.

Every event goes to stdout as one JSON line, flushed at once (``mono`` is
``time.monotonic()``, which on Linux is the same clock in every process of the machine):

    {"ev": "ready"}                               started, about to contend
    {"ev": "leader", "token": T}                  leadership acquired
    {"ev": "found", "ids": [...], "by_writer": {...}}
    {"ev": "ack", "kind": "events"|"ledger", "seq": S, "token": T, "mono": ...}
    {"ev": "fenced", "kind", "seq", "token", "leader": bool, "lost": bool, "error": ...}
    {"ev": "lost", "reason": ...}                 lost the lease: exits with code 3

With ``--zombie`` the driver does not check its own lease before a statement (it sends
every statement, to prove the servers refuse it) and exits 0 after ``--max-refused``
refused statements.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from spark_ext.client.client import StoreClient
from spark_ext.client.connection import Connection
from spark_ext.exceptions import FencedError
from spark_ext.ha.backends import LocatorLeases, ZooKeeperLeases
from spark_ext.ha.leadership import Leadership
from spark_ext.wire.kinds import Kind

if TYPE_CHECKING:
    from integration.cluster import Cluster

REPO = Path(__file__).resolve().parent.parent.parent


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # die with the parent
    except OSError:
        pass

EVENTS_COLUMNS = [("id", "int64"), ("writer", "string"), ("token", "int64"), ("mono", "float64")]
LEDGER_COLUMNS = [("id", "int64"), ("seq", "int64"), ("token", "int64"), ("writer", "string")]


def emit(ev: str, **kw: Any) -> None:
    kw = {"ev": ev, "mono": kw.pop("mono", time.monotonic()), "wall": time.time(), **kw}
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def parse_addr(s: str) -> tuple[str, int]:
    host, port = s.rsplit(":", 1)
    return host, int(port)


def ledger_keys(client: StoreClient, ledger: str, seq: int) -> list[int]:
    """Two keys of ``seq``'s range that live on two different servers."""
    info = client.table(ledger)
    seen: dict[str, int] = {}
    for j in range(16):
        k = seq * 16 + j
        sid = info.placement[info.schema.bucket_of_key(info.schema.coerce_key(k))]
        seen.setdefault(sid, k)
        if len(seen) == 2:
            return sorted(seen.values())
    return sorted(seen.values())  # one server only (a one-server cluster)


def announce(client: StoreClient, fence: dict[str, Any], secret: bytes | None, server_ids: set[str],
             timeout: float = 15.0) -> list[str]:
    """Send the new token (a fenced PING) to every store server in ``server_ids`` (those
    hosting the leader's tables) and to every other one the locator lists; returns the
    ids reached. Blocks until all of ``server_ids`` took it.

    Only once every server that holds the group's data has the token may the new leader
    write: a server that has not seen it would still accept the old leader's writes. The
    locator's member list is not enough on its own: right after a locator restart it
    lists only the servers that have registered again.
    """
    done: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        try:
            listed = client.servers()
        except ConnectionError:  # e.g. a pooled connection to a restarted locator
            listed = []
        for s in listed:
            if s["server_id"] in done:
                continue
            try:
                c = Connection(str(s["host"]), int(s["port"]), secret, timeout=5.0)
            except ConnectionError:
                continue
            try:
                c.request(Kind.PING, {"fence": fence})
                done.add(str(s["server_id"]))
            except ConnectionError:
                pass
            finally:
                c.close()
        if server_ids <= done:
            return sorted(done)
        if time.monotonic() > deadline:
            raise ConnectionError(f"could not announce token {fence['token']} to servers {sorted(server_ids - done)}")
        time.sleep(0.1)


def zombie_exit(client: StoreClient, lead: Leadership, ttl: float, ddl_table: str) -> int:
    """After the refused statements: try one DDL, report whether the lease loss was noticed."""
    try:
        client.create_table(ddl_table, EVENTS_COLUMNS, primary_key="id", num_buckets=2)
        emit("ddl", refused=False)
    except FencedError as e:
        emit("ddl", refused=True, error=str(e))
    lead.lost.wait(ttl)  # the renewal thread notices within one renewal interval
    emit("exit", leader=lead.is_leader, lost=lead.lost.is_set(), lost_reason=lead.lost_reason)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--group", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--backend", choices=["locator", "zk"], default="locator")
    ap.add_argument("--locator", required=True, help="host:port of the locator (data and, by default, leases)")
    ap.add_argument("--secret-file")
    ap.add_argument("--zk", help="ZooKeeper hosts for --backend zk")
    ap.add_argument("--ttl", type=float, default=3.0)
    ap.add_argument("--interval", type=float, default=0.02, help="pause between iterations (s)")
    ap.add_argument("--max-iterations", type=int, default=1_000_000)
    ap.add_argument("--zombie", action="store_true", help="never check the lease locally; send every statement")
    ap.add_argument("--max-refused", type=int, default=6)
    ap.add_argument("--prefix", default="ha", help="tables are default.<prefix>_events and default.<prefix>_ledger")
    ap.add_argument("--check-table", help="on taking over, also count the rows of this (large) table")
    a = ap.parse_args(argv)
    EVENTS, LEDGER = f"default.{a.prefix}_events", f"default.{a.prefix}_ledger"
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    secret = open(a.secret_file, "rb").read().strip() if a.secret_file else None
    locator = parse_addr(a.locator)
    client = StoreClient(locator, secret, timeout=30.0)
    client.servers()  # connected before contending: a takeover need not pay for it
    backend = LocatorLeases(locator, secret) if a.backend == "locator" else ZooKeeperLeases(a.zk, ttl_s=a.ttl)
    holder = f"{a.name}:{os.getpid()}"
    lead = Leadership(a.group, ttl=a.ttl, backend=backend, holder=holder)
    emit("ready", holder=holder)

    lead.acquire()
    emit("leader", token=lead.token, holder=holder)
    client.fence = lead.fence
    client.create_table(EVENTS, EVENTS_COLUMNS, primary_key="id", num_buckets=6, if_not_exists=True)
    client.create_table(LEDGER, LEDGER_COLUMNS, primary_key="id", num_buckets=6, if_not_exists=True)
    hosting = {sid for t in (EVENTS, LEDGER) for sid in client.table(t, refresh=True).placement}
    emit("announced", servers=announce(client, lead.fence, secret, hosting))
    t = client.scan(EVENTS, columns=["id", "writer"])
    ids = sorted(t.column("id").to_pylist())
    by_writer: dict[str, int] = {}
    for w in t.column("writer").to_pylist():
        by_writer[w] = by_writer.get(w, 0) + 1
    emit("found", ids=ids, by_writer=by_writer, ledger=client.count(LEDGER),
         checked_rows=client.count(a.check_table) if a.check_table else None)

    seq = (ids[-1] + 1) if ids else 0
    refused = 0
    for _ in range(a.max_iterations):
        for kind in ("events", "ledger"):
            if not a.zombie:
                try:
                    lead.check()
                except FencedError as e:
                    emit("lost", reason=str(e), token=lead.held.token if lead.held else None)
                    return 3
            token = lead.held.token if lead.held else None
            sent = time.monotonic()
            try:
                if kind == "events":
                    client.put(EVENTS, [(seq, holder, token, time.monotonic())])
                else:
                    client.put(LEDGER, [(k, seq, token, holder) for k in ledger_keys(client, LEDGER, seq)])
            except FencedError as e:
                refused += 1
                emit("fenced", kind=kind, seq=seq, token=token, sent=sent, leader=lead.is_leader,
                     lost=lead.lost.is_set(), error=str(e))
                if refused >= a.max_refused:
                    return zombie_exit(client, lead, a.ttl, f"default.{a.prefix}_zombie_ddl")
                continue
            emit("ack", kind=kind, seq=seq, token=token, sent=sent)
        seq += 1
        if a.interval:
            time.sleep(a.interval)
    lead.release()
    return 0


# --- the launcher side: run drivers (and other programs of this package) as processes ---


_CHILDREN: list["Child"] = []


class Child:
    """``python -m <module> *args`` with its JSON stdout lines collected as they come."""

    def __init__(self, module: str, args: list[str], env: dict[str, str], log: Path, group: bool = False) -> None:
        self.args = args
        self.group = group  # its own process group (a PySpark driver and its JVM): signals go to all of it
        self.log = log
        self.lines: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        err = open(log, "ab")
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                env=env, cwd=str(REPO), start_new_session=group,
                preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None)
        finally:
            err.close()
        _CHILDREN.append(self)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            with self._cond:
                self.lines.append(obj)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def events(self, ev: str | None = None) -> list[dict[str, Any]]:
        with self._cond:
            return [x for x in self.lines if ev is None or x["ev"] == ev]

    def wait_for(self, pred: Callable[[list[dict[str, Any]]], Any], timeout: float, what: str) -> Any:
        """Wait until ``pred(lines)`` is truthy; fail (with the child's log) after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                v = pred(self.lines)
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"{what}: not seen within {timeout}s (exit code {self.popen.poll()}). "
                                         f"Last lines: {self.lines[-5:]}\nLog:\n{self.log_tail()}")
                self._cond.wait(min(left, 0.2))

    def wait_event(self, ev: str, timeout: float, n: int = 1) -> dict[str, Any]:
        return self.wait_for(lambda ls: [x for x in ls if x["ev"] == ev][n - 1:n], timeout, f"event {ev!r} x{n}")[0]

    def signal(self, sig: int) -> None:
        if self.group:  # the whole group, also children left behind by a dead leader process
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
        elif self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)  # also ends a SIGSTOPped process
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        self._reader.join(5)

    def wait(self, timeout: float) -> int:
        rc = self.popen.wait(timeout)
        self._reader.join(5)
        return rc

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"


def kill_children() -> None:
    """SIGKILL every child started by this process that still runs."""
    for c in _CHILDREN:
        if c.popen.poll() is None or c.group:
            c.kill()
    _CHILDREN.clear()


atexit.register(kill_children)


def driver_args(cluster: "Cluster", group: str, name: str, *extra: str) -> list[str]:
    args = ["--group", group, "--name", name, "--locator", cluster.locator_arg, *extra]
    if cluster.secret_file is not None:
        args += ["--secret-file", str(cluster.secret_file)]
    return args


def start_driver(cluster: "Cluster", group: str, name: str, *extra: str) -> Child:
    """A driver process (:mod:`integration.ha.driver`) against ``cluster``."""
    return Child("integration.ha.driver", driver_args(cluster, group, name, *extra), cluster.app_env(),
                 cluster.logs / f"driver-{group}-{name}.log")



@dataclass
class Takeover:
    """What :func:`kill_and_take_over` saw: both drivers (stopped) and their key events."""

    primary: Child
    standby: Child
    lead: dict[str, Any]  # the primary's "leader" event
    new: dict[str, Any]  # the standby's "leader" event
    first: dict[str, Any]  # the standby's first "ack"
    found: dict[str, Any]  # what the standby found on taking over
    killed_at: float  # time.monotonic() of the kill
    more: dict[str, Any]  # what ``after_lead`` returned


def kill_and_take_over(start: Callable[..., Child], cluster: "Cluster", group: str, prefix: str, *, ttl: float,
                       extra: tuple[str, ...], min_acks: int, kill_delay: float, ready_event: str,
                       start_timeout: float, takeover_timeout: float, standby_acks: int,
                       after_lead: Callable[[Child], dict[str, Any]] | None = None) -> Takeover:
    """The common course of a failover run, for plain-Python and PySpark drivers alike.

    ``start(cluster, group, name, *args)`` starts a driver; the primary leads and commits
    ``min_acks`` statements while the standby stands by (``ready_event``); after
    ``kill_delay`` seconds (a benchmark varies it to hit every phase of the renewal cycle)
    the primary is killed with SIGKILL, and the standby must lead, commit, and report what
    it found. Both drivers are stopped before this returns.
    """
    args = ("--ttl", str(ttl), "--prefix", prefix, *extra)
    primary = start(cluster, group, "primary", *args)
    standby: Child | None = None
    try:
        lead = primary.wait_event("leader", start_timeout)
        standby = start(cluster, group, "standby", *args)
        standby.wait_event(ready_event, start_timeout)
        primary.wait_for(lambda ls: sum(1 for x in ls if x["ev"] == "ack") >= min_acks, start_timeout,
                         "primary commits")
        time.sleep(kill_delay)
        assert not standby.events("leader"), "the standby led while the primary held the lease"
        killed_at = time.monotonic()
        primary.signal(signal.SIGKILL)  # a driver in its own process group: all of it
        primary.wait(takeover_timeout)
        new = standby.wait_event("leader", takeover_timeout)
        first = standby.wait_event("ack", takeover_timeout)
        more = after_lead(standby) if after_lead is not None else {}
        standby.wait_for(lambda ls: sum(1 for x in ls if x["ev"] == "ack") >= standby_acks, takeover_timeout,
                         "standby commits")
        found = standby.wait_event("found", 1)
    finally:
        primary.kill()
        if standby is not None:
            standby.kill()
    return Takeover(primary, standby, lead, new, first, found, killed_at, more)


def measure_failover(cluster: "Cluster", group: str, prefix: str, ttl: float = 3.0, min_acks: int = 40,
                     extra: tuple[str, ...] = (), kill_delay: float = 0.0) -> dict[str, Any]:
    """One failover: primary leads and commits, standby waits, ``kill -9`` the primary.

    Asserts the takeover is complete and lossless (every statement the primary had
    acknowledged is there, the standby continues after it with a newer token) and
    returns the times from the kill (monotonic, measured in this process and in the
    drivers: one clock on Linux). ``kill_delay``: seconds to wait after ``min_acks``
    statements before the kill (a benchmark varies it to hit every phase of the renewal
    cycle).
    """
    t = kill_and_take_over(start_driver, cluster, group, prefix, ttl=ttl, extra=extra, min_acks=min_acks,
                           kill_delay=kill_delay, ready_event="ready", start_timeout=60, takeover_timeout=30,
                           standby_acks=10)
    primary, standby, lead, new, first, found, killed_at = (t.primary, t.standby, t.lead, t.new, t.first, t.found,
                                                            t.killed_at)

    def acked(child: Child, kind: str) -> set[int]:
        return {x["seq"] for x in child.events("ack") if x["kind"] == kind}

    p_events, p_ledger = acked(primary, "events"), acked(primary, "ledger")
    assert new["token"] > lead["token"]
    missing = p_events - set(found["ids"])
    assert not missing, f"acknowledged rows the new leader did not find: {sorted(missing)}"
    c = cluster.admin()  # read back independently of the drivers
    ev = {r["id"]: r for r in c.scan(f"default.{prefix}_events").to_pylist()}
    ledger_seqs = {r["seq"] for r in c.scan(f"default.{prefix}_ledger").to_pylist()}
    assert p_events <= set(ev) and p_ledger <= ledger_seqs
    s_events, s_ledger = acked(standby, "events"), acked(standby, "ledger")
    assert min(s_events) > max(p_events), "the new leader did not continue after the old one"
    assert s_events <= set(ev) and all(ev[s]["token"] == new["token"] for s in s_events)
    assert s_ledger <= ledger_seqs
    return {"kill_to_leader_s": new["mono"] - killed_at, "kill_to_first_commit_s": first["mono"] - killed_at,
            "primary_acks": len(p_events) + len(p_ledger), "tokens": (lead["token"], new["token"]),
            "found": found}


if __name__ == "__main__":
    sys.exit(main())
