"""``kill -9`` of a store server under write load, then restart with the same id and data.

Checks: every acknowledged change is back; nothing staged but uncommitted becomes
visible; transactions prepared for commit survive as "in doubt" and can be decided;
while the server is down its buckets are reported offline (naming table and bucket) and
the other servers keep serving; idle transactions are aborted by the server's timeout
while prepared ones wait for their decision.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from integration.cluster import Cluster, wait_until
from spark_ext.client.client import StoreClient
from spark_ext.exceptions import BucketOfflineError, ConflictError, SparkExtError
from spark_ext.wire.frames import Flags
from spark_ext.wire.kinds import Kind
from spark_ext.wire.rowcodec import encode_rows

T = "default.crash"
TXN_TIMEOUT_S = 2.0
N_KEYS = 900  # keys 0..899 are written by the load; each key by exactly one writer thread
EXTRA = range(5000, 5300)  # keys the test itself reads and writes while s1 is down
STAGED = range(20_000, 21_000)  # keys used by hand-made transactions


@pytest.fixture(scope="module")
def crash_cluster(make_cluster: Any) -> Cluster:
    return make_cluster("crash", server_args=["--txn-timeout", str(TXN_TIMEOUT_S)])


@pytest.fixture(scope="module")
def c(crash_cluster: Cluster) -> StoreClient:
    cl = crash_cluster.client()
    cl.create_table(T, [("id", "int64"), ("v", "string")], primary_key="id", num_buckets=6)
    cl.put(T, [(k, f"init-{k}") for k in list(range(N_KEYS)) + list(EXTRA)])
    return cl


def keys_on(c: StoreClient, sid: str, keys: range | list[int], n: int | None = None) -> list[int]:
    info = c.table(T)
    out = [k for k in keys if info.placement[info.schema.bucket_of_key(k)] == sid]
    return out if n is None else out[:n]


def bucket_of(c: StoreClient, key: int) -> int:
    info = c.table(T)
    return int(info.schema.bucket_of_key(key))


# --- hand-made transactions on one server (raw protocol) ----------------------------------


def txn_stage(cl: Cluster, c: StoreClient, sid: str, txn: str, rows: list[tuple[int, str]]) -> None:
    body = encode_rows(c.table(T).schema.arrow_schema, rows)
    r = cl.request(sid, Kind.TXN_STAGE, {"txn": txn, "part": "", "table": T, "op": "upsert"}, body, int(Flags.COMPACT_ROWS))
    assert r.metadata["staged"] == len(rows)


def txn_prepare_part(cl: Cluster, sid: str, txn: str) -> None:
    cl.request(sid, Kind.TXN_PREPARE, {"txn": txn, "part": ""})


def txn_prepare_all(cl: Cluster, sid: str, txn: str) -> None:
    assert cl.request(sid, Kind.TXN_PREPARE, {"txn": txn, "parts": [""]}).metadata["state"] == "prepared"


def txn_status(cl: Cluster, sid: str, txn: str) -> dict[str, Any]:
    return dict(cl.request(sid, Kind.TXN_STATUS, {"txn": txn}).metadata)


def assert_locked(c: StoreClient, key: int) -> None:
    with pytest.raises(ConflictError):
        c.put(T, [(key, "must-not-be-written")])


def test_idle_transactions_time_out_but_prepared_ones_wait(crash_cluster: Cluster, c: StoreClient) -> None:
    cl = crash_cluster
    ka, kb, kc = (keys_on(c, "s2", STAGED)[i * 10:(i + 1) * 10] for i in range(3))
    # Prepared for commit (durable): the timeout must not touch it.
    txn_stage(cl, c, "s2", "t-prepared", [(k, "prepared") for k in ka])
    txn_prepare_part(cl, "s2", "t-prepared")
    txn_prepare_all(cl, "s2", "t-prepared")
    # Staged and part-prepared (holding key locks, not yet durable), then abandoned.
    txn_stage(cl, c, "s2", "t-idle", [(k, "idle") for k in kb])
    txn_prepare_part(cl, "s2", "t-idle")
    # Only staged (buffered), then abandoned.
    txn_stage(cl, c, "s2", "t-buffered", [(k, "buffered") for k in kc])

    assert c.get_many(T, ka + kb + kc) == [None] * 30  # nothing staged is visible
    assert_locked(c, ka[0])
    assert_locked(c, kb[0])
    assert txn_status(cl, "s2", "t-idle")["state"] == "open"

    wait_until(lambda: txn_status(cl, "s2", "t-idle")["state"] == "aborted", 30, "the idle transaction to time out")
    wait_until(lambda: txn_status(cl, "s2", "t-buffered")["state"] == "aborted", 30, "the buffered transaction to time out")
    # t-prepared has been idle longer than t-idle, yet it still waits for its decision.
    st = txn_status(cl, "s2", "t-prepared")
    assert st["state"] == "prepared"
    assert_locked(c, ka[0])
    # The timed-out ones left no locks and no rows behind.
    assert c.put(T, [(k, "after-timeout") for k in kb + kc]) == 20
    assert c.get_many(T, kb + kc) == [(k, "after-timeout") for k in kb + kc]
    # A late commit of a timed-out transaction is refused; the prepared one commits.
    with pytest.raises(SparkExtError):
        cl.request("s2", Kind.TXN_COMMIT, {"txn": "t-idle", "parts": [""]})
    assert cl.request("s2", Kind.TXN_COMMIT, {"txn": "t-prepared", "parts": [""]}).metadata["state"] == "committed"
    assert c.get_many(T, ka) == [(k, "prepared") for k in ka]
    # Committing again is answered consistently (idempotent).
    assert cl.request("s2", Kind.TXN_COMMIT, {"txn": "t-prepared", "parts": [""]}).metadata["state"] == "committed"
    c.delete(T, ka + kb + kc)


@dataclass
class Op:
    keys: list[int]
    value: str | None  # None: a delete
    start: float
    end: float = 0.0
    acked: bool = False
    error: str = ""
    servers: set[str] = field(default_factory=set)


class Writer(threading.Thread):
    """Writes its own keys (key % n == tid) in a loop, recording every attempt."""

    def __init__(self, c: StoreClient, tid: int, n: int, stop: threading.Event) -> None:
        super().__init__(name=f"writer-{tid}", daemon=True)
        self.c, self.tid, self.stop, self.ops = c, tid, stop, []  # type: ignore[var-annotated]
        self.mine = [k for k in range(N_KEYS) if k % n == tid]
        self.rng = random.Random(1000 + tid)
        info = c.table(T)
        self.server_of = {k: info.placement[info.schema.bucket_of_key(k)] for k in self.mine}

    def run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            seq += 1
            r = self.rng.random()
            if r < 0.5:
                keys, value = [self.rng.choice(self.mine)], f"w{self.tid}-{seq}"
            elif r < 0.75:
                keys, value = self.rng.sample(self.mine, 4), f"w{self.tid}-{seq}"  # usually several servers
            elif r < 0.9:
                keys, value = [self.rng.choice(self.mine)], None
            else:
                keys, value = self.rng.sample(self.mine, 3), None
            op = Op(keys, value, time.monotonic(), servers={self.server_of[k] for k in keys})
            try:
                if value is None:
                    self.c.delete(T, keys)
                else:
                    self.c.put(T, [(k, value) for k in keys])
                op.acked = True
            except SparkExtError as e:
                op.error = type(e).__name__
            op.end = time.monotonic()
            self.ops.append(op)
            if not op.acked:
                time.sleep(0.01)


def allowed_values(k: int, ops: list[Op]) -> set[str | None]:
    """What key ``k`` may hold: its last acknowledged value, or that of any later failed
    attempt (a failed request may or may not have been applied). One writer per key, so
    the writer's order is the order the server applied them in."""
    mine = [o for o in ops if k in o.keys]
    last_acked = max((i for i, o in enumerate(mine) if o.acked), default=-1)
    allowed: set[str | None] = {mine[last_acked].value if last_acked >= 0 else f"init-{k}"}
    allowed.update(o.value for o in mine[last_acked + 1:])
    return allowed


def test_kill_9_under_write_load_then_restart(crash_cluster: Cluster, c: StoreClient) -> None:
    cl = crash_cluster
    s1_staged = keys_on(c, "s1", STAGED)
    k_buffered, k_locked, k_doubt_abort, k_doubt_commit = (s1_staged[i * 10:(i + 1) * 10] for i in range(4))
    # On s1, before the crash: a transaction only staged, one holding key locks (part
    # prepared, not durable), and two prepared for commit (durable, in doubt after it).
    txn_stage(cl, c, "s1", "x-buffered", [(k, "x") for k in k_buffered])
    txn_stage(cl, c, "s1", "x-locked", [(k, "x") for k in k_locked])
    txn_prepare_part(cl, "s1", "x-locked")
    for name, keys in (("x-doubt-abort", k_doubt_abort), ("x-doubt-commit", k_doubt_commit)):
        txn_stage(cl, c, "s1", name, [(k, name) for k in keys])
        txn_prepare_part(cl, "s1", name)
        txn_prepare_all(cl, "s1", name)
    assert_locked(c, k_locked[0])
    assert_locked(c, k_doubt_abort[0])
    assert c.get_many(T, s1_staged[:40]) == [None] * 40

    stop = threading.Event()
    writers = [Writer(cl.client(), tid, 3, stop) for tid in range(3)]
    for w in writers:
        w.start()
    try:
        def acked_on_s1() -> int:
            return sum(1 for w in writers for o in list(w.ops) if o.acked and "s1" in o.servers)

        wait_until(lambda: acked_on_s1() >= 60, 60, "acknowledged writes on s1 before the crash")
        cl.kill_server("s1")  # kill -9, mid-load
        killed_at = time.monotonic()
        cl.wait_server("s1", up=False)

        # While s1 is down: its buckets are offline, with an error naming table and bucket ...
        s1_key = keys_on(c, "s1", EXTRA, 1)[0]
        s0_keys = keys_on(c, "s0", EXTRA, 5)
        with pytest.raises(BucketOfflineError) as ei:
            c.get(T, s1_key)
        b = bucket_of(c, s1_key)
        assert ei.value.details["table"] == T and ei.value.details["bucket"] == b
        assert T in str(ei.value) and f"bucket {b}" in str(ei.value)
        with pytest.raises(BucketOfflineError):
            c.count(T)
        with pytest.raises(BucketOfflineError):
            c.scan(T)
        # ... a statement touching s1 and s0 fails as a whole (nothing written on s0) ...
        with pytest.raises(BucketOfflineError):
            c.put(T, [(s0_keys[0], "half"), (s1_key, "half")])
        assert c.get(T, s0_keys[0]) == (s0_keys[0], f"init-{s0_keys[0]}")
        # ... and the other servers' buckets work for reads and writes.
        assert c.get_many(T, s0_keys) == [(k, f"init-{k}") for k in s0_keys]
        assert c.put(T, [(k, "while-down") for k in s0_keys]) == 5
        assert c.get_many(T, s0_keys) == [(k, "while-down") for k in s0_keys]
        info = c.table(T, refresh=True)
        live_buckets = [bb for bb, s in enumerate(info.placement) if s != "s1"]
        assert c.scan(T, buckets=live_buckets).num_rows > 0
        wait_until(lambda: sum(1 for w in writers for o in list(w.ops)
                               if o.acked and o.start > killed_at and "s1" not in o.servers) >= 30,
                   60, "acknowledged writes on the live servers while s1 is down")
    finally:
        stop.set()
        for w in writers:
            w.join(60)
    assert not any(w.is_alive() for w in writers)
    ops = [o for w in writers for o in w.ops]
    assert any(not o.acked for o in ops if "s1" in o.servers), "the crash interrupted no write"
    assert all(o.error in ("BucketOfflineError", "ConnectionFailedError") for o in ops if not o.acked), \
        {o.error for o in ops if not o.acked}

    cl.restart_server("s1")  # same server id, same data directory

    # Transactions that were never prepared for commit are gone, and so are their locks.
    for name in ("x-buffered", "x-locked"):
        assert txn_status(cl, "s1", name)["state"] == "unknown"
    # The two prepared ones are in doubt: invisible, keys reserved, waiting for a decision.
    st = txn_status(cl, "s1", "x-doubt-abort")
    assert st["state"] == "prepared"
    assert {"x-doubt-abort", "x-doubt-commit"} <= set(st["in_doubt"])
    assert c.get_many(T, s1_staged[:40]) == [None] * 40
    assert_locked(c, k_doubt_abort[0])
    assert_locked(c, k_doubt_commit[0])

    # Decide the load's own interrupted transactions as their coordinator would have:
    # commit where another server committed it, else abort.
    for txn in set(st["in_doubt"]) - {"x-doubt-abort", "x-doubt-commit"}:
        elsewhere = {txn_status(cl, s, txn)["state"] for s in ("s0", "s2")}
        kind = Kind.TXN_COMMIT if "committed" in elsewhere else Kind.TXN_ABORT
        cl.request("s1", kind, {"txn": txn, "parts": [""]})
    assert cl.request("s1", Kind.TXN_ABORT, {"txn": "x-doubt-abort"}).metadata["state"] == "aborted"
    assert cl.request("s1", Kind.TXN_COMMIT, {"txn": "x-doubt-commit", "parts": [""]}).metadata["state"] == "committed"
    assert txn_status(cl, "s1", "x-doubt-commit")["in_doubt"] == []

    # Every acknowledged change is back (or overwritten by a later attempt that failed).
    final = c.get_many(T, list(range(N_KEYS)))
    bad = []
    for k, r in zip(range(N_KEYS), final):
        v = None if r is None else r[1]
        if v not in allowed_values(k, ops):
            bad.append((k, v, sorted(map(str, allowed_values(k, ops)))))
    assert not bad, f"{len(bad)} keys lost an acknowledged write, e.g. {bad[:5]}"
    s1_keys = set(keys_on(c, "s1", range(N_KEYS)))
    assert sum(1 for o in ops if o.acked and o.end < killed_at and s1_keys & set(o.keys)) >= 60

    # The staged rows never appeared; the committed in-doubt ones did; no key is left locked.
    assert c.get_many(T, k_buffered + k_locked + k_doubt_abort) == [None] * 30
    assert c.get_many(T, k_doubt_commit) == [(k, "x-doubt-commit") for k in k_doubt_commit]
    everything = list(range(N_KEYS)) + list(EXTRA) + s1_staged[:40]
    assert c.put(T, [(k, "last") for k in everything]) == len(everything)
    assert c.get_many(T, everything) == [(k, "last") for k in everything]
    assert c.count(T) == len(everything)
