"""A task attempt that prepared its part and then failed: the statement is rolled back and
run again, and the table ends up exactly as one successful run would leave it.

Needs task retries, which local[2] does not do (one failure aborts the job), so it runs in
a child process on ``local[2,2]`` (two attempts per task) against the shared private store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from spark_ext import StoreTable

PROGRAM = r"""
import json, logging, sys
from spark_ext.spark.testing import local_session
from spark_ext.spark.dataframe import run_statement
from spark_ext import StoreTable
logging.basicConfig(level=logging.WARNING)
spark = local_session("local[2,2]", "spark-ext-task-retry")
t = StoreTable.forName(spark, sys.argv[1])
df = spark.range(0, 5000, numPartitions=3).selectExpr("id", "concat('v', id) as item", "1 as qty")
n = run_statement(df, t, "upsert", _test_fail_after_prepare=True)
d = run_statement(spark.range(0, 5000, 2, numPartitions=3), t, "delete", _test_fail_after_prepare=True)
status = t._client.server_status(*t._client.locator_address)
print("RESULT " + json.dumps({"n": n, "d": d, "count": t.count(), "open": status["open_transactions"]}))
spark.stop()
"""


def test_statement_rerun_after_task_failure_past_prepare(spark: Any, store_home: Any, table_name: str,
                                                        tmp_path: Path) -> None:
    t = StoreTable.create(spark, table_name, "id long, item string, qty int", primaryKey="id")
    t.put([(1, "old", 0), (9999, "kept", 0)])
    env = {**os.environ, "SPARK_EXT_HOME": str(store_home.path), "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable}
    r = subprocess.run([sys.executable, "-c", PROGRAM, t.name], capture_output=True, text=True, env=env,
                       cwd=str(tmp_path), timeout=600)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stdout[-2000:] + r.stderr[-4000:]
    out = json.loads(lines[0][len("RESULT "):])
    assert out == {"n": 5000, "d": 2500, "count": 2501, "open": 0}
    assert "running the statement again" in r.stderr
    assert t.get(1) == {"id": 1, "item": "v1", "qty": 1} and t.get(2) is None
    assert t.get(9999) == {"id": 9999, "item": "kept", "qty": 0}  # not in the DataFrame: untouched
