"""INSERT / SELECT through the bridge: types round trip, pushdown, point queries, atomic failures."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest
from pyspark.sql import Row


def test_insert_select_roundtrip(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id BIGINT PRIMARY KEY, name STRING, score DOUBLE) TBLPROPERTIES ('buckets'='4')")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, NULL, 3.0)")
    rows = sorted(spark.sql(f"SELECT * FROM {tname}").collect())
    assert rows == [Row(id=1, name="a", score=1.5), Row(id=2, name="b", score=None), Row(id=3, name=None, score=3.0)]


ALL_TYPES = (
    "k INT PRIMARY KEY, b TINYINT, s SMALLINT, i INT, l BIGINT, f FLOAT, d DOUBLE, "
    "dec DECIMAL(38,10), dsm DECIMAL(5,2), str STRING, bin BINARY, bo BOOLEAN, da DATE, ts TIMESTAMP, tsn TIMESTAMP_NTZ"
)


def test_every_scalar_type_round_trips(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} ({ALL_TYPES})")
    spark.sql("SET spark.sql.session.timeZone=UTC")
    spark.sql(
        f"INSERT INTO {tname} VALUES (1, -128, -32768, -2147483648, -9223372036854775808, 1.5, -2.25, "
        "1234567890123456789012345678.0123456789, -999.99, 'héllo', X'00FF10', true, DATE'1969-12-31', "
        "TIMESTAMP'2024-02-29 12:34:56.123456', TIMESTAMP_NTZ'1900-01-01 00:00:00.000001'), "
        "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
    )
    rows = {r.k: r for r in spark.sql(f"SELECT * FROM {tname}").collect()}
    r = rows[1]
    assert (r.b, r.s, r.i, r.l) == (-128, -32768, -2147483648, -9223372036854775808)
    assert r.f == 1.5 and r.d == -2.25
    assert r.dec == decimal.Decimal("1234567890123456789012345678.0123456789")
    assert r.dsm == decimal.Decimal("-999.99")
    assert r.str == "héllo" and bytes(r.bin) == b"\x00\xff\x10" and r.bo is True
    assert r.da == dt.date(1969, 12, 31)
    assert r.tsn == dt.datetime(1900, 1, 1, 0, 0, 0, 1)
    ts = spark.sql(f"SELECT CAST(ts AS STRING) AS s FROM {tname} WHERE k = 1").collect()[0].s
    assert ts == "2024-02-29 12:34:56.123456"
    assert all(v is None for k, v in rows[2].asDict().items() if k != "k")
    # The engine sees the same values (Python client).
    assert spark.sql(f"SELECT count(*) AS n FROM {tname} WHERE dsm = -999.99 AND bo AND str LIKE 'hé%'").collect()[0].n == 1


def test_point_query_pushdown_single_partition(spark, tname, sx_home) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v STRING) TBLPROPERTIES ('buckets'='8')")
    spark.createDataFrame([(i, f"v{i}") for i in range(200)], "id INT, v STRING").writeTo(tname).append()
    # By default a point query runs on the driver (no Spark job): a local table scan.
    q = f"SELECT v FROM {tname} WHERE id = 42"
    assert "LocalTableScan" in spark.sql("EXPLAIN " + q).collect()[0][0]
    assert spark.sql(q).collect() == [Row(v="v42")]
    assert sorted(r.id for r in spark.sql(f"SELECT id FROM {tname} WHERE id IN (1, 2, 3)").collect()) == [1, 2, 3]
    # With localPointReads=false it is a one-partition scan whose plan shows the pushed filter.
    store = spark.conf.get("spark.sql.catalog.store.locator")
    spark.conf.set("spark.sql.catalog.planned", "io.sparkext.spark.SparkExtCatalog")
    spark.conf.set("spark.sql.catalog.planned.locator", store)
    spark.conf.set("spark.sql.catalog.planned.secretFile", str(sx_home / "secret"))
    spark.conf.set("spark.sql.catalog.planned.localPointReads", "false")
    pt = tname.replace("store.", "planned.", 1)
    q = f"SELECT v FROM {pt} WHERE id = 42"
    plan = spark.sql("EXPLAIN " + q).collect()[0][0]
    assert "PushedFilters: [id = 42]" in plan and "buckets: [" in plan, plan
    df = spark.sql(q)
    assert df.rdd.getNumPartitions() == 1
    assert df.collect() == [Row(v="v42")]
    df = spark.sql(f"SELECT id FROM {pt} WHERE id IN (1, 2, 3)")
    assert df.rdd.getNumPartitions() <= 3
    assert sorted(r.id for r in df.collect()) == [1, 2, 3]


def test_filters_limits_and_columns(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, g STRING, x DOUBLE)")
    spark.createDataFrame([(i, "ab"[i % 2], float(i)) for i in range(1000)], "id INT, g STRING, x DOUBLE").writeTo(tname).append()
    assert spark.sql(f"SELECT count(*) FROM {tname} WHERE id >= 100 AND id < 200 AND g = 'a'").collect()[0][0] == 50
    assert spark.sql(f"SELECT count(*) FROM {tname} WHERE g IS NOT NULL AND NOT (id < 10 OR id > 989)").collect()[0][0] == 980
    assert spark.sql(f"SELECT count(*) FROM {tname} WHERE x > 500.5").collect()[0][0] == 499
    assert len(spark.sql(f"SELECT id FROM {tname} LIMIT 7").collect()) == 7
    assert spark.sql(f"SELECT count(*) FROM {tname}").collect()[0][0] == 1000
    agg = spark.sql(f"SELECT g, count(*) AS n, sum(id) AS s FROM {tname} GROUP BY g ORDER BY g").collect()
    assert [(r.g, r.n, r.s) for r in agg] == [("a", 500, sum(range(0, 1000, 2))), ("b", 500, sum(range(1, 1000, 2)))]


def test_insert_overwrite_and_save_as_table(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v STRING)")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 'a'), (2, 'b')")
    spark.sql(f"INSERT OVERWRITE {tname} VALUES (3, 'c')")
    assert [tuple(r) for r in spark.sql(f"SELECT * FROM {tname}").collect()] == [(3, "c")]
    df = spark.createDataFrame([(5, "e"), (6, "f")], "id INT, v STRING")
    df.writeTo(tname).overwritePartitions()
    assert sorted(tuple(r) for r in spark.table(tname).collect()) == [(5, "e"), (6, "f")]
    t2 = tname + "_sat"
    df.write.saveAsTable(t2)
    assert sorted(tuple(r) for r in spark.table(t2).collect()) == [(5, "e"), (6, "f")]
    df.write.mode("append").saveAsTable(t2)
    assert spark.table(t2).count() == 4  # no key: appends


def test_duplicate_key_fails_whole_statement(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v STRING)")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 'a')")
    short = tname.split(".", 1)[1]
    with pytest.raises(Exception) as ei:
        spark.sql(f"INSERT INTO {tname} VALUES (2, 'b'), (1, 'dup'), (3, 'c')")
    msg = str(ei.value)
    assert "DUPLICATE_KEY" in msg and short in msg and "id" in msg and "1" in msg, msg
    assert [tuple(r) for r in spark.table(tname).collect()] == [(1, "a")]


def test_null_key_refused(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT, v STRING, PRIMARY KEY (id))")
    with pytest.raises(Exception, match="(?i)null"):
        spark.createDataFrame([(None, "x")], "id INT, v STRING").writeTo(tname).append()
    assert spark.table(tname).count() == 0


def test_failed_task_leaves_table_unchanged(spark, tname) -> None:
    from pyspark.sql.functions import udf

    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v INT) TBLPROPERTIES ('buckets'='4')")
    spark.createDataFrame([(i, i) for i in range(100)], "id INT, v INT").writeTo(tname).append()

    @udf("int")
    def boom(x):
        if x == 1777:
            raise ValueError("injected failure")
        return x

    src = spark.range(1000, 2000, numPartitions=4).selectExpr("CAST(id AS INT) AS id", "CAST(id AS INT) AS v")
    with pytest.raises(Exception, match="injected failure"):
        src.select("id", boom("v").alias("v")).writeTo(tname).append()
    assert spark.table(tname).count() == 100
    assert spark.sql(f"SELECT max(id) FROM {tname}").collect()[0][0] == 99


def test_keyless_table(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (a INT, b STRING) TBLPROPERTIES ('buckets'='3')")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 'x'), (1, 'x'), (2, 'y')")
    assert sorted(tuple(r) for r in spark.table(tname).collect()) == [(1, "x"), (1, "x"), (2, "y")]
    ids = [r._rowid for r in spark.sql(f"SELECT _rowid FROM {tname}").collect()]
    assert len(set(ids)) == 3


def test_count_star_pushed_down(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, g STRING) TBLPROPERTIES ('buckets'='4')")
    spark.createDataFrame([(i, "ab"[i % 2]) for i in range(301)], "id INT, g STRING").writeTo(tname).append()
    q = f"SELECT count(*) FROM {tname} WHERE g = 'a'"
    plan = spark.sql("EXPLAIN " + q).collect()[0][0]
    assert "PushedAggregates: [COUNT(*)]" in plan, plan
    assert spark.sql(q).collect()[0][0] == 151
    assert spark.table(tname).count() == 301
    assert spark.sql(f"SELECT count(*), count(*) FROM {tname} WHERE id = 5").collect()[0][:] == (1, 1)
    # Not pushable (GROUP BY): still right.
    assert sorted(tuple(r) for r in spark.sql(f"SELECT g, count(*) FROM {tname} GROUP BY g").collect()) == [("a", 151), ("b", 150)]


def test_join_of_tables_bucketed_alike_needs_no_shuffle(spark, tname) -> None:
    a, b = tname + "_a", tname + "_b"
    for t in (a, b):
        spark.sql(f"CREATE TABLE {t} (id BIGINT PRIMARY KEY, v STRING) TBLPROPERTIES ('buckets'='4')")
        spark.range(0, 100, numPartitions=2).selectExpr("id", f"'{t[-1]}' AS v").writeTo(t).append()
    q = f"SELECT count(*) FROM {a} x JOIN {b} y ON x.id = y.id WHERE x.v = 'a'"
    old = spark.conf.get("spark.sql.autoBroadcastJoinThreshold")
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")  # a real shuffle join, not a broadcast
    try:
        plan = spark.sql("EXPLAIN " + q).collect()[0][0]
        assert "SortMergeJoin" in plan or "ShuffledHashJoin" in plan, plan
        assert "Exchange hashpartitioning" not in plan, plan
    finally:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", old)
    assert spark.sql(q).collect()[0][0] == 100
    rows = spark.sql(f"SELECT x.id, y.v FROM {a} x JOIN {b} y ON x.id = y.id WHERE x.id < 3 ORDER BY x.id").collect()
    assert [tuple(r) for r in rows] == [(0, "b"), (1, "b"), (2, "b")]
