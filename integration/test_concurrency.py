"""32 client threads mixing get/put/update/delete on overlapping keys of a 3-server table.

How the result is judged
------------------------
Every write carries a value no other write uses (``t<thread>-<seq>``), and every call
is recorded with its real-time interval ``[start, end]`` (monotonic clock of this
process, taken just before sending and just after the reply). Each key is a register
whose state is a value or "absent", and each acknowledged operation acts on it:

* ``put v`` sets ``v``;
* ``update v`` that reports 1 row sets ``v`` (the key existed); one that reports 0 rows
  leaves it absent (the key did not exist);
* ``delete`` leaves it absent (single-key deletes also tell whether it existed);
* ``get``/``get_many`` observe it.

The servers apply each key's changes one at a time (their commit order), and each
change takes effect at some instant inside its call's interval, so that commit order
is a serial order of the acknowledged operations that respects real time: if call A
returned before call B was sent, A comes first. Two checks follow:

1. Final state (cheap, and what the issue asks): after all threads stopped, each key
   holds the value of the last change in commit order. That change cannot have been
   strictly followed in real time by another acknowledged change to the key (else
   that one would come later), so the final value must be the value of an
   acknowledged change to the key that no other acknowledged change started after
   the end of. An absent key must likewise end with such a change that leaves it
   absent. Values are unique, so a value names exactly one write; a value from a
   failed (refused) write, or an old value that was strictly overwritten, fails it.
2. Full history (stronger): for every key, some serial order of all its acknowledged
   operations that respects real time must explain every result: each get returns
   the state at its point, each update/delete count matches whether the key existed.
   Found by a depth-first search over the operations that may go next (Wing and
   Gong's method), memoized on (operations done, state).

Only ``ConflictError`` may fail a call (a multi-server statement holds key locks
between prepare and commit; a write that meets them is refused at once). A refused
statement must leave nothing behind, so failed calls count as never applied: if
one of their values is ever seen, check 2 (and usually 1) fails.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from integration.cluster import Cluster
from spark_ext.client.client import StoreClient
from spark_ext.exceptions import ConflictError

T = "default.conc"
THREADS = 32
OPS_PER_THREAD = 60
KEYS = list(range(40))


@dataclass
class Call:
    kind: str  # get, get_many, put, update, delete
    keys: list[int]
    value: str | None
    start: float
    end: float = 0.0
    ok: bool = False
    result: Any = None  # rows (reads) or count (update/delete)


def worker(c: StoreClient, tid: int, barrier: threading.Barrier, out: list[Call], errors: list[BaseException]) -> None:
    rng = random.Random(tid)
    barrier.wait()
    try:
        for seq in range(OPS_PER_THREAD):
            r = rng.random()
            value = f"t{tid}-{seq}"
            if r < 0.25:
                call = Call("get", [rng.choice(KEYS)], None, 0.0)
            elif r < 0.35:
                call = Call("get_many", rng.sample(KEYS, 3), None, 0.0)
            elif r < 0.55:
                call = Call("put", [rng.choice(KEYS)], value, 0.0)
            elif r < 0.65:
                call = Call("put", rng.sample(KEYS, 3), value, 0.0)  # often several servers: a transaction
            elif r < 0.82:
                call = Call("update", [rng.choice(KEYS)], value, 0.0)
            elif r < 0.95:
                call = Call("delete", [rng.choice(KEYS)], None, 0.0)
            else:
                call = Call("delete", rng.sample(KEYS, 2), None, 0.0)
            call.start = time.monotonic()
            try:
                if call.kind == "get":
                    call.result = [c.get(T, call.keys[0])]
                elif call.kind == "get_many":
                    call.result = c.get_many(T, call.keys)
                elif call.kind == "put":
                    assert c.put(T, [(k, call.value) for k in call.keys]) == len(call.keys)
                elif call.kind == "update":
                    call.result = c.update(T, call.keys, {"v": call.value})
                else:
                    call.result = c.delete(T, call.keys)
                call.ok = True
            except ConflictError:
                pass
            call.end = time.monotonic()
            out.append(call)
    except BaseException as e:  # anything else fails the test (reported by the main thread)
        errors.append(e)


# --- per-key histories -----------------------------------------------------------------------

ABSENT = None


@dataclass
class KeyOp:
    """One acknowledged operation as seen by one key."""

    kind: str  # "write" (sets state to value), "read" (observes value), "exists" / "absent" + write
    value: Any  # written or observed value (None: absent)
    start: float
    end: float
    require: str = ""  # "present" / "absent": the state the operation found (update/delete counts)


def key_histories(calls: list[Call]) -> dict[int, list[KeyOp]]:
    h: dict[int, list[KeyOp]] = {k: [] for k in KEYS}
    for c in calls:
        if not c.ok:
            continue
        if c.kind in ("get", "get_many"):
            for k, row in zip(c.keys, c.result):
                h[k].append(KeyOp("read", None if row is None else row[1], c.start, c.end))
        elif c.kind == "put":
            for k in c.keys:
                h[k].append(KeyOp("write", c.value, c.start, c.end))
        elif c.kind == "update":
            assert c.result in (0, 1), c
            k = c.keys[0]
            if c.result == 1:
                h[k].append(KeyOp("write", c.value, c.start, c.end, require="present"))
            else:
                h[k].append(KeyOp("write", ABSENT, c.start, c.end, require="absent"))
        else:  # delete
            assert 0 <= c.result <= len(c.keys), c
            for k in c.keys:
                req = ("present" if c.result == 1 else "absent") if len(c.keys) == 1 else ""
                h[k].append(KeyOp("write", ABSENT, c.start, c.end, require=req))
    return h


def check_final_state(k: int, ops: list[KeyOp], initial: str, final: str | None) -> str | None:
    """Check 1 (see the module doc). Returns a complaint or None."""
    writes = [o for o in ops if o.kind == "write"]
    if not writes:
        return None if final == initial else f"key {k}: never written, yet holds {final!r} (initially {initial!r})"
    last_candidates = [w for w in writes if not any(w2.start > w.end for w2 in writes)]
    if any(w.value == final for w in last_candidates):
        return None
    return (f"key {k}: final value {final!r} is not the value of an acknowledged write that could be last; "
            f"candidates: {sorted(str(w.value) for w in last_candidates)}")


def check_history(k: int, ops: list[KeyOp], initial: str, final: str | None) -> str | None:
    """Check 2 (see the module doc): a real-time-respecting serial order explaining every result."""
    end_of_time = max((o.end for o in ops), default=0.0) + 1.0
    ops = ops + [KeyOp("read", final, end_of_time, end_of_time + 1.0)]  # the final read comes last
    n = len(ops)
    order = sorted(range(n), key=lambda i: ops[i].start)
    failed: set[tuple[frozenset[int], Any]] = set()

    def step(o: KeyOp, state: Any) -> tuple[bool, Any]:
        if o.require == "present" and state is ABSENT:
            return False, state
        if o.require == "absent" and state is not ABSENT:
            return False, state
        if o.kind == "read":
            return o.value == state, state
        return True, o.value

    def search(done: frozenset[int], state: Any) -> bool:
        if len(done) == n:
            return True
        if (done, state) in failed:
            return False
        # An operation may go next only if no pending one ended before it started.
        pending = [i for i in order if i not in done]
        horizon = min(ops[i].end for i in pending)
        for i in pending:
            o = ops[i]
            if o.start > horizon:
                break  # sorted by start: the rest start later still
            ok, nxt = step(o, state)
            if ok and search(done | {i}, nxt):
                return True
        failed.add((done, state))
        return False

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * n + 1000))
    try:
        if search(frozenset(), initial):
            return None
    finally:
        sys.setrecursionlimit(limit)
    return f"key {k}: no serial order of its {n - 1} acknowledged operations explains their results"


@pytest.fixture(scope="module")
def c(cluster: Cluster) -> StoreClient:
    return cluster.client()


def test_32_threads_overlapping_keys(cluster: Cluster, c: StoreClient) -> None:
    info = c.create_table(T, [("id", "int64"), ("v", "string")], primary_key="id", num_buckets=6)
    assert len({info.placement[info.schema.bucket_of_key(k)] for k in KEYS}) == 3
    initial = {k: f"init-{k}" for k in KEYS}
    c.put(T, [(k, v) for k, v in initial.items()])

    client = cluster.client()  # one client shared by all threads (it is thread-safe)
    barrier = threading.Barrier(THREADS)
    results: list[list[Call]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []
    threads = [threading.Thread(target=worker, args=(client, tid, barrier, results[tid], errors), daemon=True)
               for tid in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "worker threads did not finish"
    assert not errors, f"{len(errors)} worker(s) failed, first: {errors[0]!r}"
    calls = [x for r in results for x in r]
    assert len(calls) == THREADS * OPS_PER_THREAD

    # The mix really happened: many acknowledged writes of each kind, reads, few refusals.
    ok = [x for x in calls if x.ok]
    kinds = {kd: sum(1 for x in ok if x.kind == kd) for kd in ("get", "get_many", "put", "update", "delete")}
    assert all(n >= 20 for n in kinds.values()), kinds
    # Reads never meet locks; writes may be refused (no-wait locking), but most get through.
    assert all(x.ok for x in calls if x.kind in ("get", "get_many"))
    writes = [x for x in calls if x.kind in ("put", "update", "delete")]
    assert sum(x.ok for x in writes) >= len(writes) // 2, f"{sum(not x.ok for x in writes)} of {len(writes)} writes refused"
    assert any(x.kind == "update" and x.result == 0 for x in ok) and any(x.kind == "update" and x.result == 1 for x in ok)

    final_rows = c.get_many(T, KEYS)
    final = {k: (None if r is None else r[1]) for k, r in zip(KEYS, final_rows)}
    hist = key_histories(calls)
    problems = [p for k in KEYS if (p := check_final_state(k, hist[k], initial[k], final[k]))]
    assert not problems, "\n".join(problems[:10])
    problems = [p for k in KEYS if (p := check_history(k, hist[k], initial[k], final[k]))]
    assert not problems, "\n".join(problems[:10])

    # The table agrees with itself: a scan and a count give the same rows as point reads.
    scanned = {r["id"]: r["v"] for r in c.scan(T).to_pylist()}
    assert scanned == {k: v for k, v in final.items() if v is not None}
    assert c.count(T) == len(scanned)
    # Nothing is left locked by the transactions of the load.
    assert c.put(T, [(k, "after") for k in KEYS]) == len(KEYS)


def test_the_checks_catch_wrong_histories() -> None:
    """The judging functions themselves fail on histories no correct server could give."""
    w = KeyOp("write", "a", 0.0, 1.0)
    w2 = KeyOp("write", "b", 2.0, 3.0)  # strictly after w
    assert check_final_state(0, [w, w2], "init", "b") is None
    assert check_final_state(0, [w, w2], "init", "a") is not None  # lost the later write
    assert check_final_state(0, [w, w2], "init", "zzz") is not None  # a value nobody wrote
    overlapping = KeyOp("write", "c", 0.5, 2.5)
    assert check_final_state(0, [w, w2, overlapping], "init", "c") is None
    assert check_history(0, [w, w2], "init", "b") is None
    assert check_history(0, [w, KeyOp("read", "init", 1.5, 1.6), w2], "init", "b") is not None  # stale read
    assert check_history(0, [w, KeyOp("write", None, 1.5, 1.6, require="absent"), w2], "init", "b") is not None
    assert check_history(0, [KeyOp("write", None, 0, 1, require="present"), KeyOp("read", None, 2, 3)], "init", None) is None
    later = KeyOp("write", "a", 0.6, 1.0)
    assert check_history(0, [KeyOp("read", "a", 0.0, 0.5), later], "init", "a") is not None  # read from the future
    assert check_history(0, [KeyOp("read", "a", 0.0, 0.5), KeyOp("write", "a", 0.4, 1.0)], "init", "a") is None
