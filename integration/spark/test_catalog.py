"""DDL through the spark-ext catalog: CREATE/DROP/SHOW/DESCRIBE, namespaces, properties, types."""

from __future__ import annotations

import pytest


def test_create_show_describe_drop(spark, tname, client) -> None:
    spark.sql(f"CREATE TABLE {tname} (id BIGINT NOT NULL, name STRING, PRIMARY KEY (id)) TBLPROPERTIES ('buckets'='4')")
    short = tname.split(".")[-1]
    names = [r.tableName for r in spark.sql("SHOW TABLES IN store.default").collect()]
    assert short in names
    desc = {r.col_name: r.data_type for r in spark.sql(f"DESCRIBE TABLE {tname}").collect()}
    assert desc["id"] == "bigint" and desc["name"] == "string"
    info = client.table(f"default.{short}", refresh=True)
    assert info.schema.primary_key == ["id"] and info.schema.num_buckets == 4
    spark.sql(f"DROP TABLE {tname}")
    assert short not in [r.tableName for r in spark.sql("SHOW TABLES IN store.default").collect()]


def test_primary_key_forms(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (a INT NOT NULL PRIMARY KEY, b STRING)")
    props = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {tname}").collect()}
    assert props["primary_key"] == "a"
    t2 = tname + "_2"
    spark.sql(f"CREATE TABLE {t2} (a INT, b STRING, CONSTRAINT pk PRIMARY KEY (a, b))")
    props = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {t2}").collect()}
    assert props["primary_key"] == "a,b"


def test_set_tblproperties(spark, tname) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, v STRING) TBLPROPERTIES ('persistence'='memory')")
    spark.sql(f"ALTER TABLE {tname} SET TBLPROPERTIES ('note'='hello')")
    props = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {tname}").collect()}
    assert props["persistence"] == "memory" and props["note"] == "hello"
    # Storage options are applied by the servers at CREATE: ALTER refuses them, changing nothing.
    with pytest.raises(Exception, match=r"option 'flush' is fixed when the table is created"):
        spark.sql(f"ALTER TABLE {tname} SET TBLPROPERTIES ('flush'='group', 'note'='changed')")
    props = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {tname}").collect()}
    assert "flush" not in props and props["note"] == "hello"
    with pytest.raises(Exception, match=r"option flush must be commit, group or off, got 'none'"):
        spark.sql(f"CREATE TABLE {tname}_b (id INT PRIMARY KEY) TBLPROPERTIES ('flush'='none')")
    assert spark.sql(f"SHOW TABLES IN store.default LIKE '{tname.split('.')[-1]}_b'").count() == 0


def test_namespaces(spark) -> None:
    spark.sql("CREATE NAMESPACE IF NOT EXISTS store.ns_it")
    assert "ns_it" in [r[0] for r in spark.sql("SHOW NAMESPACES IN store").collect()]
    spark.sql("CREATE TABLE store.ns_it.t (id INT PRIMARY KEY)")
    assert [r.tableName for r in spark.sql("SHOW TABLES IN store.ns_it").collect()] == ["t"]
    with pytest.raises(Exception, match="(?i)not empty|NOT_EMPTY"):
        spark.sql("DROP NAMESPACE store.ns_it")
    spark.sql("DROP NAMESPACE store.ns_it CASCADE")
    assert "ns_it" not in [r[0] for r in spark.sql("SHOW NAMESPACES IN store").collect()]


def test_nested_types_refused(spark, tname) -> None:
    with pytest.raises(Exception, match="arrays, maps or structs"):
        spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, xs ARRAY<INT>)")


def test_create_and_drop_index(spark, tname, client) -> None:
    spark.sql(f"CREATE TABLE {tname} (id INT PRIMARY KEY, email STRING, age INT)")
    spark.createDataFrame([(i, f"u{i}@x", i % 50) for i in range(500)], "id INT, email STRING, age INT").writeTo(tname).append()
    spark.sql(f"CREATE INDEX by_email ON {tname} (email)")
    spark.sql(f"CREATE INDEX by_age ON {tname} USING ordered (age)")
    info = client.table(tname.split(".", 1)[1], refresh=True)
    assert {ix["name"]: ix["kind"] for ix in info.indexes} == {"by_email": "hash", "by_age": "ordered"}
    assert spark.sql(f"SELECT id FROM {tname} WHERE email = 'u42@x'").collect()[0].id == 42
    assert spark.sql(f"SELECT count(*) FROM {tname} WHERE age BETWEEN 10 AND 12").collect()[0][0] == 30
    plan = spark.sql(f"EXPLAIN SELECT id FROM {tname} WHERE email = 'u42@x'").collect()[0][0]
    assert "PushedFilters: [email IS NOT NULL, email = 'u42@x']" in plan or "email = 'u42@x'" in plan, plan
    spark.sql(f"DROP INDEX by_email ON {tname}")
    info = client.table(tname.split(".", 1)[1], refresh=True)
    assert [ix["name"] for ix in info.indexes] == ["by_age"]


def test_write_to_create_or_replace(spark, tname) -> None:
    df = spark.createDataFrame([(1, "a")], "id INT, v STRING")
    df.writeTo(tname).tableProperty("primary_key", "id").tableProperty("buckets", "2").create()
    props = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {tname}").collect()}
    assert props["primary_key"] == "id" and props["buckets"] == "2"
    spark.createDataFrame([(2, "b"), (3, "c")], "id INT, v STRING").writeTo(tname).createOrReplace()
    assert sorted(tuple(r) for r in spark.table(tname).collect()) == [(2, "b"), (3, "c")]
    ddl = spark.sql(f"SHOW CREATE TABLE {tname}").collect()[0][0]
    assert "CREATE TABLE" in ddl and "id INT" in ddl, ddl


def test_missing_server_error_is_clear(tmp_path) -> None:
    """Without a running server the catalog says how to start one (checked in a plain JVM)."""
    import subprocess
    from integration.spark.conftest import ROOT, build_jar
    from tests.jvm.conftest import pyspark_jars
    import os

    build_jar()
    cp = os.pathsep.join([str(ROOT / "build" / "classes"), os.path.join(pyspark_jars(), "*")])
    code = subprocess.run(
        ["java", "-cp", cp, f"-Dsparkext.home={tmp_path}", "io.sparkext.spark.Endpoints"],
        capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "SPARK_EXT_HOME"}, timeout=60)
    assert "spark-ext server start --embedded" in code.stderr + code.stdout, code.stderr
