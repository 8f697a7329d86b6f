"""Aggregate push-down: COUNT(*), COUNT(col), SUM, MIN, MAX and AVG (as SUM and COUNT) with GROUP BY
on plain columns, or on arithmetic expressions (k % 100, SUM(x * 2)), run on the store servers, per
bucket; Spark merges the partial results. Every query is checked row by row against the same query
over a temporary view of the same rows, and EXPLAIN shows what was pushed (or that nothing was, for
what the servers refuse)."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import random
from typing import Any

import pytest

from integration.spark.test_multi_server import cluster  # noqa: F401  (a pytest fixture)

COLUMNS = ("id BIGINT, g STRING, h INT, b TINYINT, s SMALLINT, i INT, l BIGINT, f FLOAT, x DOUBLE, "
           "d DECIMAL(10,2), str STRING, bo BOOLEAN, dt DATE, ts TIMESTAMP, bin BINARY, tsn TIMESTAMP_NTZ")


def _rows(n: int, seed: int) -> list[tuple[Any, ...]]:
    r = random.Random(seed)

    def maybe(v: Any, p: float = 0.12) -> Any:
        return None if r.random() < p else v

    out = []
    for k in range(n):
        x = r.randrange(-4000, 4000) / 4  # quarters: every sum is exact, in any order
        if r.random() < 0.01:
            x = r.choice([float("nan"), float("inf"), -0.0])
        out.append((
            k, maybe(r.choice(["a", "b", "c", "é"]), 0.08), maybe(r.randrange(4), 0.08), maybe(r.randrange(-128, 128)),
            maybe(r.randrange(-32768, 32768)), maybe(r.randrange(-2**31, 2**31)), maybe(r.randrange(-2**40, 2**40)),
            maybe(r.randrange(-400, 400) / 8), maybe(x), maybe(decimal.Decimal(r.randrange(-10**6, 10**6)).scaleb(-2)),
            maybe("".join(r.choice("abyzé") for _ in range(r.randrange(4)))), maybe(r.random() < 0.5),
            maybe(dt.date(2020, 1, 1) + dt.timedelta(days=r.randrange(3000))),
            maybe(dt.datetime(2021, 1, 1) + dt.timedelta(microseconds=r.randrange(10**14))),
            maybe(bytes(r.randrange(256) for _ in range(r.randrange(3)))),
            maybe(dt.datetime(1900, 1, 1) + dt.timedelta(seconds=r.randrange(10**6))),
        ))
    return out


def _norm(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if isinstance(v, float) and v == 0.0:
        return 0.0
    if isinstance(v, bytearray):
        return bytes(v)
    return v


def rows(df) -> list[tuple[Any, ...]]:
    return sorted((tuple(_norm(v) for v in r) for r in df.collect()), key=repr)


def plan(spark, q: str) -> str:
    return spark.sql("EXPLAIN " + q).collect()[0][0]


def load(spark, table: str, view: str, n: int = 3000, seed: int = 11, buckets: int = 8) -> None:
    spark.sql(f"CREATE TABLE {table} ({COLUMNS}, PRIMARY KEY (id)) TBLPROPERTIES ('buckets'='{buckets}')")
    df = spark.createDataFrame(_rows(n, seed), COLUMNS)
    df.writeTo(table).append()
    df.createOrReplaceTempView(view)


#: (query with {T}, what EXPLAIN must show as pushed)
PUSHED = [
    ("SELECT count(*) FROM {T}", "PushedAggregates: [COUNT(*)]"),
    ("SELECT g, count(*), count(h), sum(i), min(i), max(i) FROM {T} GROUP BY g",
     "PushedAggregates: [COUNT(*), COUNT(h), SUM(i), MIN(i), MAX(i)], PushedGroupBy: [g]"),
    ("SELECT g, h, sum(b), sum(s), sum(l), min(l), max(s), count(b) FROM {T} GROUP BY g, h", "PushedGroupBy: [g, h]"),
    ("SELECT h, sum(f), sum(x), min(f), max(f), min(x), max(x), count(x) FROM {T} GROUP BY h", "SUM(x)"),
    ("SELECT g, avg(i), avg(x), avg(b), avg(f) FROM {T} GROUP BY g", "PushedAggregates: [SUM(i), COUNT(i), SUM(x), COUNT(x)"),
    ("SELECT avg(l), sum(l), count(l) FROM {T}", "PushedAggregates: [SUM(l), COUNT(l)]"),
    ("SELECT bo, min(str), max(str), min(dt), max(dt), min(ts), max(ts), min(d), max(d) FROM {T} GROUP BY bo",
     "MIN(d), MAX(d)], PushedGroupBy: [bo]"),
    ("SELECT dt, count(*), max(bin), min(bin) FROM {T} GROUP BY dt", "PushedGroupBy: [dt]"),
    ("SELECT h, min(tsn), max(tsn), count(tsn) FROM {T} GROUP BY h", "MAX(tsn)"),
    ("SELECT ts, tsn, b, count(*) FROM {T} WHERE id < 500 GROUP BY ts, tsn, b", "PushedGroupBy: [ts, tsn, b]"),
    ("SELECT str, count(*) FROM {T} GROUP BY str", "PushedGroupBy: [str]"),
    ("SELECT g, every(bo), some(bo), max(i) FROM {T} GROUP BY g", "PushedAggregates: [MIN(bo), MAX(bo), MAX(i)]"),
    ("SELECT g FROM {T} GROUP BY g", "PushedAggregates: [], PushedGroupBy: [g]"),
    ("SELECT DISTINCT h FROM {T}", "PushedGroupBy: [h]"),
    ("SELECT x, count(*) FROM {T} GROUP BY x", "PushedGroupBy: [x]"),  # NaN, -0.0 and 0.0 as groups
    ("SELECT h, g, h, max(x) + min(x) AS spread, count(*) * 2 FROM {T} GROUP BY g, h HAVING count(*) > 1",
     "PushedGroupBy: [g, h]"),
    ("SELECT g, sum(i) FROM {T} WHERE h = 1 AND i > 0 GROUP BY g", "PushedFilters: "),
    ("SELECT g, count(*), sum(l), max(x) FROM {T} WHERE str LIKE 'a%' OR h IS NULL GROUP BY g", "PushedGroupBy: [g]"),
    ("SELECT count(*), sum(i), min(g) FROM {T} WHERE id = 17", "PushedAggregates"),
    ("SELECT count(*), sum(i), max(g) FROM {T} WHERE id IN (3, 5, 99999)", "PushedAggregates"),
    ("SELECT count(*), sum(i), max(x) FROM {T} WHERE g = 'nope'", "PushedAggregates"),
    ("SELECT g, count(*) FROM {T} WHERE g = 'nope' GROUP BY g", "PushedAggregates"),
    # arithmetic group keys and aggregate arguments (negative keys: Spark's % truncates)
    ("SELECT h % 2 AS odd, sum(i) FROM {T} GROUP BY h % 2", "PushedGroupBy: [h % 2]"),
    ("SELECT g, sum(i + 1) FROM {T} GROUP BY g", "PushedAggregates: [SUM(i + 1)]"),
    ("SELECT i % 100 AS k, count(*), avg(x), min(ts), max(ts) FROM {T} GROUP BY i % 100",
     "PushedAggregates: [COUNT(*), SUM(x), COUNT(x), MIN(ts), MAX(ts)], PushedGroupBy: [i % 100]"),
    ("SELECT b % 7, s % -5, count(*), sum(l % 1000) FROM {T} GROUP BY b % 7, s % -5",
     "PushedGroupBy: [CAST(b AS integer) % 7, CAST(s AS integer) % -5]"),
    ("SELECT x * 2 + 1, count(*), max(x) FROM {T} GROUP BY x * 2 + 1", "PushedGroupBy: [(x * 2.0) + 1.0]"),
    ("SELECT l - i, count(*) FROM {T} WHERE h = 1 GROUP BY l - i", "PushedGroupBy: [l - CAST(i AS long)]"),
    ("SELECT f / 2, max(f * f), min(-f), count(*) FROM {T} GROUP BY f / 2", "PushedGroupBy: [CAST(f AS double) / 2.0]"),
    ("SELECT abs(h - 2), count(*), sum(abs(b + 0)) FROM {T} GROUP BY abs(h - 2)", "PushedGroupBy: [ABS(h - 2)]"),
    ("SELECT g, count(l * 2), avg(i % 10), min(b * 2) FROM {T} GROUP BY g", "COUNT(l * 2)"),
    ("SELECT CAST(h AS BIGINT) * 3, h % 3, count(*) FROM {T} GROUP BY CAST(h AS BIGINT) * 3, h % 3",
     "PushedGroupBy: [CAST(h AS long) * 3, h % 3]"),
    ("SELECT i % 100, i % 100, count(*) FROM {T} WHERE id < 2000 GROUP BY i % 100", "PushedGroupBy: [i % 100]"),
    # the plan docs/sql.md quotes
    ("SELECT id % 2 AS odd, COUNT(*), SUM(h * 2) FROM {T} GROUP BY id % 2 ORDER BY odd",
     "PushedAggregates: [COUNT(*), SUM(h * 2)], PushedGroupBy: [id % 2]"),
]

#: Queries the servers refuse: Spark aggregates the rows itself (and the result is still right).
REFUSED = [
    "SELECT g, sum(d), avg(d) FROM {T} GROUP BY g",  # decimal sums: Spark casts partial sums back to decimal(10,2)
    "SELECT g, count(DISTINCT h), sum(i) FROM {T} GROUP BY g",
    "SELECT d * 2, count(*) FROM {T} GROUP BY d * 2",  # decimal arithmetic: its precision rules stay Spark's
    "SELECT h div 2, sum(i) FROM {T} GROUP BY h div 2",  # Spark does not hand integral division to sources
    "SELECT pmod(i, 7), count(*) FROM {T} GROUP BY pmod(i, 7)",  # nor pmod
    "SELECT CAST(x AS INT) % 3, count(*) FROM {T} WHERE x < 1000 GROUP BY CAST(x AS INT) % 3",  # double -> int
    "SELECT g, sum(i) FILTER (WHERE h = 1) FROM {T} GROUP BY g",
    "SELECT g, max_by(str, id), max(i) FROM {T} GROUP BY g",  # a function the servers do not have
    "SELECT g, sum(i) FROM {T} WHERE i % 3 = 0 GROUP BY g",  # a filter the servers cannot evaluate
]


@pytest.fixture(scope="module")
def facts(spark) -> str:
    import uuid

    t = f"store.default.agg_{uuid.uuid4().hex[:8]}"
    spark.sql("SET spark.sql.session.timeZone=UTC")
    load(spark, t, "agg_ref")
    return t


@pytest.mark.parametrize("q,shown", PUSHED, ids=[f"pushed{i}" for i in range(len(PUSHED))])
def test_pushed_aggregates_match_spark(spark, facts, q, shown) -> None:
    p = plan(spark, q.format(T=facts))
    assert "PushedAggregates" in p and shown in p, p
    assert rows(spark.sql(q.format(T=facts))) == rows(spark.sql(q.format(T="agg_ref")))


@pytest.mark.parametrize("q", REFUSED, ids=[f"refused{i}" for i in range(len(REFUSED))])
def test_refused_aggregates_are_computed_by_spark(spark, facts, q) -> None:
    assert "PushedAggregates" not in plan(spark, q.format(T=facts))
    assert rows(spark.sql(q.format(T=facts))) == rows(spark.sql(q.format(T="agg_ref")))


def test_arithmetic_errors_fail_like_spark(spark, tname) -> None:
    """ANSI mode (Spark 4's default): overflow and division by zero fail the query on the servers too."""
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v INT, z INT) TBLPROPERTIES ('buckets'='3')")
    data = [(1, 5, 0), (2, None, 0), (3, 2147483647, 1), (4, -7, 3), (5, 7, None)]
    df = spark.createDataFrame(data, "id INT, v INT, z INT")
    df.writeTo(tname).append()
    df.createOrReplaceTempView("err_ref")
    for q, error in [("SELECT v % z, count(*) FROM {T} GROUP BY v % z", "REMAINDER_BY_ZERO"),
                     ("SELECT v + 1, count(*) FROM {T} GROUP BY v + 1", "ARITHMETIC_OVERFLOW"),
                     ("SELECT z, sum(v * 2) FROM {T} GROUP BY z", "ARITHMETIC_OVERFLOW"),
                     ("SELECT CAST(v AS DOUBLE) / z, count(*) FROM {T} GROUP BY CAST(v AS DOUBLE) / z", "DIVIDE_BY_ZERO")]:
        assert "PushedAggregates" in plan(spark, q.format(T=tname)), q
        for T in (tname, "err_ref"):
            with pytest.raises(Exception, match=error):
                spark.sql(q.format(T=T)).collect()
    # without the failing rows: NULL % 0 is NULL (not an error), negative dividends truncate
    for q in ["SELECT v % z, count(*) FROM {T} WHERE id IN (2, 4, 5) GROUP BY v % z",
              "SELECT v - 1, z % 2, count(*), sum(v % z) FROM {T} WHERE id > 1 GROUP BY v - 1, z % 2"]:
        assert "PushedAggregates" in plan(spark, q.format(T=tname)), q
        assert rows(spark.sql(q.format(T=tname))) == rows(spark.sql(q.format(T="err_ref"))), q
    assert rows(spark.sql(f"SELECT v % z, count(*) FROM {tname} WHERE id IN (2, 4, 5) GROUP BY v % z")) == \
        [(-1, 1), (None, 2)]


def test_ansi_off_leaves_arithmetic_to_spark(spark, facts) -> None:
    """Spark hands arithmetic to a source only in ANSI mode; without it, Spark aggregates (and still agrees)."""
    q = "SELECT i % 100 AS k, count(*), sum(l) FROM {T} GROUP BY i % 100"
    spark.conf.set("spark.sql.ansi.enabled", "false")
    try:
        assert "PushedAggregates" not in plan(spark, q.format(T=facts))
        assert rows(spark.sql(q.format(T=facts))) == rows(spark.sql(q.format(T="agg_ref")))
    finally:
        spark.conf.set("spark.sql.ansi.enabled", "true")
    assert "PushedGroupBy: [i % 100]" in plan(spark, q.format(T=facts))


def test_read_option_turns_push_down_off(spark, facts) -> None:
    q = f"SELECT i % 100 AS k, count(*) FROM {facts} WITH ('pushAggregates' = 'false') GROUP BY i % 100"
    assert "PushedAggregates" not in plan(spark, q)
    assert rows(spark.sql(q)) == rows(spark.sql("SELECT i % 100 AS k, count(*) FROM agg_ref GROUP BY i % 100"))


def test_dataframe_api_and_nulls(spark, facts) -> None:
    from pyspark.sql import functions as F

    def q(df):
        return df.groupBy("h", "bo").agg(F.count("*"), F.count("g"), F.sum("i"), F.avg("x"), F.min("str"), F.max("ts"))

    pushed = q(spark.table(facts))
    assert "PushedAggregates" in pushed._jdf.queryExecution().executedPlan().toString()
    assert rows(pushed) == rows(q(spark.table("agg_ref")))
    # groups whose values are all NULL
    got = {r.h: r for r in spark.sql(f"SELECT h, count(l), sum(l), min(l), max(l) FROM {facts} "
                                     "WHERE l IS NULL GROUP BY h").collect()}
    assert got and all(r[1] == 0 and r[2] is None and r[3] is None and r[4] is None for r in got.values())


def test_empty_table_and_no_matching_bucket(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, g STRING, v DOUBLE) TBLPROPERTIES ('buckets'='4')")
    q = f"SELECT count(*), count(v), sum(v), min(g), max(v), avg(v) FROM {tname}"
    assert "PushedAggregates" in plan(spark, q)
    assert spark.sql(q).collect()[0][:] == (0, 0, None, None, None, None)
    assert spark.sql(f"SELECT g, count(*) FROM {tname} GROUP BY g").collect() == []
    q3 = f"SELECT id % 3, count(*), sum(v * 2) FROM {tname} GROUP BY id % 3"
    assert "PushedGroupBy: [id % 3]" in plan(spark, q3)
    assert spark.sql(q3).collect() == []
    assert spark.sql(f"SELECT sum(id * 2), max(v / 2) FROM {tname}").collect()[0][:] == (None, None)
    spark.sql(f"INSERT INTO {tname} VALUES (1, 'a', 1.5), (2, NULL, NULL), (3, 'a', 2.5)")
    assert spark.sql(q).collect()[0][:] == (3, 2, 4.0, "a", 2.5, 2.0)
    # IN over only NULL pins no bucket at all: still one row, count 0
    q2 = f"SELECT count(*), sum(v) FROM {tname} WHERE id IN (CAST(NULL AS INT))"
    assert spark.sql(q2).collect()[0][:] == (0, None)
    assert rows(spark.sql(f"SELECT g, count(*), sum(v) FROM {tname} GROUP BY g")) == [("a", 2, 4.0), (None, 1, None)]


def test_keyless_table_and_after_dml(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (g STRING, v INT) TBLPROPERTIES ('buckets'='3')")
    spark.sql(f"INSERT INTO {tname} VALUES ('a', 1), ('a', 1), ('b', NULL), (NULL, 7), ('b', 5)")
    q = f"SELECT g, count(*), sum(v), max(v) FROM {tname} GROUP BY g"
    assert "PushedAggregates" in plan(spark, q)
    assert rows(spark.sql(q)) == [("a", 2, 2, 1), ("b", 2, 5, 5), (None, 1, 7, 7)]
    spark.sql(f"UPDATE {tname} SET v = v * 10 WHERE g = 'a'")
    spark.sql(f"DELETE FROM {tname} WHERE g IS NULL")
    assert rows(spark.sql(q)) == [("a", 2, 20, 10), ("b", 2, 5, 5)]


def test_bigint_overflow_fails_like_spark(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v BIGINT) TBLPROPERTIES ('buckets'='1')")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 9223372036854775807), (2, 1)")
    with pytest.raises(Exception, match="VALUE_OUT_OF_RANGE|overflow"):
        spark.sql(f"SELECT sum(v) FROM {tname}").collect()
    assert spark.sql(f"SELECT max(v), count(v) FROM {tname}").collect()[0][:] == (9223372036854775807, 2)


def test_columns_named_like_generated_reply_columns(spark, tname) -> None:
    """A table with columns group1 and agg0: the server names the expression key and the
    first aggregate _group1 and _agg0 (protocol section 10.2), and the Java reader expects so."""
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, group1 INT, agg0 STRING, v INT) TBLPROPERTIES ('buckets'='3')")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 1, 'a', 5), (2, 3, 'a', 6), (3, 2, 'b', NULL), (4, 1, 'a', 7)")
    q = f"SELECT group1, group1 % 2, agg0, count(*), sum(v) FROM {tname} GROUP BY group1, group1 % 2, agg0"
    assert "PushedGroupBy: [group1, group1 % 2, agg0]" in plan(spark, q)
    assert rows(spark.sql(q)) == sorted([(1, 1, "a", 2, 12), (3, 1, "a", 1, 6), (2, 0, "b", 1, None)], key=repr)


def test_three_server_cluster(spark, cluster) -> None:  # noqa: F811
    locator, secret = cluster
    # A catalog name of its own: Spark keeps a catalog once loaded, and test_multi_server's
    # "multi" must reach that module's cluster, not this one.
    spark.conf.set("spark.sql.catalog.multiagg", "io.sparkext.spark.SparkExtCatalog")
    spark.conf.set("spark.sql.catalog.multiagg.locator", locator)
    spark.conf.set("spark.sql.catalog.multiagg.secretFile", str(secret))
    spark.sql("SET spark.sql.session.timeZone=UTC")
    t = "multiagg.default.agg_spread"
    load(spark, t, "agg_multi_ref", n=4000, seed=5, buckets=12)
    for q, shown in PUSHED:
        assert shown in plan(spark, q.format(T=t)), q
        assert rows(spark.sql(q.format(T=t))) == rows(spark.sql(q.format(T="agg_multi_ref"))), q
    for q in REFUSED[:3]:
        assert rows(spark.sql(q.format(T=t))) == rows(spark.sql(q.format(T="agg_multi_ref"))), q
