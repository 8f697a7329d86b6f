"""Every client operation against one locator and three store servers (real processes).

Each test keeps a plain-Python model of what the table must hold and compares it with a
full scan after the operations, so a lost, duplicated or misplaced row fails the test.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from integration.cluster import Cluster
from spark_ext.client.client import StoreClient
from spark_ext.exceptions import (
    AuthenticationError,
    BadArgumentError,
    DuplicateKeyError,
    IndexExistsError,
    NamespaceExistsError,
    NamespaceNotEmptyError,
    NoSuchIndexError,
    NoSuchNamespaceError,
    NoSuchTableError,
    NullKeyError,
    SparkExtError,
    TableExistsError,
    TypeMismatchError,
    UnknownColumnError,
)
from spark_ext.store import col
from spark_ext.wire.kinds import Kind

UTC = dt.timezone.utc
COLUMNS = [("id", "int64"), ("item", "string"), ("qty", "int32"), ("price", "float64"), ("ts", "timestamp_tz")]
NAMES = [c for c, _ in COLUMNS]
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)


def row(i: int, item: str | None = None, qty: int | None = None) -> tuple[Any, ...]:
    """A deterministic full row for key ``i``."""
    return (i, item if item is not None else f"item-{i}", qty if qty is not None else i % 97, i / 8.0,
            T0 + dt.timedelta(seconds=i))


def contents(c: StoreClient, table: str) -> dict[Any, tuple[Any, ...]]:
    """The whole table by key, read with one scan across all servers."""
    t = c.scan(table)
    names = t.column_names
    out: dict[Any, tuple[Any, ...]] = {}
    for r in t.to_pylist():
        k = r[names[0]]
        assert k not in out, f"key {k!r} returned twice by a scan of {table}"
        out[k] = tuple(r[n] for n in names)
    return out


def assert_model(c: StoreClient, table: str, model: dict[Any, tuple[Any, ...]]) -> None:
    got = contents(c, table)
    assert got.keys() == model.keys(), (
        f"{table}: missing {sorted(model.keys() - got.keys())[:10]}, unexpected {sorted(got.keys() - model.keys())[:10]}")
    diff = [k for k in model if got[k] != model[k]]
    assert not diff, f"{table}: rows differ, e.g. key {diff[0]}: got {got[diff[0]]}, want {model[diff[0]]}"
    assert c.count(table) == len(model)


def server_of(c: StoreClient, table: str, key: Any) -> str:
    info = c.table(table)
    return info.placement[info.schema.bucket_of_key(info.schema.coerce_key(key))]


def keys_by_server(c: StoreClient, table: str, keys: range | list[int]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for k in keys:
        out.setdefault(server_of(c, table, k), []).append(k)
    return out


def server_rows(cluster: Cluster, table: str) -> dict[str, int]:
    """Rows of ``table`` on each server, from the servers' own STATUS."""
    out = {}
    for sid in cluster.server_ids:
        st = cluster.request(sid, Kind.STATUS, {}).metadata
        out[sid] = sum(t["rows"] for t in st["tables"] if t["table"] == table)
    return out


@pytest.fixture(scope="module")
def c(cluster: Cluster) -> StoreClient:
    return cluster.client()


# --- placement ---------------------------------------------------------------------------


def test_table_spread_over_all_three_servers(cluster: Cluster, c: StoreClient) -> None:
    info = c.create_table("default.spread", COLUMNS, primary_key="id", num_buckets=9)
    assert sorted(set(info.placement)) == ["s0", "s1", "s2"]
    assert sorted(info.placement.count(s) for s in ("s0", "s1", "s2")) == [3, 3, 3]
    assert c.put("default.spread", pa.table({"id": np.arange(3000), "item": ["x"] * 3000})) == 3000
    per = server_rows(cluster, "default.spread")
    assert all(n > 0 for n in per.values()), per
    assert sum(per.values()) == 3000 == c.count("default.spread")
    # Each server hosts exactly the buckets the placement gives it, and only its keys.
    for sid in cluster.server_ids:
        st = cluster.request(sid, Kind.STATUS, {}).metadata
        (t,) = [t for t in st["tables"] if t["table"] == "default.spread"]
        assert t["buckets"] == [b for b, s in enumerate(info.placement) if s == sid]
        n = cluster.request(sid, Kind.COUNT, {"table": "default.spread"}).metadata["count"]
        assert n == per[sid]
    expected = {s: 0 for s in cluster.server_ids}
    for k in range(3000):
        expected[server_of(c, "default.spread", k)] += 1
    assert expected == per


# --- DDL -----------------------------------------------------------------------------------


def test_namespaces_and_tables(cluster: Cluster, c: StoreClient) -> None:
    c.create_namespace("shop")
    c.create_namespace("shop", if_not_exists=True)
    with pytest.raises(NamespaceExistsError):
        c.create_namespace("shop")
    assert ["shop"] in c.list_namespaces() and ["default"] in c.list_namespaces()
    c.create_namespace(["shop", "eu"])
    assert c.list_namespaces(["shop"]) == [["shop", "eu"]]

    c.create_table("shop.orders", COLUMNS, primary_key="id", num_buckets=6)
    c.create_table("shop.eu.orders", COLUMNS, primary_key="id", num_buckets=3)
    c.create_table("shop.items", [("sku", "string"), ("n", "int64")], primary_key="sku", num_buckets=4)
    assert c.list_tables("shop") == ["items", "orders"]
    assert c.list_tables(["shop", "eu"]) == ["orders"]
    with pytest.raises(TableExistsError):
        c.create_table("shop.orders", COLUMNS, primary_key="id")
    again = c.create_table("shop.orders", [("other", "int64")], primary_key="other", if_not_exists=True)
    assert again.schema.arrow_schema.names == NAMES  # the existing table, untouched
    with pytest.raises(NoSuchNamespaceError):
        c.create_table("nowhere.t", COLUMNS, primary_key="id")
    with pytest.raises(NoSuchNamespaceError):
        c.list_tables("nowhere")

    c.put("shop.items", [("a", 1), ("b", 2)])
    assert c.get("shop.items", "b") == ("b", 2)
    info = c.table("shop.items", refresh=True)
    assert info.schema.primary_key == ["sku"] and info.schema.num_buckets == 4 and info.version >= 1

    # A second client (no cache) sees the same catalog.
    other = cluster.client()
    assert other.list_tables("shop") == ["items", "orders"]
    assert other.get("shop.items", "a") == ("a", 1)

    assert c.drop_table("shop.items") is True
    assert c.drop_table("shop.items", if_exists=True) is False
    with pytest.raises(NoSuchTableError):
        c.drop_table("shop.items")
    with pytest.raises(NoSuchTableError):
        other.get("shop.items", "a")  # the other client's cache is stale: the server refuses
    assert c.list_tables("shop") == ["orders"]
    assert all("shop.items" not in [t["table"] for t in cluster.request(s, Kind.STATUS, {}).metadata["tables"]]
               for s in cluster.server_ids)

    with pytest.raises(NamespaceNotEmptyError):
        c.drop_namespace("shop")
    c.put("shop.orders", [row(1)])
    dropped = c.drop_namespace("shop", cascade=True)
    assert sorted(dropped) == ["shop.eu.orders", "shop.orders"]
    assert ["shop"] not in c.list_namespaces()
    with pytest.raises(NoSuchTableError):
        c.get("shop.orders", 1)
    for sid in cluster.server_ids:
        names = [t["table"] for t in cluster.request(sid, Kind.STATUS, {}).metadata["tables"]]
        assert not [n for n in names if n.startswith("shop.")], (sid, names)
    with pytest.raises(NoSuchNamespaceError):
        c.drop_namespace("shop")
    assert c.drop_namespace("shop", if_exists=True) == []

    # A dropped name can be created again, empty, with a new definition.
    c.create_namespace("shop")
    c.create_table("shop.orders", [("id", "int64"), ("note", "string")], primary_key="id", num_buckets=3)
    assert c.count("shop.orders") == 0
    c.put("shop.orders", [(1, "new")])
    assert c.get("shop.orders", 1) == (1, "new")
    c.drop_namespace("shop", cascade=True)


def test_bad_definitions_are_refused(c: StoreClient) -> None:
    with pytest.raises(SparkExtError):
        c.create_table("default.bad1", [("id", "int64")], primary_key="nope")
    with pytest.raises(SparkExtError):
        c.create_table("default.bad2", [("id", "not_a_type")], primary_key="id")
    assert "bad1" not in c.list_tables() and "bad2" not in c.list_tables()


# --- writes --------------------------------------------------------------------------------


def test_put_every_input_form(c: StoreClient) -> None:
    t = "default.forms"
    c.create_table(t, COLUMNS, primary_key="id", num_buckets=6)
    model: dict[Any, tuple[Any, ...]] = {}

    # One dict, one tuple, lists of both (small: the compact-rows path).
    assert c.put(t, dict(zip(NAMES, row(1)))) == 1
    model[1] = row(1)
    assert c.put(t, row(2)) == 1
    model[2] = row(2)
    rows = [row(i) for i in range(3, 20)]
    assert c.put(t, rows) == len(rows)
    model.update({r[0]: r for r in rows})
    assert c.put(t, [dict(zip(NAMES, row(i))) for i in range(20, 30)]) == 10
    model.update({i: row(i) for i in range(20, 30)})
    # A dict with columns left out: they are NULL.
    assert c.put(t, {"id": 30, "item": "sparse"}) == 1
    model[30] = (30, "sparse", None, None, None)
    assert_model(c, t, model)

    # pandas, small and >= 128 rows (the vectorized Arrow path), spanning all servers.
    def frame(lo: int, hi: int) -> pd.DataFrame:
        rs = [row(i) for i in range(lo, hi)]
        return pd.DataFrame({n: [r[j] for r in rs] for j, n in enumerate(NAMES)}).astype({"qty": "int32"})

    assert c.put(t, frame(100, 110)) == 10
    model.update({i: row(i) for i in range(100, 110)})
    assert c.put(t, frame(200, 500)) == 300
    model.update({i: row(i) for i in range(200, 500)})
    assert_model(c, t, model)

    # Arrow Table and RecordBatch, small and large.
    def arrow(lo: int, hi: int, item: str) -> pa.Table:
        ids = np.arange(lo, hi)
        return pa.table({"id": ids, "item": [item] * len(ids), "qty": pa.array(ids % 97, pa.int32()),
                         "price": ids / 8.0, "ts": pa.array([T0 + dt.timedelta(seconds=int(i)) for i in ids],
                                                           pa.timestamp("us", tz="UTC"))})

    assert c.put(t, arrow(600, 605, "arrow-small")) == 5
    model.update({i: row(i, "arrow-small") for i in range(600, 605)})
    assert c.put(t, arrow(1000, 1400, "arrow-big").to_batches()[0]) == 400
    model.update({i: row(i, "arrow-big") for i in range(1000, 1400)})
    assert_model(c, t, model)

    # Upsert: existing keys are replaced (small and large), new ones added, in one call.
    assert c.put(t, arrow(1300, 1500, "replaced")) == 200
    model.update({i: row(i, "replaced") for i in range(1300, 1500)})
    assert c.put(t, [row(1, "again"), row(2000, "new")]) == 2
    model[1] = row(1, "again")
    model[2000] = row(2000, "new")
    assert_model(c, t, model)

    # get / get_many agree with the model, absent keys are None, order is kept.
    assert c.get(t, 1) == model[1]
    assert c.get(t, 999999) is None
    keys = [2000, 5, 999999, 1300, 1, 5]
    assert c.get_many(t, keys) == [model.get(k) for k in keys]
    big = list(range(0, 1500, 3))
    assert c.get_many(t, big) == [model.get(k) for k in big]


def test_bad_rows_write_nothing(c: StoreClient) -> None:
    t = "default.badrows"
    c.create_table(t, COLUMNS, primary_key="id", num_buckets=6)
    c.put(t, [row(i) for i in range(10)])
    before = contents(c, t)
    with pytest.raises(TypeMismatchError):
        c.put(t, [row(100), (101, "x", "not-an-int", 1.0, None)])
    with pytest.raises(NullKeyError):
        c.put(t, [row(102), (None, "x", 1, 1.0, None)])
    with pytest.raises(UnknownColumnError):
        c.put(t, {"id": 103, "nope": 1})
    with pytest.raises(TypeMismatchError):
        c.put(t, pa.table({"id": np.arange(200, 400), "qty": ["s"] * 200}))
    assert contents(c, t) == before


def _insert_dup_case(c: StoreClient, t: str, model: dict[Any, tuple[Any, ...]], rows: Any, new_keys: list[int]) -> None:
    with pytest.raises(DuplicateKeyError) as ei:
        c.insert(t, rows)
    assert t in str(ei.value)
    assert c.get_many(t, new_keys) == [model.get(k) for k in new_keys]
    assert_model(c, t, model)


def test_insert_duplicates_write_nothing_even_across_servers(c: StoreClient) -> None:
    t = "default.ins"
    c.create_table(t, COLUMNS, primary_key="id", num_buckets=6)
    model: dict[Any, tuple[Any, ...]] = {}
    assert c.insert(t, [row(i) for i in range(50)]) == 50
    model.update({i: row(i) for i in range(50)})
    per = keys_by_server(c, t, range(1000, 1300))
    assert len(per) == 3

    # Small (compact rows), spanning the three servers, the existing key on each server in turn.
    for sid in sorted(per):
        existing = next(k for k in range(50) if server_of(c, t, k) == sid)
        fresh = [per[s][0] for s in sorted(per)]
        _insert_dup_case(c, t, model, [row(k) for k in fresh] + [row(existing, "dup")], fresh)
        _insert_dup_case(c, t, model, [row(existing, "dup")] + [row(k) for k in fresh], fresh)

    # A key repeated inside the request (on one server and across servers).
    fresh = [per["s0"][1], per["s1"][1], per["s2"][1]]
    _insert_dup_case(c, t, model, [row(k) for k in fresh] + [row(fresh[1], "again")], fresh)

    # Large Arrow input spanning all servers, one existing key in it.
    ids = np.array(list(range(1000, 1300)) + [7])
    tbl = pa.table({"id": ids, "item": ["bulk"] * len(ids)})
    _insert_dup_case(c, t, model, tbl, list(range(1000, 1300)))
    # ... and a large input with a key repeated inside it.
    ids = np.array(list(range(1000, 1300)) + [1299])
    _insert_dup_case(c, t, model, pa.table({"id": ids, "item": ["bulk"] * len(ids)}), list(range(1000, 1300)))

    # Nothing stays locked by the failed statements: the same keys insert fine now.
    assert c.insert(t, pa.table({"id": np.arange(1000, 1300), "item": ["bulk"] * 300})) == 300
    model.update({i: (i, "bulk", None, None, None) for i in range(1000, 1300)})
    assert c.insert(t, [row(k) for k in (5000, 5001, 5002)]) == 3
    model.update({k: row(k) for k in (5000, 5001, 5002)})
    assert_model(c, t, model)


def test_update_and_delete_by_key(c: StoreClient) -> None:
    t = "default.upd"
    c.create_table(t, COLUMNS, primary_key="id", num_buckets=6)
    model = {i: row(i) for i in range(300)}
    c.put(t, [model[i] for i in range(300)])

    # One key, then keys spread over every server, some absent (skipped, not created).
    assert c.update(t, [5], {"item": "five"}) == 1
    model[5] = (5, "five", *model[5][2:])
    keys = list(range(0, 300, 7)) + [10_000, 10_001]
    assert len({server_of(c, t, k) for k in keys}) == 3
    assert c.update(t, keys, {"qty": -1, "price": 0.25}) == len(keys) - 2
    for k in keys[:-2]:
        model[k] = (k, model[k][1], -1, 0.25, model[k][4])
    assert c.update(t, [10_002], {"qty": 1}) == 0
    assert c.update(t, [6, 8], {"item": None}) == 2  # setting NULL
    for k in (6, 8):
        model[k] = (k, None, *model[k][2:])
    assert_model(c, t, model)
    with pytest.raises(UnknownColumnError):
        c.update(t, [1], {"nope": 1})
    with pytest.raises(TypeMismatchError):
        c.update(t, [1, 2, 3], {"qty": "x"})
    assert_model(c, t, model)

    # Deletes: absent keys count nothing; keys on every server in one call.
    assert c.delete(t, [1]) == 1
    del model[1]
    assert c.delete(t, [1]) == 0
    dkeys = list(range(100, 200, 3)) + [77_777]
    assert c.delete(t, dkeys) == len(dkeys) - 1
    for k in dkeys[:-1]:
        del model[k]
    assert c.get(t, 100) is None and c.get_many(t, [100, 2]) == [None, model[2]]
    assert_model(c, t, model)
    # A deleted key can be inserted again.
    assert c.insert(t, [row(100, "back")]) == 1
    model[100] = row(100, "back")
    assert_model(c, t, model)


def test_update_where_and_delete_where(c: StoreClient) -> None:
    t = "default.where"
    c.create_table(t, COLUMNS, primary_key="id", num_buckets=6)
    model = {i: row(i) for i in range(600)}
    c.put(t, pa.table({n: [model[i][j] for i in range(600)] for j, n in enumerate(NAMES)},
                      schema=c.table(t).schema.arrow_schema))

    n = c.update_where(t, (col("qty") < 10) & (col("id") >= 100), {"item": "cheap"})
    want = [k for k, r in model.items() if r[2] < 10 and k >= 100]
    assert n == len(want) and len({server_of(c, t, k) for k in want}) == 3
    for k in want:
        model[k] = (k, "cheap", *model[k][2:])
    assert_model(c, t, model)
    assert c.update_where(t, col("item") == "nothing-matches", {"qty": 0}) == 0

    n = c.delete_where(t, col("item") == "cheap")
    assert n == len(want)
    for k in want:
        del model[k]
    n = c.delete_where(t, col("id").isin([1, 2, 3, 999_999]) | (col("qty") == 50))
    gone = [k for k, r in model.items() if k in (1, 2, 3) or r[2] == 50]
    assert n == len(gone)
    for k in gone:
        del model[k]
    assert_model(c, t, model)
    # No predicate: every row.
    assert c.update_where(t, None, {"price": 1.0}) == len(model)
    model = {k: (*r[:3], 1.0, r[4]) for k, r in model.items()}
    assert_model(c, t, model)
    assert c.delete_where(t, None) == len(model)
    assert c.count(t) == 0


def _scan_set(c: StoreClient, t: str, **kw: Any) -> list[tuple[Any, ...]]:
    tbl = c.scan(t, **kw)
    return sorted(tuple(r.values()) for r in tbl.to_pylist())


def test_scans_counts_lookups_ranges_and_indexes(cluster: Cluster, c: StoreClient) -> None:
    t = "default.scan"
    c.create_table(t, COLUMNS, primary_key="id", num_buckets=6)
    model = {i: row(i, f"g{i % 13}") for i in range(2000)}
    c.put(t, pa.table({n: [model[i][j] for i in range(2000)] for j, n in enumerate(NAMES)},
                      schema=c.table(t).schema.arrow_schema))

    def check_reads() -> None:
        # Projection: only the asked columns, in the asked order.
        p = c.scan(t, columns=["qty", "id"])
        assert p.column_names == ["qty", "id"]
        assert sorted(zip(p.column("id").to_pylist(), p.column("qty").to_pylist())) == sorted((k, r[2]) for k, r in model.items())
        # Predicate (and projection with it).
        got = _scan_set(c, t, columns=["id", "item"], where=(col("qty") >= 90) & ~(col("item") == "g3"))
        assert got == sorted((k, r[1]) for k, r in model.items() if r[2] >= 90 and r[1] != "g3")
        assert c.count(t, where=col("qty") >= 90) == sum(1 for r in model.values() if r[2] >= 90)
        assert c.count(t) == len(model)
        # Limit: exactly that many matching rows in total across the three servers.
        for lim in (0, 1, 7, 500):
            lt = c.scan(t, where=col("qty") < 50, limit=lim)
            assert lt.num_rows == min(lim, sum(1 for r in model.values() if r[2] < 50))
            assert all(q < 50 for q in lt.column("qty").to_pylist())
            assert all(model[r["id"]] == tuple(r.values()) for r in lt.to_pylist())
        # Lookup (equality) and range (inclusive bounds, open ends).
        assert _scan_set(c, t, where=col("item") == "g5") == sorted(r for r in model.values() if r[1] == "g5")
        assert sorted(tuple(r.values()) for r in c.lookup(t, "item", "g5").to_pylist()) == sorted(
            r for r in model.values() if r[1] == "g5")
        assert c.lookup(t, "item", "nope").num_rows == 0
        assert sorted(tuple(r.values()) for r in c.range(t, "qty", 10, 12).to_pylist()) == sorted(
            r for r in model.values() if 10 <= r[2] <= 12)
        assert c.range(t, "qty", 95).num_rows == sum(1 for r in model.values() if r[2] >= 95)
        assert c.range(t, "id", None, 9).num_rows == sum(1 for k in model if k <= 9)
        assert c.range(t, "price", 10.0, 10.5).num_rows == sum(1 for r in model.values() if 10.0 <= r[3] <= 10.5)
        # Only some buckets.
        info = c.table(t)
        b0 = [b for b, s in enumerate(info.placement) if s == "s1"][:1]
        assert c.scan(t, buckets=b0).num_rows == sum(1 for k in model if info.schema.bucket_of_key(k) in b0)

    check_reads()
    c.create_index(t, "item_ix", "item", "hash")
    c.create_index(t, "qty_ix", ["qty"], "ordered")
    with pytest.raises(IndexExistsError):
        c.create_index(t, "qty_ix", ["qty"], "ordered")
    with pytest.raises(UnknownColumnError):
        c.create_index(t, "bad_ix", ["nope"])
    assert sorted(ix["name"] for ix in c.table(t, refresh=True).indexes) == ["item_ix", "qty_ix"]
    for sid in cluster.server_ids:
        (st,) = [x for x in cluster.request(sid, Kind.STATUS, {}).metadata["tables"] if x["table"] == t]
        assert st["indexes"] == ["item_ix", "qty_ix"]
    check_reads()
    # The indexes are really used by the servers for equality and ranges.
    conn = cluster.connection("s0")
    try:
        frames = list(conn.stream(Kind.SCAN, {"table": t, "where": ["=", "item", "g5"]}))
        assert frames[-1].metadata["access_path"] == "index:item_ix"
        frames = list(conn.stream(Kind.SCAN, {"table": t, "where": ["and", [">=", "qty", 10], ["<=", "qty", 12]]}))
        assert frames[-1].metadata["access_path"] == "index:qty_ix"
    finally:
        conn.close()

    # Writes after the indexes exist keep them right: moves between index values, deletes, inserts.
    c.update(t, list(range(0, 2000, 11)), {"item": "g5", "qty": 11})
    for k in range(0, 2000, 11):
        model[k] = (k, "g5", 11, *model[k][3:])
    c.delete(t, list(range(1, 2000, 17)))
    for k in range(1, 2000, 17):
        model.pop(k, None)
    c.put(t, [row(i, "g5", 12) for i in range(5000, 5050)])
    model.update({i: row(i, "g5", 12) for i in range(5000, 5050)})
    c.update_where(t, col("item") == "g7", {"item": "g5"})
    model = {k: ((k, "g5", *r[2:]) if r[1] == "g7" else r) for k, r in model.items()}
    check_reads()
    assert_model(c, t, model)

    c.drop_index(t, "item_ix")
    with pytest.raises(NoSuchIndexError):
        c.drop_index(t, "item_ix")
    assert [ix["name"] for ix in c.table(t, refresh=True).indexes] == ["qty_ix"]
    check_reads()
    c.drop_index(t, "qty_ix")
    check_reads()


def test_truncate(cluster: Cluster, c: StoreClient) -> None:
    t = "default.trunc"
    c.create_table(t, COLUMNS, primary_key="id", num_buckets=6)
    c.put(t, pa.table({"id": np.arange(1000), "item": ["x"] * 1000}))
    assert all(n > 0 for n in server_rows(cluster, t).values())
    c.truncate(t)
    assert c.count(t) == 0 and c.scan(t).num_rows == 0 and c.get(t, 5) is None
    assert set(server_rows(cluster, t).values()) == {0}
    c.put(t, [row(5)])
    assert c.get(t, 5) == row(5) and c.count(t) == 1


def test_composite_key_table(c: StoreClient) -> None:
    t = "default.ck"
    c.create_table(t, [("region", "string"), ("id", "int64"), ("v", "float64")], primary_key=["region", "id"],
                   num_buckets=6)
    rows = [(r, i, i * 1.5) for r in ("eu", "us", "apac") for i in range(100)]
    assert c.put(t, rows) == 300
    assert c.get(t, ("us", 7)) == ("us", 7, 10.5)
    assert c.get(t, ("us", 1000)) is None
    assert c.get_many(t, [("eu", 1), ("apac", 99), ("xx", 1)]) == [("eu", 1, 1.5), ("apac", 99, 148.5), None]
    assert c.delete(t, [("eu", i) for i in range(50)]) == 50
    assert c.update(t, [("us", 1), ("us", 2)], {"v": -1.0}) == 2
    with pytest.raises(DuplicateKeyError):
        c.insert(t, [("zz", 1, 0.0), ("us", 3, 0.0)])
    assert c.get(t, ("zz", 1)) is None
    assert c.count(t) == 250 and c.count(t, col("v") == -1.0) == 2


def test_table_without_primary_key(cluster: Cluster, c: StoreClient) -> None:
    """Hidden row ids: rows go to every server, ids carry their bucket, keyed ops use them."""
    t = "default.nokey"
    info = c.create_table(t, [("a", "int64"), ("b", "string")], num_buckets=6)
    assert info.schema.hidden_rowid
    assert c.insert(t, [(1, "x"), (2, "y"), (3, "z")]) == 3
    assert c.insert(t, pa.table({"a": np.arange(100, 400), "b": ["bulk"] * 300})) == 300
    assert c.insert(t, [(1, "x")]) == 1  # no key: the same values again are a new row
    per = server_rows(cluster, t)
    assert all(n > 0 for n in per.values()) and sum(per.values()) == 304 == c.count(t)

    scan = c.scan(t, columns=["_rowid", "a", "b"])
    rows = scan.to_pylist()
    ids = [r["_rowid"] for r in rows]
    assert len(set(ids)) == 304
    # Each row id lies in a bucket its server hosts.
    for sid in cluster.server_ids:
        (st,) = [x for x in cluster.request(sid, Kind.STATUS, {}).metadata["tables"] if x["table"] == t]
        got = c.scan(t, columns=["_rowid"], buckets=st["buckets"]).column("_rowid").to_pylist()
        assert len(got) == st["rows"] and all(r % 6 in st["buckets"] for r in got)
    assert c.scan(t).column_names == ["a", "b"]  # the hidden column is not shown by default

    with pytest.raises(BadArgumentError):
        c.put(t, [(9, "upsert needs a key")])
    r0 = rows[0]
    assert c.get(t, r0["_rowid"]) == (r0["a"], r0["b"])
    assert c.update(t, [r0["_rowid"]], {"b": "changed"}) == 1
    assert c.get(t, r0["_rowid"]) == (r0["a"], "changed")
    some = ids[1:40]
    assert c.delete(t, some) == len(some)
    assert c.get_many(t, some[:3]) == [None, None, None]
    assert c.count(t) == 304 - len(some)
    n_small = c.count(t, col("a") < 200)
    assert c.update_where(t, col("a") < 200, {"b": "small"}) == n_small
    assert c.delete_where(t, col("b") == "small") == n_small
    assert c.count(t) == 304 - len(some) - n_small
    c.truncate(t)
    assert c.count(t) == 0


def test_errors_are_typed(cluster: Cluster, c: StoreClient) -> None:
    with pytest.raises(NoSuchTableError) as ei:
        c.get("default.nope", 1)
    assert "default.nope" in str(ei.value)
    c.create_table("default.typed", COLUMNS, primary_key="id", num_buckets=3)
    with pytest.raises(TypeMismatchError) as te:
        c.get("default.typed", "not-an-int")
    assert "id" in str(te.value)
    with pytest.raises(AuthenticationError):
        StoreClient(cluster.locator_address, b"wrong secret").servers()
    with pytest.raises(SparkExtError, match="requires a secret"):
        StoreClient(cluster.locator_address, None).list_tables()


# --- the status command --------------------------------------------------------------------


def test_status_command(cluster: Cluster, c: StoreClient) -> None:
    t = "default.status_t"
    info = c.create_table(t, COLUMNS, primary_key="id", num_buckets=6)
    c.put(t, pa.table({"id": np.arange(1234), "item": ["s"] * 1234}))
    per = server_rows(cluster, t)
    r = cluster.cli("status", "--locator", cluster.locator_arg, "--secret-file", str(cluster.secret_file))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "3 server(s)" in out
    for sid in cluster.server_ids:
        host, port = cluster.servers[sid].address
        assert re.search(rf"^\s+{sid}\s+{re.escape(host)}:{port}\s+up\s*$", out, re.M), out
    for sid in cluster.server_ids:
        buckets = info.placement.count(sid)
        m = re.search(rf"^\s+{re.escape(t)}\s+{sid}\s+(\d+)\s+([\d,]+)\s", out, re.M)
        assert m, out
        assert int(m.group(1)) == buckets and int(m.group(2).replace(",", "")) == per[sid]
    assert sum(per.values()) == 1234
    # Without the secret the command fails rather than showing anything.
    r = cluster.cli("status", "--locator", cluster.locator_arg)
    assert r.returncode != 0 and "s0" not in r.stdout
    # --help works for every command a new user would try.
    for args in (["--help"], ["server", "start", "--help"], ["locator", "start", "--help"], ["status", "--help"]):
        h = cluster.cli(*args)
        assert h.returncode == 0 and "usage:" in h.stdout


def _listen_addresses(port: int) -> set[str]:
    """Local addresses of the listening TCP sockets on ``port`` (from /proc/net/tcp*)."""
    out = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            fields = ln.split()
            addr, p = fields[1].split(":")
            if fields[3] == "0A" and int(p, 16) == port:  # LISTEN
                out.add(addr)
    return out


def test_processes_listen_on_loopback_only(cluster: Cluster) -> None:
    ports = [cluster.locator_address[1]] + [cluster.servers[s].port for s in cluster.server_ids]
    for port in ports:
        addrs = _listen_addresses(port)
        assert addrs == {"0100007F"}, (port, addrs)  # 127.0.0.1, not 0.0.0.0 nor ::
