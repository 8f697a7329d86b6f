"""The session catalog extension: `USING row` tables live in spark-ext, everything else in Spark's catalog."""

from __future__ import annotations

import uuid


def test_using_row_in_default_catalog(spark, client) -> None:
    t = f"sess_{uuid.uuid4().hex[:8]}"
    p = f"pq_{uuid.uuid4().hex[:8]}"
    spark.sql(f"CREATE TABLE {t} (id INT, v STRING, PRIMARY KEY (id)) USING row TBLPROPERTIES ('buckets'='2')")
    spark.sql(f"CREATE TABLE {p} (id INT, v STRING) USING parquet")
    spark.sql(f"INSERT INTO {t} VALUES (1, 'a'), (2, 'b')")
    spark.sql(f"INSERT INTO {p} VALUES (10, 'p')")
    # The row table is in spark-ext (the Python client sees it), the parquet one is not.
    assert client.get(f"default.{t}", 2)[1] == "b"
    assert p not in client.list_tables("default")
    names = {r.tableName for r in spark.sql("SHOW TABLES").collect()}
    assert {t, p} <= names
    spark.sql(f"UPDATE {t} SET v = 'B' WHERE id = 2")
    joined = spark.sql(f"SELECT a.v, b.v FROM {t} a JOIN {p} b ON a.id * 10 = b.id").collect()
    assert [tuple(r) for r in joined] == [("a", "p")]
    assert sorted(tuple(r) for r in spark.table(t).collect()) == [(1, "a"), (2, "B")]
    assert sorted(tuple(r) for r in spark.table(f"store.default.{t}").collect()) == [(1, "a"), (2, "B")]
    spark.sql(f"DROP TABLE {t}")
    spark.sql(f"DROP TABLE {p}")
    assert t not in client.list_tables("default")


def test_format_row_reader(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v STRING)")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 'a')")
    df = spark.read.format("row").option("table", tname.split(".", 1)[1]).load()
    assert [tuple(r) for r in df.collect()] == [(1, "a")]
