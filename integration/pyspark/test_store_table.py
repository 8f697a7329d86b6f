"""StoreTable against a real embedded server, with and without a Spark session."""

from __future__ import annotations

import datetime as dt
import decimal
import os
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from spark_ext import StoreTable
from spark_ext.exceptions import (
    BadArgumentError,
    DuplicateKeyError,
    NoSuchTableError,
    NotNullViolationError,
    TypeMismatchError,
    UnknownColumnError,
    ValueOutOfRangeError,
)
from spark_ext.spark.testing import rows


def test_for_name_with_and_without_spark(spark: Any, items: Any) -> None:
    a = StoreTable.forName(spark, items.name)
    b = StoreTable.forName(items.name)  # no Spark: the embedded default of SPARK_EXT_HOME
    c = StoreTable.forName(spark, "store." + items.name)  # catalog prefix dropped
    assert a.get(1) == b.get(1) == c.get(1) == {"id": 1, "item": "apple", "qty": 3}
    assert a.columns == ["id", "item", "qty"] and a.primaryKey == ["id"]
    assert str(a.schema.field("id").type) == "int64"


def test_for_name_env_locator(items: Any, store_home: Any) -> None:
    from spark_ext.client.embedded import ensure_embedded

    (host, port), secret = ensure_embedded(start=False)
    old = dict(os.environ)
    os.environ["SPARK_EXT_LOCATOR"] = f"{host}:{port}"
    os.environ["SPARK_EXT_SECRET_FILE"] = str(store_home.path / "secret")
    try:
        assert StoreTable.forName(items.name).count() == 3
        os.environ["SPARK_EXT_LOCATOR"] = "localhost:notaport"
        with pytest.raises(BadArgumentError, match="SPARK_EXT_LOCATOR"):
            StoreTable.forName(items.name)
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_for_name_bad_input(spark: Any, items: Any) -> None:
    with pytest.raises(NoSuchTableError, match=r"no store table 'it.nope'.*tables in 'it'"):
        StoreTable.forName(spark, "it.nope")
    with pytest.raises(NoSuchTableError, match="no namespace"):
        StoreTable.forName("nowhere_ns.t")
    with pytest.raises(BadArgumentError, match="first argument"):
        StoreTable.forName(42, "x")  # type: ignore[arg-type]
    with pytest.raises(BadArgumentError, match="non-empty"):
        StoreTable.forName(spark, "")
    with pytest.raises(BadArgumentError, match="empty part"):
        StoreTable.forName("a..b")
    with pytest.raises(BadArgumentError, match="not two names"):
        StoreTable.forName("a", "b")


def test_create_bad_input(spark: Any, table_name: str) -> None:
    with pytest.raises(BadArgumentError, match="schema is needed"):
        StoreTable.create(spark, table_name)
    with pytest.raises(BadArgumentError, match="name type"):
        StoreTable.create(spark, table_name, "id", primaryKey="id")
    with pytest.raises(BadArgumentError, match="numBuckets"):
        StoreTable.create(spark, table_name, "id long", primaryKey="id", numBuckets=0)
    with pytest.raises(UnknownColumnError):
        StoreTable.create(spark, table_name, "id long", primaryKey="nope")
    t = StoreTable.create(spark, table_name, "id long, v string", primaryKey="id")
    assert StoreTable.create(spark, table_name, "id long, v string", primaryKey="id", ifNotExists=True).name == t.name


def test_get_get_all(items: Any) -> None:
    assert items.get(2) == {"id": 2, "item": "pear", "qty": 5}
    assert items.get(99) is None
    assert items.get({"id": 3})["item"] == "fig"
    assert [r and r["id"] for r in items.getAll([3, 99, 1])] == [3, None, 1]
    assert items.getAll([]) == []
    assert [r["id"] for r in items.getAll(pa.array([1, 2]))] == [1, 2]
    for bad, err in [(None, BadArgumentError), ([1], BadArgumentError), ("x", TypeMismatchError),
                     ({"idx": 1}, BadArgumentError), (2 ** 70, ValueOutOfRangeError)]:
        with pytest.raises(err):
            items.get(bad)
    with pytest.raises(BadArgumentError, match="list of keys"):
        items.getAll(5)
    with pytest.raises(TypeMismatchError):
        items.getAll([1, "two"])


def test_put_insert_all_row_forms(items: Any) -> None:
    assert items.put({"id": 4, "item": "kiwi", "qty": 7}) == 1
    assert items.put((5, "plum", 2)) == 1
    assert items.put([(2, "pear", 50), {"id": 6, "item": "lime"}]) == 2
    assert items.put(pd.DataFrame({"id": [7, 8], "item": ["a", "b"], "qty": [1, 2]})) == 2
    assert items.put(pa.table({"id": [9], "item": ["c"], "qty": pa.array([3], pa.int32())})) == 1
    assert items.put([]) == 0
    assert items.insert([(10, "d", 1)]) == 1
    assert items.count() == 10
    assert items.get(2)["qty"] == 50 and items.get(6)["qty"] is None


def test_put_insert_bad_input(spark: Any, items: Any) -> None:
    before = rows(items)
    with pytest.raises(DuplicateKeyError, match="already exists"):
        items.insert([(20, "new", 1), (1, "dup", 1)])
    with pytest.raises(UnknownColumnError, match="no column 'colour'"):
        items.put({"id": 21, "colour": "red"})
    with pytest.raises(TypeMismatchError):
        items.put((22, "x", "not a number"))
    with pytest.raises(BadArgumentError, match="no rows"):
        items.put(None)
    with pytest.raises(BadArgumentError, match="got a str"):
        items.put("1,apple,3")
    with pytest.raises(BadArgumentError, match="putInto"):
        items.put(spark.range(3))
    with pytest.raises(TypeMismatchError):
        items.put([(23, "x")])  # too few values
    assert rows(items) == before  # nothing was written by any failed call


def test_update(items: Any) -> None:
    assert items.update(1, {"qty": 30}) is True
    assert items.update(99, {"qty": 1}) is False
    assert items.update(1, {"qty": None, "item": "APPLE"}) is True
    assert items.get(1) == {"id": 1, "item": "APPLE", "qty": None}
    with pytest.raises(BadArgumentError, match="non-empty dict"):
        items.update(1, {})
    with pytest.raises(BadArgumentError, match="non-empty dict"):
        items.update(1, [("qty", 1)])  # type: ignore[arg-type]
    with pytest.raises(UnknownColumnError):
        items.update(1, {"nope": 1})
    with pytest.raises(TypeMismatchError):
        items.update(1, {"qty": "many"})
    with pytest.raises(BadArgumentError, match="NOT NULL"):
        items.update(1, {"id": None})
    with pytest.raises(BadArgumentError):
        items.update(None, {"qty": 1})


def test_delete(items: Any) -> None:
    assert items.delete(1) == 1
    assert items.delete([2, 3, 99]) == 2
    assert items.delete([]) == 0
    assert items.count() == 0
    with pytest.raises(TypeMismatchError):
        items.delete(["x"])
    with pytest.raises(BadArgumentError):
        items.delete(None)


def test_lookup_and_range(items: Any) -> None:
    items.put([(4, "apple", 9), (5, "pear", 4)])
    assert sorted(r["id"] for r in items.lookup("item", "apple")) == [1, 4]
    items.createIndex("by_item", "item")
    items.createIndex("by_qty", "qty", kind="ordered")
    assert sorted(r["id"] for r in items.lookup("by_item", "pear")) == [2, 5]
    assert [r["id"] for r in items.lookup("item", "none")] == []
    assert sorted(r["id"] for r in items.range("qty", 3, 5)) == [1, 2, 5]
    assert sorted(r["id"] for r in items.range("qty", None, 1)) == [3]
    assert sorted(r["id"] for r in items.range("qty", 9)) == [4]
    with pytest.raises(UnknownColumnError, match="column or index 'nope'.*indexes: by_item, by_qty"):
        items.lookup("nope", 1)
    with pytest.raises(TypeMismatchError):
        items.lookup("qty", "three")
    with pytest.raises(BadArgumentError, match="None matches nothing"):
        items.lookup("item", None)
    with pytest.raises(BadArgumentError):
        items.lookup(3, 1)  # type: ignore[arg-type]
    with pytest.raises(UnknownColumnError):
        items.range("nope", 1, 2)
    with pytest.raises(BadArgumentError, match="above high"):
        items.range("qty", 5, 1)
    with pytest.raises(BadArgumentError, match="give low, high"):
        items.range("qty")
    with pytest.raises(TypeMismatchError):
        items.range("qty", "a", "b")
    with pytest.raises(BadArgumentError, match="kind"):
        items.createIndex("bad", "qty", kind="btree")


def test_composite_key(spark: Any, table_name: str) -> None:
    t = StoreTable.create(spark, table_name, "region string, id int, v double", primaryKey=["region", "id"])
    t.put([("eu", 1, 1.0), ("us", 1, 2.0)])
    assert t.get(("us", 1))["v"] == 2.0
    assert t.get({"region": "eu", "id": 1})["v"] == 1.0
    assert t.update(("eu", 1), {"v": 5.0}) and t.get(("eu", 1))["v"] == 5.0
    assert t.delete(("eu", 1)) == 1 and t.delete([("us", 1), ("xx", 2)]) == 1
    with pytest.raises(BadArgumentError, match="2 columns"):
        t.get("eu")
    with pytest.raises(BadArgumentError, match="NULL part"):
        t.get(("eu", None))


def test_no_primary_key_table(spark: Any, table_name: str) -> None:
    t = StoreTable.create(spark, table_name, "a int, b string")
    assert t.primaryKey == [] and t.insert([(1, "x"), (2, "y")]) == 2 and t.count() == 2
    for call in (lambda: t.get(1), lambda: t.put([(3, "z")]), lambda: t.update(1, {"b": "q"}), lambda: t.delete(1)):
        with pytest.raises(BadArgumentError, match="no primary key"):
            call()
    assert [r["a"] for r in t.lookup("b", "y")] == [2]


def test_types_round_trip(spark: Any, table_name: str) -> None:
    t = StoreTable.create(spark, table_name, "id int, d date, ts timestamp, ntz timestamp_ntz, "
                          "m decimal(10,2), b binary, f boolean, x double", primaryKey="id")
    ts = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc)
    row = {"id": 1, "d": dt.date(2024, 1, 2), "ts": ts, "ntz": dt.datetime(2024, 1, 2, 3, 4, 5),
           "m": decimal.Decimal("12.34"), "b": b"\x00\x01", "f": True, "x": 1.5}
    t.put(row)
    assert t.get(1) == row
    df = t.toDF().collect()
    assert df[0]["m"] == decimal.Decimal("12.34") and df[0]["d"] == dt.date(2024, 1, 2)
    with pytest.raises(ValueOutOfRangeError):
        t.put({"id": 2, "m": decimal.Decimal("123456789012.5")})


def test_count_to_arrow_pandas_df(spark: Any, items: Any) -> None:
    assert items.count() == 3
    a = items.toArrow()
    assert a.num_rows == 3 and a.schema.names == ["id", "item", "qty"]
    assert sorted(items.toArrow(["item"]).column("item").to_pylist()) == ["apple", "fig", "pear"]
    assert sorted(items.toPandas()["id"].tolist()) == [1, 2, 3]
    df = items.toDF()
    assert sorted(r.id for r in df.collect()) == [1, 2, 3]
    assert dict(df.dtypes) == {"id": "bigint", "item": "string", "qty": "int"}
    assert not df.schema["id"].nullable
    with pytest.raises(UnknownColumnError):
        items.toArrow(["nope"])


def test_to_df_needs_spark(items: Any, spark: Any) -> None:
    from pyspark.sql import SparkSession

    t = StoreTable.forName(items.name)  # no session given: falls back to the active one
    assert SparkSession.getActiveSession() is not None
    assert t.toDF().count() == 3


def test_not_null_column(spark: Any, table_name: str) -> None:
    import pyarrow as pa

    t = StoreTable.create(spark, table_name, pa.schema([pa.field("id", pa.int64()), pa.field("v", pa.string(), nullable=False)]),
                          primaryKey="id")
    with pytest.raises(NotNullViolationError):
        t.put({"id": 1})
