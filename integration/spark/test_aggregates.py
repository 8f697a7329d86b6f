"""Aggregate push-down: COUNT(*), COUNT(col), SUM, MIN, MAX and AVG (as SUM and COUNT) with GROUP BY
on plain columns run on the store servers, per bucket; Spark merges the partial results. Every
query is checked row by row against the same query over a temporary view of the same rows, and
EXPLAIN shows what was pushed (or that nothing was, for what the servers refuse)."""

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
]

#: Queries the servers refuse: Spark aggregates the rows itself (and the result is still right).
REFUSED = [
    "SELECT g, sum(d), avg(d) FROM {T} GROUP BY g",  # decimal sums: Spark casts partial sums back to decimal(10,2)
    "SELECT g, count(DISTINCT h), sum(i) FROM {T} GROUP BY g",
    "SELECT h % 2 AS odd, sum(i) FROM {T} GROUP BY h % 2",  # group by an expression
    "SELECT g, sum(i + 1) FROM {T} GROUP BY g",  # aggregate of an expression
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
