"""SCAN with ``aggregates`` / ``group_by`` (docs/protocol.md section 10.2): partial aggregates
per server, over real frames, checked against DuckDB on the same rows (NULLs, NaN, empty
groups, every orderable type), and merged across buckets the way Spark merges them."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import random
from typing import Any, Iterator

import duckdb
import pyarrow as pa
import pytest

from spark_ext.client.connection import Connection
from spark_ext.exceptions import BadArgumentError, UnknownColumnError, ValueOutOfRangeError
from spark_ext.server.store_service import StoreService
from spark_ext.server.tcp import FrameServer
from spark_ext.store import Store
from spark_ext.wire.arrowio import read_ipc_stream
from spark_ext.wire.kinds import Kind

T = "db.facts"
NB = 4
SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("g", pa.string()),
    pa.field("h", pa.int32()),
    pa.field("i8", pa.int8()),
    pa.field("i", pa.int32()),
    pa.field("l", pa.int64()),
    pa.field("f", pa.float32()),
    pa.field("x", pa.float64()),
    pa.field("d", pa.decimal128(9, 2)),
    pa.field("s", pa.string()),
    pa.field("b", pa.bool_()),
    pa.field("bin", pa.binary()),
    pa.field("dt", pa.date32()),
    pa.field("ts", pa.timestamp("us", tz="UTC")),
])


def _rows(n: int, seed: int = 7) -> pa.Table:
    r = random.Random(seed)

    def maybe(v: Any, p: float = 0.15) -> Any:
        return None if r.random() < p else v

    cols: dict[str, list[Any]] = {f.name: [] for f in SCHEMA}
    for k in range(n):
        cols["id"].append(k)
        cols["g"].append(maybe(r.choice(["a", "b", "c", "é"]), 0.1))
        cols["h"].append(maybe(r.randrange(3), 0.1))
        cols["i8"].append(maybe(r.randrange(-128, 128)))
        cols["i"].append(maybe(r.randrange(-10**6, 10**6)))
        cols["l"].append(maybe(r.randrange(-10**15, 10**15)))
        cols["f"].append(maybe(r.randrange(-400, 400) / 4))
        cols["x"].append(maybe(r.choice([r.randrange(-10**6, 10**6) / 8, float("inf"), -0.0]) if r.random() < 0.05
                               else r.randrange(-10**6, 10**6) / 8))
        cols["d"].append(maybe(decimal.Decimal(r.randrange(-10**6, 10**6)).scaleb(-2)))
        cols["s"].append(maybe("".join(r.choice("abcxyzé") for _ in range(r.randrange(0, 4)))))
        cols["b"].append(maybe(r.random() < 0.5))
        cols["bin"].append(maybe(bytes(r.randrange(256) for _ in range(r.randrange(0, 3)))))
        cols["dt"].append(maybe(dt.date(2020, 1, 1) + dt.timedelta(days=r.randrange(2000))))
        cols["ts"].append(maybe(dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=r.randrange(10**14))))
    return pa.table(cols, schema=SCHEMA)


@pytest.fixture(scope="module")
def data() -> pa.Table:
    return _rows(3000)


@pytest.fixture(scope="module")
def server(data: pa.Table) -> Iterator[tuple[Store, Connection]]:
    store = Store(background=False)
    t = store.create_table(T, SCHEMA, ["id"], NB)
    t.insert(data)
    store.create_table("db.empty", SCHEMA, ["id"], NB)
    nan = store.create_table("db.nan", [("id", "int64"), ("g", "int32"), ("x", "float64"), ("f", "float32")], ["id"], 2)
    nan.insert([(1, 1, 1.0, 1.0), (2, 1, float("nan"), float("nan")), (3, 1, None, None), (4, 2, float("nan"), None),
                (5, 2, None, None), (6, 3, 2.5, 0.5), (7, 3, -1.0, -2.0), (8, 4, None, None)])
    big = store.create_table("db.big", [("id", "int64"), ("g", "int32"), ("v", "int64"), ("d", "decimal(38,0)")], ["id"], 1)
    big.insert([(1, 1, 2**62, 1), (2, 1, 2**62, 1), (3, 1, -2**62, 1), (4, 2, 2**62, 10**37), (5, 2, 2**62, 10**37),
                (6, 3, 2**63 - 1, 1), (7, 3, 1, 1)])
    nokey = store.create_table("db.nokey", [("g", "string"), ("v", "int32")], None, 3)
    nokey.insert([("a", 1), ("a", None), ("b", 3), (None, 4)])
    names = store.create_table("db.names", [("id", "int64"), ("group1", "int32"), ("_group1", "int32"),
                                            ("agg0", "string")], ["id"], 2)
    names.insert([(1, 1, 10, "a"), (2, 3, 10, "a"), (3, 2, None, "b"), (4, 1, 10, "a")])
    service = StoreService(store)
    fs = FrameServer(role="server")
    service.register(fs)
    fs.start()
    conn = Connection("127.0.0.1", fs.port)
    try:
        yield store, conn
    finally:
        conn.close()
        fs.stop()
        service.close()
        store.close()


def scan(conn: Connection, meta: dict[str, Any]) -> tuple[pa.Table, dict[str, Any]]:
    frames = list(conn.stream(Kind.SCAN, meta))
    assert len(frames) == 1, "an aggregate SCAN answers one frame"
    return read_ipc_stream(frames[0].body), frames[0].metadata


def _norm(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if isinstance(v, decimal.Decimal):
        return v.normalize()
    if isinstance(v, float) and v == 0:
        return 0.0  # -0.0 and 0.0 are the same value for SQL
    return v


def rows_of(t: pa.Table | list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    rows = [tuple(r.values()) for r in t.to_pylist()] if isinstance(t, pa.Table) else t
    return sorted((tuple(_norm(v) for v in r) for r in rows), key=repr)


def duck(table: pa.Table, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    con.register("t", table)
    con.execute("SET TimeZone = 'UTC'")
    return rows_of(con.execute(sql).fetchall())


AGG_SQL = {"count_star": "count(*)", "count": "count({c})", "sum": "sum({c})", "min": "min({c})", "max": "max({c})"}


def sql_of(group_by: list[str], aggs: list[list[str]]) -> str:
    sel = list(group_by) + [AGG_SQL[a[0]].format(c=a[1] if len(a) > 1 else "") for a in aggs]
    q = f"SELECT {', '.join(sel)} FROM t"
    return q + (f" GROUP BY {', '.join(group_by)}" if group_by else "")


def bucket_rows(conn: Connection, b: int, table: str = T) -> pa.Table:
    frames = list(conn.stream(Kind.SCAN, {"table": table, "buckets": [b]}))
    return pa.concat_tables([read_ipc_stream(f.body) for f in frames])


CASES = [
    ([], [["count_star"]]),
    ([], [["count_star"], ["count", "i"], ["sum", "i"], ["min", "i"], ["max", "i"]]),
    (["g"], [["count_star"], ["sum", "l"], ["min", "s"], ["max", "s"], ["count", "s"]]),
    (["g", "h"], [["sum", "i8"], ["sum", "i"], ["sum", "f"], ["sum", "x"], ["count", "x"]]),
    (["h"], [["min", "x"], ["max", "x"], ["min", "f"], ["max", "f"], ["min", "d"], ["max", "d"], ["sum", "d"]]),
    (["b"], [["min", "dt"], ["max", "dt"], ["min", "ts"], ["max", "ts"], ["min", "b"], ["max", "b"]]),
    (["dt"], [["count_star"], ["max", "bin"], ["min", "bin"]]),
    (["g"], []),  # group_by alone: the distinct groups
    (["s", "b"], [["count", "l"], ["count_star"], ["sum", "l"], ["sum", "l"]]),  # an aggregate twice
]


@pytest.mark.parametrize("group_by,aggs", CASES)
def test_each_bucket_matches_duckdb(server, group_by, aggs) -> None:
    _, conn = server
    for b in range(NB):
        got, meta = scan(conn, {"table": T, "buckets": [b], "group_by": group_by, "aggregates": aggs})
        assert got.column_names == group_by + [f"agg{j}" for j in range(len(aggs))]
        rows = bucket_rows(conn, b)
        assert meta["rows_examined"] == rows.num_rows and meta["groups"] == got.num_rows
        assert rows_of(got) == duck(rows, sql_of(group_by, aggs)), (b, group_by, aggs)


@pytest.mark.parametrize("where,cond", [
    (None, ""),
    ([">", "i", 0], " WHERE i > 0"),
    (["and", ["is_not_null", "g"], ["<", "x", 100.0]], " WHERE g IS NOT NULL AND x < 100.0"),
    (["=", "id", 17], " WHERE id = 17"),
    (["=", "g", "nope"], " WHERE g = 'nope'"),
])
def test_partials_merge_to_the_whole_answer(server, data, where, cond) -> None:
    """What Spark does with partial results: count -> sum of counts, sum -> sum, min -> min, max -> max."""
    _, conn = server
    group_by = ["g"]
    aggs = [["count_star"], ["count", "l"], ["sum", "l"], ["min", "i"], ["max", "s"], ["sum", "d"]]
    parts = []
    for b in range(NB):
        m = {"table": T, "buckets": [b], "group_by": group_by, "aggregates": aggs}
        if where is not None:
            m["where"] = where
        parts.append(scan(conn, m)[0])
    con = duckdb.connect()
    con.register("p", pa.concat_tables(parts))
    merged = rows_of(con.execute("SELECT g, sum(agg0), sum(agg1), sum(agg2), min(agg3), max(agg4), sum(agg5) "
                                 "FROM p GROUP BY g").fetchall())
    want = duck(data, f"SELECT g, count(*), count(l), sum(l), min(i), max(s), sum(d) FROM t{cond} GROUP BY g")
    assert merged == want


def test_no_group_by_is_one_row_even_over_no_rows(server) -> None:
    _, conn = server
    aggs = [["count_star"], ["count", "i"], ["sum", "i"], ["sum", "x"], ["min", "s"], ["max", "d"]]
    got, _ = scan(conn, {"table": "db.empty", "aggregates": aggs})
    assert got.to_pylist() == [{"agg0": 0, "agg1": 0, "agg2": None, "agg3": None, "agg4": None, "agg5": None}]
    got, _ = scan(conn, {"table": T, "aggregates": aggs, "where": ["=", "g", "nope"]})
    assert got.num_rows == 1 and got.column("agg0").to_pylist() == [0]
    got, _ = scan(conn, {"table": "db.empty", "group_by": ["g"], "aggregates": aggs})
    assert got.num_rows == 0 and got.column_names == ["g"] + [f"agg{j}" for j in range(6)]


def test_result_types(server) -> None:
    _, conn = server
    aggs = [["count_star"], ["count", "s"], ["sum", "i8"], ["sum", "i"], ["sum", "l"], ["sum", "f"], ["sum", "x"],
            ["sum", "d"], ["min", "f"], ["max", "d"], ["min", "ts"], ["max", "dt"], ["min", "b"], ["max", "bin"]]
    got, _ = scan(conn, {"table": T, "group_by": ["h", "ts"], "aggregates": aggs})
    assert [str(f.type) for f in got.schema] == [
        "int32", "timestamp[us, tz=UTC]", "int64", "int64", "int64", "int64", "int64", "double", "double",
        "decimal128(19, 2)", "float", "decimal128(9, 2)", "timestamp[us, tz=UTC]", "date32[day]", "bool", "binary"]


def test_nan_orders_above_every_number(server) -> None:
    """Spark's max is NaN when a NaN is present; min is NaN only over nothing but NaN."""
    _, conn = server
    aggs = [["min", "x"], ["max", "x"], ["min", "f"], ["max", "f"], ["sum", "x"], ["count", "x"]]
    got, _ = scan(conn, {"table": "db.nan", "group_by": ["g"], "aggregates": aggs})
    by_g = {r[0]: r[1:] for r in rows_of(got)}
    assert by_g == {
        1: (1.0, "NaN", 1.0, "NaN", "NaN", 2),
        2: ("NaN", "NaN", None, None, "NaN", 1),
        3: (-1.0, 2.5, -2.0, 0.5, 1.5, 2),
        4: (None, None, None, None, None, 0),
    }
    rows = pa.concat_tables([bucket_rows(conn, b, "db.nan") for b in range(2)])
    assert rows_of(got) == duck(rows, "SELECT g, min(x), max(x), min(f), max(f), sum(x), count(x) FROM t GROUP BY g")


def test_integer_sums_are_exact_and_overflow_is_an_error(server) -> None:
    _, conn = server
    got, _ = scan(conn, {"table": "db.big", "group_by": ["g"], "aggregates": [["sum", "v"], ["count_star"]],
                         "where": ["in", "g", [1]]})
    assert got.to_pylist() == [{"g": 1, "agg0": 2**62, "agg1": 3}]  # 2^62 + 2^62 wraps in int64 on the way
    for g in (2, 3):
        with pytest.raises(ValueOutOfRangeError, match="sum of column 'v' overflows bigint"):
            scan(conn, {"table": "db.big", "aggregates": [["sum", "v"]], "where": ["=", "g", g]})
    # decimal(38,0) sums into decimal(38,0): 2 * 10^37 fits, the sum of everything does too
    got, _ = scan(conn, {"table": "db.big", "group_by": ["g"], "aggregates": [["sum", "d"]], "where": ["=", "g", 2]})
    assert got.column("agg0").to_pylist() == [decimal.Decimal(2 * 10**37)]
    assert got.schema.field("agg0").type == pa.decimal128(38, 0)
    # the connection stays usable after an error
    got, _ = scan(conn, {"table": "db.big", "aggregates": [["count_star"]]})
    assert got.column("agg0").to_pylist() == [7]


def test_object_form_and_rowid_tables(server) -> None:
    store, conn = server
    a, _ = scan(conn, {"table": T, "group_by": ["h"], "aggregates": [{"fn": "count_star"}, {"fn": "sum", "column": "i"}]})
    b, _ = scan(conn, {"table": T, "group_by": ["h"], "aggregates": [["count_star"], ["sum", "i"]]})
    assert rows_of(a) == rows_of(b)
    got, _ = scan(conn, {"table": "db.nokey", "group_by": ["g"], "aggregates": [["count_star"], ["sum", "v"], ["max", "_rowid"]]})
    frames = list(conn.stream(Kind.SCAN, {"table": "db.nokey", "columns": ["g", "v", "_rowid"]}))
    rows = pa.concat_tables([read_ipc_stream(f.body) for f in frames])
    assert rows_of(got) == duck(rows, "SELECT g, count(*), sum(v), max(_rowid) FROM t GROUP BY g")
    assert [r[:3] for r in rows_of(got)] == [("a", 2, 1), ("b", 1, 3), (None, 1, 4)]


@pytest.mark.parametrize("meta,err,text", [
    ({"aggregates": [["avg", "i"]]}, BadArgumentError, "unknown function 'avg'"),
    ({"aggregates": [["sum", "nope"]]}, UnknownColumnError, "no column 'nope'"),
    ({"group_by": ["nope"], "aggregates": [["count_star"]]}, UnknownColumnError, "no column 'nope'"),
    ({"aggregates": [["sum", "s"]]}, BadArgumentError, "sum of column 's' is not defined"),
    ({"aggregates": [["sum", "b"]]}, BadArgumentError, "sum of column 'b'"),
    ({"aggregates": [["sum", "dt"]]}, BadArgumentError, "sum of column 'dt'"),
    ({"aggregates": [["count_star", "i"]]}, BadArgumentError, "count_star takes no column"),
    ({"aggregates": [["sum"]]}, BadArgumentError, "sum needs a column"),
    ({"aggregates": [["sum", "i", "x"]]}, BadArgumentError, "aggregate 0 must be"),
    ({"aggregates": [{"fn": "sum", "col": "i"}]}, BadArgumentError, "unknown field"),
    ({"aggregates": "count_star"}, BadArgumentError, "'aggregates' must be a list"),
    ({"aggregates": []}, BadArgumentError, "'aggregates' is empty"),
    ({"group_by": "g", "aggregates": [["count_star"]]}, BadArgumentError, "'group_by' must be a list"),
    ({"group_by": ["g", "g"], "aggregates": [["count_star"]]}, BadArgumentError, "names column 'g' twice"),
    ({"aggregates": [["count_star"]], "columns": ["g"]}, BadArgumentError, "'columns' cannot be combined"),
    ({"aggregates": [["count_star"]], "limit": 3}, BadArgumentError, "'limit' cannot be combined"),
])
def test_bad_requests_are_refused_clearly(server, meta, err, text) -> None:
    _, conn = server
    with pytest.raises(err, match=text):
        scan(conn, {"table": T, **meta})
    assert scan(conn, {"table": T, "aggregates": [["count_star"]]})[0].column("agg0").to_pylist() == [3000]


def test_plain_scans_are_unchanged(server) -> None:
    _, conn = server
    frames = list(conn.stream(Kind.SCAN, {"table": T, "columns": ["id", "g"], "where": ["=", "id", 5]}))
    t = read_ipc_stream(frames[-1].body)
    assert t.column_names == ["id", "g"] and t.column("id").to_pylist() == [5]


def test_generated_reply_names_never_clash_with_group_columns(server) -> None:
    """A table may have columns named like the reply's generated names (group<i>, agg<j>):
    the generated ones get '_' prepended until they are free, so every name is distinct."""
    _, conn = server
    odd = ["%", ["col", "group1"], ["lit", 2, "int32"]]
    got, meta = scan(conn, {"table": "db.names", "group_by": ["group1", odd, "_group1", "agg0"],
                            "aggregates": [["count_star"], ["sum", "group1"]]})
    assert got.column_names == ["group1", "__group1", "_group1", "agg0", "_agg0", "agg1"]
    rows = sorted(zip(*(c.to_pylist() for c in got.columns)), key=repr)
    assert rows == sorted([(1, 1, 10, "a", 2, 2), (3, 1, 10, "a", 1, 3), (2, 0, None, "b", 1, 2)], key=repr)
    # Without a clash the names are the documented ones.
    got, _ = scan(conn, {"table": "db.names", "group_by": [odd], "aggregates": [["count", "agg0"]]})
    assert got.column_names == ["group0", "agg0"]
