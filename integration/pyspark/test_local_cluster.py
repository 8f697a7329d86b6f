"""putInto (both paths) / deleteFrom with two real executor JVMs (local-cluster[2,1,1024]).

A process can hold one SparkContext, and the shared local[2] session lives in the test
process, so this runs in a child Python process against the same private store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spark_ext import StoreTable

from .standalone import spark_home as _spark_home

PROGRAM = r"""
import json, os, sys
from spark_ext.spark.testing import local_session
from spark_ext import StoreTable
from spark_ext.exceptions import NullKeyError
from spark_ext.spark import dataframe as D
spark = local_session("local-cluster[2,1,1024]", "spark-ext-local-cluster")
name = sys.argv[1]
t = StoreTable.forName(spark, name)
df = spark.range(0, 200000, numPartitions=6).selectExpr("id", "cast(id % 1000 as int) as qty", "concat('i', id) as item")
out = {"put": df.putInto(name), "put_path": D.last_path}
out["executors"] = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
again = spark.range(100000, 200000, numPartitions=3).selectExpr("id", "-1 as qty", "concat('p', id) as item")
out["put_python"] = again.putInto(name, path="python")
out["put_python_path"] = D.last_path
bad = spark.range(0, 50000, numPartitions=4).selectExpr("if(id = 49999, null, id + 500000) as id")
for path in ("jvm", "python"):
    try:
        bad.putInto(t, path=path)
    except NullKeyError as e:
        out["bad_" + path] = str(e)
out["deleted"] = spark.range(0, 200000, 4).deleteFrom(t)
out["count"] = t.count()
print("RESULT " + json.dumps(out))
spark.stop()
"""


@pytest.mark.slow
def test_put_into_on_local_cluster(spark: Any, store_home: Any, table_name: str, tmp_path: Path) -> None:
    t = StoreTable.create(spark, table_name, "id long, item string, qty int", primaryKey="id")
    t.put([(1, "before", 1)])
    env = {**os.environ, "SPARK_EXT_HOME": str(store_home.path), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_HOME": _spark_home(tmp_path), "PYSPARK_PYTHON": sys.executable}
    r = subprocess.run([sys.executable, "-c", PROGRAM, t.name], capture_output=True, text=True, env=env,
                       cwd=str(tmp_path), timeout=600)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stdout[-2000:] + r.stderr[-4000:]
    out = json.loads(lines[0][len("RESULT "):])
    assert out["executors"] == 2
    assert out["put"] == 200000 and out["put_path"] == "jvm"  # the JVM writer, in two executor JVMs
    assert out["put_python"] == 100000 and out["put_python_path"] == "python"
    for path in ("jvm", "python"):
        assert f"table '{t.name}': key column 'id' cannot be NULL" in out["bad_" + path], out
    assert out["deleted"] == 50000 and out["count"] == 150000
    assert t.get(1) == {"id": 1, "item": "i1", "qty": 1} and t.get(4) is None and t.get(500001) is None
    assert t.get(100001) == {"id": 100001, "item": "p100001", "qty": -1}
