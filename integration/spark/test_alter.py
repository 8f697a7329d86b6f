"""ALTER TABLE through Spark SQL: ADD COLUMNS, RENAME TO, SET/UNSET TBLPROPERTIES, then DML,
SHOW CREATE TABLE and DESCRIBE on the changed table; in the store catalog and through the
session catalog (USING row); bad input fails naming the table and the column."""

from __future__ import annotations

import uuid

import pytest
from pyspark.sql import Row


def _rows(spark, table: str) -> list[tuple]:
    return sorted(tuple(r) for r in spark.sql(f"SELECT * FROM {table}").collect())


def test_add_columns_then_dml(spark, tname, client) -> None:
    spark.sql(f"CREATE TABLE {tname} (id BIGINT PRIMARY KEY, name STRING) TBLPROPERTIES ('buckets'='4')")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    spark.sql(f"ALTER TABLE {tname} ADD COLUMNS (note STRING, score DECIMAL(10,2))")
    assert _rows(spark, tname) == [(1, "a", None, None), (2, "b", None, None), (3, "c", None, None)]
    desc = [(r.col_name, r.data_type) for r in spark.sql(f"DESCRIBE TABLE {tname}").collect()]
    assert desc[:4] == [("id", "bigint"), ("name", "string"), ("note", "string"), ("score", "decimal(10,2)")]
    ddl = spark.sql(f"SHOW CREATE TABLE {tname}").collect()[0][0]
    assert "note STRING" in ddl and "score DECIMAL(10,2)" in ddl, ddl

    spark.sql(f"INSERT INTO {tname} VALUES (4, 'd', 'new', 4.25)")
    spark.sql(f"UPDATE {tname} SET note = 'upd', score = 1.5 WHERE id = 2")
    spark.sql(f"DELETE FROM {tname} WHERE id = 3")
    import decimal

    D = decimal.Decimal
    assert _rows(spark, tname) == [(1, "a", None, None), (2, "b", "upd", D("1.50")), (4, "d", "new", D("4.25"))]
    assert spark.sql(f"SELECT id FROM {tname} WHERE note IS NULL").collect() == [Row(id=1)]
    assert spark.sql(f"SELECT id FROM {tname} WHERE score > 2").collect() == [Row(id=4)]
    # A second column change, and MERGE over all of them.
    spark.sql(f"ALTER TABLE {tname} ADD COLUMN flag BOOLEAN")
    spark.createDataFrame([(1, "a2", "m", None, True), (9, "z", None, None, False)],
                          "id BIGINT, name STRING, note STRING, score DECIMAL(10,2), flag BOOLEAN").createOrReplaceTempView("src_alter")
    spark.sql(f"MERGE INTO {tname} t USING src_alter s ON t.id = s.id "
              "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")
    assert _rows(spark, tname) == [(1, "a2", "m", None, True), (2, "b", "upd", D("1.50"), None),
                                   (4, "d", "new", D("4.25"), None), (9, "z", None, None, False)]
    # The Python client (another application's view) sees the same columns and rows.
    short = tname.split(".", 1)[1]
    assert client.get(short, 2) == (2, "b", "upd", D("1.50"), None)
    assert client.table(short, refresh=True).schema.arrow_schema.names == ["id", "name", "note", "score", "flag"]


def test_add_column_to_a_table_without_key(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (a STRING, b INT)")
    spark.sql(f"INSERT INTO {tname} VALUES ('x', 1), ('y', 2)")
    spark.sql(f"ALTER TABLE {tname} ADD COLUMNS (c DOUBLE)")
    spark.sql(f"INSERT INTO {tname} VALUES ('z', 3, 0.5)")
    spark.sql(f"UPDATE {tname} SET c = 9.0 WHERE a = 'x'")
    assert _rows(spark, tname) == [("x", 1, 9.0), ("y", 2, None), ("z", 3, 0.5)]


def test_rename_within_and_across_namespaces(spark, tname, client) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v STRING)")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 'a'), (2, 'b')")
    short = tname.split(".")[-1]
    new = f"r_{uuid.uuid4().hex[:8]}"
    spark.sql(f"ALTER TABLE {tname} RENAME TO {new}")
    names = [r.tableName for r in spark.sql("SHOW TABLES IN store.default").collect()]
    assert new in names and short not in names
    assert _rows(spark, f"store.default.{new}") == [(1, "a"), (2, "b")]
    with pytest.raises(Exception, match="TABLE_OR_VIEW_NOT_FOUND|cannot be found"):
        spark.sql(f"SELECT * FROM {tname}").collect()
    # Across namespaces of the catalog.
    spark.sql("CREATE NAMESPACE IF NOT EXISTS store.alter_other")
    spark.sql(f"ALTER TABLE store.default.{new} RENAME TO alter_other.{new}")
    assert _rows(spark, f"store.alter_other.{new}") == [(1, "a"), (2, "b")]
    spark.sql(f"INSERT INTO store.alter_other.{new} VALUES (3, 'c')")
    spark.sql(f"UPDATE store.alter_other.{new} SET v = 'B' WHERE id = 2")
    assert _rows(spark, f"store.alter_other.{new}") == [(1, "a"), (2, "B"), (3, "c")]
    assert client.get(f"alter_other.{new}", 2) == (2, "B")
    # A taken name is refused and nothing moves.
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY)")
    with pytest.raises(Exception, match="TABLE_OR_VIEW_ALREADY_EXISTS|already exists"):
        spark.sql(f"ALTER TABLE store.alter_other.{new} RENAME TO default.{short}")
    assert _rows(spark, f"store.alter_other.{new}") == [(1, "a"), (2, "B"), (3, "c")]
    assert _rows(spark, tname) == []


def test_set_and_unset_tblproperties(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v STRING)")
    spark.sql(f"ALTER TABLE {tname} SET TBLPROPERTIES ('note'='hello', 'owner_team'='data')")
    props = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {tname}").collect()}
    assert props["note"] == "hello" and props["owner_team"] == "data"
    spark.sql(f"ALTER TABLE {tname} UNSET TBLPROPERTIES ('note')")
    props = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {tname}").collect()}
    assert "note" not in props and props["owner_team"] == "data"
    with pytest.raises(Exception, match=r"bucket count and primary key .* cannot be changed .*property 'buckets'"):
        spark.sql(f"ALTER TABLE {tname} SET TBLPROPERTIES ('buckets'='3')")


def test_bad_add_columns_name_table_and_column(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v STRING)")
    spark.sql(f"INSERT INTO {tname} VALUES (1, 'a')")
    t = tname.split(".", 1)[1]
    cases = [
        (f"ALTER TABLE {tname} ADD COLUMNS (n INT NOT NULL)", rf"cannot add column 'n' to {t} as NOT NULL"),
        (f"ALTER TABLE {tname} ADD COLUMNS (xs ARRAY<INT>)", rf"cannot add to {t}: column 'xs' has type array<int>"),
        (f"ALTER TABLE {tname} ADD COLUMNS (c INT FIRST)", rf"cannot add column 'c' to {t} at position"),
        (f"ALTER TABLE {tname} ADD COLUMNS (c INT AFTER id)", rf"cannot add column 'c' to {t} at position"),
        (f"ALTER TABLE {tname} ADD COLUMNS (c INT DEFAULT 5)", rf"cannot add column 'c' to {t} with a DEFAULT"),
        (f"ALTER TABLE {tname} ALTER COLUMN v COMMENT 'x'", rf"does not support this ALTER TABLE change of {t}"),
    ]
    for sql, msg in cases:
        with pytest.raises(Exception, match=msg):
            spark.sql(sql)
    # A name the table has: Spark's analyzer or the store refuses it, naming the column.
    with pytest.raises(Exception, match=r"(?i)v.*already exists|already has a column 'v'"):
        spark.sql(f"ALTER TABLE {tname} ADD COLUMNS (v STRING)")
    assert [r.col_name for r in spark.sql(f"DESCRIBE TABLE {tname}").collect()][:2] == ["id", "v"]
    assert _rows(spark, tname) == [(1, "a")]


def test_session_catalog_using_row(spark, client) -> None:
    t = f"alt_{uuid.uuid4().hex[:8]}"
    spark.sql(f"CREATE TABLE {t} (id INT, v STRING, PRIMARY KEY (id)) USING row")
    spark.sql(f"INSERT INTO {t} VALUES (1, 'a'), (2, 'b')")
    spark.sql(f"ALTER TABLE {t} ADD COLUMNS (extra STRING)")
    spark.sql(f"INSERT INTO {t} VALUES (3, 'c', 'e3')")
    spark.sql(f"UPDATE {t} SET extra = 'e1' WHERE id = 1")
    assert _rows(spark, t) == [(1, "a", "e1"), (2, "b", None), (3, "c", "e3")]
    assert "extra STRING" in spark.sql(f"SHOW CREATE TABLE {t}").collect()[0][0]
    spark.sql(f"ALTER TABLE {t} SET TBLPROPERTIES ('note'='x')")
    assert {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {t}").collect()}["note"] == "x"
    t2 = t + "_renamed"
    spark.sql(f"ALTER TABLE {t} RENAME TO {t2}")
    assert _rows(spark, t2) == [(1, "a", "e1"), (2, "b", None), (3, "c", "e3")]
    assert client.get(f"default.{t2}", 3) == (3, "c", "e3")
    assert t2 in [r.tableName for r in spark.sql("SHOW TABLES").collect()]
    assert t not in [r.tableName for r in spark.sql("SHOW TABLES").collect()]
    # Spark's own tables in the session catalog still rename as before.
    p = f"pq_{uuid.uuid4().hex[:8]}"
    spark.sql(f"CREATE TABLE {p} (a INT) USING parquet")
    spark.sql(f"INSERT INTO {p} VALUES (7)")
    spark.sql(f"ALTER TABLE {p} RENAME TO {p}_2")
    assert spark.sql(f"SELECT a FROM {p}_2").collect() == [Row(a=7)]
    spark.sql(f"DROP TABLE {p}_2")
