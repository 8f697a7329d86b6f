"""Driver failover benchmark: spark-ext's standby driver against a plain Spark restart.

Run::

    python -m bench.ha_bench                      # 5 runs of each, 1,000,000-row table
    python -m bench.ha_bench --mode spark --runs 7 --rows 200k --no-doc

What is measured, in one run on one machine:

* **spark-ext**: a locator and three store servers (real processes on loopback) hold a
  table of ``--rows`` rows. A primary driver process leads group ``bench-<i>`` (locator
  lease backend, TTL ``--ttl`` s, renewed every TTL/3) and loops committing fenced
  statements (a one-server put and a two-server transaction); a standby driver process
  is blocked on the lease. ``kill -9`` the primary (at a random phase of its renewal
  cycle, fixed seed); the standby becomes the leader,
  announces its token to every server, reads what the primary committed (and counts the
  big table: it is all there), and commits. Time = kill to the standby's first
  committed statement (both sides read ``time.monotonic()``, one clock on Linux). Every
  run also checks that the standby found every statement the primary had acknowledged
  (see :func:`integration.ha.driver.measure_failover`).
* **spark-ext, PySpark applications** (``--mode spark`` or ``both``): the same with two
  PySpark application drivers (``spark_ext.configure(builder, ha_group=..., ha_ttl=3)``,
  ``local[2]``, each a Python process with its own JVM; :mod:`integration.ha.spark_driver`).
  The primary commits Spark SQL ``INSERT``s (JVM bridge) and ``StoreTable.put``s; the warm
  standby waits inside ``getOrCreate()``; ``kill -9`` of the primary's process group.
  Time = kill to the new leader's first committed statement (also: to its first Spark SQL
  commit), after it found every acknowledged row and counted the big table.
* **plain Spark**: what a Spark user gets when the driver dies: a new driver process
  (``python`` + ``SparkSession`` ``local[2]``), then re-reading the same table from
  Parquet and re-caching it (``spark.read.parquet(...).cache().count()``). Time = process
  launch to the count returned. It does not include noticing the failure and starting
  the new driver at all, which spark-ext's waiting standby does by itself.

Prints a table, writes ``bench/results/ha.json`` and appends a "Driver HA" section to
``docs/benchmarks.md`` (unless ``--no-doc``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
RESULTS = REPO / "bench" / "results" / "ha.json"

SPARK_APP = r"""
import sys, time, json
t0 = time.monotonic()
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[2]").appName("plain-spark-restart")
         .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4").getOrCreate())
t1 = time.monotonic()
df = spark.read.parquet(sys.argv[1]).cache()
n = df.count()
t2 = time.monotonic()
print(json.dumps({"rows": n, "session_s": t1 - t0, "cache_s": t2 - t1, "done": t2}), flush=True)
spark.stop()
"""


def parse_rows(s: str) -> int:
    s = s.strip().lower().replace(",", "").replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(s[-1], 1)
    return int(float(s[:-1] if s[-1] in "km" else s) * mult)


def make_table(rows: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(rows, dtype=np.int64)
    return pa.table({
        "id": ids,
        "k": rng.integers(0, max(rows, 1), rows, dtype=np.int64),
        "x": rng.random(rows),
        "s": pa.array([f"name_{i}" for i in ids]),
    })


def plain_spark_restart(parquet: Path, env: dict[str, str]) -> dict[str, Any]:
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-c", SPARK_APP, str(parquet)], capture_output=True, text=True, env=env,
                       timeout=300)
    if p.returncode != 0:
        raise SystemExit(f"plain Spark run failed:\n{p.stderr[-3000:]}")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1]
    r = json.loads(line)
    r["total_s"] = r["done"] - start
    return r


def write_section(md: str) -> None:
    """Append the section to docs/benchmarks.md, or replace this section of an earlier run
    (only it: the rest of the file belongs to other benchmarks)."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else ""
    head = "\n## Driver HA\n"
    i = text.find(head)
    if i < 0:
        DOC.write_text(text + ("" if not text or text.endswith("\n") else "\n") + md)
        return
    j = text.find("\n## ", i + len(head))
    DOC.write_text(text[:i] + md.rstrip("\n") + "\n" + (text[j:] if j >= 0 else ""))


def fmt(xs: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in xs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rows", default="1M")
    ap.add_argument("--ttl", type=float, default=3.0)
    ap.add_argument("--mode", choices=["python", "spark", "both"], default="both",
                    help="failover of plain-Python drivers, of PySpark application drivers, or both")
    ap.add_argument("--no-doc", action="store_true", help="do not append to docs/benchmarks.md")
    a = ap.parse_args(argv)
    if a.runs < 1:
        raise SystemExit(f"--runs must be at least 1, got {a.runs}")
    rows = parse_rows(a.rows)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    sys.path.insert(0, str(REPO))
    from integration.cluster import Cluster
    from integration.ha.driver import kill_children, measure_failover
    from integration.ha.spark_driver import measure_spark_failover

    load0 = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="ha-bench-"))
    data = make_table(rows)
    parquet = tmp / "table.parquet"
    pq.write_table(data, parquet)

    results: dict[str, Any] = {"rows": rows, "ttl_s": a.ttl, "runs": a.runs, "mode": a.mode, "failover": [],
                               "spark_failover": [], "spark": []}
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    cluster = Cluster(tmp / "cluster")
    try:
        cluster.start()
        c = cluster.admin()
        c.create_table("default.big", [("id", "int64"), ("k", "int64"), ("x", "float64"), ("s", "string")],
                       primary_key="id", num_buckets=12)
        t = time.monotonic()
        for off in range(0, rows, 250_000):
            c.put("default.big", data.slice(off, 250_000))
        print(f"loaded {rows:,} rows into the store servers in {time.monotonic() - t:.1f}s", flush=True)
        rng = random.Random(6)  # kill at a random phase of the primary's renewal cycle
        # Interleaved: run i of every kind back to back, so load changes hit all alike.
        for i in range(a.runs):
            if a.mode in ("python", "both"):
                m = measure_failover(cluster, f"bench-{i}", f"b{i}", ttl=a.ttl, extra=("--check-table", "default.big"),
                                     kill_delay=rng.uniform(0.0, a.ttl / 3))
                assert m["found"]["checked_rows"] == rows, m["found"]["checked_rows"]
                m.pop("found")
                results["failover"].append(m)
                print(f"failover {i + 1}/{a.runs}: kill -> leader {m['kill_to_leader_s']:.2f}s, "
                      f"kill -> first commit {m['kill_to_first_commit_s']:.2f}s", flush=True)
                kill_children()
            if a.mode in ("spark", "both"):
                m = measure_spark_failover(cluster, f"bench-spark-{i}", f"bs{i}", ttl=a.ttl,
                                           extra=("--check-table", "default.big"), kill_delay=rng.uniform(0.0, a.ttl / 3))
                assert m["found"]["checked_rows"] == rows, m["found"]["checked_rows"]
                m.pop("found")
                results["spark_failover"].append(m)
                print(f"PySpark failover {i + 1}/{a.runs}: kill -> leader {m['kill_to_leader_s']:.2f}s, "
                      f"kill -> first commit {m['kill_to_first_commit_s']:.2f}s, "
                      f"kill -> first Spark SQL commit {m['kill_to_first_sql_commit_s']:.2f}s", flush=True)
                kill_children()
            r = plain_spark_restart(parquet, env)
            assert r["rows"] == rows
            results["spark"].append(r)
            print(f"plain Spark {i + 1}/{a.runs}: new session {r['session_s']:.2f}s + re-read and cache "
                  f"{r['cache_s']:.2f}s = {r['total_s']:.2f}s from process launch", flush=True)
    finally:
        kill_children()
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def col(xs: list[dict[str, Any]], k: str) -> list[float]:
        return [x[k] for x in xs]

    def med(xs: list[float]) -> float:
        return statistics.median(xs) if xs else float("nan")

    target = a.ttl + 1.0
    fo, ld = col(results["failover"], "kill_to_first_commit_s"), col(results["failover"], "kill_to_leader_s")
    sfo = col(results["spark_failover"], "kill_to_first_commit_s")
    sld = col(results["spark_failover"], "kill_to_leader_s")
    ssql = col(results["spark_failover"], "kill_to_first_sql_commit_s")
    sp, ss, sc = col(results["spark"], "total_s"), col(results["spark"], "session_s"), col(results["spark"], "cache_s")
    med_sp = med(sp)
    results.update({"median_failover_s": med(fo) if fo else None, "median_spark_failover_s": med(sfo) if sfo else None,
                    "median_spark_failover_sql_s": med(ssql) if ssql else None, "median_spark_s": med_sp,
                    "target_s": target})
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "loadavg_start": load0,
                          "loadavg_end": os.getloadavg()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, default=str))

    default = (a.runs, rows, a.ttl, a.mode) == (5, 1_000_000, 3.0, "both")
    cmd = "python -m bench.ha_bench" + ("" if default else f" --mode {a.mode} --runs {a.runs} --rows {rows} --ttl {a.ttl}")
    table = ["| | median | runs (s) |", "|---|---:|---|"]
    verdicts = []
    if fo:
        table += [f"| spark-ext, Python drivers: kill -> new leader holds the lease | {med(ld):.2f} s | {fmt(ld)} |",
                  f"| **spark-ext, Python drivers: kill -> first committed statement** | **{med(fo):.2f} s** | {fmt(fo)} |"]
        verdicts.append(f"Python drivers {med(fo):.2f} s: **{'met' if med(fo) <= target else 'not met'}**")
    if sfo:
        table += [f"| spark-ext, PySpark apps: kill -> new leader holds the lease | {med(sld):.2f} s | {fmt(sld)} |",
                  f"| **spark-ext, PySpark apps: kill -> first committed statement** | **{med(sfo):.2f} s** | {fmt(sfo)} |",
                  f"| spark-ext, PySpark apps: kill -> first Spark SQL `INSERT` committed | {med(ssql):.2f} s | {fmt(ssql)} |"]
        verdicts.append(f"PySpark applications {med(sfo):.2f} s (first Spark SQL commit {med(ssql):.2f} s): "
                        f"**{'met' if med(sfo) <= target else 'not met'}**")
    table += [f"| plain Spark: new SparkSession | {med(ss):.2f} s | {fmt(ss)} |",
              f"| plain Spark: re-read + re-cache {rows:,} rows | {med(sc):.2f} s | {fmt(sc)} |",
              f"| **plain Spark: new driver with the table cached again** | **{med_sp:.2f} s** | {fmt(sp)} |"]
    best = med(sfo) if sfo else med(fo)
    table_md = "\n".join(table)
    md = f"""
## Driver HA

Failover of a driver, measured by `{cmd}` (one run, {os.cpu_count()} cores, a locator and
three store servers and the drivers as separate processes on loopback; {time.strftime('%Y-%m-%d')};
1-minute load average {load0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end: other work shared
the machine). The kinds of run are interleaved (run i of each, back to back), so load changes hit all alike.

* spark-ext, Python drivers: a primary driver process leads (locator lease, TTL {a.ttl:g} s, renewed
  every {a.ttl / 3:g} s) and commits fenced statements (a one-server put, a two-server transaction);
  a standby driver waits on the lease; `kill -9` the primary (at a random point of its renewal
  cycle, fixed seed).
* spark-ext, PySpark apps: the same with two PySpark applications (`spark_ext.configure(builder,
  ha_group=..., ha_ttl={a.ttl:g})`, `local[2]`, each a Python process with its own JVM). The primary
  commits Spark SQL `INSERT`s (a store transaction committed by the JVM bridge, fenced) and
  `StoreTable.put`s; the standby waits inside `getOrCreate()` with its session already started
  and warmed (a warm standby); `kill -9` of the primary's process group (Python and JVM).
* Time: from the kill to the new leader's first committed statement. Before it, the new leader
  has announced its token to every store server, read back every statement the primary
  acknowledged (checked complete), and counted the {rows:,} rows of a big table.
* Plain Spark: a new driver process with a `local[2]` SparkSession that re-reads the same
  {rows:,}-row table from Parquet and re-caches it (`cache().count()`), from process launch;
  noticing the failure and starting the new driver are not counted.

{table_md}

Target (issue 6): within TTL + 1 s = {target:g} s: {'; '.join(verdicts)}.
The failover time is bounded by the lease: the primary's last renewal was 0 to {a.ttl / 3:g} s
before the kill, so the lease lapses {a.ttl - a.ttl / 3:g} to {a.ttl:g} s after it, and the
waiting standby is granted it at that moment; the takeover itself (announce, read back, first
commit) is the rest. A shorter TTL fails over faster at the price of more renewals and less
tolerance for pauses of the leader (GC, swapping). Plain Spark's figure is {med_sp / best:.1f}x the
spark-ext failover and grows with the data; the spark-ext figure does not (the data stays in
the store servers).
"""
    print(md)
    if not a.no_doc:
        write_section(md)
        print(f"wrote the Driver HA section of {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
