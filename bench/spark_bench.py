"""Spark SQL benchmark: a store table against Spark's own ``CACHE TABLE`` and Parquet, one run.

Run::

    python -m bench.spark_bench                  # 1,000,000 and 5,000,000 rows (~10 min)
    python -m bench.spark_bench --quick          # 100,000 rows, fewer repetitions (~1 min)
    python -m bench.spark_bench --rows 200k,1M --buckets 4
    python -m bench.spark_bench --agg-only --rows 1M,5M   # only the GROUP BY row (see run_agg_only)

One ``local[2]`` SparkSession configured by ``spark_ext.configure`` (driver memory 4 GiB so
Spark's cache stays in memory, ``spark.sql.shuffle.partitions=4``) on a private embedded
store (temporary ``SPARK_EXT_HOME``, server defaults: persistent tables, log fsync'd at
commit). Per size, three copies of the same data, all loaded from the same source:

* ``store.bench.t``: a store table, ``PRIMARY KEY (id)``, 4 buckets;
* ``cached``: a temporary view over the source, ``CACHE TABLE``'d (eager, in memory);
* ``pq``: a Parquet table in a temporary warehouse.

Data: the generator of :mod:`bench.engine_bench` (same seed, same rows for the same size):
``(id BIGINT, k INT, x DOUBLE, s STRING, t TIMESTAMP)``, written once by pyarrow as 4
Parquet files that Spark reads as the temporary view ``src``. Every query below is the same
text on the three tables (``{T}`` is the table name); the operations, in this order:

1. bulk INSERT: ``INSERT INTO {T} SELECT * FROM src`` into an empty store table and an
   empty Parquet table (each repetition starts from a new table, dropped and created
   untimed); for the cache, ``CACHE TABLE cached AS SELECT * FROM src`` is reported too;
2. point SELECT by key: ``SELECT * FROM {T} WHERE id = <key>``, ``collect()``, random
   existing keys, p50 (and p90) of one call each. The store answers it on the driver
   without a Spark job (catalog option ``localPointReads``, default true); the extra row
   "store, localPointReads=false" runs it as a one-partition Spark job (``WITH
   ('localPointReads' = 'false')`` in the same query);
3. GROUP BY aggregate: ``SELECT k % 100 AS g, COUNT(*), AVG(x), MIN(t), MAX(t) FROM {T}
   GROUP BY k % 100``, collected (100 rows);
4. full scan with a filter: ``SELECT * FROM {T} WHERE x < 0.1`` (about 10% of the rows,
   every column materialized, written to Spark's ``noop`` sink so that no rows travel to
   Python); an extra row filters on the integer column (``k < n/10``), which the store
   can push down (it does not push filters on floating-point columns);
5. single-row UPDATE: on the store, ``UPDATE {T} SET x = <v>, s = '<s>' WHERE id = <key>``
   (p50 of one statement each); Spark supports no UPDATE on a cached view or a Parquet
   table, so for them the rebuild a user has to do: read the whole table, change the row
   (``CASE WHEN id = <key> ...``), write it again --
   cache: ``spark.sql(<rewrite of cached>)``, ``cache()``, ``count()``, unpersist the old
   copy, re-register the view; Parquet: ``CREATE TABLE pq_new USING parquet AS
   <rewrite of pq>``, ``DROP TABLE pq``, ``ALTER TABLE pq_new RENAME TO pq``.

Heavy operations run in rounds (store, cache, Parquet in turn, so all see the same machine
load) and report the median round: 3 rounds below 3M rows, 2 at 5M rows (bounded so that
the full run stays near 10 minutes on 2 cores), 1 with ``--quick``; an untimed warm-up
precedes them on the first size (a 20,000-row INSERT into each table, one round of the
queries). Answers are cross-checked between the three tables (point rows, aggregate
groups, filtered row counts, the updated row), and a mismatch aborts the run.

Ratios read "times faster than the peer" (> 1: the store table faster). Targets (issue 4):
point SELECT >= 5x faster than on the cache; single-row UPDATE >= 50x faster than the
Parquet rewrite; aggregate no slower than on the cache; bulk INSERT at least as fast as
writing Parquet. Results: tables on stdout, JSON in ``bench/results/spark.json`` and the
tables as Markdown in ``bench/results/spark.md`` (``spark-quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.common import (
    RESULTS_DIR,
    LatencyStats,
    advantage,
    fmt_num,
    fmt_ratio,
    format_table,
    load_average,
    log,
    machine_info,
    markdown_table,
    median,
    time_each,
    write_json,
)
from bench.engine_bench import Config as EngineConfig
from bench.engine_bench import Data, make_data, parse_rows

STORE = "store"
STORE_JOB = "store, localPointReads=false"
CACHE = "cache"
PARQUET = "parquet"

STORE_TABLE = "store.bench.t"
CACHE_VIEW = "cached"
PQ_TABLE = "pq"

SCHEMA_SQL = "id BIGINT NOT NULL, k INT, x DOUBLE, s STRING, t TIMESTAMP"
PQ_SCHEMA_SQL = "id BIGINT, k INT, x DOUBLE, s STRING, t TIMESTAMP"

POINT_SQL = "SELECT * FROM {T} WHERE id = {key}"
AGG_SQL = ("SELECT k % 100 AS g, COUNT(*) AS n, AVG(x) AS avg_x, MIN(t) AS min_t, MAX(t) AS max_t "
           "FROM {T} GROUP BY k % 100")
SCAN_SQL = "SELECT * FROM {T} WHERE x < 0.1"
SCAN_K_SQL = "SELECT * FROM {T} WHERE k < {lim}"
INSERT_SQL = "INSERT INTO {T} SELECT * FROM src"
UPDATE_SQL = "UPDATE {T} SET x = {x!r}, s = '{s}' WHERE id = {key}"
REWRITE_SQL = ("SELECT id, k, CASE WHEN id = {key} THEN CAST({x!r} AS DOUBLE) ELSE x END AS x, "
               "CASE WHEN id = {key} THEN '{s}' ELSE s END AS s, t FROM {T}")


# --- configuration -------------------------------------------------------------------


@dataclass
class Config:
    sizes: list[int]
    quick: bool = False
    seed: int = 20240601  # bench.engine_bench's default: the same rows for the same size
    buckets: int = 4
    src_files: int = 4
    # per size: how many samples / rounds; bounded by a time budget per operation
    point_samples: int = 200  # store, local point reads
    point_job_samples: int = 40
    point_peer_samples: int = 20  # cache and Parquet: one Spark job each
    point_budget_s: float = 8.0  # per engine
    update_samples: int = 40
    update_budget_s: float = 8.0
    rounds: int = 3  # insert, aggregate, scan, rewrite rounds (fewer at 5M, see rounds_for)
    big_rounds: int = 2  # rounds at >= 3M rows
    big_rows: int = 3_000_000
    tmpdir: str | None = None
    out: Path = field(default_factory=lambda: RESULTS_DIR / "spark.json")
    report: Path | None = None  # --report: reprint an earlier run
    agg_only: bool = False  # --agg-only: the GROUP BY row alone, with push-down on and off

    def rounds_for(self, n: int) -> int:
        return self.big_rounds if n >= self.big_rows else self.rounds


# --- small helpers -------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def latency_until(fn: Callable[[Any], Any], inputs: Sequence[Any], budget_s: float, warmup: int = 2,
                  min_samples: int = 5) -> LatencyStats:
    """Per-call latencies of ``fn`` over ``inputs``: ``warmup`` calls first (not recorded), then
    as many of the inputs as fit into ``budget_s`` (estimated from the warm-up), at least
    ``min_samples``."""
    t0 = time.perf_counter()
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    per_call = (time.perf_counter() - t0) / max(warmup, 1)
    n = len(inputs) if per_call <= 0 else max(min_samples, min(len(inputs), int(budget_s / per_call)))
    rest = list(inputs[warmup:]) + list(inputs[:warmup])
    return LatencyStats.from_ns(time_each(fn, rest[:n]))


def sql_ms(v: float | None) -> str:
    """Seconds as milliseconds: '45.5', '363', '8,476'."""
    if v is None:
        return "n/a"
    ms = v * 1000
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.3g}"


# --- the Spark session ---------------------------------------------------------------


def start_spark(warehouse: Path) -> Any:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    import spark_ext

    b = (SparkSession.builder.master("local[2]").appName("spark-ext spark bench")
         .config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false")
         .config("spark.driver.memory", "4g")
         .config("spark.sql.shuffle.partitions", "4")
         .config("spark.sql.warehouse.dir", str(warehouse)))
    spark = spark_ext.configure(b).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    jar = spark.conf.get("spark.jars", "")
    if "spark-ext" not in jar or spark.conf.get("spark.sql.catalog.store", None) is None:
        raise SystemExit("the spark-ext jar with its catalog is not configured: run `make jar` first")
    return spark


# --- per size --------------------------------------------------------------------------


@dataclass
class SizeResult:
    n: int
    rounds: int
    load_start: list[float] | None = None
    load_end: list[float] | None = None
    seconds: float = 0.0
    point: dict[str, LatencyStats] = field(default_factory=dict)
    update: dict[str, LatencyStats] = field(default_factory=dict)  # store only
    rewrite: dict[str, list[float]] = field(default_factory=dict)  # cache, parquet
    insert: dict[str, list[float]] = field(default_factory=dict)  # store, parquet, cache (CACHE TABLE)
    agg: dict[str, list[float]] = field(default_factory=dict)
    scan: dict[str, list[float]] = field(default_factory=dict)
    scan_k: dict[str, list[float]] = field(default_factory=dict)
    filtered_rows: int = 0
    filtered_rows_k: int = 0
    explain_point: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: v for k, v in self.__dict__.items()}
        for k in ("point", "update"):
            d[k] = {e: s.to_dict() for e, s in getattr(self, k).items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SizeResult":
        r = cls(**d)
        r.point = {e: LatencyStats(**s) for e, s in d["point"].items()}
        r.update = {e: LatencyStats(**s) for e, s in d["update"].items()}
        return r


def write_source(data: Data, path: Path, files: int) -> None:
    import pyarrow.parquet as pq

    path.mkdir(parents=True, exist_ok=True)
    n = data.table.num_rows
    per = math.ceil(n / files)
    for i in range(files):
        pq.write_table(data.table.slice(i * per, per), path / f"part-{i:02d}.parquet", row_group_size=256 * 1024)


def _norm_row(r: Any) -> tuple[Any, ...]:
    return tuple(round(v, 9) if isinstance(v, float) else v for v in r)


def _check(what: str, a: Any, b: Any) -> None:
    if a != b:
        raise SystemExit(f"answers differ for {what}: {a!r} != {b!r}")


def run_size(spark: Any, n: int, cfg: Config, tmp: Path, first: bool = True) -> SizeResult:
    rounds = cfg.rounds_for(n)
    res = SizeResult(n=n, rounds=rounds, load_start=load_average())
    t_size = time.perf_counter()
    log(f"{n:,} rows: generating data (seed {cfg.seed})")
    data = make_data(n, EngineConfig(sizes=[n], engines=[], seed=cfg.seed))
    src = tmp / f"src-{n}"
    write_source(data, src, cfg.src_files)
    spark.read.parquet(str(src)).createOrReplaceTempView("src")
    res.filtered_rows = data.filtered_rows
    k_lim = n // 10

    def drop_all() -> None:
        spark.sql(f"DROP TABLE IF EXISTS {STORE_TABLE}")
        spark.sql(f"DROP TABLE IF EXISTS {PQ_TABLE}")
        spark.sql(f"DROP TABLE IF EXISTS {PQ_TABLE}_new")
        spark.catalog.clearCache()
        spark.sql(f"DROP VIEW IF EXISTS {CACHE_VIEW}")

    def create_store() -> None:
        spark.sql(f"DROP TABLE IF EXISTS {STORE_TABLE}")
        spark.sql(f"CREATE TABLE {STORE_TABLE} ({SCHEMA_SQL}, PRIMARY KEY (id)) "
                  f"TBLPROPERTIES ('buckets'='{cfg.buckets}')")

    def create_pq() -> None:
        spark.sql(f"DROP TABLE IF EXISTS {PQ_TABLE}")
        spark.sql(f"CREATE TABLE {PQ_TABLE} ({PQ_SCHEMA_SQL}) USING parquet")

    drop_all()
    spark.sql("CREATE NAMESPACE IF NOT EXISTS store.bench")

    # 1. bulk INSERT, in rounds: store, Parquet, CACHE TABLE
    log(f"{n:,} rows: warm-up (one read of the source)")
    spark.sql("SELECT * FROM src").write.format("noop").mode("overwrite").save()
    create_store()
    create_pq()
    for T in (STORE_TABLE, PQ_TABLE):  # JIT warm-up of both write paths, untimed
        spark.sql(f"INSERT INTO {T} SELECT * FROM src LIMIT 20000")
    ins: dict[str, list[float]] = {STORE: [], PARQUET: [], CACHE: []}
    for r in range(rounds):
        log(f"{n:,} rows: bulk INSERT round {r + 1}/{rounds}")
        create_store()
        dt, _ = timed(lambda: spark.sql(INSERT_SQL.format(T=STORE_TABLE)))
        ins[STORE].append(dt)
        create_pq()
        dt, _ = timed(lambda: spark.sql(INSERT_SQL.format(T=PQ_TABLE)))
        ins[PARQUET].append(dt)
        spark.catalog.clearCache()
        spark.sql(f"DROP VIEW IF EXISTS {CACHE_VIEW}")
        dt, _ = timed(lambda: spark.sql(f"CACHE TABLE {CACHE_VIEW} AS SELECT * FROM src"))
        ins[CACHE].append(dt)
        log(f"    store {ins[STORE][-1]:.2f} s, parquet {ins[PARQUET][-1]:.2f} s, cache {ins[CACHE][-1]:.2f} s")
    res.insert = ins
    counts = {e: spark.sql(f"SELECT COUNT(*) FROM {T}").collect()[0][0]
              for e, T in ((STORE, STORE_TABLE), (CACHE, CACHE_VIEW), (PARQUET, PQ_TABLE))}
    for e, c in counts.items():
        _check(f"row count of {e}", c, n)

    tables = {STORE: STORE_TABLE, CACHE: CACHE_VIEW, PARQUET: PQ_TABLE}

    # 2. point SELECT by key
    keys = data.get_keys
    answers: dict[str, dict[int, Any]] = {}
    probe = keys[:3]
    for e, T in tables.items():
        answers[e] = {k: [_norm_row(r) for r in spark.sql(POINT_SQL.format(T=T, key=k)).collect()] for k in probe}
    for e in (CACHE, PARQUET):
        _check(f"point rows of {e} vs store", answers[e], answers[STORE])
    job_T = f"{STORE_TABLE} WITH ('localPointReads' = 'false')"
    _check("point rows with localPointReads=false",
           {k: [_norm_row(r) for r in spark.sql(POINT_SQL.format(T=job_T, key=k)).collect()] for k in probe},
           answers[STORE])
    res.explain_point = "\n".join(
        spark.sql("EXPLAIN " + POINT_SQL.format(T=T, key=keys[0])).collect()[0][0].strip()
        for T in (STORE_TABLE, job_T))

    def point(T: str) -> Callable[[int], Any]:
        return lambda k: spark.sql(POINT_SQL.format(T=T, key=k)).collect()

    plan = [(STORE, STORE_TABLE, cfg.point_samples), (STORE_JOB, job_T, cfg.point_job_samples),
            (CACHE, CACHE_VIEW, cfg.point_peer_samples), (PARQUET, PQ_TABLE, cfg.point_peer_samples)]
    for i, (e, T, samples) in enumerate(plan):
        log(f"{n:,} rows: point SELECT on {e}")
        inputs = keys[5 + i * 500: 5 + i * 500 + samples]
        res.point[e] = latency_until(point(T), inputs, cfg.point_budget_s)
        log(f"    p50 {res.point[e].p50_us / 1000:.2f} ms over {res.point[e].count} queries")

    # 3. GROUP BY aggregate, 4. filtered scans, in rounds
    agg_answers: dict[str, Any] = {}
    for e, T in tables.items():
        rows = spark.sql(AGG_SQL.format(T=T)).collect()
        agg_answers[e] = sorted((r[0], r[1], round(r[2], 9), r[3], r[4]) for r in rows)
    for e in (CACHE, PARQUET):
        _check(f"aggregate of {e} vs store", agg_answers[e], agg_answers[STORE])
    for e, T in tables.items():
        _check(f"filtered count x < 0.1 of {e}",
               spark.sql(SCAN_SQL.format(T=T).replace("SELECT *", "SELECT COUNT(*)")).collect()[0][0],
               data.filtered_rows)
        c = spark.sql(SCAN_K_SQL.format(T=T, lim=k_lim).replace("SELECT *", "SELECT COUNT(*)")).collect()[0][0]
        if e == STORE:
            res.filtered_rows_k = c
        _check(f"filtered count k < {k_lim} of {e}", c, res.filtered_rows_k)

    def collect(sql: str) -> Any:
        return spark.sql(sql).collect()

    def noop(sql: str) -> Callable[[], Any]:
        return lambda: spark.sql(sql).write.format("noop").mode("overwrite").save()

    for what, sql, out in (("GROUP BY aggregate", AGG_SQL, res.agg), ("scan x < 0.1", SCAN_SQL, res.scan),
                           (f"scan k < {k_lim}", SCAN_K_SQL, res.scan_k)):
        for e in tables:
            out[e] = []
        warm = 1 if first else 0  # an untimed warm-up round on the first size only
        for r in range(rounds + warm):
            for e, T in tables.items():
                q = sql.format(T=T, lim=k_lim)
                fn = partial(collect, q) if sql is AGG_SQL else noop(q)
                dt, _ = timed(fn)
                if r >= warm:
                    out[e].append(dt)
        log(f"{n:,} rows: {what}: " + ", ".join(f"{e} {median(v):.3f} s" for e, v in out.items()))

    # 5. single-row UPDATE on the store; the rebuild on the cache and on Parquet
    ups = data.upserts
    log(f"{n:,} rows: UPDATE on the store")

    def store_update(i: int) -> None:
        key, _k, x, _s, _t = ups[i]
        spark.sql(UPDATE_SQL.format(T=STORE_TABLE, key=key, x=x, s=f"upd_{key}"))

    res.update[STORE] = latency_until(store_update, list(range(cfg.update_samples)), cfg.update_budget_s)
    log(f"    p50 {res.update[STORE].p50_us / 1000:.2f} ms over {res.update[STORE].count} statements")
    up0 = ups[0]
    got = spark.sql(POINT_SQL.format(T=STORE_TABLE, key=up0[0])).collect()
    _check("updated row in the store", (got[0]["x"], got[0]["s"]), (up0[2], f"upd_{up0[0]}"))

    state = {"df": spark.table(CACHE_VIEW)}

    def cache_rewrite(key: int, x: float, s: str) -> None:
        new = spark.sql(REWRITE_SQL.format(T=CACHE_VIEW, key=key, x=x, s=s)).cache()
        new.count()
        state["df"].unpersist()
        new.createOrReplaceTempView(CACHE_VIEW)
        state["df"] = new

    def pq_rewrite(key: int, x: float, s: str) -> None:
        spark.sql(f"DROP TABLE IF EXISTS {PQ_TABLE}_new")
        spark.sql(f"CREATE TABLE {PQ_TABLE}_new USING parquet AS " + REWRITE_SQL.format(T=PQ_TABLE, key=key, x=x, s=s))
        spark.sql(f"DROP TABLE {PQ_TABLE}")
        spark.sql(f"ALTER TABLE {PQ_TABLE}_new RENAME TO {PQ_TABLE}")

    # CACHE TABLE's own entry: unpersisting the view's DataFrame drops it (same plan)
    res.rewrite = {CACHE: [], PARQUET: []}
    for r in range(rounds):
        key, _k, x, _s, _t = ups[len(ups) - 1 - r]
        log(f"{n:,} rows: rebuild round {r + 1}/{rounds}")
        dt, _ = timed(partial(cache_rewrite, key, x, f"upd_{key}"))
        res.rewrite[CACHE].append(dt)
        dt, _ = timed(partial(pq_rewrite, key, x, f"upd_{key}"))
        res.rewrite[PARQUET].append(dt)
        log(f"    cache {res.rewrite[CACHE][-1]:.2f} s, parquet {res.rewrite[PARQUET][-1]:.2f} s")
        for e, T in ((CACHE, CACHE_VIEW), (PARQUET, PQ_TABLE)):
            got = spark.sql(POINT_SQL.format(T=T, key=key)).collect()
            _check(f"rebuilt row in {e}", (got[0]["x"], got[0]["s"]), (x, f"upd_{key}"))
    log(f"    persistent RDDs now: {spark.sparkContext._jsc.getPersistentRDDs().size()}")
    _check("rows after the cache rebuild", spark.sql(f"SELECT COUNT(*) FROM {CACHE_VIEW}").collect()[0][0], n)

    drop_all()
    shutil.rmtree(src, ignore_errors=True)
    res.load_end = load_average()
    res.seconds = time.perf_counter() - t_size
    return res


AGG_ROUNDS = 7
AGG_WARMUP = 3
STORE_NO_PUSH = "store, pushAggregates=false"


def run_agg_only(spark: Any, n: int, cfg: Config, tmp: Path) -> dict[str, list[float]]:
    """Only the GROUP BY aggregate (operation 3), for before/after comparisons of its push-down.

    Loads the store table and the cached view as ``run_size`` does (no Parquet), checks that
    the answers agree, then runs :data:`AGG_ROUNDS` rounds of, in turn: the store table with
    aggregate push-down, the same table read with ``WITH ('pushAggregates' = 'false')``
    (Spark aggregates the streamed rows: what the store did before the group key ``k % 100``
    could be pushed), and the cache, after :data:`AGG_WARMUP` untimed rounds. Answers the
    seconds of every timed round per engine.
    """
    log(f"{n:,} rows: generating data (seed {cfg.seed})")
    data = make_data(n, EngineConfig(sizes=[n], engines=[], seed=cfg.seed))
    src = tmp / f"src-{n}"
    write_source(data, src, cfg.src_files)
    spark.read.parquet(str(src)).createOrReplaceTempView("src")
    spark.sql("CREATE NAMESPACE IF NOT EXISTS store.bench")
    spark.sql(f"DROP TABLE IF EXISTS {STORE_TABLE}")
    spark.sql(f"CREATE TABLE {STORE_TABLE} ({SCHEMA_SQL}, PRIMARY KEY (id)) TBLPROPERTIES ('buckets'='{cfg.buckets}')")
    spark.sql(INSERT_SQL.format(T=STORE_TABLE))
    spark.catalog.clearCache()
    spark.sql(f"DROP VIEW IF EXISTS {CACHE_VIEW}")
    spark.sql(f"CACHE TABLE {CACHE_VIEW} AS SELECT * FROM src")
    tables = {STORE: STORE_TABLE, STORE_NO_PUSH: f"{STORE_TABLE} WITH ('pushAggregates' = 'false')",
              CACHE: CACHE_VIEW}
    plan = spark.sql("EXPLAIN " + AGG_SQL.format(T=STORE_TABLE)).collect()[0][0]
    if "PushedGroupBy: [k % 100]" not in plan:
        log("    note: the store's aggregate is not pushed down:\n" + plan)
    answers = {e: sorted((r[0], r[1], round(r[2], 9), r[3], r[4]) for r in spark.sql(AGG_SQL.format(T=T)).collect())
               for e, T in tables.items()}
    for e in (STORE_NO_PUSH, CACHE):
        _check(f"aggregate of {e} vs store", answers[e], answers[STORE])
    out: dict[str, list[float]] = {e: [] for e in tables}
    for r in range(AGG_WARMUP + AGG_ROUNDS):  # untimed warm-up rounds first (JIT, server threads)
        for e, T in tables.items():
            dt, _ = timed(lambda: spark.sql(AGG_SQL.format(T=T)).collect())
            if r >= AGG_WARMUP:
                out[e].append(dt)
    log(f"{n:,} rows: GROUP BY aggregate, median of {AGG_ROUNDS} interleaved rounds (load {load_average()}): "
        + ", ".join(f"{e} {median(v) * 1000:.0f} ms" for e, v in out.items()))
    spark.sql(f"DROP TABLE IF EXISTS {STORE_TABLE}")
    spark.catalog.clearCache()
    spark.sql(f"DROP VIEW IF EXISTS {CACHE_VIEW}")
    shutil.rmtree(src, ignore_errors=True)
    return out


def stop_server(home: Any) -> None:
    """Stop the embedded server this run started (by its pid) and reap it: it is our child,
    so without the reaping it would linger as a zombie that ``PrivateHome.stop`` waits for."""
    pid = home.server_pid()
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    home.stop()


# --- reporting -------------------------------------------------------------------------


HEADERS = ["operation", "store table", "Spark cache", "Parquet", "vs cache", "vs Parquet", "target", "met"]


def _adv(ours: float | None, theirs: float | None) -> float | None:
    return advantage(ours, theirs, higher_is_better=False)


def rows_for(r: SizeResult) -> tuple[list[list[Any]], list[tuple[str, str, bool | None, float | None]]]:
    """Table rows (times in ms) and the targets as (name, text, met, ratio)."""
    def p50(e: str) -> float | None:
        s = r.point.get(e)
        return s.p50_us / 1e6 if s else None

    def p90(e: str) -> float | None:
        s = r.point.get(e)
        return s.p90_us / 1e6 if s else None

    def med(d: dict[str, list[float]], e: str) -> float | None:
        v = d.get(e)
        return median(v) if v else None

    targets: list[tuple[str, str, bool | None, float | None]] = []
    rows: list[list[Any]] = []

    def row(name: str, s: float | None, c: float | None, p: float | None, target: str = "",
            ratio: float | None = None, need: float | None = None) -> None:
        met = None if need is None or ratio is None else ratio >= need
        rows.append([name, sql_ms(s), sql_ms(c), sql_ms(p), fmt_ratio(_adv(s, c)), fmt_ratio(_adv(s, p)),
                     target, "" if met is None else ("met" if met else "NOT met")])
        if target:
            targets.append((name, target, met, ratio))

    s, c, p = p50(STORE), p50(CACHE), p50(PARQUET)
    row("point SELECT by key, p50 (ms)", s, c, p, ">= 5x vs cache", _adv(s, c), 5.0)
    row("point SELECT by key, p90 (ms)", p90(STORE), p90(CACHE), p90(PARQUET))
    sj = p50(STORE_JOB)
    row("point SELECT, localPointReads=false, p50 (ms)", sj, c, p)
    su = r.update[STORE].p50_us / 1e6 if STORE in r.update else None
    cr, pr = med(r.rewrite, CACHE), med(r.rewrite, PARQUET)
    row("single-row UPDATE, p50 (ms; peers: rebuild)", su, cr, pr, ">= 50x vs Parquet", _adv(su, pr), 50.0)
    sa, ca, pa_ = med(r.agg, STORE), med(r.agg, CACHE), med(r.agg, PARQUET)
    row("GROUP BY aggregate (ms)", sa, ca, pa_, ">= 1x vs cache", _adv(sa, ca), 1.0)
    row("full scan, filter x < 0.1 (ms)", med(r.scan, STORE), med(r.scan, CACHE), med(r.scan, PARQUET))
    row("full scan, filter k < n/10 (ms)", med(r.scan_k, STORE), med(r.scan_k, CACHE), med(r.scan_k, PARQUET))
    si, ci, pi = med(r.insert, STORE), med(r.insert, CACHE), med(r.insert, PARQUET)
    row("bulk INSERT (ms; cache: CACHE TABLE)", si, ci, pi, ">= 1x vs Parquet", _adv(si, pi), 1.0)
    rows.append(["bulk INSERT (rows/s)", fmt_num(r.n / si if si else None), fmt_num(r.n / ci if ci else None),
                 fmt_num(r.n / pi if pi else None), "", "", "", ""])
    return rows, targets


def report(results: list[SizeResult], cfg: Config, info: dict[str, Any], total_s: float) -> str:
    head = (f"Run {info['date']}, {info['cpu_count']} CPUs ({info['cpu_model']}), pyspark "
            f"{info['packages'].get('pyspark')}, {total_s:.0f} s in all.")
    md = [head, ""]
    for r in results:
        rows, _ = rows_for(r)
        title = (f"{r.n:,} rows, local[2], {cfg.buckets} buckets: medians of {r.rounds} rounds "
                 f"(point/UPDATE: p50 of {r.point[STORE].count}/{r.point[STORE_JOB].count}/"
                 f"{r.point[CACHE].count}/{r.point[PARQUET].count} queries, "
                 f"{r.update[STORE].count} UPDATEs); load average {r.load_start} -> {r.load_end}")
        print()
        print(format_table(HEADERS, rows, title=title), flush=True)
        md += [f"#### {r.n:,} rows", "", title, "", markdown_table(HEADERS, rows), ""]
    print()
    summary = ["target"] + [f"{r.n:,} rows" for r in results]
    by_name: dict[str, list[str]] = {}
    for r in results:
        for name, target, met, ratio in rows_for(r)[1]:
            key = f"{name.split(',')[0].split(' (')[0]} {target}"
            by_name.setdefault(key, []).append(
                f"{'met' if met else 'NOT met'} ({fmt_ratio(ratio)})" if met is not None else "n/a")
    srows = [[k, *v] for k, v in by_name.items()]
    print(format_table(summary, srows, title="targets (issue 4)"), flush=True)
    md += ["#### Targets", "", markdown_table(summary, srows), ""]
    return "\n".join(md)


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Config:
    ap = argparse.ArgumentParser(prog="python -m bench.spark_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=parse_rows, default=None, help="comma-separated sizes (default 1M,5M)")
    ap.add_argument("--quick", action="store_true", help="100,000 rows, fewer repetitions: about a minute")
    ap.add_argument("--buckets", type=int, default=4, help="buckets of the store table (default 4)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of the heavy operations below 3M rows (default 3)")
    ap.add_argument("--big-rounds", type=int, default=None, help="rounds at 3M rows and more (default 2)")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--tmpdir", default=None, help="where the source, the warehouse and the store live")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default bench/results/spark.json)")
    ap.add_argument("--agg-only", action="store_true",
                    help="only the GROUP BY aggregate: store with and without push-down, and the cache, "
                         f"{AGG_ROUNDS} interleaved rounds per size (nothing written to bench/results)")
    ap.add_argument("--report", type=Path, default=None, metavar="JSON",
                    help="only print the tables of an earlier run's JSON (and rewrite its .md)")
    a = ap.parse_args(argv)
    cfg = Config(sizes=a.rows or ([100_000] if a.quick else [1_000_000, 5_000_000]), quick=a.quick,
                 seed=a.seed, buckets=a.buckets, tmpdir=a.tmpdir)
    if a.quick:
        cfg.point_samples, cfg.point_job_samples, cfg.point_peer_samples = 60, 20, 10
        cfg.point_budget_s = cfg.update_budget_s = 2.0
        cfg.update_samples = 20
        cfg.rounds = cfg.big_rounds = 1
        cfg.out = RESULTS_DIR / "spark-quick.json"
    if a.rounds:
        cfg.rounds = a.rounds
    if a.big_rounds:
        cfg.big_rounds = a.big_rounds
    if a.out:
        cfg.out = a.out
    cfg.report = a.report
    cfg.agg_only = a.agg_only
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    if cfg.report is not None:
        import json

        d = json.loads(cfg.report.read_text())
        cfg.buckets = d["config"]["buckets"]
        md = report([SizeResult.from_dict(r) for r in d["results"]], cfg, d["machine"], d["seconds"])
        cfg.report.with_suffix(".md").write_text(md + "\n")
        return 0
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="spark-bench-", dir=cfg.tmpdir))
    from spark_ext.spark.testing import PrivateHome

    home = PrivateHome(root=tmp / "store").start()
    spark = None
    results: list[SizeResult] = []
    info = machine_info(["pyspark", "pyarrow", "numpy"])
    try:
        log("starting a local[2] SparkSession with spark-ext")
        spark = start_spark(tmp / "warehouse")
        if cfg.agg_only:
            for n in cfg.sizes:
                run_agg_only(spark, n, cfg, tmp)
            return 0
        for i, n in enumerate(cfg.sizes):
            results.append(run_size(spark, n, cfg, tmp, first=i == 0))
    finally:
        if spark is not None:
            spark.stop()
        stop_server(home)
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t0
    md = report(results, cfg, info, total)
    payload = {"config": {k: v for k, v in cfg.__dict__.items()}, "machine": info, "seconds": total,
               "results": [r.to_dict() for r in results],
               "queries": {"point": POINT_SQL, "aggregate": AGG_SQL, "scan": SCAN_SQL, "scan_k": SCAN_K_SQL,
                           "insert": INSERT_SQL, "update": UPDATE_SQL, "rewrite": REWRITE_SQL}}
    p = write_json(cfg.out, payload)
    p.with_suffix(".md").write_text(md + "\n")
    log(f"done in {total:.0f} s; results in {p} and {p.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
