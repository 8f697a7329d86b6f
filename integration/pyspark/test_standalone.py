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
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from integration.pyspark.test_local_cluster import _spark_home

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}: {log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"port {port} not listening after {timeout}s: {log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A Master and one Worker (2 cores, 2 GiB) on loopback; yields (master URL, env)."""
    home = _spark_home(tmp_path)
    env = {**os.environ, "SPARK_HOME": home, "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOG_DIR": str(tmp_path / "logs"), "PYSPARK_PYTHON": sys.executable}
    port, ui, wui = _free_port(), _free_port(), _free_port()
    spark_class = str(Path(home) / "bin" / "spark-class")
    mlog, wlog = tmp_path / "master.log", tmp_path / "worker.log"
    master = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
         "--webui-port", str(ui)], env=env, cwd=tmp_path, stdout=mlog.open("wb"), stderr=subprocess.STDOUT)
    worker = None
    try:
        _wait_port(port, master, mlog)
        url = f"spark://127.0.0.1:{port}"
        worker = subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "2",
             "--memory", "2g", "--webui-port", str(wui), "--work-dir", str(tmp_path / "work"), url],
            env=env, cwd=tmp_path, stdout=wlog.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while "Successfully registered with master" not in wlog.read_text(errors="replace"):
            assert worker.poll() is None and time.monotonic() < deadline, wlog.read_text()[-3000:]
            time.sleep(0.3)
        yield url, env
    finally:
        if worker is not None:
            _stop(worker)
        _stop(master)


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
