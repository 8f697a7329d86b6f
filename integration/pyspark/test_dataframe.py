"""df.putInto / df.deleteFrom on local[2]: results row by row, atomicity, bad input."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pytest

from spark_ext import StoreTable
from spark_ext.exceptions import (
    BadArgumentError,
    NoSuchTableError,
    NullKeyError,
    TypeMismatchError,
    UnknownColumnError,
    ValueOutOfRangeError,
)
from spark_ext.spark.testing import rows


def test_put_into_upserts_by_key(spark: Any, items: Any) -> None:
    df = spark.createDataFrame([(2, "PEAR", 50), (4, "kiwi", 7), (5, "plum", None)], "id long, item string, qty int")
    assert df.putInto(items.name) == 3
    assert rows(items) == [
        {"id": 1, "item": "apple", "qty": 3}, {"id": 2, "item": "PEAR", "qty": 50}, {"id": 3, "item": "fig", "qty": 1},
        {"id": 4, "item": "kiwi", "qty": 7}, {"id": 5, "item": "plum", "qty": None}]


def test_put_into_matches_columns_by_name(spark: Any, items: Any) -> None:
    # Other order, other case, narrower types, a missing nullable column (-> NULL).
    df = spark.createDataFrame([(9, 10), (1, 11)], "QTY short, Id int")
    assert df.putInto(items) == 2  # a StoreTable works as the target too
    assert items.get(10) == {"id": 10, "item": None, "qty": 9}
    assert items.get(11) == {"id": 11, "item": None, "qty": 1}


def test_put_into_many_partitions_and_catalog_prefix(spark: Any, items: Any) -> None:
    df = spark.range(0, 20000, numPartitions=7).selectExpr("id", "concat('n', id) as item", "cast(id % 7 as int) as qty")
    assert df.putInto("store." + items.name) == 20000
    assert items.count() == 20000
    assert items.get(19999) == {"id": 19999, "item": "n19999", "qty": 19999 % 7}
    assert items.get(1) == {"id": 1, "item": "n1", "qty": 1}


def test_put_into_empty_dataframe(spark: Any, items: Any) -> None:
    assert spark.createDataFrame([], "id long, item string").putInto(items.name) == 0
    assert items.count() == 3


def test_put_into_types(spark: Any, table_name: str) -> None:
    t = StoreTable.create(spark, table_name, "id int, d date, ts timestamp, ntz timestamp_ntz, m decimal(10,2), "
                          "b binary, f boolean, x double, y float, s smallint, z tinyint", primaryKey="id")
    ts = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc)
    df = spark.sql("""select 1 as id, date'2024-01-02' as d, timestamp'2024-05-06 07:08:09.123456 UTC' as ts,
                      timestamp_ntz'2024-01-02 03:04:05' as ntz, cast(12.34 as decimal(10,2)) as m, X'0001' as b,
                      true as f, 1.5d as x, cast(2.5 as float) as y, cast(3 as smallint) as s, cast(4 as tinyint) as z""")
    assert df.putInto(t) == 1
    assert t.get(1) == {"id": 1, "d": dt.date(2024, 1, 2), "ts": ts, "ntz": dt.datetime(2024, 1, 2, 3, 4, 5),
                        "m": decimal.Decimal("12.34"), "b": b"\x00\x01", "f": True, "x": 1.5, "y": 2.5, "s": 3, "z": 4}


def test_delete_from(spark: Any, items: Any) -> None:
    df = spark.createDataFrame([(1, "whatever"), (3, None), (99, "absent")], "id long, item string")
    assert df.deleteFrom(items.name) == 2
    assert rows(items) == [{"id": 2, "item": "pear", "qty": 5}]
    assert spark.createDataFrame([], "id long").deleteFrom(items) == 0


def test_delete_from_composite_key(spark: Any, table_name: str) -> None:
    t = StoreTable.create(spark, table_name, "region string, id int, v double", primaryKey=["region", "id"])
    t.put([("eu", 1, 1.0), ("eu", 2, 2.0), ("us", 1, 3.0)])
    assert spark.createDataFrame([("eu", 2), ("us", 1), ("us", 9)], "region string, id int").deleteFrom(t) == 2
    assert rows(t) == [{"region": "eu", "id": 1, "v": 1.0}]
    with pytest.raises(BadArgumentError, match="lacks key column"):
        spark.createDataFrame([("eu",)], "region string").deleteFrom(t)


def test_put_into_bad_input_fails_before_any_job(spark: Any, items: Any) -> None:
    before = rows(items)
    ok = spark.createDataFrame([(7, "x", 1)], "id long, item string, qty int")
    cases = [
        (lambda: ok.putInto("it.no_such_table"), NoSuchTableError, "no store table 'it.no_such_table'"),
        (lambda: ok.putInto(42), BadArgumentError, "table name or a StoreTable"),
        (lambda: spark.createDataFrame([(7, "x")], "item string, colour string").putInto(items), UnknownColumnError,
         "no column 'colour'"),
        (lambda: spark.createDataFrame([("x", 1)], "item string, qty int").putInto(items), BadArgumentError,
         "lacks key column"),
        (lambda: spark.createDataFrame([("7", "x")], "id string, item string").putInto(items), TypeMismatchError,
         "column 'id' is string in the DataFrame but int64"),
        (lambda: spark.createDataFrame([(7, 1.5)], "id long, qty double").putInto(items), TypeMismatchError,
         "'qty' is double"),
        (lambda: spark.sql("select 7L as id, array(1) as item").putInto(items), TypeMismatchError, "cannot be stored"),
        (lambda: spark.createDataFrame([(7, "a", "b")], "id long, item string, ITEM string").putInto(items),
         BadArgumentError, "both matching"),
    ]
    jobs_before = spark.sparkContext.statusTracker().getJobIdsForGroup(None)
    for call, err, msg in cases:
        with pytest.raises(err, match=msg):
            call()
    assert spark.sparkContext.statusTracker().getJobIdsForGroup(None) == jobs_before  # no job ran
    assert rows(items) == before


def test_put_into_data_errors_leave_nothing(spark: Any, items: Any) -> None:
    before = rows(items)
    # 9,999 good rows and one NULL key in another partition: the statement fails, atomically.
    df = spark.range(0, 10000, numPartitions=4).selectExpr("if(id = 7777, null, id + 100) as id", "'x' as item")
    with pytest.raises(NullKeyError, match="key column 'id' cannot be NULL"):
        df.putInto(items)
    assert rows(items) == before
    big = spark.range(0, 5000, numPartitions=3).selectExpr("id + 100 as id", "if(id = 4000, 1L << 40, 1L) as qty")
    with pytest.raises(ValueOutOfRangeError, match="does not fit int32"):
        big.putInto(items)
    assert rows(items) == before


def test_put_into_not_null_column(spark: Any, table_name: str) -> None:
    t = StoreTable.create(spark, table_name, "id long, v string not null", primaryKey="id")
    with pytest.raises(BadArgumentError, match="lacks column 'v', which is NOT NULL"):
        spark.createDataFrame([(1,)], "id long").putInto(t)


def test_put_into_no_primary_key(spark: Any, table_name: str) -> None:
    t = StoreTable.create(spark, table_name, "a int, b string")
    with pytest.raises(BadArgumentError, match="no primary key"):
        spark.createDataFrame([(1, "x")], "a int, b string").putInto(t)
    with pytest.raises(BadArgumentError, match="no primary key"):
        spark.createDataFrame([(1, "x")], "a int, b string").deleteFrom(t)


def test_delete_from_bad_input(spark: Any, items: Any) -> None:
    with pytest.raises(TypeMismatchError):
        spark.createDataFrame([("1",)], "id string").deleteFrom(items)
    with pytest.raises(UnknownColumnError):
        spark.createDataFrame([(1, 2)], "id long, other int").deleteFrom(items)
    with pytest.raises(NoSuchTableError):
        spark.createDataFrame([(1,)], "id long").deleteFrom("it.nothing_here")
    assert items.count() == 3


def test_put_into_across_servers_is_atomic(spark: Any, cluster: Any, table_name: str) -> None:
    """Three store servers: a putInto stages on all of them; a failing one leaves nothing."""
    t = StoreTable.create(table_name, "id long, v string", primaryKey="id", numBuckets=12,
                          locator=cluster.locator_arg, secretFile=str(cluster.secret_file))
    assert len(set(cluster.admin().table(t.name).placement)) == 3
    df = spark.range(0, 30000, numPartitions=5).selectExpr("id", "cast(id as string) as v")
    assert df.putInto(t) == 30000
    from spark_ext.spark import dataframe as D

    assert D.last_path == "python"  # the table is not in the session's store: the JVM catalog cannot reach it
    with pytest.raises(BadArgumentError, match="path 'jvm' is not possible: the table is in another store"):
        df.putInto(t, path="jvm")
    assert t.count() == 30000 and t.get(12345) == {"id": 12345, "v": "12345"}
    bad = spark.range(0, 30000, numPartitions=5).selectExpr("if(id = 29999, null, id + 30000) as id", "'new' as v")
    with pytest.raises(NullKeyError):
        bad.putInto(t)
    assert t.count() == 30000 and t.get(30001) is None
    assert spark.range(0, 30000, 2).deleteFrom(t) == 15000
    assert t.count() == 15000 and t.get(2) is None and t.get(3) is not None
    for sid in cluster.server_ids:  # no transaction left open anywhere
        assert cluster.admin().server_status(*cluster.servers[sid].address)["open_transactions"] == 0


def test_put_into_duplicate_keys_in_one_batch(spark: Any, items: Any) -> None:
    from spark_ext.exceptions import DuplicateKeyError

    before = rows(items)
    df = spark.createDataFrame([(7, "a", 1), (8, "b", 1), (7, "c", 2)], "id long, item string, qty int").coalesce(1)
    with pytest.raises(DuplicateKeyError, match="appears twice"):
        df.putInto(items)
    assert rows(items) == before


# --- the two paths: the JVM bridge's writer and the Python mapInArrow job -----------------

PATHS = ["jvm", "python"]


@pytest.mark.parametrize("path", PATHS)
def test_put_into_on_each_path(spark: Any, table_name: str, path: str) -> None:
    from spark_ext.spark import dataframe as D

    t = StoreTable.create(spark, table_name, "id long, item string, qty int, m decimal(10,2), ts timestamp, "
                          "b binary", primaryKey="id")
    t.put([(1, "apple", 3, None, None, None), (2, "pear", 5, None, None, None)])
    # Other order and case, narrower types (int into long, long into int), missing columns -> NULL.
    df = spark.sql("""select cast(7 as long) as QTY, cast(id as int) as Id, concat('n', id) as item,
                      cast(1.25 as decimal(10,2)) as m, timestamp'2024-05-06 07:08:09 UTC' as ts
                      from range(2, 2002, 1, 3)""")
    assert df.putInto(t, path=path) == 2000
    assert D.last_path == path
    assert t.count() == 2001
    ts = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    assert t.get(1) == {"id": 1, "item": "apple", "qty": 3, "m": None, "ts": None, "b": None}
    assert t.get(2) == {"id": 2, "item": "n2", "qty": 7, "m": decimal.Decimal("1.25"), "ts": ts, "b": None}
    assert t.get(2001) == {"id": 2001, "item": "n2001", "qty": 7, "m": decimal.Decimal("1.25"), "ts": ts, "b": None}
    assert spark.createDataFrame([], "id long").putInto(t, path=path) == 0
    assert t.count() == 2001


def _failure(call: Any) -> tuple[type, str]:
    with pytest.raises(Exception) as ei:
        call()
    return type(ei.value), str(ei.value)


def test_put_into_errors_are_the_same_on_both_paths(spark: Any, table_name: str) -> None:
    from spark_ext.exceptions import DuplicateKeyError, NotNullViolationError

    t = StoreTable.create(spark, table_name, "id long, v string not null, n int", primaryKey="id")
    t.put([(1, "one", 1)])
    cases = [  # (DataFrame, expected type, the message both paths give, word for word up to its end)
        (spark.range(0, 3000, 1, 3).selectExpr("if(id = 2222, null, id + 10) as id", "'x' as v"),
         NullKeyError, f"table '{t.name}': key column 'id' cannot be NULL"),
        (spark.range(0, 3000, 1, 3).selectExpr("id + 10 as id", "if(id = 1234, null, 'x') as v"),
         NotNullViolationError, f"table '{t.name}': column 'v' is NOT NULL"),
        (spark.range(0, 3000, 1, 3).selectExpr("id + 10 as id", "'x' as v", "if(id = 99, 1L << 40, 1L) as n"),
         ValueOutOfRangeError, f"table '{t.name}', column 'n': value 1099511627776 does not fit int32"),
        (spark.createDataFrame([(7, "a"), (8, "b"), (7, "c")], "id long, v string").coalesce(1),
         DuplicateKeyError, "appears twice"),
    ]
    before = rows(t)
    for df, err, msg in cases:
        got = {path: _failure(lambda: df.putInto(t, path=path)) for path in PATHS}
        for path, (typ, text) in got.items():
            assert typ is err and msg in text, (path, typ, text)
        assert got["jvm"][1].split(msg)[0] == got["python"][1].split(msg)[0], got  # same start, naming the same
        assert rows(t) == before  # nothing of the failed statement is visible
    # Checked before any job, on both paths alike.
    for path in PATHS:
        typ, text = _failure(lambda: spark.createDataFrame([(1, 2.5)], "id long, n double").putInto(t, path=path))
        assert typ is TypeMismatchError and "column 'n' is double in the DataFrame but int32" in text


def test_put_into_path_choice(spark: Any, table_name: str) -> None:
    from spark_ext.spark import dataframe as D

    t = StoreTable.create(spark, table_name, "id long, x double", primaryKey="id")
    df = spark.createDataFrame([(1, 1.5)], "id long, x double")
    assert df.putInto(t) == 1 and D.last_path == "jvm"  # auto: the session has the bridge
    spark.conf.set("spark.sparkext.putInto.path", "python")
    try:
        assert df.putInto(t) == 1 and D.last_path == "python"
        assert df.putInto(t, path="auto") == 1 and D.last_path == "jvm"  # the keyword wins over the conf
        spark.conf.set("spark.sparkext.putInto.path", "sideways")
        with pytest.raises(BadArgumentError, match="conf spark.sparkext.putInto.path: expected one of auto, jvm, "
                                                   "python, got 'sideways'"):
            df.putInto(t)
    finally:
        spark.conf.unset("spark.sparkext.putInto.path")
    with pytest.raises(BadArgumentError, match=r"putInto\(path=...\): expected one of auto, jvm, python, got 'fast'"):
        df.putInto(t, path="fast")
    # An integer into a double column: Arrow checks each value on the Python path, so auto goes there.
    ints = spark.createDataFrame([(2, 3)], "id long, x long")
    assert ints.putInto(t) == 1 and D.last_path == "python"
    with pytest.raises(BadArgumentError, match=r"path 'jvm' is not possible: column 'x' \(int64\) into float64"):
        ints.putInto(t, path="jvm")
    assert rows(t) == [{"id": 1, "x": 1.5}, {"id": 2, "x": 3.0}]
