"""``python -m spark_ext.demo_engine``: a one-minute tour of the storage engine alone.

For now it tours the storage engine (the Spark tour replaces it when the Spark
integration lands): a million rows loaded from Arrow, point reads and writes in
microseconds, updates and deletes in place, an indexed range query and a vectorized scan,
then a restart that recovers everything from disk. Printing is this program's job.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

from spark_ext.store import Store, col

ROWS = 1_000_000


def _data(n: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": np.arange(n, dtype=np.int64),
            "k": rng.integers(0, 10_000, n, dtype=np.int32),
            "x": rng.random(n),
            "s": pa.array([f"name-{i % 50_000}" for i in range(n)]),
            "t": pa.array(1_700_000_000_000_000 + np.arange(n, dtype=np.int64) * 1000, pa.timestamp("us", tz="UTC")),
        }
    )


def _us(samples: list[int]) -> str:
    return f"{statistics.median(samples) / 1000:.1f} us"


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // total
    sys.stdout.write(f"\r  loading [{'#' * filled}{'.' * (width - filled)}] {done:>9,}/{total:,} rows")
    sys.stdout.flush()


def main() -> None:
    data_dir = tempfile.mkdtemp(prefix="spark-ext-demo-")
    print(f"spark-ext engine tour (data directory {data_dir})\n")
    store = Store(data_dir, flush="group")
    t = store.create_table(
        "demo.orders",
        [("id", "int64"), ("k", "int32"), ("x", "float64"), ("s", "string"), ("t", "timestamp_tz")],
        primary_key="id",
        num_buckets=8,
    )
    data = _data(ROWS)
    t0 = time.perf_counter()
    chunk = 100_000
    for off in range(0, ROWS, chunk):
        t.insert(data.slice(off, chunk))
        _progress(min(off + chunk, ROWS), ROWS)
    load_s = time.perf_counter() - t0
    print(f"\n  {ROWS:,} rows in {load_s:.2f} s ({ROWS / load_s:,.0f} rows/s), {t.memory_bytes() / ROWS:.0f} bytes/row in memory\n")

    rng = np.random.default_rng(1)
    keys = rng.integers(0, ROWS, 5000).tolist()
    gets = []
    for k in keys:
        t_ns = time.perf_counter_ns()
        t.get(k)
        gets.append(time.perf_counter_ns() - t_ns)
    ups = []
    now = dt.datetime.now(dt.timezone.utc)
    for k in keys[:2000]:
        t_ns = time.perf_counter_ns()
        t.upsert((k, 1, 0.5, "updated", now))
        ups.append(time.perf_counter_ns() - t_ns)
    print(f"  point get     p50 {_us(gets)}    e.g. get(42) -> {t.get(42)}")
    print(f"  point upsert  p50 {_us(ups)}")
    n = t.update_where(col("k") == 77, {"s": "vip"})
    print(f"  UPDATE ... WHERE k = 77: {n} rows; DELETE ... WHERE x < 0.001: {t.delete_where(col('x') < 0.001)} rows")

    t.create_index("k_ord", "k", "ordered")
    a = time.perf_counter()
    s = t.scan(columns=["id", "k"], where=(col("k") >= 100) & (col("k") < 110))
    hits = s.count()
    print(f"  range k in [100,110): {hits} rows in {(time.perf_counter() - a) * 1000:.1f} ms via {s.access_path}, {s.rows_examined:,} rows examined")
    t.compact()
    a = time.perf_counter()
    total = sum(b.nbytes for b in t.scan())
    sec = time.perf_counter() - a
    print(f"  full scan: {total / 1e6:.0f} MB of Arrow in {sec * 1000:.0f} ms ({total / sec / 1e9:.1f} GB/s)")
    filt = t.scan(columns=["k", "x"], where=col("x") > 0.99).to_table()
    print(f"  filtered scan x > 0.99: {filt.num_rows:,} rows, mean k {pc_mean(filt)}")

    count = t.count()
    store.close()
    a = time.perf_counter()
    store = Store(data_dir)
    t2 = store.table("demo.orders")
    print(f"\n  restart: recovered {t2.count():,} rows (expected {count:,}) in {time.perf_counter() - a:.2f} s; get(42) -> {t2.get(42)}")
    store.close()


def pc_mean(tbl: pa.Table) -> str:
    import pyarrow.compute as pc

    return f"{pc.mean(tbl.column('k')).as_py():.1f}"


if __name__ == "__main__":
    main()
