"""Secondary indexes: creation on a filled table, use by scans (proved by
``access_path`` and ``rows_examined``), maintenance under every change, drop."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pyarrow as pa
import pytest

from spark_ext.exceptions import (
    BadArgumentError,
    DuplicateKeyError,
    IndexExistsError,
    NoSuchIndexError,
    UnknownColumnError,
)
from spark_ext.store import Store, col
from tests.store.unit_helpers import rows

N = 2000
COLUMNS = [("id", "int64"), ("k", "int32"), ("g", "string"), ("d", "date"), ("v", "float64")]


def _row(i: int) -> tuple[Any, ...]:
    return (i, None if i % 97 == 0 else i % 50, f"g{i % 20}", dt.date(2024, 1, 1) + dt.timedelta(days=i % 30), float(i))


def _arrow(rs: list[tuple[Any, ...]]) -> pa.Table:
    return pa.table({
        "id": pa.array([r[0] for r in rs], pa.int64()),
        "k": pa.array([r[1] for r in rs], pa.int32()),
        "g": pa.array([r[2] for r in rs], pa.string()),
        "d": pa.array([r[3] for r in rs], pa.date32()),
        "v": pa.array([r[4] for r in rs], pa.float64()),
    })


@pytest.fixture
def big(store: Store):
    """N rows in base runs, some delta rows, some deletions: a realistic filled table."""
    t = store.create_table("ix", COLUMNS, primary_key="id", num_buckets=4)
    model = {i: _row(i) for i in range(N)}
    t.insert(_arrow([model[i] for i in range(N - 100)]))
    t.compact()
    t.insert([model[i] for i in range(N - 100, N)])
    for i in range(0, N, 13):
        t.delete(i)
        del model[i]
    return t, model


def _ids(t, where: Any) -> list[int]:
    return sorted(r[0] for r in rows(t, columns=["id"], where=where))


def _expect(model: dict[int, tuple], fn) -> list[int]:
    return sorted(i for i, r in model.items() if fn(r))


def _assert_indexed(t, where: Any, index: str, want: list[int], examined: int | None = None) -> None:
    s = t.scan(columns=["id"], where=where)
    assert s.access_path == f"index:{index}"
    got = sorted(i for b in s for i in b.column(0).to_pylist())
    assert got == want
    assert s.rows_examined == (len(want) if examined is None else examined)


# --- creation and use ---------------------------------------------------------------------------


def test_hash_index_single_column(big) -> None:
    t, model = big
    t.create_index("by_k", "k")  # hash by default
    assert t.index_defs["by_k"] == ("hash", ["k"])
    s = t.scan(where=col("k") == 7)
    assert s.count() > 0 and s.rows_examined * 20 < t.count()  # far less than the table
    _assert_indexed(t, col("k") == 7, "by_k", _expect(model, lambda r: r[1] == 7))
    _assert_indexed(t, col("k").isin([1, 2, 49, 1000]), "by_k", _expect(model, lambda r: r[1] in (1, 2, 49)))
    _assert_indexed(t, col("k").isin([3, None]), "by_k", _expect(model, lambda r: r[1] == 3))
    _assert_indexed(t, col("k") == None, "by_k", [])  # noqa: E711
    # Other conjuncts filter the candidates: examined counts every candidate.
    cands = _expect(model, lambda r: r[1] == 7)
    _assert_indexed(t, (col("k") == 7) & (col("v") < 500), "by_k",
                    [i for i in cands if model[i][4] < 500], examined=len(cands))
    # A hash index does not serve ranges or negations.
    assert t.scan(where=col("k") > 7).access_path == "full"
    assert t.scan(where=col("k") != 7).access_path == "full"
    assert t.scan(where=~(col("k") == 7)).access_path == "full"
    assert t.scan(where=(col("k") == 7) | (col("v") == 1.0)).access_path == "full"
    assert _ids(t, col("k") > 45) == _expect(model, lambda r: r[1] is not None and r[1] > 45)
    t._check()


def test_ordered_index_single_column_ranges(big) -> None:
    t, model = big
    t.create_index("k_ord", ["k"], "ordered")
    s = t.scan(where=(col("k") > 10) & (col("k") <= 12))
    assert s.count() > 0 and s.rows_examined * 10 < t.count()  # far less than the table
    cases = [
        (col("k") > 45, lambda k: k > 45),
        (col("k") >= 45, lambda k: k >= 45),
        (col("k") < 3, lambda k: k < 3),
        (col("k") <= 3, lambda k: k <= 3),
        ((col("k") > 10) & (col("k") <= 12), lambda k: 10 < k <= 12),
        ((col("k") >= 10) & (col("k") < 12) & (col("k") > 5), lambda k: 10 <= k < 12),
        ((col("k") > 10) & (col("k") < 10), lambda k: False),
        ((col("k") >= 10) & (col("k") <= 10), lambda k: k == 10),
        (col("k") > 2.5, lambda k: k > 2.5),
        (col("k") == 20, lambda k: k == 20),
        (col("k").isin([0, 49]), lambda k: k in (0, 49)),
    ]
    for where, fn in cases:
        _assert_indexed(t, where, "k_ord", _expect(model, lambda r: r[1] is not None and fn(r[1])))
    # NULLs never match a range.
    assert t.scan(where=col("k") < 1000).count() == len(_expect(model, lambda r: r[1] is not None))
    t._check()


def test_ordered_index_on_strings_and_dates(big) -> None:
    t, model = big
    t.create_index("g_ord", "g", "ordered")
    t.create_index("d_ord", "d", "ordered")
    _assert_indexed(t, (col("g") >= "g1") & (col("g") < "g2"), "g_ord", _expect(model, lambda r: "g1" <= r[2] < "g2"))
    day = dt.date(2024, 1, 28)
    _assert_indexed(t, col("d") > day, "d_ord", _expect(model, lambda r: r[3] > day))
    _assert_indexed(t, ["<", "d", "2024-01-02"], "d_ord", _expect(model, lambda r: r[3] < dt.date(2024, 1, 2)))


def test_multi_column_indexes(big) -> None:
    t, model = big
    t.create_index("kg", ["k", "g"])  # hash: all columns fixed
    _assert_indexed(t, (col("g") == "g3") & (col("k") == 23), "kg", _expect(model, lambda r: r[1] == 23 and r[2] == "g3"))
    assert t.scan(where=col("k") == 23).access_path == "full"  # hash needs every column
    t.create_index("gk_ord", ["g", "k"], "ordered")
    _assert_indexed(t, (col("g") == "g3") & (col("k") == 23), "kg", _expect(model, lambda r: r[1] == 23 and r[2] == "g3"))
    # The ordered index serves its leading column alone, equality and range.
    _assert_indexed(t, col("g") == "g4", "gk_ord", _expect(model, lambda r: r[2] == "g4"))
    _assert_indexed(t, col("g") > "g7", "gk_ord", _expect(model, lambda r: r[2] > "g7"))
    # Rows with a NULL in the second column still match a range on the first (k is NULL
    # for every 97th id).
    nulls = _expect(model, lambda r: r[1] is None and r[2] >= "g1")
    assert nulls
    assert set(nulls) <= set(_ids(t, col("g") >= "g1"))
    _assert_indexed(t, col("g") >= "g1", "gk_ord", _expect(model, lambda r: r[2] >= "g1"))
    t._check()


def test_three_column_ordered_index(store: Store) -> None:
    t = store.create_table("t3", [("id", "int32"), ("a", "int32"), ("b", "string"), ("c", "date")], primary_key="id")
    base = dt.date(2020, 1, 1)
    data = [(i, i % 5, None if i % 7 == 0 else f"b{i % 3}", base + dt.timedelta(days=i % 4)) for i in range(300)]
    t.insert(data)
    t.create_index("abc", ["a", "b", "c"], "ordered")
    s = t.scan(columns=["id"], where=(col("a") >= 3))
    assert s.access_path == "index:abc"
    want = sorted(r[0] for r in data if r[1] >= 3)
    assert sorted(s.to_table().column(0).to_pylist()) == want and s.rows_examined == len(want)
    s = t.scan(columns=["id"], where=(col("a") == 2) & (col("b") == "b1") & (col("c") == base + dt.timedelta(days=1)))
    want = sorted(r[0] for r in data if r[1] == 2 and r[2] == "b1" and r[3] == base + dt.timedelta(days=1))
    assert s.access_path == "index:abc" and sorted(s.to_table().column(0).to_pylist()) == want
    assert s.rows_examined == len(want)
    t._check()


def test_primary_key_beats_index(big) -> None:
    t, model = big
    t.create_index("by_k", "k")
    s = t.scan(where=(col("k") == 5) & (col("id") == 55))
    assert s.access_path == "primary_key"
    assert s.count() == (1 if 55 in model and model[55][1] == 5 else 0) and s.rows_examined == 1


def test_bucket_selection_with_index(big) -> None:
    t, model = big
    t.create_index("by_k", "k")
    for b in range(4):
        s = t.scan(columns=["id"], where=col("k") == 9, buckets=[b])
        want = _expect(model, lambda r: r[1] == 9 and t.schema.bucket_of_key(r[0]) == b)
        assert s.access_path == "index:by_k"
        assert sorted(s.to_table().column(0).to_pylist()) == want
        assert s.rows_examined == len(want)


# --- maintenance --------------------------------------------------------------------------------


def _check_all(t, model: dict[int, tuple]) -> None:
    t._check()  # every bucket's indexes hold exactly its rows
    for k in (0, 1, 7, 49, 77, None):
        if k is not None:
            _assert_indexed(t, col("k") == k, "by_k", _expect(model, lambda r: r[1] == k))
    _assert_indexed(t, (col("k") >= 40) & (col("k") < 45), "k_ord",
                    _expect(model, lambda r: r[1] is not None and 40 <= r[1] < 45))
    _assert_indexed(t, col("g") == "g5", "g_k", _expect(model, lambda r: r[2] == "g5"))


def test_indexes_are_maintained_under_every_change(big) -> None:
    t, model = big
    t.create_index("by_k", "k", "hash")
    t.create_index("k_ord", "k", "ordered")
    t.create_index("g_k", ["g", "k"], "ordered")
    _check_all(t, model)

    # point insert
    new = [(5000 + i, 77, "g5", dt.date(2024, 1, 1), 0.5) for i in range(5)]
    t.insert(new)
    model.update({r[0]: r for r in new})
    _check_all(t, model)
    # bulk insert
    new = [(6000 + i, i % 80, f"g{i % 7}", dt.date(2024, 2, 1), 1.0) for i in range(300)]
    t.insert(_arrow(new))
    model.update({r[0]: r for r in new})
    _check_all(t, model)
    # point upsert over base and delta rows
    ups = [(1, 0, "g5", dt.date(2024, 3, 1), 2.0), (5000, 41, "g0", dt.date(2024, 3, 1), 2.0), (7000, None, "g5", None, None)]
    t.upsert(ups)
    model.update({r[0]: r for r in ups})
    _check_all(t, model)
    # bulk upsert
    ups = [(i, 42, "g9", dt.date(2024, 4, 1), 3.0) for i in range(100, 400) if i in model]
    t.upsert(_arrow(ups))
    model.update({r[0]: r for r in ups})
    _check_all(t, model)
    # update of the indexed column, of another column, and of the key
    t.update(2, {"k": 49})
    model[2] = (2, 49) + model[2][2:]
    t.update_many([3, 4, 5], {"v": -1.0, "g": "g5"})
    for i in (3, 4, 5):
        model[i] = model[i][:2] + ("g5", model[i][3], -1.0)
    t.update(6, {"id": 9006, "k": 7})
    model[9006] = (9006, 7) + model.pop(6)[2:]
    _check_all(t, model)
    # update_where / delete_where
    n = t.update_where(col("k") == 42, {"k": 43})
    assert n == len([r for r in model.values() if r[1] == 42])
    model = {i: (r[:1] + (43,) + r[2:] if r[1] == 42 else r) for i, r in model.items()}
    n = t.delete_where(col("k") == 43)
    assert n == len([r for r in model.values() if r[1] == 43])
    model = {i: r for i, r in model.items() if r[1] != 43}
    # delete by key
    t.delete([7, 8, 9, 5000, 6001])
    for i in (7, 8, 9, 5000, 6001):
        model.pop(i, None)
    _check_all(t, model)
    # compaction rebuilds runs: indexes still right
    t.compact()
    _check_all(t, model)
    # aborted change set: no change in indexes
    cs = t.store.begin()
    cs.insert("ix", (8000, 7, "g5", None, None))
    cs.update("ix", [10], {"k": 7})
    cs.delete("ix", [11])
    cs.abort()
    _check_all(t, model)
    # committed change set
    with t.store.begin() as cs:
        cs.insert("ix", (8000, 7, "g5", None, None))
        cs.update("ix", [10], {"k": 7})
        cs.delete("ix", [11])
    model[8000] = (8000, 7, "g5", None, None)
    model[10] = (10, 7) + model[10][2:]
    del model[11]
    _check_all(t, model)
    # truncate empties the indexes but keeps them
    t.truncate()
    model = {}
    _check_all(t, model)
    t.insert([(1, 7, "g5", None, None)])
    model[1] = (1, 7, "g5", None, None)
    _check_all(t, model)
    assert set(t.index_defs) == {"by_k", "k_ord", "g_k"}


def test_index_on_key_change_of_bulk_rows(store: Store) -> None:
    """Moving rows out of a bulk-loaded run and back keeps the index right."""
    t = store.create_table("mv", [("id", "int64"), ("k", "int32")], primary_key="id", num_buckets=2)
    t.insert(pa.table({"id": pa.array(range(500), pa.int64()), "k": pa.array([i % 5 for i in range(500)], pa.int32())}))
    t.create_index("k", "k")
    with store.begin() as cs:
        cs.replace("mv", [(i, (i + 1000, 9)) for i in range(0, 500, 2)])
    s = t.scan(columns=["id"], where=col("k") == 9)
    assert sorted(s.to_table().column(0).to_pylist()) == list(range(1000, 1500, 2))
    assert s.rows_examined == 250
    assert t.scan(where=col("k") == 0).count() == 50  # odd multiples of 5 stay
    t._check()


def test_random_changes_keep_indexes_exact(store: Store) -> None:
    rng = random.Random(99)
    t = store.create_table("rnd", [("id", "int32"), ("a", "int32"), ("s", "string")], primary_key="id", num_buckets=3)
    t.create_index("a_h", "a")
    t.create_index("as_o", ["a", "s"], "ordered")
    model: dict[int, tuple] = {}
    for step in range(400):
        op = rng.random()
        k = rng.randrange(300)
        if op < 0.35:
            r = (k, rng.choice([None, *range(10)]), rng.choice([None, "x", "y"]))
            t.upsert(r)
            model[k] = r
        elif op < 0.5:
            if t.delete(k):
                del model[k]
        elif op < 0.7:
            a = rng.randrange(10)
            if t.update(k, {"a": a}):
                model[k] = (k, a, model[k][2])
        elif op < 0.75:
            t.compact()
        elif op < 0.8:
            ks = [x for x in rng.sample(range(300, 5000), 150) if x not in model]
            rs = [(x, rng.randrange(10), "z") for x in ks]
            t.insert(pa.table({"id": pa.array([r[0] for r in rs], pa.int32()), "a": pa.array([r[1] for r in rs], pa.int32()),
                               "s": [r[2] for r in rs]}))
            model.update({r[0]: r for r in rs})
        else:
            a = rng.randrange(10)
            s = t.scan(columns=["id"], where=col("a") == a)
            want = sorted(i for i, r in model.items() if r[1] == a)
            assert s.access_path == "index:a_h"
            assert sorted(s.to_table().column(0).to_pylist()) == want
            assert s.rows_examined == len(want)
            s = t.scan(columns=["id"], where=col("a") > a)
            assert s.access_path == "index:as_o"
            assert sorted(s.to_table().column(0).to_pylist()) == sorted(
                i for i, r in model.items() if r[1] is not None and r[1] > a)
        if step % 40 == 0:
            t._check()
    t._check()


# --- DDL ----------------------------------------------------------------------------------------


def test_drop_index(big) -> None:
    t, model = big
    t.create_index("by_k", "k")
    t.create_index("k_ord", "k", "ordered")
    assert t.scan(where=col("k") == 3).access_path == "index:by_k"
    t.drop_index("by_k")
    assert "by_k" not in t.index_defs and all("by_k" not in b.indexes for b in t.buckets)
    s = t.scan(where=col("k") == 3)
    assert s.access_path == "index:k_ord"
    t.drop_index("k_ord")
    s = t.scan(columns=["id"], where=col("k") == 3)
    assert s.access_path == "full"
    assert sorted(s.to_table().column(0).to_pylist()) == _expect(model, lambda r: r[1] == 3)
    assert s.rows_examined == len(model)
    # dropping and re-creating with another kind works; writes after a drop are fine
    t.insert((99999, 3, "g", None, None))
    t.create_index("by_k", "k", "ordered")
    assert t.index_defs["by_k"] == ("ordered", ["k"])
    assert 99999 in _ids(t, col("k") == 3)
    t._check()


def test_index_ddl_errors(big) -> None:
    t, _ = big
    t.create_index("by_k", "k")
    with pytest.raises(IndexExistsError) as e1:
        t.create_index("by_k", "g")
    assert "'ix'" in str(e1.value) and "'by_k'" in str(e1.value)
    assert t.index_defs["by_k"] == ("hash", ["k"])
    with pytest.raises(NoSuchIndexError) as e2:
        t.drop_index("nope")
    assert "'nope'" in str(e2.value) and "'ix'" in str(e2.value)
    with pytest.raises(UnknownColumnError) as e3:
        t.create_index("bad", ["k", "zz"])
    assert "'zz'" in str(e3.value)
    with pytest.raises(BadArgumentError):
        t.create_index("bad", "k", "btree")
    with pytest.raises(BadArgumentError):
        t.create_index("bad", [])
    with pytest.raises(BadArgumentError):
        t.create_index("", "k")
    assert set(t.index_defs) == {"by_k"}
    assert all(set(b.indexes) == {"by_k"} for b in t.buckets)


def test_index_on_hidden_rowid_table(store: Store) -> None:
    h = store.create_table("hix", [("a", "int32"), ("s", "string")], num_buckets=3)
    h.insert([(i % 10, f"s{i}") for i in range(100)])
    h.insert(pa.table({"a": pa.array([i % 10 for i in range(200)], pa.int32()), "s": [f"t{i}" for i in range(200)]}))
    h.create_index("a", "a")
    s = h.scan(columns=["_rowid", "a"], where=col("a") == 4)
    got = s.to_table()
    assert s.access_path == "index:a" and got.num_rows == 30 and s.rows_examined == 30
    assert set(got.column("a").to_pylist()) == {4}
    h.delete(got.column("_rowid").to_pylist()[:5])
    assert h.scan(where=col("a") == 4).count() == 25
    h.update_where(col("a") == 4, {"a": 5})
    assert h.scan(where=col("a") == 5).count() == 55
    h._check()


def test_duplicate_key_refusal_leaves_indexes_unchanged(big) -> None:
    t, model = big
    t.create_index("by_k", "k")
    dup = sorted(model)[5]
    with pytest.raises(DuplicateKeyError):
        t.insert([(900_000, 3, "g", None, None), (dup, 3, "g", None, None)])
    with pytest.raises(DuplicateKeyError):
        t.insert(_arrow([(900_000 + i, 3, "g", None, None) for i in range(200)] + [model[dup]]))
    assert _ids(t, col("k") == 3) == _expect(model, lambda r: r[1] == 3)
    t._check()


@pytest.mark.parametrize("kind", ["hash", "ordered"])
def test_nan_values_in_indexed_float_columns(store: Store, kind: str) -> None:
    """NaN equals nothing and orders with nothing (as in a full scan); index entries of
    NaN rows are still found again when the row changes."""
    nan = float("nan")
    t = store.create_table("nan_" + kind, [("id", "int64"), ("x", "float64"), ("y", "int32")], primary_key="id",
                           num_buckets=2)
    t.create_index("x", "x", kind)
    t.create_index("xy", ["x", "y"], kind)
    t.insert([(1, nan, 1), (2, 1.0, 1), (3, nan, 2), (4, 0.5, None), (5, 2.0, 2), (6, None, 1)])
    t.insert(pa.table({"id": pa.array(range(100, 300), pa.int64()),
                       "x": pa.array([nan if i % 2 else float(i) for i in range(200)]),
                       "y": pa.array([1] * 200, pa.int32())}))
    t.compact()
    t.update(1, {"x": 3.0})
    t.delete([3, 101])
    t.update(103, {"y": 5})
    t.upsert((100, nan, 1))
    t._check()

    def full(where):
        return sorted(r[0] for r in rows(t, columns=["id"], where=(where) | (col("id") < -1)))

    for where in (col("x") > 0.7, col("x") == 1.0, col("x") == nan, col("x").isin([0.5, nan]),
                  (col("x") >= 2.0) & (col("y") == 2), col("x") < 1e9):
        s = t.scan(columns=["id"], where=where)
        assert sorted(s.to_table().column(0).to_pylist()) == full(where), where
    # Literals without NaN use the index.
    assert t.scan(where=col("x") == 1.0).access_path == "index:x"
    if kind == "ordered":
        assert t.scan(where=col("x") > 0.7).access_path == "index:x"


def test_float32_and_decimal_index_entries_survive_compaction(store: Store) -> None:
    """Index values of delta rows must equal those read back from base runs, or the
    entries of a compacted row could not be removed when it changes."""
    import decimal

    t = store.create_table("f32", [("id", "int32"), ("f", "float32"), ("d", "decimal(6,3)")], primary_key="id")
    t.create_index("f", "f", "ordered")
    t.create_index("d", "d")
    t.insert([(i, i / 10, decimal.Decimal(i) / 8) for i in range(20)])
    t.compact()  # rows now decoded from Arrow
    t.update(1, {"f": 5.5, "d": decimal.Decimal("0.5")})
    t.delete(2)
    t._check()
    assert _ids(t, col("f") == 0.1) == []  # row 1 moved away from 0.1
    assert _ids(t, col("f") == 0.3) == [3]
    assert t.scan(where=col("f") == 0.3).access_path == "index:f"
    assert _ids(t, col("d") == decimal.Decimal("0.5")) == [1, 4]
