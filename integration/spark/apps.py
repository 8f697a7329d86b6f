"""Spark applications run as separate processes by the tests (local-cluster, sharing between apps).

Usage: python -m integration.spark.apps MODE MASTER JAR [TABLE]; prints one line "RESULT <json>".
"""

from __future__ import annotations

import json
import sys


def session(master: str, jar: str):
    from pyspark.sql import SparkSession

    s = (SparkSession.builder.master(master).appName(f"spark-ext-{sys.argv[1]}")
         .config("spark.jars", jar)
         .config("spark.sql.catalog.store", "io.sparkext.spark.SparkExtCatalog")
         .config("spark.ui.enabled", "false")
         .config("spark.sql.shuffle.partitions", "4")
         .config("spark.executor.memory", "512m")
         .getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    return s


def rows(spark, t):
    return sorted([list(r) for r in spark.table(t).collect()])


def cluster(spark, t: str) -> dict:
    """Every statement kind with real executor JVMs."""
    from pyspark.sql.functions import udf

    out: dict = {}
    spark.sql(f"CREATE TABLE {t} (id INT PRIMARY KEY, v STRING, n BIGINT) TBLPROPERTIES ('buckets'='6')")
    spark.range(0, 300, numPartitions=4).selectExpr("CAST(id AS INT) AS id", "CONCAT('v', id) AS v", "id AS n").writeTo(t).append()
    out["count"] = spark.table(t).count()
    out["point"] = [list(r) for r in spark.sql(f"SELECT * FROM {t} WHERE id = 7").collect()]
    out["point_parts"] = spark.sql(f"SELECT * FROM {t} WHERE id = 7").rdd.getNumPartitions()
    spark.sql(f"UPDATE {t} SET v = 'u' WHERE id < 10")
    spark.sql(f"DELETE FROM {t} WHERE id >= 250")
    spark.createDataFrame([(5, "m", 50), (400, "new", 400)], "id INT, v STRING, n BIGINT").createOrReplaceTempView("src")
    spark.sql(f"MERGE INTO {t} x USING src s ON x.id = s.id WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")
    spark.sql(f"INSERT INTO {t} VALUES (1000, 'k', 1)")
    out["after_dml"] = spark.sql(f"SELECT count(*), sum(n), count_if(v = 'u') FROM {t}").collect()[0][:]
    out["row5"] = [list(r) for r in spark.sql(f"SELECT * FROM {t} WHERE id = 5").collect()]

    @udf("bigint")
    def boom(x):
        if x == 2500:
            raise ValueError("injected failure")
        return x

    before = rows(spark, t)
    try:
        spark.range(2000, 3000, numPartitions=4).selectExpr("CAST(id AS INT) AS id", "'f' AS v", "id AS n") \
            .select("id", "v", boom("n").alias("n")).writeTo(t).append()
        out["failure"] = "no error"
    except Exception as e:  # noqa: BLE001
        out["failure"] = "injected failure" in str(e)
    out["unchanged_after_failure"] = rows(spark, t) == before
    try:
        spark.sql(f"INSERT INTO {t} VALUES (1000, 'dup', 0)")
        out["dup"] = "no error"
    except Exception as e:  # noqa: BLE001
        msg = str(e)
        i = msg.find("[spark-ext ")
        out["dup"] = msg[i:i + 300] if i >= 0 else msg[:2000]
    spark.sql(f"INSERT OVERWRITE {t} SELECT id, v, n FROM {t} WHERE id < 3")
    out["overwrite"] = rows(spark, t)
    return out


AGG_QUERIES = [
    "SELECT k % 100 AS g, count(*), avg(x), min(x), max(k) FROM {T} GROUP BY k % 100",
    "SELECT k % -7, (id - 10000) % 3, count(*), sum(k * 2), count(k + 1) FROM {T} GROUP BY k % -7, (id - 10000) % 3",
    "SELECT abs(k) % 10, sum(x * 2), min(-k) FROM {T} WHERE id < 15000 GROUP BY abs(k) % 10",
    "SELECT count(*), sum(k % 5), max(x / 4) FROM {T}",
]


def aggregates(spark, t: str) -> dict:
    """Aggregates with arithmetic group keys pushed to the servers from executor JVMs, against Spark's own answer."""
    spark.sql(f"CREATE TABLE {t} (id INT PRIMARY KEY, k INT, x DOUBLE) TBLPROPERTIES ('buckets'='8')")
    # k: negative and positive, NULL in every 13th row; x: quarters (sums exact in any order)
    df = spark.range(0, 20000, numPartitions=4).selectExpr(
        "CAST(id AS INT) AS id", "IF(id % 13 = 0, NULL, CAST((id * 7919) % 2001 - 1000 AS INT)) AS k",
        "CAST(id % 400 AS DOUBLE) / 4 - 50 AS x")
    df.writeTo(t).append()
    df.createOrReplaceTempView("agg_src")
    out: dict = {"executors": spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1, "queries": []}
    for q in AGG_QUERIES:
        got = sorted((tuple(r) for r in spark.sql(q.format(T=t)).collect()), key=repr)
        want = sorted((tuple(r) for r in spark.sql(q.format(T="agg_src")).collect()), key=repr)
        plan = spark.sql("EXPLAIN " + q.format(T=t)).collect()[0][0]
        out["queries"].append({"query": q, "same": got == want, "groups": len(got),
                               "pushed": "PushedAggregates" in plan, "negative_keys": any(
                                   isinstance(r[0], int) and r[0] < 0 for r in got)})
    try:
        spark.sql(f"SELECT k % (id - id), count(*) FROM {t} GROUP BY k % (id - id)").collect()
        out["zero"] = "no error"
    except Exception as e:  # noqa: BLE001
        out["zero"] = "REMAINDER_BY_ZERO" in str(e)
    return out


def main() -> None:
    mode, master, jar = sys.argv[1], sys.argv[2], sys.argv[3]
    table = sys.argv[4] if len(sys.argv) > 4 else "store.default.apps_t"
    spark = session(master, jar)
    if mode == "cluster":
        res = cluster(spark, table)
    elif mode == "aggregates":
        res = aggregates(spark, table)
    elif mode == "writer":
        spark.sql(f"CREATE TABLE IF NOT EXISTS {table} (id INT PRIMARY KEY, who STRING)")
        spark.sql(f"INSERT INTO {table} VALUES (1, 'app1'), (2, 'app1')")
        res = {"rows": rows(spark, table)}
    elif mode == "second":
        before = rows(spark, table)
        spark.sql(f"INSERT INTO {table} VALUES (3, 'app2')")
        spark.sql(f"UPDATE {table} SET who = 'app2' WHERE id = 1")
        res = {"before": before, "rows": rows(spark, table)}
    else:
        res = {"rows": rows(spark, table)}
    print("RESULT " + json.dumps(res, default=str), flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
