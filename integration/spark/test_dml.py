"""UPDATE / DELETE / MERGE INTO through row-level operations in delta mode."""

from __future__ import annotations

import pytest


def rows(spark, t):
    return sorted(tuple(r) for r in spark.table(t).collect())


def test_update_delete(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v STRING, n INT) TBLPROPERTIES ('buckets'='4')")
    spark.createDataFrame([(i, f"v{i}", i) for i in range(20)], "id INT, v STRING, n INT").writeTo(tname).append()
    spark.sql(f"UPDATE {tname} SET v = 'upd', n = n * 10 WHERE id % 5 = 0")
    spark.sql(f"DELETE FROM {tname} WHERE id >= 15")
    spark.sql(f"DELETE FROM {tname} WHERE id = 3")
    expect = sorted((i, "upd" if i % 5 == 0 else f"v{i}", i * 10 if i % 5 == 0 else i) for i in range(15) if i != 3)
    assert rows(spark, tname) == expect


def test_update_changes_key(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v STRING)")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    spark.sql(f"UPDATE {tname} SET id = id + 100 WHERE id >= 2")
    assert rows(spark, tname) == [(1, "a"), (102, "b"), (103, "c")]
    assert spark.sql(f"SELECT v FROM {tname} WHERE id = 102").collect()[0].v == "b"


def test_merge_into(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v STRING, n INT)")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3)")
    spark.createDataFrame([(2, "B", 20), (3, None, -1), (4, "D", 40)], "id INT, v STRING, n INT").createOrReplaceTempView("src_merge")
    spark.sql(f"""
        MERGE INTO {tname} t USING src_merge s ON t.id = s.id
        WHEN MATCHED AND s.n < 0 THEN DELETE
        WHEN MATCHED THEN UPDATE SET v = s.v, n = s.n
        WHEN NOT MATCHED THEN INSERT (id, v, n) VALUES (s.id, s.v, s.n)
    """)
    assert rows(spark, tname) == [(1, "a", 1), (2, "B", 20), (4, "D", 40)]


def test_composite_key_update_delete(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (tenant STRING, d DATE, k DECIMAL(10,2), v INT, PRIMARY KEY (tenant, d, k))")
    spark.sql(f"""INSERT INTO {tname} VALUES ('x', DATE'2024-01-01', 1.50, 1), ('x', DATE'2024-01-02', 2.00, 2),
                  ('y', DATE'2024-01-01', 1.50, 3)""")
    spark.sql(f"UPDATE {tname} SET v = v + 10 WHERE tenant = 'x'")
    spark.sql(f"DELETE FROM {tname} WHERE tenant = 'y' AND d = DATE'2024-01-01' AND k = 1.50")
    assert sorted(r.v for r in spark.table(tname).collect()) == [11, 12]
    df = spark.sql(f"SELECT v FROM {tname} WHERE tenant = 'x' AND d = DATE'2024-01-02' AND k = 2.00")
    assert df.rdd.getNumPartitions() == 1 and df.collect()[0].v == 12


def test_keyless_update_delete_merge(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (a INT, b STRING) TBLPROPERTIES ('buckets'='3')")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 'x'), (1, 'x'), (2, 'y'), (3, 'z')")
    spark.sql(f"UPDATE {tname} SET b = 'X' WHERE a = 1")
    assert rows(spark, tname) == [(1, "X"), (1, "X"), (2, "y"), (3, "z")]
    spark.sql(f"DELETE FROM {tname} WHERE a = 2")
    assert rows(spark, tname) == [(1, "X"), (1, "X"), (3, "z")]
    spark.createDataFrame([(3, "Z"), (9, "n")], "a INT, b STRING").createOrReplaceTempView("src_keyless")
    spark.sql(f"""MERGE INTO {tname} t USING src_keyless s ON t.a = s.a
                  WHEN MATCHED THEN UPDATE SET b = s.b WHEN NOT MATCHED THEN INSERT *""")
    assert rows(spark, tname) == [(1, "X"), (1, "X"), (3, "Z"), (9, "n")]


def test_update_to_duplicate_key_fails_atomically(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v STRING)")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    with pytest.raises(Exception, match="DUPLICATE_KEY"):
        spark.sql(f"UPDATE {tname} SET id = 3, v = 'z' WHERE id = 1")
    assert rows(spark, tname) == [(1, "a"), (2, "b"), (3, "c")]
