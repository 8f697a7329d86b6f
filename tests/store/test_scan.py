"""Scans: projection, every predicate operator with SQL three-valued logic (checked
against a small reference evaluator), the JSON form, limit, bucket selection, access
paths and snapshot isolation."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import random
from typing import Any

import pyarrow as pa
import pytest

from spark_ext.exceptions import BadArgumentError, NoSuchTableError, UnknownColumnError
from spark_ext.store import Store, col
from spark_ext.store import predicate as P
from tests.store.unit_helpers import contents, rows, sort_rows

D = decimal.Decimal
UTC = dt.timezone.utc
COLUMNS = [
    ("id", "int64"), ("k", "int32"), ("x", "float64"), ("s", "string"), ("d", "date"),
    ("ok", "bool"), ("dec", "decimal(10,2)"), ("ts", "timestamp_tz"), ("b", "binary"),
]
NAMES = [n for n, _ in COLUMNS]
WORDS = ["apple", "apricot", "banana", "", "Äpfel", "日本", "app", None]


def _make_row(i: int, rng: random.Random) -> tuple[Any, ...]:
    def maybe(v: Any) -> Any:
        return None if rng.random() < 0.15 else v
    return (
        i,
        maybe(rng.randrange(-5, 6)),
        maybe(rng.choice([-1.5, 0.0, 0.5, 2.0, 3.25, 100.0])),
        rng.choice(WORDS),
        maybe(dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(10))),
        maybe(rng.random() < 0.5),
        maybe(D(rng.randrange(-300, 300)) / 100),
        maybe(dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(hours=rng.randrange(5))),
        maybe(rng.choice([b"", b"\x00", b"ab", b"\xff"])),
    )


@pytest.fixture
def filled(store: Store):
    """A table with base runs (bulk + compacted), delta rows, deletions and NULLs."""
    rng = random.Random(42)
    t = store.create_table("sc", COLUMNS, primary_key="id", num_buckets=5)
    model = {i: _make_row(i, rng) for i in range(400)}
    bulk = [model[i] for i in range(300)]
    t.insert(pa.Table.from_pylist([dict(zip(NAMES, r)) for r in bulk], schema=t.schema.arrow_schema))
    t.compact()
    t.insert([model[i] for i in range(300, 400)])  # delta rows
    for i in range(0, 400, 7):
        t.delete(i)
        del model[i]
    for i in range(1, 400, 11):
        if i in model:
            new = _make_row(i, rng)
            t.upsert(new)
            model[i] = new
    return t, model


# --- reference evaluator (SQL three-valued logic) -------------------------------------------------


def _cmp(op: str, a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    return {"=": a == b, "<>": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def ref_eval(p: list[Any], row: dict[str, Any]) -> bool | None:
    op = p[0]
    if op == "and":
        vals = [ref_eval(c, row) for c in p[1:]]
        return False if False in vals else (None if None in vals else True)
    if op == "or":
        vals = [ref_eval(c, row) for c in p[1:]]
        return True if True in vals else (None if None in vals else False)
    if op == "not":
        v = ref_eval(p[1], row)
        return None if v is None else not v
    if op in P.COMPARISONS:
        return _cmp(op, row[p[1]], p[2])
    if op == "in":
        v = row[p[1]]
        if v is None:
            return None
        if any(v == x for x in p[2] if x is not None):
            return True
        return None if None in p[2] else False
    if op == "is_null":
        return row[p[1]] is None
    if op == "is_not_null":
        return row[p[1]] is not None
    if op == "starts_with":
        v = row[p[1]]
        return None if v is None else v.startswith(p[2])
    raise AssertionError(op)


def expected_ids(model: dict[int, tuple], pred: list[Any]) -> list[int]:
    return sorted(i for i, r in model.items() if ref_eval(pred, dict(zip(NAMES, r))) is True)


def scan_ids(t, where: Any, **kw: Any) -> list[int]:
    return sorted(r[0] for r in rows(t, columns=["id"], where=where, **kw))


LITERALS: dict[str, list[Any]] = {
    "id": [0, 1, 50, 299, 300, 301, 399, 1000],
    "k": [-5, -1, 0, 1, 3, 5, 7],
    "x": [-1.5, 0.0, 0.5, 2.0, 100.0, 1.0],
    "s": ["apple", "", "app", "Äpfel", "banana", "zzz", "日本"],
    "d": [dt.date(2024, 1, 1), dt.date(2024, 1, 5), dt.date(2024, 1, 10)],
    "ok": [True, False],
    "dec": [D("0.00"), D("-1.50"), D("2.99"), D("0.01")],
    "ts": [dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 1, 2, tzinfo=UTC)],
    "b": [b"", b"ab", b"\x00"],
}


def _random_pred(rng: random.Random, depth: int) -> list[Any]:
    if depth > 0 and rng.random() < 0.45:
        op = rng.choice(["and", "or", "not"])
        if op == "not":
            return ["not", _random_pred(rng, depth - 1)]
        return [op] + [_random_pred(rng, depth - 1) for _ in range(rng.randrange(2, 4))]
    c = rng.choice(NAMES)
    kind = rng.random()
    if kind < 0.55:
        return [rng.choice(P.COMPARISONS), c, rng.choice(LITERALS[c])]
    if kind < 0.75:
        vals = rng.sample(LITERALS[c], min(len(LITERALS[c]), rng.randrange(1, 4)))
        if rng.random() < 0.3:
            vals.append(None)
        return ["in", c, vals]
    if kind < 0.9:
        return [rng.choice(["is_null", "is_not_null"]), c]
    return ["starts_with", "s", rng.choice(["a", "ap", "app", "", "Ä", "日", "x"])]


FIXED_PREDICATES: list[list[Any]] = [
    ["=", "k", 3], ["<>", "k", 3], ["<", "k", 0], ["<=", "k", 0], [">", "k", 0], [">=", "k", 0],
    ["=", "s", ""], ["<>", "s", "apple"], ["<", "s", "b"], [">=", "s", "app"],
    ["in", "k", [1, 2, 3]], ["in", "k", [1, None]], ["in", "k", [None]], ["in", "k", []],
    ["not", ["in", "k", [1, None]]], ["not", ["in", "k", [1, 2]]],
    ["is_null", "k"], ["is_not_null", "k"], ["is_null", "s"], ["not", ["is_null", "x"]],
    ["not", ["=", "k", 3]], ["not", ["not", ["=", "k", 3]]],
    ["and", [">", "k", 0], ["<", "x", 3.0]], ["or", [">", "k", 3], ["is_null", "k"]],
    ["or", ["=", "k", 1], ["=", "x", 0.5]], ["not", ["or", ["=", "k", 1], ["=", "x", 0.5]]],
    ["not", ["and", ["=", "k", 1], ["=", "x", 0.5]]],
    ["starts_with", "s", "ap"], ["starts_with", "s", ""], ["starts_with", "s", "Ä"],
    ["not", ["starts_with", "s", "ap"]],
    ["=", "ok", True], ["=", "ok", False], ["not", ["=", "ok", True]],
    [">", "dec", D("1.00")], ["=", "dec", D("0.5")], ["<", "d", dt.date(2024, 1, 4)],
    [">=", "ts", dt.datetime(2024, 1, 1, 2, tzinfo=UTC)], ["=", "b", b"ab"], ["<", "b", b"a"],
    ["=", "id", 5], ["in", "id", [1, 2, 3, 7, 350, 1000, None]], ["<", "id", 20], [">=", "id", 390],
    ["and", ["=", "id", 8], [">", "k", 100]], ["or", ["=", "id", 8], ["=", "id", 9]],
    ["=", "k", None], ["<>", "k", None], ["not", ["=", "k", None]],
]


@pytest.mark.parametrize("i", range(len(FIXED_PREDICATES)))
def test_fixed_predicates_match_reference(filled, i: int) -> None:
    t, model = filled
    pred = FIXED_PREDICATES[i]
    want = expected_ids(model, pred)
    assert scan_ids(t, pred) == want
    assert scan_ids(t, P.from_obj(pred)) == want


def test_random_predicates_match_reference(filled) -> None:
    t, model = filled
    rng = random.Random(2024)
    nonempty = 0
    for _ in range(300):
        pred = _random_pred(rng, 3)
        want = expected_ids(model, pred)
        nonempty += bool(want)
        assert scan_ids(t, pred) == want, pred
    assert nonempty > 100  # the predicates really select something
    # Same answers after compaction (all base) and with an index on k.
    t.compact()
    t.create_index("k_ord", "k", "ordered")
    rng = random.Random(2024)
    for _ in range(150):
        pred = _random_pred(rng, 2)
        assert scan_ids(t, pred) == expected_ids(model, pred), pred


def test_null_semantics_explicitly(store: Store) -> None:
    t = store.create_table("n3", [("id", "int32"), ("v", "int32")], primary_key="id")
    t.insert([(1, 1), (2, 2), (3, None)])
    q = lambda p: scan_ids(t, p)  # noqa: E731
    assert q(col("v") == 1) == [1]
    assert q(col("v") != 1) == [2]  # NULL <> 1 is unknown
    assert q(~(col("v") == 1)) == [2]  # NOT unknown is unknown
    assert q(col("v").isin([1, None])) == [1]
    assert q(~col("v").isin([1, None])) == []  # 2 NOT IN (1, NULL) is unknown
    assert q(~col("v").isin([1])) == [2]
    assert q((col("v") == 1) | (col("v") == None)) == [1]  # noqa: E711
    assert q(col("v").is_null()) == [3]
    assert q(col("v").is_not_null()) == [1, 2]
    assert q(~col("v").is_null()) == [1, 2]
    assert q((col("v") > 5) | col("v").is_null()) == [3]
    assert q(~((col("v") > 5) & (col("id") == 2))) == [1, 2, 3]  # UNKNOWN AND FALSE is FALSE
    assert q(~((col("v") > 0) & (col("id") == 3))) == [1, 2]  # UNKNOWN AND TRUE is UNKNOWN
    assert q((col("v") > 0) | (col("id") == 3)) == [1, 2, 3]  # UNKNOWN OR TRUE is TRUE
    assert q(~((col("v") > 0) | (col("id") == 2))) == []  # UNKNOWN OR FALSE is UNKNOWN


def test_comparisons_with_mixed_numeric_literals(filled) -> None:
    t, model = filled
    assert scan_ids(t, col("k") > 2.5) == expected_ids(model, [">", "k", 2.5])
    assert scan_ids(t, col("k") == 3.0) == expected_ids(model, ["=", "k", 3])
    assert scan_ids(t, col("x") > 1) == expected_ids(model, [">", "x", 1.0])
    assert scan_ids(t, col("dec") > 1.5) == expected_ids(model, [">", "dec", D("1.5")])
    assert scan_ids(t, col("dec") == 1) == expected_ids(model, ["=", "dec", D("1")])
    assert scan_ids(t, col("id") == 5.0) == [5] and 5 in model
    assert scan_ids(t, col("id") == 5.5) == []
    assert scan_ids(t, col("k").isin([1.0, 2.5])) == expected_ids(model, ["in", "k", [1]])


def test_json_literal_forms(filled) -> None:
    t, model = filled
    day = dt.date(2024, 1, 4)
    assert scan_ids(t, ["<", "d", "2024-01-04"]) == expected_ids(model, ["<", "d", day])
    t2 = dt.datetime(2024, 1, 1, 2, tzinfo=UTC)
    micros = (t2 - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(microseconds=1)
    assert scan_ids(t, [">=", "ts", micros]) == expected_ids(model, [">=", "ts", t2])
    assert scan_ids(t, [">=", "ts", "2024-01-01T02:00:00+00:00"]) == expected_ids(model, [">=", "ts", t2])
    assert scan_ids(t, ["=", "dec", "1.5"]) == expected_ids(model, ["=", "dec", D("1.5")])
    assert scan_ids(t, ["=", "b", base64.b64encode(b"ab").decode()]) == expected_ids(model, ["=", "b", b"ab"])
    assert scan_ids(t, ["IN", "k", [1, 2]]) == expected_ids(model, ["in", "k", [1, 2]])  # case-insensitive op
    # to_obj / from_obj round trip of every node kind, with typed literals
    pred = (
        (col("d") < day) & ((col("ts") >= t2) | ~col("b").isin([b"ab", None]))
        & col("s").startswith("ap") & col("dec").is_not_null() & col("k").is_null().__invert__()
    )
    obj = P.to_obj(pred)
    import json

    again = P.from_obj(json.loads(json.dumps(obj)))
    assert scan_ids(t, again) == scan_ids(t, pred)
    assert scan_ids(t, pred) == expected_ids(model, [
        "and", ["<", "d", day], ["or", [">=", "ts", t2], ["not", ["in", "b", [b"ab", None]]]],
        ["starts_with", "s", "ap"], ["is_not_null", "dec"], ["not", ["is_null", "k"]]])


@pytest.mark.parametrize(
    "bad,exc,mention",
    [
        ("k > 3", BadArgumentError, "k > 3"),
        ([], BadArgumentError, "[]"),
        (["like", "s", "a%"], BadArgumentError, "'like'"),
        (["=", "k"], BadArgumentError, "'='"),
        (["=", "k", 1, 2], BadArgumentError, "'='"),
        (["not", ["=", "k", 1], ["=", "k", 2]], BadArgumentError, "'not'"),
        (["and"], BadArgumentError, "'and'"),
        (["in", "k", 3], BadArgumentError, "'in'"),
        (["starts_with", "s", 3], BadArgumentError, "starts_with"),
        (["starts_with", "k", "a"], BadArgumentError, "'k'"),
        (["=", 5, 1], BadArgumentError, "5"),
        (["=", "nope", 1], UnknownColumnError, "'nope'"),
        (["is_null", "nope"], UnknownColumnError, "'nope'"),
        (["=", "d", "not-a-date"], BadArgumentError, "'d'"),
        (["=", "k", "x"], BadArgumentError, "'k'"),
        (["=", "k", 2**40], BadArgumentError, "'k'"),
        (["=", "b", "***"], BadArgumentError, "'b'"),
    ],
)
def test_bad_predicates(filled, bad: Any, exc: type, mention: str) -> None:
    t, _ = filled
    with pytest.raises(exc) as ei:
        t.scan(where=bad if not isinstance(bad, str) else bad)  # type: ignore[arg-type]
    assert mention in str(ei.value)


def test_bad_predicate_objects(filled) -> None:
    t, _ = filled
    with pytest.raises(BadArgumentError):
        t.scan(where="k > 3")  # type: ignore[arg-type]
    with pytest.raises(BadArgumentError):
        t.scan(where=P.Compare("~", "k", 1))


# --- projection, limit, buckets ------------------------------------------------------------------


def test_projection(filled) -> None:
    t, model = filled
    tbl = t.scan(columns=["s", "id"], where=col("id") < 30).to_table()
    assert tbl.schema.names == ["s", "id"]
    assert tbl.schema.field("id").type == pa.int64()
    assert sort_rows(zip(tbl.column("s").to_pylist(), tbl.column("id").to_pylist())) == sort_rows(
        (r[3], r[0]) for i, r in model.items() if i < 30)
    # The predicate may read columns that are not projected.
    got = rows(t, columns=["id"], where=col("k") == 2)
    assert [r[0] for r in got] == expected_ids(model, ["=", "k", 2])
    # The same column twice, and every batch carries the scan's schema.
    s = t.scan(columns=["k", "k"])
    assert s.schema.names == ["k", "k"]
    for batch in s:
        assert batch.schema == s.schema
    # default projection is every user column
    assert t.scan().schema.names == NAMES
    assert contents(t) == sort_rows(model.values())


def test_limit(filled) -> None:
    t, model = filled
    assert t.scan(limit=0).count() == 0
    assert t.scan(limit=1).count() == 1
    assert t.scan(limit=37).count() == 37
    assert t.scan(limit=10_000).count() == len(model)
    got = scan_ids(t, col("k") > 0, limit=5)
    assert len(got) == 5 and set(got) <= set(expected_ids(model, [">", "k", 0]))
    got = scan_ids(t, ["in", "id", [1, 2, 3, 5]], limit=2)
    assert len(got) == 2 and set(got) <= {1, 2, 3, 5}
    for bad in (-1, "3", 1.5):
        with pytest.raises(BadArgumentError):
            t.scan(limit=bad)  # type: ignore[arg-type]


def test_bucket_selection(filled) -> None:
    t, model = filled
    seen: list[int] = []
    for b in range(5):
        ids = scan_ids(t, None, buckets=[b])
        assert all(t.schema.bucket_of_key(i) == b for i in ids)
        seen.extend(ids)
    assert sorted(seen) == sorted(model)
    assert len(seen) == len(set(seen))
    assert scan_ids(t, None, buckets=[]) == []
    assert scan_ids(t, None, buckets=[1, 1]) == scan_ids(t, None, buckets=[1])  # read once
    # An empty projection still counts rows (count(*) pushdown).
    assert t.scan(columns=[]).count() == len(model)
    assert t.scan(columns=[], where=col("k") == 1).count() == len(expected_ids(model, ["=", "k", 1]))
    assert scan_ids(t, None, buckets=[4, 0]) == sorted(i for i in model if t.schema.bucket_of_key(i) in (0, 4))
    # bucket selection combines with predicates and key lookups
    assert scan_ids(t, col("k") == 1, buckets=[2]) == [
        i for i in expected_ids(model, ["=", "k", 1]) if t.schema.bucket_of_key(i) == 2]
    some = sorted(model)[:20]
    in_b3 = [i for i in some if t.schema.bucket_of_key(i) == 3]
    s = t.scan(columns=["id"], where=col("id").isin(some), buckets=[3])
    assert sorted(s.to_table().column("id").to_pylist()) == in_b3
    assert s.rows_examined == len(in_b3)
    for bad in ([5], [-1], ["0"]):
        with pytest.raises(BadArgumentError) as ei:
            t.scan(buckets=bad)
        assert "'sc'" in str(ei.value)


def test_primary_key_scans_examine_only_their_keys(filled) -> None:
    t, model = filled
    s = t.scan(where=col("id") == 10)
    assert s.access_path == "primary_key"
    assert s.count() == 1 and s.rows_examined == 1
    keys = [1, 2, 3, 7, 350, 1000, 14]  # 7, 14 deleted; 1000 absent
    s = t.scan(where=["in", "id", keys + [None, 3]])
    assert s.access_path == "primary_key"
    assert sorted(b for batch in s for b in batch.column("id").to_pylist()) == sorted(k for k in keys if k in model)
    assert s.rows_examined == len(keys)  # duplicates and NULL dropped
    s = t.scan(where=(col("id") == 8) & (col("k") > 100))
    assert s.access_path == "primary_key" and s.count() == 0 and s.rows_examined == 1
    s = t.scan(where=col("id") == None)  # noqa: E711
    assert s.count() == 0 and s.rows_examined == 0
    # A range on the key is a full scan.
    s = t.scan(where=col("id") < 10)
    assert s.access_path == "full"
    assert s.count() == len([i for i in model if i < 10])
    assert s.rows_examined == len(model)
    # Composite keys: all key columns must be fixed.
    c = t.store.create_table("ck", [("a", "string"), ("b", "int32"), ("v", "int32")], primary_key=["a", "b"])
    c.insert([(a, b, b) for a in "xyz" for b in range(50)])
    s = c.scan(where=(col("a") == "y") & (col("b") == 7))
    assert s.access_path == "primary_key" and s.to_table().to_pylist() == [{"a": "y", "b": 7, "v": 7}]
    assert s.rows_examined == 1
    s = c.scan(where=col("a") == "y")
    assert s.access_path == "full" and s.count() == 50


def test_unchanged_base_data_is_scanned_zero_copy(store: Store) -> None:
    t = store.create_table("zc", [("id", "int64"), ("v", "float64")], primary_key="id", num_buckets=2)
    t.insert(pa.table({"id": pa.array(range(1000), pa.int64()), "v": pa.array([float(i) for i in range(1000)])}))
    t.compact()
    run_buffers = {b.runs[0].batch.column(1).buffers()[1].address for b in t.buckets}
    out = list(t.scan(columns=["id", "v"]))
    assert len(out) == 2
    assert {batch.column(1).buffers()[1].address for batch in out} == run_buffers


def test_scan_of_dropped_table(filled) -> None:
    t, _ = filled
    t.store.drop_table("sc")
    with pytest.raises(NoSuchTableError):
        t.scan()


# --- snapshots -----------------------------------------------------------------------------------


def test_scan_sees_the_state_when_it_started(filled) -> None:
    t, model = filled
    before = sort_rows(model.values())
    full = t.scan()
    by_pk = t.scan(where=col("id").isin([1, 2, 3, 5, 301, 302]))
    one_bucket = t.scan(buckets=[1])
    want_b1 = sort_rows(r for i, r in model.items() if t.schema.bucket_of_key(i) == 1)
    t.create_index("k_h", "k")
    by_index = t.scan(where=col("k") == 1)  # before writes
    want_k1 = expected_ids(model, ["=", "k", 1])
    # Writes in every bucket: inserts (point and bulk), updates, deletes, compaction.
    t.insert([(10_000 + i,) + (None,) * 8 for i in range(50)])
    t.insert(pa.table({"id": pa.array(range(20_000, 20_300), pa.int64())}))
    t.update_where(None, {"k": 1, "s": "changed"})
    t.delete([1, 2, 3, 301])
    t.compact()
    t.delete_where(col("id") < 100)

    def table_rows(s):
        tbl = s.to_table()
        return sort_rows(zip(*[c.to_pylist() for c in tbl.columns]))

    assert table_rows(full) == before
    assert table_rows(one_bucket) == want_b1
    assert table_rows(by_pk) == sort_rows(model[i] for i in (1, 2, 3, 5, 301, 302) if i in model)
    assert sorted(r[0] for r in table_rows(by_index)) == want_k1
    # A new scan sees the new state.
    assert t.scan(where=col("s") != "changed").count() == 0
    gone = {i for i in model if i < 100 or i == 301}
    assert t.count() == len(model) + 350 - len(gone)


def test_scan_survives_truncate_and_writes_mid_iteration(filled) -> None:
    t, model = filled
    s = t.scan(columns=["id"])
    it = iter(s)
    first = next(it)
    t.truncate()
    t.insert(pa.table({"id": pa.array(range(100_000, 100_500), pa.int64())}))
    t.compact()
    ids = first.column(0).to_pylist() + [i for b in it for i in b.column(0).to_pylist()]
    assert sorted(ids) == sorted(model)
    assert t.count() == 500


def test_scan_version_and_count(filled) -> None:
    t, model = filled
    v0 = t.scan().version
    t.insert((5000,) + (None,) * 8)
    assert t.scan().version > v0
    assert t.scan().count() == len(model) + 1


def test_primary_key_literals_in_other_forms(store: Store) -> None:
    """Key lookups by literal find the same rows as a full scan would: decimals at
    another scale, floats for integers, JSON forms."""
    t = store.create_table("dk", [("k", "decimal(10,2)"), ("v", "int32")], primary_key="k", num_buckets=8)
    t.insert([(D(i) / 2, i) for i in range(40)])
    for lit, want in [(D("1.5"), [3]), (D("1.50"), [3]), (D("1.500"), [3]), (1.5, [3]), ("1.5", [3]), (3, [6]),
                      (D("1.555"), []), (D("123456789012"), [])]:
        s = t.scan(columns=["v"], where=col("k") == lit)
        assert s.access_path == "primary_key"
        assert s.to_table().column(0).to_pylist() == want, lit
        # the same answer as a full scan
        assert [r[0] for r in rows(t, columns=["v"], where=(col("k") == lit) | (col("v") < -1))] == want
    s = t.scan(columns=["v"], where=col("k").isin([D("1.5"), D("2"), 0.5, None]))
    assert sorted(s.to_table().column(0).to_pylist()) == [1, 3, 4]
    c = store.create_table("dk2", [("a", "decimal(10,2)"), ("b", "int32"), ("v", "int32")], primary_key=["a", "b"],
                           num_buckets=8)
    c.insert([(D(i) / 2, i, i) for i in range(40)])
    s = c.scan(columns=["v"], where=(col("a") == D("1.5")) & (col("b") == 3.0))
    assert s.access_path == "primary_key" and s.to_table().column(0).to_pylist() == [3]
    s = c.scan(columns=["v"], where=(col("a") == D("1.5")) & (col("b") == 3.5))
    assert s.to_table().num_rows == 0
    i8 = store.create_table("i8k", [("k", "int8"), ("v", "int32")], primary_key="k", num_buckets=4)
    i8.insert([(k, k) for k in range(-128, 128, 3)])
    s = i8.scan(columns=["v"], where=col("k").isin([-128.0, 1.0, 2.5, 127]))
    assert sorted(s.to_table().column(0).to_pylist()) == [-128, 1, 127]


def test_float32_column_literals(store: Store) -> None:
    """A float32 column compares with literals rounded to float32 (so 0.1 finds the
    stored 0.1), and a literal beyond float32's range is still a legal comparison."""
    t = store.create_table("f32", [("id", "int32"), ("f", "float32")], primary_key="id")
    t.insert([(1, 0.1), (2, 1.0), (3, float("inf")), (4, -3.5), (5, None)])
    assert scan_ids(t, col("f") == 0.1) == [1]
    assert scan_ids(t, col("f").isin([0.1, 1.0])) == [1, 2]
    assert scan_ids(t, col("f") < 1e300) == [1, 2, 4]
    assert scan_ids(t, col("f") > -1e300) == [1, 2, 3, 4]
    t.create_index("f", "f", "ordered")
    assert t.scan(where=col("f") == 0.1).access_path == "index:f"
    assert scan_ids(t, col("f") == 0.1) == [1]
    assert scan_ids(t, (col("f") > 0.05) & (col("f") <= 1.0)) == [1, 2]
    with pytest.raises(ValueError):  # but not as a stored value
        t.insert((6, 1e300))
