"""Bulk writes of a statement in many parts: int-key bulks ordered by (bucket, key) at
staging, key locks held as sorted arrays, presorted runs at commit. Atomicity, duplicate
keys across parts, conflicts with point writes and other change sets, recovery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from spark_ext.exceptions import ConflictError, DuplicateKeyError
from spark_ext.store import Store
from spark_ext.store.keylocks import SortedKeyLocks
from spark_ext.store.txn import sort_by_bucket_and_key
from tests.store.unit_helpers import assert_refused, contents

SCHEMA = [("id", "int64"), ("v", "string"), ("x", "float64")]


def _batch(ids: list[int] | np.ndarray, tag: str = "v") -> pa.Table:
    ids = [int(i) for i in ids]
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "v": [f"{tag}{i}" for i in ids],
        "x": pa.array([i / 2 for i in ids], pa.float64()),
    })


def _parts(rng: np.random.Generator, n: int, parts: int) -> list[np.ndarray]:
    ids = rng.permutation(n).astype(np.int64) * 7 - 3 * n  # negative keys too
    return np.array_split(ids, parts)


@pytest.fixture
def t(store: Store):
    return store.create_table("t", SCHEMA, primary_key="id", num_buckets=4)


def test_parts_commit_as_one_statement_in_sorted_runs(store: Store, t) -> None:
    t.insert(_batch(range(10_000_000, 10_000_300)))
    rng = np.random.default_rng(7)
    parts = _parts(rng, 20_000, 9)
    cs = store.begin("stmt")
    for p in parts:
        assert cs.insert("t", _batch(p)) == len(p)
    # Nothing visible before commit; every key locked, in arrays, none in the dict.
    assert t.count() == 300 and t.get(int(parts[3][5])) is None
    assert not t.locks and len(t.bulk_locks[cs]) == 20_000
    cs.prepare()
    cs.commit()
    assert t.count() == 20_300
    assert not t.locks and not t.bulk_locks
    for p in parts:
        for k in p[:50].tolist():
            assert t.get(k) == (k, f"v{k}", k / 2)
    t._check()  # runs strictly sorted, every key in its bucket, one place per key
    assert sorted(r[0] for r in contents(t)) == sorted(np.concatenate(parts).tolist() + list(range(10_000_000, 10_000_300)))


def test_duplicate_across_parts_names_key_and_table_and_abort_leaves_nothing(store: Store, t) -> None:
    before = contents(t)
    cs = store.begin("dup")
    cs.insert("t", _batch(range(0, 1000)))
    cs.insert("t", _batch(range(1000, 2000)))
    with pytest.raises(DuplicateKeyError) as ei:
        cs.insert("t", _batch(list(range(5000, 5500)) + [1234]))
    assert "1234" in str(ei.value) and "'t'" in str(ei.value)
    cs.abort()
    assert contents(t) == before and not t.locks and not t.bulk_locks
    t._check()


def test_duplicate_within_one_batch_and_with_committed_rows(store: Store, t) -> None:
    t.insert(_batch(range(0, 500)))
    cs = store.begin()
    assert_refused(t, lambda: cs.insert("t", _batch(list(range(1000, 1300)) + [1100])), DuplicateKeyError, "id=1100", "twice")
    e = assert_refused(t, lambda: cs.insert("t", _batch(range(400, 800))), DuplicateKeyError, "'t'", "already exists")
    assert 400 <= int(str(e).split("id=")[1].split()[0]) < 500  # names one of the existing keys
    assert not t.locks and not t.bulk_locks  # refused calls locked nothing
    cs.abort()


def test_bulk_locks_refuse_other_writers_until_commit(store: Store, t) -> None:
    t.insert(_batch(range(0, 200)))
    holder = store.begin("holder")
    holder.insert("t", _batch(range(1000, 3000)))
    holder.upsert("t", _batch(range(0, 150), tag="new"))
    other = store.begin("other")
    with pytest.raises(ConflictError, match="holder"):
        other.insert("t", (2500, "p", 1.0))  # point write
    with pytest.raises(ConflictError, match="holder"):
        other.insert("t", _batch(range(2900, 3300)))  # bulk overlapping the end
    with pytest.raises(ConflictError, match="holder"):
        other.delete("t", [10])
    with pytest.raises(ConflictError, match="holder"):
        other.truncate("t")
    # One-row autocommit writes take the store's fast path: the same locks apply.
    with pytest.raises(ConflictError, match="holder"):
        t.upsert((1500, "p", 1.0))
    with pytest.raises(ConflictError, match="holder"):
        t.update(100, {"v": "u"})
    with pytest.raises(ConflictError, match="holder"):
        t.delete(1999)
    assert other.insert("t", _batch(range(5000, 5200))) == 200  # disjoint keys: fine
    assert t.get(100) == (100, "v100", 50.0)  # the upsert is not visible yet
    holder.commit()
    other.commit()
    assert t.get(100) == (100, "new100", 50.0) and t.get(2999) is not None and t.get(5100) is not None
    assert t.count() == 200 + 2000 + 200
    t.upsert((1500, "p", 1.0))
    assert t.get(1500) == (1500, "p", 1.0)
    assert not t.locks and not t.bulk_locks
    t._check()


def test_mixed_point_and_bulk_changes_of_one_set(store: Store, t) -> None:
    t.insert(_batch(range(0, 300)))
    cs = store.begin()
    cs.insert("t", _batch(range(1000, 1400)))
    cs.delete("t", [1005, 10])              # a key of its own bulk, a committed key
    cs.update("t", [1006], {"v": "upd"})     # own bulk row, now a point change
    cs.insert("t", _batch([1005, 10] + list(range(2000, 2200)), tag="again"))  # back again
    cs.upsert("t", _batch(range(1100, 1300), tag="ups"))  # supersedes part of the first bulk
    with pytest.raises(DuplicateKeyError, match="1350"):
        cs.insert("t", _batch([1350] + list(range(3000, 3200))))  # live in its first bulk
    cs.commit()
    assert t.get(1005) == (1005, "again1005", 502.5)
    assert t.get(10) == (10, "again10", 5.0)
    assert t.get(1006)[1] == "upd"
    assert t.get(1150)[1] == "ups1150" and t.get(1350)[1] == "v1350"
    assert t.count() == 300 + 400 + 200
    assert not t.locks and not t.bulk_locks
    t._check()


def test_truncate_after_bulks_releases_their_locks(store: Store, t) -> None:
    t.insert(_batch(range(0, 300)))
    cs = store.begin()
    cs.insert("t", _batch(range(1000, 1500)))
    cs.truncate("t")
    assert not t.bulk_locks and not t.locks and t.truncating is cs
    cs.insert("t", _batch(range(0, 200), tag="after"))  # keys of the truncated rows: fine
    cs.commit()
    assert t.count() == 200 and t.get(5) == (5, "after5", 2.5)
    assert not t.locks and not t.bulk_locks and t.truncating is None


def test_hidden_rowid_table_bulk_parts(store: Store) -> None:
    h = store.create_table("h", [("v", "string")], num_buckets=3)
    cs = store.begin()
    for i in range(5):
        cs.insert("h", pa.table({"v": [f"r{i}-{j}" for j in range(400)]}))
    cs.commit()
    assert h.count() == 2000 and not h.locks and not h.bulk_locks
    h._check()


def test_prepared_bulk_statement_survives_a_restart_in_doubt(tmp_path: Path) -> None:
    s = Store(tmp_path, background=False)
    s.create_table("t", SCHEMA, primary_key="id", num_buckets=4)
    cs = s.begin("doubt")
    cs.insert("t", _batch(range(0, 1000)))
    cs.insert("t", _batch(range(1000, 2500)))
    cs.prepare()
    s._wal.close()  # a crash after phase 1: nothing more reaches the log
    s2 = Store(tmp_path, background=False)
    try:
        t2 = s2.table("t")
        assert s2.in_doubt() == ["doubt"] and t2.count() == 0
        with pytest.raises(ConflictError):
            t2.upsert((5, "x", 0.0))  # restored with its locks
        s2.transaction("doubt").commit()
        assert t2.count() == 2500 and t2.get(2499) == (2499, "v2499", 1249.5)
        assert not t2.locks and not t2.bulk_locks
        t2._check()
    finally:
        s2.close()
    s3 = Store(tmp_path, background=False)  # and the commit itself was logged
    try:
        assert s3.table("t").count() == 2500
    finally:
        s3.close()


def test_one_phase_bulk_commit_is_recovered(tmp_path: Path) -> None:
    s = Store(tmp_path, background=False)
    s.create_table("t", SCHEMA, primary_key="id", num_buckets=4)
    cs = s.begin("one")
    for lo in range(0, 3000, 1000):
        cs.insert("t", _batch(range(lo, lo + 1000)))
    cs.commit()
    s.close()
    s2 = Store(tmp_path, background=False)
    try:
        t2 = s2.table("t")
        assert t2.count() == 3000 and t2.get(2222) == (2222, "v2222", 1111.0)
        t2._check()
    finally:
        s2.close()


def test_sort_by_bucket_and_key_and_sorted_key_locks(store: Store, t) -> None:
    rng = np.random.default_rng(3)
    ids = rng.choice(10**12, 5000, replace=False).astype(np.int64) - 5 * 10**11
    batch = t.schema.conform_batch(_batch(ids))
    out, keys, bounds = sort_by_bucket_and_key(t.schema, batch)
    assert bounds[0] == 0 and bounds[-1] == 5000
    assert out.column(0).to_pylist() == keys.tolist()
    for b in range(4):
        seg = keys[bounds[b]:bounds[b + 1]]
        assert np.all(seg[:-1] < seg[1:])
        assert all(t.schema.bucket_of_key(int(k)) == b for k in seg[:100])
    assert sorted(keys.tolist()) == sorted(ids.tolist())
    locks = SortedKeyLocks(4)
    half = 2500
    first = t.schema.conform_batch(_batch(ids[:half]))
    second = t.schema.conform_batch(_batch(ids[half:]))
    for part in (first, second):
        _, k, bd = sort_by_bucket_and_key(t.schema, part)
        locks.add(k, bd)
    assert len(locks) == 5000 and sorted(locks.keys()) == sorted(ids.tolist())
    for k in ids[:200].tolist():
        assert locks.contains(t.schema.bucket_of_key(k), k)
    assert not locks.contains(t.schema.bucket_of_key(12345), 12345) or 12345 in ids
    probe = t.schema.conform_batch(_batch(np.concatenate([ids[:10], np.arange(10**13, 10**13 + 10)])))
    _, pk, pb = sort_by_bucket_and_key(t.schema, probe)
    assert int(locks.hits(pk, pb).sum()) == 10


def test_bulk_upsert_over_whole_runs_drops_them(store: Store, t) -> None:
    rng = np.random.default_rng(11)
    ids = rng.permutation(6000).astype(np.int64)
    for lo in range(0, 6000, 2000):
        t.insert(_batch(ids[lo:lo + 2000]))  # three runs per bucket
    runs_before = sum(len(b.runs) for b in t.buckets)
    t.upsert(_batch(ids[:4000], tag="new"))  # covers the first two runs exactly
    t.upsert(_batch(ids[4000:4500], tag="part"))  # a part of the third
    assert t.count() == 6000
    assert sum(len(b.runs) for b in t.buckets) == runs_before  # two dropped per bucket, two added
    for k in ids[:20].tolist():
        assert t.get(k) == (k, f"new{k}", k / 2)
    for k in ids[4000:4020].tolist():
        assert t.get(k)[1] == f"part{k}"
    for k in ids[5000:5020].tolist():
        assert t.get(k)[1] == f"v{k}"
    t._check()
    t.compact()
    assert t.count() == 6000 and sorted(r[0] for r in contents(t)) == sorted(ids.tolist())


@pytest.mark.parametrize("two_phase", [False, True])
def test_rows_encoded_for_the_log_when_they_arrive_are_logged_as_they_are(tmp_path: Path, two_phase: bool) -> None:
    from spark_ext.store.txn import OrderedBatch, order_rows

    s = Store(tmp_path, background=False)
    t = s.create_table("t", SCHEMA, primary_key="id", num_buckets=4)
    rng = np.random.default_rng(13)
    parts = _parts(rng, 9000, 3)
    cs = s.begin("enc")
    for p in parts:
        ob = order_rows(t.schema, _batch(p), encode=True)
        assert isinstance(ob, OrderedBatch) and ob.ipc is not None
        cs.insert("t", ob)
    cs.delete("t", [int(parts[1][7])])  # a superseded row: that bulk is logged re-encoded
    if two_phase:
        cs.prepare()
    cs.commit()
    before = contents(t)
    assert len(before) == 8999
    t.compact()
    assert contents(t) == before
    s.close()
    s2 = Store(tmp_path, background=False)
    try:
        assert contents(s2.table("t")) == before
        s2.table("t")._check()
    finally:
        s2.close()


def _staged(s: Store, cs, t, ids: np.ndarray, tag: str = "v"):
    """An ordered batch of ``ids`` whose rows are logged now, as a server does when a
    batch arrives (STAGE record), ready for ``cs.insert``/``cs.upsert``."""
    from spark_ext.store.txn import OrderedBatch, order_rows

    ob = order_rows(t.schema, _batch(ids, tag), encode=True)
    assert isinstance(ob, OrderedBatch) and ob.ipc is not None
    ob.lsn = s.log_staged(cs, t, ob.ipc)
    assert ob.lsn > 0
    return ob


@pytest.mark.parametrize("how", ["one_phase", "two_phase", "checkpoint_then_commit", "crash_in_doubt"])
def test_rows_logged_when_staged_are_recovered_through_the_decision(tmp_path: Path, how: str) -> None:
    s = Store(tmp_path, background=False)
    t = s.create_table("t", SCHEMA, primary_key="id", num_buckets=4)
    t.insert(_batch(range(10**6, 10**6 + 100)))
    rng = np.random.default_rng(17)
    parts = _parts(rng, 9000, 3)
    cs = s.begin("staged")
    for p in parts:
        cs.insert("t", _staged(s, cs, t, p))
    _staged(s, cs, t, np.arange(5 * 10**6, 5 * 10**6 + 500))  # a failed task attempt's rows: never staged
    # The decision refers to the STAGE records instead of holding the rows again.
    assert [type(b) for b, _ in cs.changes()[0][3]] == [int, int, int]
    if how in ("checkpoint_then_commit", "crash_in_doubt"):
        if how == "crash_in_doubt":
            cs.prepare()
        s.checkpoint()  # must keep the undecided transaction's STAGE records
        t.insert(_batch(range(2 * 10**6, 2 * 10**6 + 10)))
        s.checkpoint()
    if how == "crash_in_doubt":
        s._wal.close()  # a crash after phase 1
        s = Store(tmp_path, background=False)
        assert s.in_doubt() == ["staged"] and s.table("t").count() == 110
        with pytest.raises(ConflictError):
            s.table("t").upsert((int(parts[0][0]), "x", 0.0))  # restored with its locks
        s.checkpoint()  # the restored transaction's records are kept again
        s.transaction("staged").commit()
    else:
        if how == "two_phase":
            cs.prepare()
        cs.commit()
    expected = 9100 + (10 if how in ("checkpoint_then_commit", "crash_in_doubt") else 0)
    before = contents(s.table("t"))
    assert len(before) == expected
    s._wal.close()  # kill -9 after the acknowledged commit
    s2 = Store(tmp_path, background=False)
    try:
        t2 = s2.table("t")
        assert contents(t2) == before and not s2.in_doubt()
        assert t2.get(5 * 10**6) is None
        t2._check()
    finally:
        s2.close()


def test_aborted_statement_with_logged_rows_leaves_nothing_after_a_restart(tmp_path: Path) -> None:
    s = Store(tmp_path, background=False)
    t = s.create_table("t", SCHEMA, primary_key="id", num_buckets=4)
    t.insert(_batch(range(0, 50)))
    cs = s.begin("gone")
    cs.insert("t", _staged(s, cs, t, np.arange(100, 3100)))
    cs.abort()
    cs2 = s.begin("open")  # logged, never decided: a crash in the middle of the statement
    cs2.insert("t", _staged(s, cs2, t, np.arange(5000, 8000)))
    s._wal.close()
    s2 = Store(tmp_path, background=False)
    try:
        t2 = s2.table("t")
        assert t2.count() == 50 and t2.get(100) is None and t2.get(5000) is None
        assert not s2.in_doubt() and not s2._staged
        cs3 = s2.begin("again")  # the keys are free
        cs3.insert("t", _staged(s2, cs3, t2, np.arange(100, 3100)))
        cs3.commit()
        assert t2.count() == 3050
    finally:
        s2.close()


def test_dense_key_locks_agree_with_a_set_and_turn_off_when_spread(store: Store, t) -> None:
    rng = np.random.default_rng(19)
    ids = rng.permutation(40_000).astype(np.int64) - 20_000  # dense, negative keys too
    locks = SortedKeyLocks(4)
    locked: set[int] = set()
    probe_ids = np.concatenate([ids, np.arange(-60_000, -50_000), np.arange(50_000, 60_000),
                                np.array([-(2**63), 2**63 - 1], dtype=np.int64)])
    _, pk, pb = sort_by_bucket_and_key(t.schema, t.schema.conform_batch(_batch(probe_ids)))

    def check() -> None:
        assert locks.hits(pk, pb).tolist() == [int(k) in locked for k in pk]
        for k in pk[::97].tolist():
            assert locks.contains(t.schema.bucket_of_key(k), k) == (k in locked)
        assert sorted(locks.keys()) == sorted(locked) and len(locks) == len(locked)

    for part in np.array_split(ids, 8):
        _, k, bd = sort_by_bucket_and_key(t.schema, t.schema.conform_batch(_batch(part)))
        locks.add(k, bd)
        locked.update(part.tolist())
        assert locks.dense is not None
        check()
    far = np.array([2**62, -(2**62)], dtype=np.int64)  # too spread: binary searches from here
    _, k, bd = sort_by_bucket_and_key(t.schema, t.schema.conform_batch(_batch(far)))
    locks.add(k, bd)
    locked.update(far.tolist())
    assert locks.dense is None
    check()
    edge = SortedKeyLocks(4)  # a dense array ending at the largest key
    top = np.arange(2**63 - 1000, 2**63 - 1, dtype=np.int64)
    _, k, bd = sort_by_bucket_and_key(t.schema, t.schema.conform_batch(_batch(top)))
    edge.add(k, bd)
    assert edge.dense is not None
    assert edge.hits(pk, pb).tolist() == [False] * len(pk)
    assert edge.hits(k, bd).all()


def _add(locks: SortedKeyLocks, t, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, k, bd = sort_by_bucket_and_key(t.schema, t.schema.conform_batch(_batch(ids)))
    locks.add(k, bd)
    return k, bd


def test_dense_key_lock_array_stays_o_of_keys_for_sparse_bulks(t) -> None:
    """A small bulk of spread keys (many concurrent statements may hold one each) must not
    get a lock array of megabytes: at most max(DENSE_MIN, DENSE_PER_KEY x keys) bytes."""
    rng = np.random.default_rng(23)
    bound = max(SortedKeyLocks.DENSE_MIN, SortedKeyLocks.DENSE_PER_KEY * 128)
    for spread in (10_000, 1 << 20, 4 << 20, 1 << 40):
        ids = rng.choice(spread, 128, replace=False).astype(np.int64)
        locks = SortedKeyLocks(4)
        k, bd = _add(locks, t, ids)
        assert locks.dense is None or len(locks.dense) <= bound, spread
        assert (locks.dense is not None) == (spread <= 10_000)  # small spans keep the fast path
        assert locks.hits(k, bd).all() and sorted(locks.keys()) == sorted(ids.tolist())
        probe = np.setdiff1d(np.arange(0, 5000, dtype=np.int64), ids)
        _, pk, pb = sort_by_bucket_and_key(t.schema, t.schema.conform_batch(_batch(probe)))
        assert not locks.hits(pk, pb).any()
    # A statement growing by parts never holds more than the bound of its key count.
    locks = SortedKeyLocks(4)
    ids = rng.permutation(1 << 21).astype(np.int64)
    for part in np.array_split(ids, 64):
        _add(locks, t, part)
        assert locks.dense is None or len(locks.dense) <= max(SortedKeyLocks.DENSE_MIN,
                                                              SortedKeyLocks.DENSE_PER_KEY * len(locks))
    assert locks.dense is not None


def test_dense_key_locks_come_back_when_spread_first_parts_fill_in(t) -> None:
    """The first parts of a bulk load may be a few spread rows of every part of the key
    range; once enough keys are in, the array is built again and agrees with a set."""
    rng = np.random.default_rng(29)
    n = 1 << 20
    ids = rng.permutation(n).astype(np.int64) - n // 2
    locks = SortedKeyLocks(4)
    locked: set[int] = set()
    sizes = [1000, 3000, 12_000, 40_000]
    pos = 0
    states = []
    for size in sizes + [n - sum(sizes)]:
        part = ids[pos:pos + size]
        pos += size
        _add(locks, t, part)
        locked.update(part.tolist())
        states.append(locks.dense is not None)
    assert states[0] is False and states[-1] is True  # spread at first, dense once filled in
    assert locks.dense is not None and len(locks.dense) <= SortedKeyLocks.DENSE_PER_KEY * len(locks)
    probe_ids = np.concatenate([ids[::37], np.arange(n, n + 1000), np.arange(-n, -n + 1000)])
    _, pk, pb = sort_by_bucket_and_key(t.schema, t.schema.conform_batch(_batch(probe_ids)))
    assert locks.hits(pk, pb).tolist() == [int(k) in locked for k in pk]
    for k in pk[::101].tolist():
        assert locks.contains(t.schema.bucket_of_key(k), k) == (k in locked)
    assert sorted(locks.keys()) == sorted(locked) and len(locks) == n


def test_dense_key_locks_grow_downwards_and_reach_the_smallest_key(t) -> None:
    """Parts in falling key order grow the array below (with headroom, within the bound),
    down to the smallest int64 key; it agrees with a set throughout."""
    locks = SortedKeyLocks(4)
    locked: set[int] = set()
    bottom = -(2**63)
    starts = [bottom + 40_000 - 5000 * i for i in range(1, 9)]  # falling, the last at the bottom
    for s0 in starts:
        part = np.arange(s0, s0 + 5000, dtype=np.int64)
        _add(locks, t, part)
        locked.update(part.tolist())
        assert locks.dense is not None and locks.base >= bottom
        assert len(locks.dense) <= max(SortedKeyLocks.DENSE_MIN, SortedKeyLocks.DENSE_PER_KEY * len(locks))
    probe_ids = np.concatenate([np.arange(bottom, bottom + 45_000, 7, dtype=np.int64),
                                np.array([0, 2**63 - 1], dtype=np.int64)])
    _, pk, pb = sort_by_bucket_and_key(t.schema, t.schema.conform_batch(_batch(probe_ids)))
    assert locks.hits(pk, pb).tolist() == [int(k) in locked for k in pk]
    assert locks.contains(t.schema.bucket_of_key(bottom), bottom)
