"""Every write and read operation of a table, on the point path and the bulk path."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from spark_ext.exceptions import (
    BadArgumentError,
    DuplicateKeyError,
    NullKeyError,
    TypeMismatchError,
    UnknownColumnError,
)
from spark_ext.store import Store, col
from spark_ext.store.rows import BULK_MIN_ROWS
from tests.store.unit_helpers import assert_refused, contents, rows, sort_rows

COLUMNS = [("id", "int64"), ("k", "int32"), ("x", "float64"), ("s", "string")]


@pytest.fixture
def t(store: Store):
    return store.create_table("ops", COLUMNS, primary_key="id", num_buckets=4)


def _arrow(ids, k=None, x=None, s=None) -> pa.Table:
    ids = list(ids)
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "k": pa.array(k if k is not None else [i % 10 for i in ids], pa.int32()),
        "x": pa.array(x if x is not None else [i / 2 for i in ids], pa.float64()),
        "s": pa.array(s if s is not None else [f"s{i}" for i in ids], pa.string()),
    })


def _row(i: int) -> tuple:
    return (i, i % 10, i / 2, f"s{i}")


def test_bulk_threshold_is_128() -> None:
    assert BULK_MIN_ROWS == 128


# --- insert --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    ["dict", "dicts", "tuple", "tuples", "lists", "pandas", "arrow_table", "arrow_batch",
     "arrow_table_big", "arrow_batch_big", "arrow_chunked_big", "pandas_big"],
)
def test_insert_forms(t, form: str) -> None:
    big = form.endswith("_big")
    ids = list(range(1, 301)) if big else [1, 2, 3]
    data = {
        "dict": lambda: {"id": 1, "k": 1, "x": 0.5, "s": "s1"},
        "dicts": lambda: [{"s": f"s{i}", "x": i / 2, "k": i % 10, "id": i} for i in ids],
        "tuple": lambda: _row(1),
        "tuples": lambda: [_row(i) for i in ids],
        "lists": lambda: [list(_row(i)) for i in ids],
        "pandas": lambda: _arrow(ids).to_pandas(),
        "arrow_table": lambda: _arrow(ids),
        "arrow_batch": lambda: _arrow(ids).to_batches()[0],
        "arrow_table_big": lambda: _arrow(ids),
        "arrow_batch_big": lambda: _arrow(ids).to_batches()[0],
        "arrow_chunked_big": lambda: pa.concat_tables([_arrow(ids[:100]), _arrow(ids[100:250]), _arrow(ids[250:])]),
        "pandas_big": lambda: _arrow(ids).to_pandas(),
    }[form]()
    if form in ("dict", "tuple"):
        ids = [1]
    n = t.insert(data)
    assert n == len(ids)
    assert t.count() == len(ids)
    assert contents(t) == sort_rows(_row(i) for i in ids)
    for i in (ids[0], ids[-1], ids[len(ids) // 2]):
        assert t.get(i) == _row(i)
    if big:
        # The vectorized path adds base runs directly, not delta rows.
        assert sum(len(b.delta) for b in t.buckets) == 0
        assert sum(len(b.runs) for b in t.buckets) > 0
    else:
        assert sum(len(b.delta) for b in t.buckets) == len(ids)
    t._check()


def test_insert_arrow_columns_by_name_in_any_order_and_cast(t) -> None:
    n = 200
    data = pa.table({
        "s": pa.array([f"s{i}" for i in range(n)], pa.large_string()),
        "id": pa.array(range(n), pa.int32()),  # widened to int64
        "x": pa.array([float(i) for i in range(n)], pa.float32()),  # widened to float64
    })
    assert t.insert(data) == n
    assert t.get(7) == (7, None, 7.0, "s7")
    small = pa.table({"k": pa.array([5], pa.int8()), "id": pa.array([1000], pa.uint16())})
    assert t.insert(small) == 1
    assert t.get(1000) == (1000, 5, None, None)


def test_insert_empty_inputs(t) -> None:
    t.insert(_row(1))
    assert t.insert([]) == 0
    assert t.insert(_arrow([]).slice(0, 0)) == 0
    assert t.insert(pd.DataFrame({"id": pd.Series([], dtype="int64")})) == 0
    assert contents(t) == [_row(1)]


def test_duplicate_keys_within_one_call(t) -> None:
    t.insert([_row(1), _row(2)])
    assert_refused(t, lambda: t.insert([_row(10), _row(11), _row(10)]), DuplicateKeyError, "'ops'", "10")
    assert_refused(t, lambda: t.insert([{"id": 10}, {"id": 10, "s": "b"}]), DuplicateKeyError, "'ops'", "10")
    assert_refused(t, lambda: t.upsert([_row(10), _row(10)]), DuplicateKeyError, "'ops'", "10")
    ids = list(range(100, 400)) + [250]
    assert_refused(t, lambda: t.insert(_arrow(ids)), DuplicateKeyError, "'ops'", "id=250")
    assert_refused(t, lambda: t.upsert(_arrow(ids)), DuplicateKeyError, "'ops'", "id=250")
    small = [5, 6, 5]
    assert_refused(t, lambda: t.insert(_arrow(small)), DuplicateKeyError, "'ops'", "5")


def test_duplicate_keys_against_existing_rows(t) -> None:
    t.insert(_arrow(range(0, 300)))  # bulk: base runs
    t.insert([_row(1000), _row(1001)])  # delta rows
    # point path, hitting a base row, then a delta row
    assert_refused(t, lambda: t.insert([_row(500), _row(150)]), DuplicateKeyError, "'ops'", "id=150")
    assert_refused(t, lambda: t.insert({"id": 1001}), DuplicateKeyError, "'ops'", "id=1001")
    # bulk path, hitting a base row, then a delta row
    assert_refused(t, lambda: t.insert(_arrow(range(299, 600))), DuplicateKeyError, "'ops'", "id=299")
    assert_refused(t, lambda: t.insert(_arrow(list(range(2000, 2200)) + [1000])), DuplicateKeyError, "'ops'", "id=1000")
    # after compaction everything is base
    t.compact()
    assert_refused(t, lambda: t.insert(_arrow(range(1001, 1200))), DuplicateKeyError, "'ops'", "id=1001")
    assert_refused(t, lambda: t.insert(_row(0)), DuplicateKeyError, "'ops'", "id=0")
    # A deleted key can be inserted again, on both paths.
    assert t.delete([0, 1000]) == 2
    assert t.insert(_row(0)) == 1
    assert t.insert(_arrow([1000] + list(range(3000, 3200)))) == 201
    assert t.get(1000) == _row(1000) and t.get(0) == _row(0)
    assert t.count() == 300 + 2 + 200
    t._check()


def test_duplicate_string_keys_bulk(store: Store) -> None:
    t = store.create_table("sk", [("name", "string"), ("v", "int32")], primary_key="name")
    t.insert([("a", 1), ("b", 2)])
    names = [f"n{i}" for i in range(200)]
    assert_refused(t, lambda: t.insert(pa.table({"name": names + ["b"], "v": pa.array(range(201), pa.int32())})),
                   DuplicateKeyError, "'sk'", "'b'")
    assert_refused(t, lambda: t.insert(pa.table({"name": names + ["n3"], "v": pa.array(range(201), pa.int32())})),
                   DuplicateKeyError, "'sk'", "'n3'")


# --- upsert --------------------------------------------------------------------------------


def test_upsert_point_and_bulk(t) -> None:
    t.insert(_arrow(range(0, 200)))
    t.insert(_row(500))
    # point: replace a base row, a delta row, add a new one
    assert t.upsert([(5, 0, 0.0, "new5"), (500, 0, 0.0, "new500"), (600, 1, 1.0, None)]) == 3
    assert t.get(5) == (5, 0, 0.0, "new5")
    assert t.get(500) == (500, 0, 0.0, "new500")
    assert t.get(600) == (600, 1, 1.0, None)
    # upsert of a dict with missing columns sets them NULL (whole-row replace)
    assert t.upsert({"id": 6, "s": "only s"}) == 1
    assert t.get(6) == (6, None, None, "only s")
    # bulk: half existing (base + delta + point-upserted), half new
    ids = list(range(100, 250)) + [500, 600]
    assert t.upsert(_arrow(ids, s=[f"u{i}" for i in ids])) == len(ids)
    for i in ids:
        assert t.get(i)[3] == f"u{i}"
    assert t.get(99) == _row(99)
    assert t.count() == 250 + 2
    before = contents(t)
    t.compact()
    assert contents(t) == before
    # upsert the same data twice changes nothing
    t.upsert(_arrow(ids, s=[f"u{i}" for i in ids]))
    assert contents(t) == before
    t._check()


def test_upsert_on_hidden_rowid_table_is_refused(store: Store) -> None:
    h = store.create_table("h", [("a", "int32")])
    h.insert((1,))
    assert_refused(h, lambda: h.upsert((2,)), BadArgumentError, "'h'", "primary key")


# --- update by key -----------------------------------------------------------------------------


def test_update_some_columns(t) -> None:
    t.insert(_arrow(range(200)))
    t.insert(_row(1000))
    assert t.update(3, {"s": "three"}) is True
    assert t.update(1000, {"x": None, "k": 7}) is True
    assert t.update(999, {"s": "absent"}) is False
    assert t.get(3) == (3, 3, 1.5, "three")
    assert t.get(1000) == (1000, 7, None, "s1000")
    assert t.update_many([1, 2, 3, 12345], {"k": -1}) == 3
    assert [t.get(i)[1] for i in (1, 2, 3)] == [-1, -1, -1]
    assert t.get(4)[1] == 4
    assert t.count() == 201
    assert_refused(t, lambda: t.update(1, {}), BadArgumentError, "'ops'")
    t.compact()
    assert t.get(3) == (3, -1, 1.5, "three")
    t._check()


def test_update_changes_key_column(t) -> None:
    t.insert(_arrow(range(200)))
    t.insert(_row(1000))
    assert t.update(5, {"id": 5000, "s": "moved"}) is True
    assert t.get(5) is None
    assert t.get(5000) == (5000, 5, 2.5, "moved")
    assert t.update(1000, {"id": 1001}) is True
    assert t.get(1000) is None and t.get(1001) == (1001, 0, 500.0, "s1000")
    # moving onto an existing key is refused
    assert_refused(t, lambda: t.update(6, {"id": 7}), DuplicateKeyError, "'ops'", "7")
    assert_refused(t, lambda: t.update(6, {"id": 5000}), DuplicateKeyError, "'ops'", "5000")
    # setting several keys to one value is refused
    assert_refused(t, lambda: t.update_many([10, 11], {"id": 9999}), DuplicateKeyError, "'ops'", "9999")
    assert_refused(t, lambda: t.update_many([10, 11], {"id": "x"}), TypeMismatchError, "'id'")
    assert t.count() == 201
    # the moved row is found by scans, in the right bucket
    assert rows(t, where=col("id") == 5000) == [(5000, 5, 2.5, "moved")]
    assert rows(t, where=col("s") == "moved") == [(5000, 5, 2.5, "moved")]
    t._check()


def test_composite_key_update_moves_row(store: Store) -> None:
    c = store.create_table("c", [("a", "string"), ("b", "int32"), ("v", "int32")], primary_key=["a", "b"])
    c.insert([("x", 1, 10), ("x", 2, 20), ("y", 1, 30)])
    assert c.update(("x", 1), {"b": 3}) is True
    assert c.get(("x", 1)) is None and c.get(("x", 3)) == ("x", 3, 10)
    assert_refused(c, lambda: c.update(("x", 2), {"a": "y", "b": 1}), DuplicateKeyError, "'c'")
    assert c.update(["x", 2], {"a": "z"}) is True  # a list works as a key too
    assert contents(c) == [("x", 3, 10), ("y", 1, 30), ("z", 2, 20)]
    c._check()


@pytest.mark.parametrize("n", [50, 400])
@pytest.mark.parametrize("compact", [False, True])
def test_shift_keys_set_id_plus_one(store: Store, n: int, compact: bool) -> None:
    """``UPDATE t SET id = id + 1``: every new key is an old key of the same statement."""
    t = store.create_table("sh", COLUMNS, primary_key="id", num_buckets=4)
    t.insert(_arrow(range(n)) if n >= 128 else [_row(i) for i in range(n)])
    if compact:
        t.compact()
    before = {r[0]: r for r in contents(t)}
    rng = random.Random(7)
    keys = list(range(n))
    rng.shuffle(keys)
    with store.begin() as cs:
        assert cs.replace("sh", [(k, (k + 1,) + before[k][1:]) for k in keys]) == n
        # Inside the change set nothing is visible yet.
        assert t.get(n) is None and t.get(0) == before[0]
    assert t.get(0) is None
    assert contents(t) == sort_rows((k + 1,) + before[k][1:] for k in range(n))
    # And back down, via ChangeSet.update one key at a time in a safe order.
    with store.begin() as cs:
        for k in range(1, n + 1):
            assert cs.update("sh", [k], {"id": k - 1}) == 1
    assert contents(t) == sort_rows(before.values())
    # In an unsafe order the first move collides: the statement fails, nothing changes.
    cs = store.begin()
    with pytest.raises(DuplicateKeyError) as ei:
        for k in range(n):
            cs.update("sh", [k], {"id": k + 1})
    assert "'sh'" in str(ei.value)
    cs.abort()
    assert contents(t) == sort_rows(before.values())
    assert not t.locks
    t._check()


def test_shift_via_update_over_many_keys_with_same_values(store: Store) -> None:
    """ChangeSet.update over many keys sets the same values; moving all to one key fails
    and a per-key key change over many keys in one change set works in either direction
    when each step lands on a freed key."""
    t = store.create_table("sh2", COLUMNS, primary_key="id", num_buckets=3)
    t.insert([_row(i) for i in range(10)])
    with store.begin() as cs:
        assert cs.update("sh2", list(range(10)), {"s": "same"}) == 10
        for k in reversed(range(10)):
            cs.update("sh2", [k], {"id": k + 100})
    assert contents(t) == [(k + 100, k % 10, k / 2, "same") for k in range(10)]
    t._check()


# --- delete ------------------------------------------------------------------------------------


def test_delete_by_key(t) -> None:
    t.insert(_arrow(range(300)))
    t.insert(_row(1000))
    assert t.delete(5) == 1
    assert t.delete([5]) == 0
    assert t.delete([6, 7, 7, 1000, 99999]) == 3
    assert t.get_many([5, 6, 7, 1000, 8]) == [None, None, None, None, _row(8)]
    assert t.count() == 301 - 4
    t.compact()
    assert t.count() == 297
    assert t.delete(list(range(300))) == 297
    assert t.count() == 0 and contents(t) == []
    assert_refused(t, lambda: t.delete(["x"]), TypeMismatchError, "'id'")
    t._check()


def test_get_and_get_many(t) -> None:
    t.insert(_arrow(range(200)))
    t.insert(_row(500))
    t.delete(3)
    t.update(4, {"s": "four"})
    assert t.get(0) == _row(0)
    assert t.get(np.int64(1)) == _row(1)  # numpy scalars are keys too
    assert t.get((2,)) == _row(2)  # a 1-tuple for a one-column key
    assert t.get(3) is None
    assert t.get_many([]) == []
    got = t.get_many([4, 3, 500, 199, 200, 4])
    assert got == [(4, 4, 2.0, "four"), None, _row(500), _row(199), None, (4, 4, 2.0, "four")]


# --- by predicate ------------------------------------------------------------------------------


def test_update_where_and_delete_where(t) -> None:
    t.insert(_arrow(range(300)))
    t.insert([_row(1000), (1001, None, None, None)])
    assert t.update_where(col("k") == 3, {"s": "k3"}) == 30
    assert rows(t, columns=["id"], where=col("s") == "k3") == [(i,) for i in range(3, 300, 10)]
    assert t.update_where(["and", [">=", "id", 290], ["<", "id", 295]], {"x": -1.0}) == 5
    assert [t.get(i)[2] for i in range(289, 296)] == [144.5, -1.0, -1.0, -1.0, -1.0, -1.0, 147.5]
    # NULL never matches a comparison (k is NULL for 1001)
    assert t.update_where(col("k") != 3, {"s": "other"}) == 271
    assert t.get(1001) == (1001, None, None, None)
    assert t.delete_where(col("k").is_null()) == 1
    assert t.delete_where(col("s") == "k3") == 30
    assert t.count() == 271
    assert t.delete_where(col("id") > 100000) == 0
    assert t.update_where(None, {"k": 0}) == 271
    assert rows(t, columns=["k"], where=col("k") != 0) == []
    # key change by predicate
    assert t.update_where(col("id") == 1000, {"id": 2000}) == 1
    assert t.get(2000) is not None and t.get(1000) is None
    assert_refused(t, lambda: t.update_where(col("id") < 5, {"id": 7}), DuplicateKeyError, "'ops'")
    assert_refused(t, lambda: t.update_where(col("nope") == 1, {"k": 1}), UnknownColumnError, "'nope'")
    assert_refused(t, lambda: t.delete_where(col("k") == "x"), BadArgumentError, "'k'")
    assert t.delete_where(None) == 271
    assert t.count() == 0
    t._check()


def test_truncate(t, store: Store) -> None:
    t.insert(_arrow(range(300)))
    t.insert(_row(1000))
    t.create_index("by_k", "k")
    t.truncate()
    assert t.count() == 0 and contents(t) == []
    assert t.get(5) is None and t.get(1000) is None
    s = t.scan(where=col("k") == 5)
    assert s.access_path == "index:by_k" and s.count() == 0
    t.insert(_row(5))
    assert rows(t, where=col("k") == 5) == [_row(5)]
    t._check()


# --- hidden row id tables -------------------------------------------------------------------------


def test_hidden_rowid_table(store: Store) -> None:
    h = store.create_table("hid", [("a", "int32"), ("s", "string")], num_buckets=3)
    assert h.insert([(1, "x"), (1, "x"), (2, None)]) == 3  # duplicates are fine: no key
    assert h.insert(pa.table({"a": pa.array(range(200), pa.int32()), "s": ["b"] * 200})) == 200
    assert h.insert({"a": 7}) == 1
    assert h.count() == 204
    ids = rows(h, columns=["_rowid"])
    assert ids == [(i,) for i in range(1, 205)]
    assert rows(h, columns=["_rowid", "a"], where=col("_rowid") <= 3) == [(1, 1), (2, 1), (3, 2)]
    s = h.scan(columns=["a", "s", "_rowid"], where=col("_rowid").isin([2, 204, 999]))
    assert sorted(s.to_table().to_pylist(), key=lambda r: r["_rowid"]) == [
        {"a": 1, "s": "x", "_rowid": 2}, {"a": 7, "s": None, "_rowid": 204}]
    assert s.access_path == "primary_key" and s.rows_examined == 3
    # get / update / delete by row id
    assert h.get(3) == (2, None)
    assert h.update(3, {"s": "upd"}) is True and h.get(3) == (2, "upd")
    assert_refused(h, lambda: h.update(3, {"_rowid": 10}), BadArgumentError, "row id")
    assert h.delete([1, 2]) == 2
    assert h.delete_where(col("a") == 7) == 2  # one point row, one bulk row
    assert h.count() == 200
    h.compact()
    assert h.get(3) == (2, "upd")
    # row ids keep growing and are never reused
    h.insert((-9, "n"))
    assert rows(h, columns=["_rowid"], where=col("a") == -9) == [(205,)]
    assert_refused(h, lambda: h.insert({"a": 1, "_rowid": 5}), UnknownColumnError, "'_rowid'")
    h._check()


def test_scan_returns_nothing_for_absent_keys_and_counts(t) -> None:
    t.insert([_row(i) for i in range(20)])
    assert t.count() == 20
    assert t.scan(where=col("id") == 12345).count() == 0
    assert t.scan(where=col("id").isin([])).count() == 0


def test_reads_after_many_mixed_writes_match_a_model(store: Store) -> None:
    """A small fixed-seed sequence of every operation, checked against a dict."""
    t = store.create_table("mix", COLUMNS, primary_key="id", num_buckets=5)
    model: dict[int, tuple] = {}
    rng = random.Random(1234)
    for step in range(300):
        op = rng.choice(["ins", "ups", "upd", "del", "bulk", "compact", "delw"])
        if op == "ins":
            k = rng.randrange(500)
            if k in model:
                with pytest.raises(DuplicateKeyError):
                    t.insert(_row(k))
            else:
                t.insert(_row(k))
                model[k] = _row(k)
        elif op == "ups":
            k = rng.randrange(500)
            r = (k, step, float(step), None)
            t.upsert(r)
            model[k] = r
        elif op == "upd":
            k = rng.randrange(500)
            ok = t.update(k, {"s": f"u{step}"})
            assert ok == (k in model)
            if ok:
                model[k] = model[k][:3] + (f"u{step}",)
        elif op == "del":
            ks = [rng.randrange(500) for _ in range(3)]
            n = t.delete(ks)
            assert n == len({k for k in ks if k in model})
            for k in ks:
                model.pop(k, None)
        elif op == "bulk":
            ks = rng.sample(range(500, 10000), 150)
            ks = [k for k in ks if k not in model]
            t.upsert(_arrow(ks, s=[f"b{step}"] * len(ks)))
            for k in ks:
                model[k] = (k, k % 10, k / 2, f"b{step}")
        elif op == "compact":
            t.compact()
        elif op == "delw":
            lo = rng.randrange(10000)
            n = t.delete_where((col("id") >= lo) & (col("id") < lo + 50))
            gone = [k for k in model if lo <= k < lo + 50]
            assert n == len(gone)
            for k in gone:
                del model[k]
        if step % 50 == 0:
            assert contents(t) == sort_rows(model.values())
    assert t.count() == len(model)
    assert contents(t) == sort_rows(model.values())
    probe = rng.sample(range(10000), 200)
    assert t.get_many(probe) == [model.get(k) for k in probe]
    t._check()


def test_key_errors_on_delete_and_update(t) -> None:
    t.insert(_row(1))
    assert_refused(t, lambda: t.update(None, {"s": "x"}), NullKeyError, "'id'")
    assert_refused(t, lambda: t.delete(None), NullKeyError, "'id'")


def test_swap_keys_in_one_statement(store: Store) -> None:
    t = store.create_table("sw", COLUMNS, primary_key="id", num_buckets=2)
    t.insert([_row(1), _row(2), _row(3)])
    with store.begin() as cs:
        assert cs.replace("sw", [(1, (2,) + _row(1)[1:]), (2, (1,) + _row(2)[1:])]) == 2
    assert t.get(1) == (1,) + _row(2)[1:] and t.get(2) == (2,) + _row(1)[1:]
    cs = store.begin()
    with pytest.raises(DuplicateKeyError):
        cs.replace("sw", [(1, (3,) + _row(1)[1:])])  # 3 is taken and does not move
    with pytest.raises(DuplicateKeyError):
        cs.replace("sw", [(1, (9,) + _row(1)[1:]), (2, (9,) + _row(2)[1:])])  # two rows, one key
    cs.abort()
    assert t.count() == 3 and t.get(9) is None
    t._check()


def test_compaction_thresholds_and_store_compact(store: Store) -> None:
    t = store.create_table("cp", COLUMNS, primary_key="id", num_buckets=1)
    b = t.buckets[0]
    t.insert(_arrow(range(1000)))
    assert not b.needs_compaction(4096, 0.25, 8)
    t.insert([_row(i) for i in range(2000, 2010)])
    assert not b.needs_compaction(4096, 0.25, 8)
    # 10 changed rows reach max(min_rows, fraction x 1000 base rows) only when both are low.
    assert b.needs_compaction(10, 0.01, 8)
    assert not b.needs_compaction(10, 0.25, 8)
    assert not b.needs_compaction(11, 0.001, 8)
    for j in range(3):
        t.insert(_arrow(range(10_000 * (j + 1), 10_000 * (j + 1) + 200)))
    assert len(b.runs) == 4
    assert b.needs_compaction(10**6, 1.0, 3) and not b.needs_compaction(10**6, 1.0, 4)
    before = contents(t)
    assert store.compact() == 1
    assert len(b.runs) == 1 and not b.delta and not any(b.deleted)
    assert store.compact() == 0  # nothing changed since
    assert contents(t) == before
    t._check()
