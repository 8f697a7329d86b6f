"""Single-row UPDATE from PySpark, with and without the one-request path, against a Parquet rewrite.

The ``single-row UPDATE`` row of ``bench.spark_bench`` on its own, with the "before" measured
beside it in the same session: ``UPDATE {T} SET x = <v>, s = '<s>' WHERE id = <key>`` on a
store table of N rows (default 1,000,000, ``bench.spark_bench``'s data and schema), run

* ``point``: with the SQL extension's point path (the default of ``spark_ext.configure``;
  one request to the key's store server, no Spark job);
* ``row-level``: with ``spark.sparkext.pointWrites=false`` (Spark's row-level path: a
  one-task job reading the key's bucket and writing a delta);

interleaved statement by statement, so both see the same machine load; and the peer, a
rewrite of a Parquet table with the row changed (``CREATE TABLE pq_new USING parquet AS
SELECT ... CASE WHEN id = <key> ...``, drop, rename), in rounds spread between the UPDATEs.
Every updated row is read back and checked; the report gives p50/p90 of each UPDATE mode,
the median rewrite, and "times faster than the rewrite" (issue 4's target: >= 50x).

Usage: ``python -m bench.update_bench [--rows 1M] [--samples 60] [--rounds 3]``; results in
``bench/results/update.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from bench.common import RESULTS_DIR, LatencyStats, format_table, load_average, log, machine_info, median, write_json
from bench.engine_bench import Config as EngineConfig
from bench.engine_bench import make_data, parse_rows
from bench.spark_bench import (
    INSERT_SQL,
    PQ_SCHEMA_SQL,
    PQ_TABLE,
    REWRITE_SQL,
    SCHEMA_SQL,
    STORE_TABLE,
    UPDATE_SQL,
    start_spark,
    stop_server,
    write_source,
)

POINT = "point"
ROW_LEVEL = "row-level"
TOGGLE = "spark.sparkext.pointWrites"


def run(spark: Any, n: int, samples: int, rounds: int, seed: int, tmp: Path) -> dict[str, Any]:
    """Load N rows into the store and Parquet, then time the interleaved UPDATEs and rewrites."""
    data = make_data(n, EngineConfig(sizes=[n], engines=[], seed=seed))
    src = tmp / "src"
    write_source(data, src, 4)
    spark.read.parquet(str(src)).createOrReplaceTempView("src")
    spark.sql("CREATE NAMESPACE IF NOT EXISTS store.bench")
    spark.sql(f"DROP TABLE IF EXISTS {STORE_TABLE}")
    spark.sql(f"CREATE TABLE {STORE_TABLE} ({SCHEMA_SQL}, PRIMARY KEY (id)) TBLPROPERTIES ('buckets'='4')")
    spark.sql(f"DROP TABLE IF EXISTS {PQ_TABLE}")
    spark.sql(f"CREATE TABLE {PQ_TABLE} ({PQ_SCHEMA_SQL}) USING parquet")
    log(f"{n:,} rows: loading the store table and the Parquet table")
    for t in (STORE_TABLE, PQ_TABLE):
        spark.sql(INSERT_SQL.format(T=t))
    ups = data.upserts
    need = 2 * (samples + 4) + rounds
    if len(ups) < need:
        raise SystemExit(f"the data has {len(ups)} update rows; {need} needed (use fewer --samples)")
    runs = spark._jvm.io.sparkext.spark.PointWriteCommand.executed

    def update(mode: str, i: int) -> float:
        key, _k, x, _s, _t = ups[i]
        spark.conf.set(TOGGLE, "true" if mode == POINT else "false")
        before = runs()
        t0 = time.perf_counter_ns()
        spark.sql(UPDATE_SQL.format(T=STORE_TABLE, key=key, x=x, s=f"upd_{key}"))
        dt = time.perf_counter_ns() - t0
        if runs() - before != (1 if mode == POINT else 0):
            raise SystemExit(f"{mode} UPDATE of key {key} did not take the expected path")
        return dt

    def rewrite(i: int) -> float:
        key, _k, x, _s, _t = ups[i]
        t0 = time.perf_counter()
        spark.sql(f"DROP TABLE IF EXISTS {PQ_TABLE}_new")
        spark.sql(f"CREATE TABLE {PQ_TABLE}_new USING parquet AS "
                  + REWRITE_SQL.format(T=PQ_TABLE, key=key, x=x, s=f"upd_{key}"))
        spark.sql(f"DROP TABLE {PQ_TABLE}")
        spark.sql(f"ALTER TABLE {PQ_TABLE}_new RENAME TO {PQ_TABLE}")
        return time.perf_counter() - t0

    load_start = load_average()
    for w in range(4):  # untimed warm-up of both paths
        update(POINT, 2 * w)
        update(ROW_LEVEL, 2 * w + 1)
    lat: dict[str, list[int]] = {POINT: [], ROW_LEVEL: []}
    rw: list[float] = []
    per_round = max(1, samples // max(rounds, 1))
    nxt = 8
    for s in range(samples):
        for mode in ((POINT, ROW_LEVEL) if s % 2 == 0 else (ROW_LEVEL, POINT)):
            lat[mode].append(update(mode, nxt))
            nxt += 1
        if (s + 1) % per_round == 0 and len(rw) < rounds:
            log(f"{n:,} rows: Parquet rewrite round {len(rw) + 1}/{rounds}")
            rw.append(rewrite(len(ups) - 1 - len(rw)))
    while len(rw) < rounds:
        rw.append(rewrite(len(ups) - 1 - len(rw)))
    spark.conf.unset(TOGGLE)
    # every updated row reads back as written; the rewritten rows too
    got = {r["id"]: (r["x"], r["s"]) for r in spark.sql(
        f"SELECT id, x, s FROM {STORE_TABLE} WHERE id IN ({', '.join(str(ups[i][0]) for i in range(nxt))})").collect()}
    expect = {ups[i][0]: (ups[i][2], f"upd_{ups[i][0]}") for i in range(nxt)}
    if got != expect:
        raise SystemExit("updated rows in the store differ from what was written")
    for j in range(rounds):
        key, _k, x, _s, _t = ups[len(ups) - 1 - j]
        row = spark.sql(f"SELECT x, s FROM {PQ_TABLE} WHERE id = {key}").collect()[0]
        if (row["x"], row["s"]) != (x, f"upd_{key}"):
            raise SystemExit(f"the rewritten Parquet row {key} is wrong")
    stats = {m: LatencyStats.from_ns(v) for m, v in lat.items()}
    return {"rows": n, "samples": samples, "rounds": rounds, "load_start": load_start, "load_end": load_average(),
            "update": {m: s.to_dict() for m, s in stats.items()}, "rewrite_s": rw}


def report(r: dict[str, Any]) -> str:
    rw_ms = median(r["rewrite_s"]) * 1000
    rows = []
    for mode in (POINT, ROW_LEVEL):
        u = r["update"][mode]
        rows.append([f"UPDATE, {mode}", f"{u['p50_us'] / 1000:.1f}", f"{u['p90_us'] / 1000:.1f}",
                     f"{rw_ms:,.0f}", f"{rw_ms / (u['p50_us'] / 1000):.0f}x"])
    title = (f"{r['rows']:,} rows, local[2]: {r['samples']} UPDATEs per mode (interleaved), "
             f"{r['rounds']} Parquet rewrites (rewrites: {', '.join(f'{x:.2f}' for x in r['rewrite_s'])} s); "
             f"load average {r['load_start']} -> {r['load_end']}")
    return format_table(["statement", "p50 (ms)", "p90 (ms)", "Parquet rewrite (ms)", "vs Parquet (>= 50x)"],
                        rows, title=title)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.update_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=parse_rows, default=[1_000_000], help="table size (default 1M)")
    ap.add_argument("--samples", type=int, default=60, help="UPDATEs per mode (default 60)")
    ap.add_argument("--rounds", type=int, default=3, help="Parquet rewrites (default 3)")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "update.json")
    a = ap.parse_args(argv)
    if a.samples < 1 or a.rounds < 1:
        ap.error("--samples and --rounds must be at least 1")
    tmp = Path(tempfile.mkdtemp(prefix="update-bench-"))
    from spark_ext.spark.testing import PrivateHome

    home = PrivateHome(root=tmp / "store").start()
    spark = None
    results = []
    try:
        spark = start_spark(tmp / "warehouse")
        for n in a.rows:
            results.append(run(spark, n, a.samples, a.rounds, a.seed, tmp))
            print(report(results[-1]), flush=True)
    finally:
        if spark is not None:
            spark.stop()
        stop_server(home)
        shutil.rmtree(tmp, ignore_errors=True)
    p = write_json(a.out, {"machine": machine_info(["pyspark", "pyarrow"]), "update_sql": UPDATE_SQL,
                           "results": results})
    p.with_suffix(".md").write_text("\n\n".join(report(r) for r in results) + "\n")
    log(f"results in {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
