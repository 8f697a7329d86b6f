"""``make demo``: why a store table beats caching a DataFrame, in about a minute.

On the embedded default (started on first use) it creates a table, loads 1,000,000 rows,
does point reads and writes through ``StoreTable`` (no Spark job), UPDATE / DELETE /
MERGE in Spark SQL, an analytical query, and then the same operations on Spark's own
cache of the same data, timed in the same run. Printing is this program's job.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
import pyarrow as pa

ROWS = 1_000_000
CHUNK = 100_000
TABLE = "demo.orders"
SQL_TABLE = f"store.{TABLE}"


def _data(n: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "id": np.arange(n, dtype=np.int64),
        "k": rng.integers(0, 1000, n, dtype=np.int32),
        "x": rng.random(n),
        "s": pa.array([f"item-{i % 5000}" for i in range(n)]),
    })


def _progress(done: int, total: int, started: float) -> None:
    width = 30
    filled = width * done // total
    rate = done / max(time.perf_counter() - started, 1e-9)
    sys.stdout.write(f"\r  loading [{'#' * filled}{'.' * (width - filled)}] {done:>9,}/{total:,} rows ({rate:,.0f} rows/s)")
    sys.stdout.flush()


def _median_ms(fn: Callable[[], Any], n: int) -> float:
    xs = []
    for _ in range(n):
        a = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - a)
    return statistics.median(xs) * 1000


def _fmt(ms: float) -> str:
    return f"{ms * 1000:.0f} us" if ms < 1 else f"{ms:,.1f} ms"


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    import spark_ext

    print("spark-ext tour: a store table against Spark's own cache, same data, same run\n")
    t0 = time.perf_counter()
    spark = (spark_ext.configure(SparkSession.builder.master("local[2]").appName("spark-ext demo"))
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").config("spark.sql.shuffle.partitions", "4").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    print(f"  Spark session with the extension: {time.perf_counter() - t0:.1f} s")

    spark.sql(f"DROP TABLE IF EXISTS {SQL_TABLE}")
    t = spark_ext.StoreTable.create(spark, TABLE, "id long, k int, x double, s string", primaryKey="id", numBuckets=4)
    data = _data(ROWS)
    started = time.perf_counter()
    for off in range(0, ROWS, CHUNK):
        t.put(data.slice(off, CHUNK))
        _progress(min(off + CHUNK, ROWS), ROWS, started)
    load_s = time.perf_counter() - started
    print()

    rng = np.random.default_rng(1)
    keys = rng.integers(0, ROWS, 300).tolist()
    it = iter(keys * 10)
    results: list[tuple[str, str, str]] = []

    # --- the store table ------------------------------------------------------------------
    get_ms = _median_ms(lambda: t.get(next(it)), 300)
    upd_ms = _median_ms(lambda: t.update(next(it), {"x": 0.5}), 200)
    sql_point_ms = _median_ms(lambda: spark.sql(f"SELECT * FROM {SQL_TABLE} WHERE id = 4242").collect(), 5)
    a = time.perf_counter()
    spark.sql(f"UPDATE {SQL_TABLE} SET x = -1.0 WHERE id = 42")
    sql_update_ms = (time.perf_counter() - a) * 1000
    a = time.perf_counter()
    spark.sql(f"DELETE FROM {SQL_TABLE} WHERE k = 7")
    sql_delete_ms = (time.perf_counter() - a) * 1000
    spark.createDataFrame([(42, 1, 42.0, "merged"), (ROWS + 1, 2, 1.0, "new")], "id long, k int, x double, s string") \
        .createOrReplaceTempView("changes")
    a = time.perf_counter()
    spark.sql(f"""MERGE INTO {SQL_TABLE} t USING changes c ON t.id = c.id
                  WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *""")
    merge_ms = (time.perf_counter() - a) * 1000
    agg = f"SELECT k % 10 AS g, count(*) AS n, round(avg(x), 4) AS avg_x FROM {SQL_TABLE} GROUP BY k % 10 ORDER BY g"
    agg_ms = _median_ms(lambda: spark.sql(agg).collect(), 3)
    print(f"  get(42) after UPDATE and MERGE: {t.get(42)}   rows now: {t.count():,}")

    # --- the same on Spark's cache -------------------------------------------------------
    df = spark.createDataFrame(data.to_pandas()).cache()
    df.count()
    df.createOrReplaceTempView("cached")
    c_point_ms = _median_ms(lambda: spark.sql("SELECT * FROM cached WHERE id = 4242").collect(), 5)

    def rebuild() -> None:
        from pyspark.sql import functions as F

        new = df.withColumn("x", F.when(F.col("id") == 42, F.lit(-1.0)).otherwise(F.col("x"))).cache()
        new.count()
        new.unpersist()

    c_update_ms = _median_ms(rebuild, 1)
    c_agg_ms = _median_ms(lambda: spark.sql(agg.replace(SQL_TABLE, "cached")).collect(), 3)
    df.unpersist()

    results = [
        ("load 1,000,000 rows", f"{load_s:.1f} s", "(createDataFrame + cache: see update row)"),
        ("point read by key", f"{_fmt(get_ms)} (StoreTable.get)", f"{_fmt(c_point_ms)} (SQL on cache)"),
        ("point read in SQL", _fmt(sql_point_ms), _fmt(c_point_ms)),
        ("update one row", f"{_fmt(upd_ms)} (StoreTable.update)", f"{_fmt(c_update_ms)} (rebuild + re-cache)"),
        ("UPDATE ... WHERE id = 42 (SQL)", _fmt(sql_update_ms), "not supported on a cache"),
        ("DELETE ... WHERE k = 7 (SQL)", _fmt(sql_delete_ms), "not supported on a cache"),
        ("MERGE INTO (SQL)", _fmt(merge_ms), "not supported on a cache"),
        ("GROUP BY aggregate", _fmt(agg_ms), _fmt(c_agg_ms)),
    ]
    print(f"\n  {'operation':<34} {'store table':<36} {'Spark cache'}")
    for op, ours, theirs in results:
        print(f"  {op:<34} {ours:<36} {theirs}")
    print(f"\n  point read: {c_point_ms / get_ms:,.0f}x faster than SQL on the cache; "
          f"single-row update: {c_update_ms / upd_ms:,.0f}x faster than rebuilding the cache")
    print(f"  the table outlives this application: StoreTable.forName('{TABLE}') finds it from any process")
    print(f"\n  done in {time.perf_counter() - t0:.0f} s")
    spark.stop()


if __name__ == "__main__":
    main()
