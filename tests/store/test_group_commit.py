"""Group commit with ``flush="commit"``: a commit writes its record and applies its
change under the locks, then waits for the fsync after releasing them, so concurrent
committers share fsyncs; it is acknowledged only once durable.

The fsync is replaced by a gated or counting wrapper around the real one (file fsyncs
only; directory fsyncs pass through uncounted).
"""

from __future__ import annotations

import os
import random
import stat
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from spark_ext.store import Store
from spark_ext.store.wal import WalError
from tests.store.unit_helpers import contents

WAIT = 30.0  # seconds before a test gives up on an event (a hang, not a timing check)


class Fsyncs:
    """Counts file fsyncs; when armed, the next one blocks until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.callers: set[int] = set()  # threads that fsynced a file
        self.armed = False
        self.inside = threading.Event()
        self.release = threading.Event()
        self.fail = False
        self._real = os.fsync
        self._lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            return self._real(fd)
        with self._lock:
            self.calls += 1
            self.callers.add(threading.get_ident())
            gate = self.armed
            self.armed = False
        if gate:
            self.inside.set()
            assert self.release.wait(WAIT)
        if self.fail:
            raise OSError(5, "Input/output error")
        self._real(fd)


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fsyncs]:
    f = Fsyncs()
    monkeypatch.setattr(os, "fsync", f)
    yield f
    f.release.set()


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "db", flush="commit", background=False)
    try:
        yield s
    finally:
        s.close()


def _until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.001)


def _run(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def body() -> None:
        try:
            out.append(("ok", fn()))
        except BaseException as e:  # reported by the caller
            out.append(("error", e))

    th = threading.Thread(target=body)
    th.start()
    return th, out


def test_commits_wait_for_the_fsync_outside_the_locks(durable: Store, fsyncs: Fsyncs) -> None:
    t = durable.create_table("t", [("id", "int64"), ("v", "string")], primary_key="id", num_buckets=2)
    u = durable.create_table("u", [("id", "int64"), ("v", "string")], primary_key="id")
    t.insert([(i, "old") for i in range(10)])
    wal = durable._wal
    assert wal is not None
    fsyncs.calls = 0
    fsyncs.armed = True
    # A one-row upsert (the one-row path) blocks inside its fsync...
    a, a_out = _run(lambda: t.upsert((1, "a")))
    assert fsyncs.inside.wait(WAIT)
    # ... already applied and visible, the table lock released, but not acknowledged.
    assert t.get(1) == (1, "a") and a.is_alive() and wal.durable_lsn < wal.last_lsn

    def change_set() -> None:
        with durable.begin() as cs:
            cs.update("t", [2], {"v": "b"})
            cs.insert("u", (7, "b"))

    def two_phase() -> None:
        cs = durable.begin("tp")
        cs.delete("t", [4])
        cs.prepare()
        cs.commit()

    # Other committers of the same table get through its lock, apply, then wait.
    others = [_run(change_set), _run(lambda: t.upsert([(3, "c"), (30, "c")])), _run(lambda: t.delete(5))]
    _until(lambda: t.get(2) == (2, "b") and t.get(30) == (30, "c") and t.get(5) is None, "the other commits")
    assert u.get(7) == (7, "b")
    assert all(th.is_alive() for th, _ in others)
    assert fsyncs.calls == 1
    fsyncs.release.set()
    for th, _ in [(a, a_out), *others]:
        th.join(WAIT)
    assert a_out == [("ok", 1)] and all(out and out[0][0] == "ok" for _, out in others)
    # The blocked fsync, then one fsync for all three that waited behind it.
    assert fsyncs.calls == 2
    assert wal.durable_lsn == wal.last_lsn
    # Two-phase commit waits too (prepare, then commit), and is durable when it returns.
    tp, tp_out = _run(two_phase)
    tp.join(WAIT)
    assert tp_out == [("ok", None)] and t.get(4) is None and wal.durable_lsn == wal.last_lsn


def test_concurrent_committers_are_all_durable(tmp_path: Path, fsyncs: Fsyncs) -> None:
    """Threads commit through every path; whenever a commit returns, the log is durable
    through its record, and after a reopen every acknowledged change is there."""
    s = Store(tmp_path / "db", flush="commit", background=False)
    t = s.create_table("t", [("id", "int64"), ("v", "int64")], primary_key="id", num_buckets=4)
    wal = s._wal
    assert wal is not None
    local = threading.local()
    real_append = wal.append

    def recording_append(data: Any, **kw: Any) -> int:
        lsn = real_append(data, **kw)
        local.lsn = max(getattr(local, "lsn", 0), lsn)
        return lsn

    wal.append = recording_append  # type: ignore[method-assign]
    errors: list[BaseException] = []
    expected: dict[int, tuple[int, int] | None] = {}
    lock = threading.Lock()
    commits = [0]

    def worker(w: int) -> None:
        rng = random.Random(w)
        mine: dict[int, tuple[int, int] | None] = {}
        base = w * 1000
        for i in range(60):
            k = base + rng.randrange(40)
            op = rng.randrange(6)
            local.lsn = 0
            try:
                if op == 0:
                    t.upsert((k, i))
                    mine[k] = (k, i)
                elif op == 1:
                    if t.delete(k):
                        mine[k] = None
                elif op == 2:
                    if t.update(k, {"v": -i}):
                        mine[k] = (k, -i)
                elif op == 3:
                    t.upsert([(k, i), (k + 500, i)])
                    mine[k], mine[k + 500] = (k, i), (k + 500, i)
                else:
                    cs = s.begin()
                    cs.upsert("t", (k, i))
                    cs.delete("t", [k + 1])
                    if op == 5:
                        cs.prepare()
                        assert wal.durable_lsn >= local.lsn > 0
                    cs.commit()
                    mine[k], mine[k + 1] = (k, i), None
                if local.lsn:
                    assert wal.durable_lsn >= local.lsn, "acknowledged before its fsync"
                    with lock:
                        commits[0] += 1
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
                return
        with lock:
            expected.update(mine)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(WAIT * 4)
    assert not errors, errors[:3]
    assert fsyncs.calls <= commits[0] + 8  # never more than one per commit (+ prepares)
    want = sorted(r for r in expected.values() if r is not None)
    assert contents(t) == want
    s.close()
    s = Store(tmp_path / "db", flush="commit", background=False)
    try:
        assert contents(s.table("t")) == want
    finally:
        s.close()


def test_failed_fsync_after_apply(tmp_path: Path, fsyncs: Fsyncs) -> None:
    """The commit raises; its change is applied in memory already (documented); the log
    refuses every further write; reopened, the store keeps what reached the disk."""
    s = Store(tmp_path / "db", flush="commit", background=False)
    t = s.create_table("t", [("id", "int64"), ("v", "string")], primary_key="id")
    t.upsert((1, "kept"))
    fsyncs.fail = True
    with pytest.raises(WalError, match="fsync"):
        t.upsert((2, "unacknowledged"))
    assert t.get(2) == (2, "unacknowledged")
    fsyncs.fail = False
    with pytest.raises(WalError, match="failed earlier"):
        t.upsert((3, "refused"))
    with pytest.raises(WalError):
        with s.begin() as cs:
            cs.upsert("t", (4, "refused"))
    assert t.get(3) is None and t.get(4) is None
    s.close()
    s = Store(tmp_path / "db", background=False)
    try:
        assert s.table("t").get(1) == (1, "kept")
        assert s.table("t").get(3) is None and s.table("t").get(4) is None
    finally:
        s.close()


@pytest.mark.parametrize("flush", ["group", "off"])
def test_checkpoint_makes_the_log_durable_first(tmp_path: Path, flush: str, fsyncs: Fsyncs) -> None:
    s = Store(tmp_path / "db", flush=flush, background=False)
    try:
        t = s.create_table("t", [("id", "int64"), ("v", "string")], primary_key="id")
        for i in range(5):
            t.upsert((i, "x"))
        assert s._wal is not None
        lsn = s.checkpoint()
        assert s._wal.durable_lsn >= lsn > 0
    finally:
        s.close()


def test_group_and_off_do_not_wait(tmp_path: Path, fsyncs: Fsyncs) -> None:
    for flush in ("group", "off"):
        s = Store(tmp_path / flush, flush=flush, background=False)
        try:
            t = s.create_table("t", [("id", "int64"), ("v", "string")], primary_key="id")
            fsyncs.callers.clear()
            for i in range(20):
                t.upsert((i, "x"))
                t.delete(i + 1)
                with s.begin() as cs:
                    cs.upsert("t", (100 + i, "y"))
            assert t.count() == 40
            assert threading.get_ident() not in fsyncs.callers  # the group flusher may fsync
        finally:
            s.close()
