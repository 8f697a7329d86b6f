"""Storage engine benchmark: spark-ext's engine against DuckDB and SQLite, in-process.

Run::

    python -m bench.engine_bench                    # 1,000,000 and 5,000,000 rows
    python -m bench.engine_bench --quick            # 100,000 rows, fewer samples (smoke test)
    python -m bench.engine_bench --rows 200k,1M --engines spark-ext,duckdb

Data: ``(id BIGINT primary key, k INT, x DOUBLE, s STRING, t TIMESTAMP)`` generated with
numpy from a fixed seed as one Arrow table, ids 0..n-1 in random order, ``k`` uniform in
[0, n), ``x`` uniform in [0, 1), ``s`` = ``"name_<id>"``, ``t`` random microseconds in
2023-11..2024-11 (UTC). Every engine gets the same table and the same samples, and runs
the same phases in the same order:

1. bulk load from Arrow (spark-ext ``insert``; DuckDB ``INSERT INTO b SELECT * FROM``
   the registered Arrow table; SQLite ``executemany`` of tuples converted from the Arrow
   table, conversion included), then spark-ext's ``compact()`` (untimed; a no-op when the
   load already produced one run per bucket) and the memory figure;
2. point get of random existing keys (one call per sample; DuckDB/SQLite a
   parameterized ``SELECT * FROM b WHERE id = ?`` fetching the row);
3. full scan (spark-ext: iterate ``t.scan()`` and sum the batches' ``nbytes``; DuckDB:
   ``SELECT *`` as Arrow; SQLite: ``fetchall``, counted as the Arrow size of the data),
   GB/s = bytes / seconds, 1 GB = 1e9 bytes; and a filtered scan ``x < 0.1``, reported
   as time and as the table's Arrow size / time;
4. point upsert of random existing keys, one row per call and per transaction (PK only);
5. create an ordered secondary index on ``k`` (DuckDB/SQLite ``CREATE INDEX``), then
   range lookups ``k >= lo AND k < lo + n/1000`` (~0.1% of rows), whole rows fetched;
6. point upserts of 1% of the rows (random keys, index on ``k`` in place; the peers are
   capped at a few thousand samples), then for spark-ext a full scan of the
   not-yet-compacted data and the time of ``t.compact()``;
7. memory again, now including the index on ``k``.

Latencies are per call with ``time.perf_counter_ns`` and the cyclic garbage collector
paused during the timed loop (as :mod:`timeit` does). spark-ext runs in memory with
``background=False`` (no compaction thread interfering); the durable variant
(``flush="group"``, a temporary directory) is an extra column with bulk load and upsert.

Results: a table per size on stdout (ratios are "times better than the peer": > 1 means
spark-ext wins), the engine targets of issue 2 marked met / not met, JSON in
``bench/results/engine.json`` and the same tables as Markdown in ``bench/results/engine.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bench.common import (
    RESULTS_DIR,
    LatencyStats,
    advantage,
    fmt_bytes,
    fmt_num,
    fmt_ratio,
    format_table,
    load_average,
    log,
    machine_info,
    markdown_table,
    median,
    rss_bytes,
    time_each,
    time_once,
    time_repeated,
    write_json,
)

SPARK = "spark-ext"
SPARK_DURABLE = "spark-ext durable"
DUCKDB = "duckdb"
SQLITE = "sqlite"
ALL_ENGINES = (SPARK, DUCKDB, SQLITE)

COLUMNS = [("id", "int64"), ("k", "int32"), ("x", "double"), ("s", "string"), ("t", "timestamp")]
TS_TYPE = pa.timestamp("us", tz="UTC")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
T_BASE_US = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z
T_SPAN_US = 365 * 86_400 * 1_000_000
GB = 1e9


# --- configuration -------------------------------------------------------------------


@dataclass
class Config:
    sizes: list[int]
    engines: list[str]
    durable: bool = True
    seed: int = 20240601
    buckets: int = 8
    get_samples: int = 5000
    upsert_samples: int = 2000
    range_samples: int = 100
    peer_bulk_upsert_cap: int = 5000
    scan_budget_s: float = 3.0
    max_scan_reps: int = 5
    tmpdir: str | None = None
    quick: bool = False
    out: Path = field(default_factory=lambda: RESULTS_DIR / "engine.json")


# --- data ----------------------------------------------------------------------------


@dataclass
class Data:
    """The table and every sample, generated once per size from the seed."""

    n: int
    table: pa.Table
    arrow_bytes: int
    get_keys: list[int]
    upserts: list[tuple[int, int, float, str, int]]  # (id, k, x, s, t_us), PK-only phase
    bulk_upserts: list[tuple[int, int, float, str, int]]  # 1% of rows, index in place
    range_width: int
    range_lows: list[int]
    filtered_rows: int


def make_data(n: int, cfg: Config) -> Data:
    rng = np.random.default_rng(cfg.seed + n)
    ids = rng.permutation(n).astype(np.int64)
    id_arr = pa.array(ids)
    table = pa.table(
        {
            "id": id_arr,
            "k": pa.array(rng.integers(0, n, n, dtype=np.int32)),
            "x": pa.array(rng.random(n)),
            "s": pc.binary_join_element_wise("name_", pc.cast(id_arr, pa.string()), ""),
            "t": pa.array(T_BASE_US + rng.integers(0, T_SPAN_US, n, dtype=np.int64), type=TS_TYPE),
        }
    ).combine_chunks()

    def new_rows(count: int) -> list[tuple[int, int, float, str, int]]:
        keys = rng.choice(n, size=min(count, n), replace=False).tolist()
        ks = rng.integers(0, n, len(keys), dtype=np.int32).tolist()
        xs = rng.random(len(keys)).tolist()
        ts = (T_BASE_US + rng.integers(0, T_SPAN_US, len(keys), dtype=np.int64)).tolist()
        return [(k, kk, xx, f"upd_{k}", tt) for k, kk, xx, tt in zip(keys, ks, xs, ts)]

    width = max(1, n // 1000)
    return Data(
        n=n,
        table=table,
        arrow_bytes=table.nbytes,
        get_keys=rng.integers(0, n, min(cfg.get_samples, max(n, 1))).tolist(),
        upserts=new_rows(cfg.upsert_samples),
        bulk_upserts=new_rows(max(1, n // 100)),
        range_width=width,
        range_lows=rng.integers(0, max(1, n - width), cfg.range_samples).tolist(),
        filtered_rows=int(pc.sum(pc.less(table["x"], 0.1)).as_py() or 0),
    )


def ts_of(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=us)


# --- engines -------------------------------------------------------------------------


class Engine:
    """What the benchmark needs from an engine; phases are run by :func:`run_engine`.

    ``get(key)`` and ``upsert(row)`` are plain callables set by each engine (bound methods
    or small lambdas), so the timed loop pays no extra indirection.
    """

    name = ""
    supports_compaction = False
    get: Callable[[int], Any]
    upsert: Callable[[Any], Any]
    noop: Callable[[Any], Any] | None = None  # the cheapest statement: client call overhead
    bulk_upsert_cap: int | None = None

    def to_row(self, r: tuple[int, int, float, str, int]) -> Any:
        """An upsert row (id, k, x, s, t_us) in the form the engine takes."""
        return (r[0], r[1], r[2], r[3], ts_of(r[4]))

    def load(self, table: pa.Table) -> None:
        raise NotImplementedError

    def scan_all(self) -> tuple[int, int | None]:
        """Every row: (rows, bytes returned, or None when not Arrow)."""
        raise NotImplementedError

    def scan_filtered(self) -> int:
        """Rows with x < 0.1, whole rows fetched; returns how many."""
        raise NotImplementedError

    def create_index(self) -> None:
        raise NotImplementedError

    def range_rows(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def index_access_path(self, lo: int, hi: int) -> str:
        raise NotImplementedError

    def compact(self) -> None:
        pass

    def memory_bytes(self) -> int | None:
        return None

    def close(self) -> None:
        pass


class SparkExtEngine(Engine):
    supports_compaction = True

    def __init__(self, buckets: int, data_dir: str | None = None, flush: str = "commit") -> None:
        from spark_ext.store import Store, col
        from spark_ext.store.predicate import And

        self._col, self._and = col, And
        self.name = SPARK if data_dir is None else SPARK_DURABLE
        self.store = Store(data_dir, flush=flush, background=False)
        self.t = self.store.create_table("bench", COLUMNS, primary_key="id", num_buckets=buckets)
        self.get = self.t.get
        self.upsert = self.t.upsert

    def load(self, table: pa.Table) -> None:
        self.t.insert(table)

    def scan_all(self) -> tuple[int, int | None]:
        rows = nbytes = 0
        for b in self.t.scan():
            rows += b.num_rows
            nbytes += b.nbytes
        return rows, nbytes

    def scan_copy(self) -> tuple[int, int]:
        """Full scan copied into one contiguous Arrow table (what materializing costs)."""
        s = self.t.scan()
        tbl = pa.Table.from_batches(list(s), schema=s.schema).combine_chunks()
        return tbl.num_rows, tbl.nbytes

    def scan_filtered(self) -> int:
        return sum(b.num_rows for b in self.t.scan(where=self._col("x") < 0.1))

    def create_index(self) -> None:
        self.t.create_index("ik", "k", "ordered")

    def _range(self, lo: int, hi: int) -> Any:
        return self.t.scan(where=self._and((self._col("k") >= lo, self._col("k") < hi)))

    def range_rows(self, lo: int, hi: int) -> int:
        return sum(b.num_rows for b in self._range(lo, hi))

    def index_access_path(self, lo: int, hi: int) -> str:
        s = self._range(lo, hi)
        n = sum(b.num_rows for b in s)
        return f"{s.access_path} ({s.rows_examined} rows examined for {n})"

    def compact(self) -> None:
        self.t.compact()

    def memory_bytes(self) -> int | None:
        return self.t.memory_bytes()

    def close(self) -> None:
        self.store.close()


class DuckDBEngine(Engine):
    name = DUCKDB

    def __init__(self) -> None:
        import duckdb

        self.con = duckdb.connect(":memory:")
        self.con.execute(
            "CREATE TABLE b (id BIGINT PRIMARY KEY, k INTEGER, x DOUBLE, s VARCHAR, t TIMESTAMPTZ)"
        )
        con = self.con
        # fetchall, not fetchone: DuckDB 2.0 keeps a half-fetched result open on the connection
        self.get = lambda key: next(iter(con.execute("SELECT * FROM b WHERE id = ?", [key]).fetchall()), None)
        self.noop = lambda _: con.execute("SELECT 1").fetchall()
        self.upsert = lambda row: con.execute("INSERT OR REPLACE INTO b VALUES (?, ?, ?, ?, ?)", row)

    def load(self, table: pa.Table) -> None:
        self.con.register("src", table)
        try:
            self.con.execute("INSERT INTO b SELECT * FROM src")
        finally:
            self.con.unregister("src")

    def scan_all(self) -> tuple[int, int | None]:
        r = self.con.sql("SELECT * FROM b").to_arrow_table()
        return r.num_rows, r.nbytes

    def scan_filtered(self) -> int:
        return self.con.sql("SELECT * FROM b WHERE x < 0.1").to_arrow_table().num_rows

    def create_index(self) -> None:
        self.con.execute("CREATE INDEX ik ON b (k)")

    def range_rows(self, lo: int, hi: int) -> int:
        return self.con.sql("SELECT * FROM b WHERE k >= ? AND k < ?", params=[lo, hi]).to_arrow_table().num_rows

    def index_access_path(self, lo: int, hi: int) -> str:
        plan = "\n".join(str(r[-1]) for r in self.con.execute(f"EXPLAIN SELECT * FROM b WHERE k >= {lo} AND k < {hi}").fetchall())
        return "index scan" if "Index Scan" in plan else "sequential scan" if "Seq Scan" in plan else "?"

    def memory_bytes(self) -> int | None:
        row = self.con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def close(self) -> None:
        self.con.close()


class SQLiteEngine(Engine):
    name = SQLITE

    def __init__(self) -> None:
        self.con = sqlite3.connect(":memory:", isolation_level=None)  # autocommit: one txn per statement
        # INTEGER PRIMARY KEY: the rowid is the key (SQLite's fastest keyed layout).
        self.con.execute("CREATE TABLE b (id INTEGER PRIMARY KEY, k INTEGER, x REAL, s TEXT, t INTEGER)")
        cur = self.con.cursor()
        cur2 = self.con.cursor()
        self.get = lambda key: cur.execute("SELECT * FROM b WHERE id = ?", (key,)).fetchone()
        self.upsert = lambda row: cur2.execute("INSERT OR REPLACE INTO b VALUES (?, ?, ?, ?, ?)", row)
        self.noop = lambda _: cur.execute("SELECT 1").fetchall()

    def to_row(self, r: tuple[int, int, float, str, int]) -> Any:
        return r  # timestamps as INTEGER microseconds since the epoch

    def load(self, table: pa.Table) -> None:
        cols = [
            table["id"].to_numpy().tolist(),
            table["k"].to_numpy().tolist(),
            table["x"].to_numpy().tolist(),
            table["s"].to_pylist(),
            pc.cast(table["t"], pa.int64()).to_numpy().tolist(),
        ]
        self.con.execute("BEGIN")
        self.con.executemany("INSERT INTO b VALUES (?, ?, ?, ?, ?)", zip(*cols))
        self.con.execute("COMMIT")

    def scan_all(self) -> tuple[int, int | None]:
        return len(self.con.execute("SELECT * FROM b").fetchall()), None

    def scan_filtered(self) -> int:
        return len(self.con.execute("SELECT * FROM b WHERE x < 0.1").fetchall())

    def create_index(self) -> None:
        self.con.execute("CREATE INDEX ik ON b (k)")

    def range_rows(self, lo: int, hi: int) -> int:
        return len(self.con.execute("SELECT * FROM b WHERE k >= ? AND k < ?", (lo, hi)).fetchall())

    def index_access_path(self, lo: int, hi: int) -> str:
        plan = " ".join(str(r[-1]) for r in self.con.execute("EXPLAIN QUERY PLAN SELECT * FROM b WHERE k >= ? AND k < ?", (lo, hi)).fetchall())
        return plan

    def memory_bytes(self) -> int | None:
        pages = self.con.execute("PRAGMA page_count").fetchone()[0]
        size = self.con.execute("PRAGMA page_size").fetchone()[0]
        return int(pages) * int(size)

    def close(self) -> None:
        self.con.close()


# --- phases --------------------------------------------------------------------------


def _lat(samples_ns: list[int]) -> dict[str, float]:
    return LatencyStats.from_ns(samples_ns).to_dict()


def run_engine(eng: Engine, d: Data, cfg: Config) -> dict[str, Any]:
    """Run every phase on one engine; returns its metrics (see the module docstring)."""
    r: dict[str, Any] = {"engine": eng.name}
    n = d.n

    gc.collect()
    rss0 = rss_bytes()
    secs, _ = time_once(lambda: eng.load(d.table))
    r["load_s"] = secs
    r["load_rows_per_s"] = n / secs
    gc.collect()
    rss1 = rss_bytes()
    r["rss_growth_load_bytes"] = rss1 - rss0 if rss0 is not None and rss1 is not None else None
    log(f"  {eng.name}: loaded {n:,} rows in {secs:.2f}s")
    if eng.supports_compaction:
        eng.compact()
    mem = eng.memory_bytes()
    r["memory_bytes"] = mem
    r["memory_ratio"] = mem / d.arrow_bytes if mem else None
    r["memory_bytes_per_row"] = mem / n if mem else None

    # point gets
    row = eng.get(d.get_keys[0])
    assert row is not None and row[0] == d.get_keys[0], f"{eng.name}: get returned {row!r}"
    g = _lat(time_each(eng.get, d.get_keys, warmup=min(200, len(d.get_keys))))
    r["get"] = g
    r["get_p50_us"], r["get_p99_us"] = g["p50_us"], g["p99_us"]
    if eng.noop is not None:
        r["noop_p50_us"] = _lat(time_each(eng.noop, d.get_keys[:1000], warmup=100))["p50_us"]
    log(f"  {eng.name}: get p50 {g['p50_us']:.2f}us p99 {g['p99_us']:.2f}us")

    # full scan of compacted data
    rows, nbytes = eng.scan_all()
    assert rows == n, f"{eng.name}: full scan returned {rows} rows, expected {n}"
    scan_bytes = nbytes if nbytes is not None else d.arrow_bytes
    times = time_repeated(eng.scan_all, min_reps=1, max_reps=cfg.max_scan_reps, budget_s=cfg.scan_budget_s)
    r["scan_s"] = median(times)
    r["scan_reps"] = len(times)
    r["scan_bytes"] = scan_bytes
    r["scan_gbps"] = scan_bytes / r["scan_s"] / GB
    if isinstance(eng, SparkExtEngine):
        times = time_repeated(eng.scan_copy, min_reps=1, max_reps=cfg.max_scan_reps, budget_s=cfg.scan_budget_s)
        r["scan_copy_gbps"] = scan_bytes / median(times) / GB
    # filtered scan
    frows = eng.scan_filtered()
    assert frows == d.filtered_rows, f"{eng.name}: filtered scan returned {frows} rows, expected {d.filtered_rows}"
    times = time_repeated(eng.scan_filtered, min_reps=1, max_reps=cfg.max_scan_reps, budget_s=cfg.scan_budget_s)
    r["filter_scan_s"] = median(times)
    r["filter_scan_ms"] = r["filter_scan_s"] * 1000
    r["filter_scan_rows"] = frows
    r["filter_scan_gbps"] = d.arrow_bytes / r["filter_scan_s"] / GB
    log(f"  {eng.name}: scan {r['scan_gbps']:.2f} GB/s, filtered scan {r['filter_scan_ms']:.1f} ms")

    # point upserts, primary key only
    ups = [eng.to_row(u) for u in d.upserts]
    u = _lat(time_each(eng.upsert, ups))
    r["upsert"] = u
    r["upsert_p50_us"], r["upsert_p99_us"] = u["p50_us"], u["p99_us"]
    check = eng.get(d.upserts[0][0])
    assert check is not None and check[1] == d.upserts[0][1], f"{eng.name}: upsert not visible: {check!r}"
    log(f"  {eng.name}: upsert p50 {u['p50_us']:.2f}us")

    # secondary index on k, range lookups
    gc.collect()
    rss0 = rss_bytes()
    secs, _ = time_once(eng.create_index)
    r["index_create_s"] = secs
    gc.collect()
    rss1 = rss_bytes()
    r["rss_growth_index_bytes"] = rss1 - rss0 if rss0 is not None and rss1 is not None else None
    lo0 = d.range_lows[0]
    r["range_access_path"] = eng.index_access_path(lo0, lo0 + d.range_width)
    counts: list[int] = []

    def rng_lookup(lo: int) -> None:
        counts.append(eng.range_rows(lo, lo + d.range_width))

    rl = _lat(time_each(rng_lookup, d.range_lows))
    r["range"] = rl
    r["range_p50_us"], r["range_p99_us"] = rl["p50_us"], rl["p99_us"]
    r["range_p50_ms"] = rl["p50_us"] / 1000
    r["range_rows_total"] = sum(counts)
    r["range_rows_avg"] = sum(counts) / len(counts)
    log(f"  {eng.name}: index {secs:.2f}s, range p50 {rl['p50_us'] / 1000:.2f}ms ({r['range_access_path']})")

    # 1% upserts with the index in place, then (spark-ext) compaction
    bulk = d.bulk_upserts if eng.bulk_upsert_cap is None else d.bulk_upserts[: eng.bulk_upsert_cap]
    rows_b = [eng.to_row(x) for x in bulk]
    ub = _lat(time_each(eng.upsert, rows_b))
    r["upsert_indexed"] = ub
    r["upsert_indexed_p50_us"] = ub["p50_us"]
    if eng.supports_compaction:
        rows, nbytes = eng.scan_all()
        assert rows == n
        times = time_repeated(eng.scan_all, min_reps=1, max_reps=cfg.max_scan_reps, budget_s=cfg.scan_budget_s)
        r["scan_uncompacted_gbps"] = (nbytes or d.arrow_bytes) / median(times) / GB
        gc.collect()
        secs, _ = time_once(eng.compact)
        r["compact_s"] = secs
        log(f"  {eng.name}: {len(bulk):,} upserts p50 {ub['p50_us']:.2f}us, compaction {secs:.3f}s")
    mem = eng.memory_bytes()
    r["memory_indexed_bytes"] = mem
    r["memory_indexed_ratio"] = mem / d.arrow_bytes if mem else None
    for k in ("load", "index"):
        v = r[f"rss_growth_{k}_bytes"]
        r[f"rss_growth_{k}_ratio"] = v / d.arrow_bytes if v is not None else None
    return r


def run_durable(d: Data, cfg: Config) -> dict[str, Any]:
    """spark-ext with a write-ahead log (flush="group"): bulk load and point upsert only."""
    tmp = tempfile.mkdtemp(prefix="spark-ext-bench-", dir=cfg.tmpdir)
    try:
        eng = SparkExtEngine(cfg.buckets, data_dir=tmp, flush="group")
        try:
            r: dict[str, Any] = {"engine": eng.name, "data_dir": tmp, "flush": "group"}
            gc.collect()
            secs, _ = time_once(lambda: eng.load(d.table))
            r["load_s"] = secs
            r["load_rows_per_s"] = d.n / secs
            ups = [eng.to_row(u) for u in d.upserts]
            u = _lat(time_each(eng.upsert, ups))
            r["upsert"] = u
            r["upsert_p50_us"], r["upsert_p99_us"] = u["p50_us"], u["p99_us"]
            r["wal_bytes"] = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
            log(f"  {eng.name}: load {r['load_rows_per_s']:,.0f} rows/s, upsert p50 {u['p50_us']:.2f}us")
            return r
        finally:
            eng.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- report --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    label: str
    key: str
    op: str  # "<=" or ">="
    bound: float
    unit: str

    def met(self, v: float | None) -> bool | None:
        if v is None:
            return None
        return v <= self.bound if self.op == "<=" else v >= self.bound

    def text(self) -> str:
        b = f"{self.bound:,.0f}" if self.bound >= 1000 else f"{self.bound:g}"
        return f"{self.op} {b} {self.unit}"


TARGETS = (
    Target("point get p50", "get_p50_us", "<=", 5.0, "us"),
    Target("point upsert p50", "upsert_p50_us", "<=", 20.0, "us"),
    Target("bulk load", "load_rows_per_s", ">=", 1_000_000, "rows/s"),
    Target("full scan, compacted", "scan_gbps", ">=", 1.0, "GB/s"),
    Target("memory / Arrow size", "memory_ratio", "<=", 2.0, "x"),
)


def _us(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}" if v < 100 else f"{v:,.0f}"


def _f2(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}" if v < 100 else f"{v:,.0f}"


def _f3(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


# (key, label, higher_is_better, formatter)
METRICS: tuple[tuple[str, str, bool, Callable[[Any], str]], ...] = (
    ("load_rows_per_s", "bulk load (rows/s)", True, fmt_num),
    ("get_p50_us", "point get p50 (us)", False, _us),
    ("get_p99_us", "point get p99 (us)", False, _us),
    ("noop_p50_us", "client call overhead, SELECT 1 p50 (us)", False, _us),
    ("upsert_p50_us", "point upsert p50 (us)", False, _us),
    ("upsert_p99_us", "point upsert p99 (us)", False, _us),
    ("upsert_indexed_p50_us", "upsert p50, index on k (us)", False, _us),
    ("scan_gbps", "full scan, compacted (GB/s)", True, _f2),
    ("scan_copy_gbps", "full scan + copy to one Arrow table (GB/s)", True, _f2),
    ("filter_scan_ms", "filtered scan x<0.1 (ms)", False, _f2),
    ("index_create_s", "create index on k (s)", False, _f2),
    ("range_p50_ms", "range lookup ~0.1% p50 (ms)", False, _f2),
    ("scan_uncompacted_gbps", "full scan, 1% uncompacted (GB/s)", True, _f2),
    ("compact_s", "compaction after 1% upserts (s)", False, _f3),
    ("memory_ratio", "memory / Arrow size (x)", False, _f2),
    ("memory_bytes_per_row", "memory bytes/row", False, lambda v: "n/a" if v is None else f"{v:.0f}"),
    ("memory_indexed_ratio", "memory incl. index on k / Arrow (x)", False, _f2),
    ("rss_growth_load_ratio", "process RSS growth, load / Arrow (x)", False, _f2),
    ("rss_growth_index_ratio", "process RSS growth, index on k / Arrow (x)", False, _f2),
)


def size_table(n: int, res: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the per-size table: metrics x engines, ratios, targets."""
    engines = [e for e in (SPARK, SPARK_DURABLE, DUCKDB, SQLITE) if e in res]
    peers = [e for e in (DUCKDB, SQLITE) if e in res]
    headers = ["metric", *engines, *[f"vs {p}" for p in peers], "target", "met"]
    targets = {t.key: t for t in TARGETS}
    rows = []
    for key, label, hib, fmt in METRICS:
        if not any(res[e].get(key) is not None for e in engines):
            continue
        ours = res.get(SPARK, {}).get(key)
        row = [label]
        row += [fmt(res[e].get(key)) if key in res[e] else "" for e in engines]
        row += [fmt_ratio(advantage(ours, res[p].get(key), hib)) for p in peers]
        t = targets.get(key)
        if t is not None and SPARK in res:
            m = t.met(ours)
            row += [t.text(), "n/a" if m is None else "met" if m else "NOT met"]
        else:
            row += ["", ""]
        rows.append(row)
    return headers, rows


def targets_rows(results: dict[int, dict[str, dict[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    sizes = sorted(results)
    headers = ["target", *[f"{n:,} rows" for n in sizes]]
    rows = []
    for t in TARGETS:
        row = [f"{t.label} {t.text()}"]
        for n in sizes:
            v = results[n].get(SPARK, {}).get(t.key)
            m = t.met(v)
            row.append("n/a" if m is None else f"{'met' if m else 'NOT met'} ({_f2(v) if t.key != 'load_rows_per_s' else fmt_num(v)})")
        rows.append(row)
    return headers, rows


# --- main ----------------------------------------------------------------------------


def parse_rows(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        p = part.strip().lower().replace("_", "")
        if not p:
            continue
        mult = 1
        if p[-1] in "km":
            mult = 1000 if p[-1] == "k" else 1_000_000
            p = p[:-1]
        try:
            v = int(float(p) * mult)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad row count {part!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"row counts must be positive, got {part!r}")
        out.append(v)
    if not out:
        raise argparse.ArgumentTypeError("no row counts given")
    return out


def parse_args(argv: Sequence[str] | None) -> Config:
    ap = argparse.ArgumentParser(prog="python -m bench.engine_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=parse_rows, default=None, help="comma-separated sizes, e.g. 1000000,5M (default 1M,5M)")
    ap.add_argument("--quick", action="store_true", help="100,000 rows and fewer samples: a smoke test of well under a minute")
    ap.add_argument("--engines", default=",".join(ALL_ENGINES), help=f"subset of {','.join(ALL_ENGINES)}")
    ap.add_argument("--no-durable", action="store_true", help="skip the durable spark-ext variant")
    ap.add_argument("--buckets", type=int, default=8, help="spark-ext buckets per table (default 8)")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--tmpdir", default=None, help="where the durable store's temporary directory goes")
    ap.add_argument("--out", type=Path, default=None, help="JSON output path (default bench/results/engine.json, engine-quick.json with --quick)")
    a = ap.parse_args(argv)
    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    for e in engines:
        if e not in ALL_ENGINES:
            ap.error(f"unknown engine {e!r}; choose from {', '.join(ALL_ENGINES)}")
    cfg = Config(
        sizes=a.rows or ([100_000] if a.quick else [1_000_000, 5_000_000]),
        engines=engines,
        durable=not a.no_durable and SPARK in engines,
        seed=a.seed,
        buckets=a.buckets,
        tmpdir=a.tmpdir,
        quick=a.quick,
        out=a.out or RESULTS_DIR / ("engine-quick.json" if a.quick else "engine.json"),
    )
    if a.quick:
        cfg.get_samples, cfg.upsert_samples, cfg.range_samples = 2000, 1000, 50
        cfg.peer_bulk_upsert_cap, cfg.scan_budget_s, cfg.max_scan_reps = 1000, 0.5, 3
    return cfg


def make_engine(name: str, cfg: Config) -> Engine:
    if name == SPARK:
        return SparkExtEngine(cfg.buckets)
    eng: Engine = DuckDBEngine() if name == DUCKDB else SQLiteEngine()
    eng.bulk_upsert_cap = cfg.peer_bulk_upsert_cap
    return eng


def git_state() -> dict[str, Any]:
    """Commit of the checkout and whether the engine's files differ from it."""
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--", "spark_ext/store")
    return {"commit": git("rev-parse", "HEAD"), "engine_changed_since_commit": bool(status) if status is not None else None}


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    info = machine_info(("pyarrow", "numpy", "duckdb", "sortedcontainers", "spark-ext"))
    info["sqlite"] = sqlite3.sqlite_version
    log(f"engine benchmark: sizes {cfg.sizes}, engines {cfg.engines}, {info['cpu_count']} cpus")
    results: dict[int, dict[str, dict[str, Any]]] = {}
    payload: dict[str, Any] = {
        "benchmark": "engine",
        "command": "python -m bench.engine_bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": info,
        "git": git_state(),
        "config": {k: v for k, v in vars(cfg).items() if k != "out"},
        "targets": [vars(t) for t in TARGETS],
        "sizes": {},
    }
    md: list[str] = []
    t_start = time.perf_counter()
    for n in cfg.sizes:
        log(f"generating {n:,} rows (load average {load_average()})")
        d = make_data(n, cfg)
        res: dict[str, dict[str, Any]] = {}
        for name in cfg.engines:
            eng = make_engine(name, cfg)
            try:
                res[name] = run_engine(eng, d, cfg)
            finally:
                eng.close()
                del eng
                gc.collect()
            if name == SPARK and cfg.durable:
                res[SPARK_DURABLE] = run_durable(d, cfg)
                gc.collect()
        # consistency across engines: same data, same samples => same answers
        checks = {}
        tots = {e: r["range_rows_total"] for e, r in res.items() if "range_rows_total" in r}
        checks["range_rows_agree"] = len(set(tots.values())) <= 1
        if not checks["range_rows_agree"]:
            log(f"WARNING: range lookups returned different row counts: {tots}")
        results[n] = res
        title = (
            f"Storage engine, {n:,} rows; Arrow size {fmt_bytes(d.arrow_bytes)} ({d.arrow_bytes / n:.1f} B/row); "
            f"ratios: times better than the peer (>1 = spark-ext better)"
        )
        headers, rows = size_table(n, res)
        print()
        print(format_table(headers, rows, title), flush=True)
        md.append(f"### {n:,} rows (Arrow size {fmt_bytes(d.arrow_bytes)}, {d.arrow_bytes / n:.1f} B/row)\n")
        md.append(markdown_table(headers, rows) + "\n")
        payload["sizes"][str(n)] = {
            "rows": n,
            "arrow_bytes": d.arrow_bytes,
            "arrow_bytes_per_row": d.arrow_bytes / n,
            "range_width": d.range_width,
            "filtered_rows": d.filtered_rows,
            "checks": checks,
            "load_average_after": load_average(),
            "engines": res,
            "targets": {
                t.key: {"value": res.get(SPARK, {}).get(t.key), "met": t.met(res.get(SPARK, {}).get(t.key))}
                for t in TARGETS
            },
        }
        del d
        gc.collect()
    if SPARK in cfg.engines:
        headers, rows = targets_rows(results)
        print()
        print(format_table(headers, rows, "Targets of issue 2 (spark-ext in memory)"), flush=True)
        md.append("### Targets (spark-ext in memory)\n")
        md.append(markdown_table(headers, rows) + "\n")
    payload["elapsed_s"] = time.perf_counter() - t_start
    path = write_json(cfg.out, payload)
    md_path = path.with_suffix(".md")
    md_path.write_text("\n".join(md))
    print(f"\nresults: {path} (Markdown: {md_path}); total {payload['elapsed_s']:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
