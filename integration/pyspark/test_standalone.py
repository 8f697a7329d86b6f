"""configure() against a standalone Spark master: a real Master and Worker on loopback.

The pip package of pyspark has no ``start-master.sh``; the Master and the Worker run
through ``bin/spark-class`` (see ``../shared/SPARK_NOTES.md``) from a SPARK_HOME of
symlinks, so their logs and the executor's work directory stay in the test's temporary
folder. The application runs in a child process (a process holds one SparkContext) on the
same private store as the shared session, and uses the SQL side (named catalog DDL,
INSERT, UPDATE, an aggregate), the DataFrame methods (``putInto``, ``deleteFrom``) and
the direct path (``StoreTable``) on an executor that is a separate JVM started by the
Worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from .standalone import Standalone, spark_home

PROGRAM = r"""
import json, sys
from spark_ext.spark.testing import local_session
from spark_ext import StoreTable
master, name = sys.argv[1], sys.argv[2]
spark = local_session(master, "spark-ext-standalone")
out = {"master": spark.sparkContext.master}
sql_name = "store." + name
spark.sql("CREATE NAMESPACE IF NOT EXISTS store." + name.split(".")[0])
spark.sql(f"CREATE TABLE {sql_name} (id BIGINT PRIMARY KEY, item STRING, qty INT) TBLPROPERTIES ('buckets'='4')")
spark.sql(f"INSERT INTO {sql_name} SELECT id, concat('i', id), CAST(id % 10 AS INT) FROM range(0, 20000)")
spark.sql(f"UPDATE {sql_name} SET qty = -1 WHERE id = 1007")
df = spark.range(20000, 30000, numPartitions=3).selectExpr("id", "concat('p', id) AS item", "CAST(1 AS INT) AS qty")
out["put"] = df.putInto(name)
out["deleted"] = spark.range(0, 1000, numPartitions=2).deleteFrom(name)
t = StoreTable.forName(spark, name)
out["get7"] = t.get(7)
out["get1007"] = t.get(1007)
out["get25000"] = t.get(25000)
out["count"] = t.count()
out["qty_sum"] = spark.sql(f"SELECT SUM(qty) AS s FROM {sql_name}").collect()[0].s
# after the jobs: the executor registers asynchronously after the session starts
out["executors"] = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
print("RESULT " + json.dumps(out))
spark.stop()
"""


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A Master and one Worker (2 cores, 2 GiB) on loopback; yields (master URL, env)."""
    env = {**os.environ, "SPARK_HOME": spark_home(tmp_path), "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable}
    (tmp_path / "work").mkdir()
    sa = Standalone(tmp_path, env["SPARK_HOME"], env)
    try:
        sa.wait_worker()
        yield sa.url, env
    finally:
        sa.stop()


@pytest.mark.slow
def test_configure_against_standalone_master(standalone: tuple[str, dict[str, str]], store_home: Any,
                                             table_name: str, tmp_path: Path) -> None:
    url, env = standalone
    env = {**env, "SPARK_EXT_HOME": str(store_home.path)}
    r = subprocess.run([sys.executable, "-c", PROGRAM, url, table_name], capture_output=True, text=True, env=env,
                       cwd=str(tmp_path), timeout=600)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stdout[-2000:] + r.stderr[-4000:]
    out = json.loads(lines[0][len("RESULT "):])
    assert out["master"] == url and out["executors"] == 1
    assert out["put"] == 10000 and out["deleted"] == 1000
    assert out["get7"] is None
    assert out["get1007"] == {"id": 1007, "item": "i1007", "qty": -1}
    assert out["get25000"] == {"id": 25000, "item": "p25000", "qty": 1}
    assert out["count"] == 29000
    # ids 1000..19999 keep qty = id % 10 but 1007 (-1); 10,000 put rows of qty 1
    assert out["qty_sum"] == sum(i % 10 for i in range(1000, 20000)) - 7 - 1 + 10000
