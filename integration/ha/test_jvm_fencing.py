"""The JVM bridge's writes carry the driver's fencing token, and the servers refuse an old one.

A PySpark application (a child process: one SparkContext per process) sets its JVM's
leadership directly (``io.sparkext.wire.Fence.lead``, what ``configure(ha_group=...)``
does once it holds the lease), writes, then a newer leader announces token 6 the way a
real one does (a fenced PING to every store server, a fenced DDL at the locator). Every
Spark SQL write the application then sends with token 5 must be refused by the servers
with the fencing error naming the group, the refused and the newest token: INSERT
(tasks stage with the fence), INSERT OVERWRITE (the driver stages a truncate), UPDATE and
DELETE (delta writes, and single-row ones by key, which the driver sends itself), ``writeTo().append()``,
``df.putInto`` on both its paths (the JVM writer, and the Python ``mapInArrow`` job whose
client carries the same token) as :class:`~spark_ext.exceptions.FencedError`, and CREATE
TABLE (the locator). Nothing it
sent may be visible. Told its leadership is lost (``Fence.lose``), the JVM refuses at
once. Run on ``local[2]`` and on ``local-cluster[2,1,1024]``, where the tasks run in two
executor JVMs that only know the token from the serialized writer factory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import Cluster, spark_home

PROGRAM = r"""
import json, sys
from spark_ext.spark.testing import local_session
from spark_ext.client.client import StoreClient
from integration.ha.spark_driver import fencing_error
master, locator, secret_file, table, group = sys.argv[1:6]
spark = local_session(master, "jvm-fencing", locator=locator, secret_file=secret_file)
Fence = spark._jvm.io.sparkext.wire.Fence
import time
executors = lambda: spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
deadline = time.monotonic() + 180  # executor JVMs register one by one (slowly on a busy machine)
while master.startswith("local-cluster") and executors() < 2 and time.monotonic() < deadline:
    time.sleep(0.5)
out = {"executors": executors()}
def attempt(what, run):
    try:
        run()
        out[what] = "ok"
    except Exception as e:
        out[what] = fencing_error(e) or ("OTHER " + str(e)[:3000])
sql = lambda s: (lambda: spark.sql(s))
spark.sql(f"CREATE TABLE {table} (id BIGINT, v STRING, PRIMARY KEY (id)) TBLPROPERTIES ('buckets'='4')")
Fence.lead(group, 5)
from spark_ext.spark import address as A, dataframe as D
A.client_for(A.from_spark(spark)).fence = {"group": group, "token": 5}  # what configure(ha_group=...) sets
def put(path, first, v="stale"):
    def run():
        try:
            spark.range(first, first + 100, 1, 4).selectExpr("id", f"'{v}' AS v").putInto(table, path=path)
        finally:
            out["ran_" + path] = D.last_path
    return run
def typed(what, run):
    try:
        run()
        out[what] = "ok"
    except Exception as e:
        out[what] = type(e).__name__ + ": " + str(e)[:3000]
typed("put5_jvm", put("jvm", 7000, "put5"))
out["put5_jvm_path"] = D.last_path
attempt("insert5", sql(f"INSERT INTO {table} SELECT id, 'five' FROM range(0, 1000, 1, 4)"))
# A newer leader takes over: token 6 goes to every store server and to the locator.
host, port = locator.rsplit(":", 1)
newer = StoreClient((host, int(port)), open(secret_file, "rb").read().strip())
newer.fence = {"group": group, "token": 6}
out["unreached"] = newer.announce()
newer.create_namespace("fence_probe", if_not_exists=True)
attempt("insert", sql(f"INSERT INTO {table} SELECT id, 'stale' FROM range(1000, 2000, 1, 4)"))
attempt("overwrite", sql(f"INSERT OVERWRITE {table} SELECT id, 'stale' FROM range(0, 10)"))
attempt("update", sql(f"UPDATE {table} SET v = 'stale' WHERE id < 10"))
attempt("delete", sql(f"DELETE FROM {table} WHERE id < 10"))
# Single-row statements by key take the SQL extension's point path (one request, no job).
point_before = spark._jvm.io.sparkext.spark.PointWriteCommand.executed()
attempt("point_update", sql(f"UPDATE {table} SET v = 'stale' WHERE id = 3"))
attempt("point_delete", sql(f"DELETE FROM {table} WHERE id = 4"))
out["point_runs"] = spark._jvm.io.sparkext.spark.PointWriteCommand.executed() - point_before
attempt("append", lambda: spark.range(3000, 3010).selectExpr("id", "'stale' AS v").writeTo(table).append())
typed("put_jvm", put("jvm", 5000))
typed("put_python", put("python", 5100))
attempt("create", sql(f"CREATE TABLE {table}_zombie (id BIGINT, PRIMARY KEY (id))"))
Fence.lead(group, 6)  # this JVM is now the current leader
attempt("insert6", sql(f"INSERT INTO {table} SELECT id, 'six' FROM range(2000, 2010, 1, 2)"))
Fence.lose(group, 5, "an older term: ignored")
Fence.lose(group, 6, "test: lease lost")
attempt("lost_insert", sql(f"INSERT INTO {table} SELECT id, 'lost' FROM range(4000, 4010, 1, 2)"))
attempt("lost_point_update", sql(f"UPDATE {table} SET v = 'lost' WHERE id = 5"))
typed("lost_put_jvm", put("jvm", 5200))
attempt("lost_create", sql(f"CREATE TABLE {table}_lost (id BIGINT, PRIMARY KEY (id))"))
print("RESULT " + json.dumps(out), flush=True)
spark.stop()
"""


def run_program(cluster: Cluster, master: str, table: str, group: str, tmp: Path) -> dict[str, Any]:
    env = {**cluster.app_env(), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": spark_home(tmp),
           "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run([sys.executable, "-c", PROGRAM, master, cluster.locator_arg, str(cluster.secret_file),
                        f"store.default.{table}", group], capture_output=True, text=True, env=env, cwd=str(tmp),
                       timeout=900)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stdout[-2000:] + r.stderr[-6000:]
    return json.loads(lines[0][len("RESULT "):])


@pytest.mark.parametrize("master", ["local[2]", pytest.param("local-cluster[2,1,1024]", marks=pytest.mark.slow)])
def test_old_token_of_a_jvm_write_is_refused(ha_cluster: Cluster, master: str, tmp_path: Path) -> None:
    tag = "lc" if master.startswith("local-cluster") else "l2"
    table, group = f"jvm_fence_{tag}", f"jvm-fence-{tag}"
    out = run_program(ha_cluster, master, table, group, tmp_path)
    assert out["executors"] == (2 if tag == "lc" else 0)
    assert out["unreached"] == []
    assert out["insert5"] == "ok" and out["insert6"] == "ok", out
    refused = f"leader group '{group}': token 5 is older than token 6 of the current leader"
    assert out["point_runs"] == 2, out
    for what in ("insert", "overwrite", "update", "delete", "point_update", "point_delete", "append", "create"):
        assert "[spark-ext FENCED]" in out[what] and refused in out[what], (what, out[what])
    for what in ("lost_insert", "lost_create", "lost_point_update"):
        assert f"[spark-ext FENCED] leader group '{group}': this driver lost its leadership (test: lease lost); " \
               f"token 6 may not write" in out[what], (what, out[what])
    # putInto: refused on both paths with the same typed error (put5 wrote ids 7000..7099 while token 5 led).
    assert out["put5_jvm"] == "ok" and out["put5_jvm_path"] == "jvm", out
    assert out["ran_jvm"] == "jvm" and out["ran_python"] == "python", out
    for what in ("put_jvm", "put_python"):
        assert out[what].startswith("FencedError: ") and refused in out[what], (what, out[what])
    assert out["lost_put_jvm"].startswith("FencedError: ") and "this driver lost its leadership" in out["lost_put_jvm"], out
    c = ha_cluster.admin()
    rows = {r["id"]: r["v"] for r in c.scan(f"default.{table}").to_pylist()}
    assert rows == {**{i: "five" for i in range(1000)}, **{i: "six" for i in range(2000, 2010)},
                    **{i: "put5" for i in range(7000, 7100)}}
    tables = c.list_tables("default")
    assert f"{table}_zombie" not in tables and f"{table}_lost" not in tables
