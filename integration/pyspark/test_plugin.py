"""The Spark plug-in (``io.sparkext.spark.SparkExtPlugin``) in real Spark sessions.

Driver side: ``getOrCreate()`` fails with a message naming the locator's address when it
does not answer, or when the conf holds a bad value (naming the key and the value); with
``spark.sparkext.requireLocator=false`` Spark starts and the error is only logged.
Executor side: with ``executor_start_server=True`` each executor makes sure a store server
of the locator runs on its host, starting one when none does (one per host, under a lock).

A process holds one SparkContext and the shared local[2] session lives in the test process,
so sessions with other settings run in child Python processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import free_port, pid_alive
from spark_ext.spark import configure as C

from .standalone import Standalone, spark_home as _spark_home

pytestmark = pytest.mark.skipif(
    C.default_jar() is None or C.PLUGIN_CLASS not in C.jar_classes(C.default_jar() or ""),
    reason="needs the spark-ext jar with the plug-in: run `make jar`")

# One child process, several SparkContexts one after the other (each failing at start, or
# started and stopped): cheaper than one process per case.
LOCAL_CASES = r"""
import json, os, sys
from pyspark.sql import SparkSession
import spark_ext

dead, embedded_locator, wrong_secret, empty_locator, empty_secret = sys.argv[1:6]

def builder(**options):
    b = (SparkSession.builder.master("local[2]").appName("spark-ext-plugin")
         .config("spark.ui.enabled", "false").config("spark.driver.bindAddress", "127.0.0.1"))
    return spark_ext.configure(b, **options)

def status():
    from pyspark import SparkContext
    jvm = SparkContext._jvm
    return list(jvm.io.sparkext.spark.PluginDriver.status())

def start_fails(b):
    try:
        s = b.getOrCreate()
    except Exception as e:
        return str(e)
    s.stop()
    return None

out = {}
out["dead"] = start_fails(builder(locator=dead))
out["bad_bool"] = start_fails(builder().config("spark.sparkext.executorStartServer", "maybe"))
out["bad_timeout"] = start_fails(builder().config("spark.sparkext.checkTimeoutMs", "soon"))
out["bad_locator"] = start_fails(builder().config("spark.sparkext.locator", "no-port-here"))
out["bad_secret_file"] = start_fails(builder().config("spark.sparkext.secretFile", "/nonexistent/secret"))
out["wrong_secret"] = start_fails(builder(locator=embedded_locator, secret_file=wrong_secret))
out["bad_start_timeout"] = start_fails(builder().config("spark.sparkext.executor.startTimeoutMs", "-5"))
out["bad_server_host"] = start_fails(builder().config("spark.sparkext.executor.serverHost", "a host"))

# Executor side failures (a locator without servers, a Python that cannot start one): the
# executor lives on, its error reaches the driver.
for case, python in (("no_python", "/nonexistent/python"), ("server_exits", "/bin/false")):
    s = (builder(locator=empty_locator, secret_file=empty_secret, executor_start_server=True)
         .config("spark.sparkext.executor.python", python).config("spark.sparkext.executor.startTimeoutMs", "20000")
         .getOrCreate())
    out[case + "_count"] = s.range(5).count()
    out[case + "_status"] = status()
    s.stop()

s = builder(locator=dead).config("spark.sparkext.requireLocator", "false").getOrCreate()
out["warn_only_count"] = s.range(10).count()
out["warn_only_status"] = status()
s.stop()

s = builder(executor_start_server=True).getOrCreate()
import time
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not any(" on " in e and "store server" in e for e in status()):
    time.sleep(0.1)  # the executor's report travels to the driver asynchronously
out["embedded_status"] = status()
out["plugins"] = s.conf.get("spark.plugins")
out["python"] = s.conf.get("spark.sparkext.executor.python")
s.stop()
print("RESULT " + json.dumps(out))
"""


def _run(program: str, args: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, env=env,
                       cwd=str(cwd), timeout=900)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-6000:]
    return json.loads(lines[0][len("RESULT "):])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SPARK_CONF_DIR", "SPARK_EXT_LOCATOR", "SPARK_EXT_SECRET", "PYSPARK_PYTHON")}
    return {**env, "SPARK_LOCAL_IP": "127.0.0.1", **extra}


def test_plugin_on_in_shared_session(spark: Any, store_home: Any) -> None:
    """local[2] via configure(): the plug-in is listed and its locator check passed."""
    from spark_ext.spark import address as A

    assert C.PLUGIN_CLASS in spark.conf.get("spark.plugins").split(",")
    loc = A.from_spark(spark).locator_string  # type: ignore[union-attr]
    status = list(spark.sparkContext._jvm.io.sparkext.spark.PluginDriver.status())
    assert f"locator {loc} answered" in status


def test_plugin_driver_checks_and_bad_input_local(store_home: Any, make_cluster: Any, tmp_path: Path) -> None:
    """local[2]: a dead locator, bad values, a wrong secret, executor-side failures; then
    warn-only and an executor finding the embedded server."""
    from spark_ext.client import embedded

    empty = make_cluster("plugin-empty", n_servers=0)

    (host, port), _ = embedded.ensure_embedded(start=False)
    dead = f"127.0.0.1:{free_port()}"
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not-the-secret\n")
    el, ep = empty.locator.address
    out = _run(LOCAL_CASES, [dead, f"{host}:{port}", str(wrong), f"{el}:{ep}", str(empty.secret_file)],
               _env(SPARK_EXT_HOME=str(store_home.path)), tmp_path)

    assert out["dead"] is not None
    assert f"the locator at {dead} does not answer" in out["dead"]
    assert "Connection refused" in out["dead"] and "spark.sparkext.requireLocator=false" in out["dead"]
    assert "spark.sparkext.executorStartServer='maybe': expected true or false" in out["bad_bool"]
    assert "spark.sparkext.checkTimeoutMs='soon': expected milliseconds" in out["bad_timeout"]
    assert "spark.sparkext.locator='no-port-here': expected host:port" in out["bad_locator"]
    assert "spark.sparkext.secretFile='/nonexistent/secret': no such file" in out["bad_secret_file"]
    assert f"the locator at {host}:{port} does not answer" in out["wrong_secret"]
    assert "AUTH_FAILED" in out["wrong_secret"] and f"check the secret in {wrong}" in out["wrong_secret"]

    assert "spark.sparkext.executor.startTimeoutMs='-5': expected milliseconds" in out["bad_start_timeout"]
    assert "spark.sparkext.executor.serverHost='a host' has spaces" in out["bad_server_host"]

    assert out["no_python_count"] == 5 and out["server_exits_count"] == 5
    err = [e for e in out["no_python_status"] if e.startswith("executor driver on ") and " error: " in e]
    assert err and f"no store server for the locator {el}:{ep}" in err[0], out["no_python_status"]
    assert "cannot run /nonexistent/python (spark.sparkext.executor.python)" in err[0]
    err = [e for e in out["server_exits_status"] if e.startswith("executor driver on ") and " error: " in e]
    assert err and "the store server exited with code 1 during start; see " in err[0], out["server_exits_status"]
    assert empty.client().servers() == []

    assert out["warn_only_count"] == 10
    assert any(e.startswith(f"error: spark-ext plug-in: the locator at {dead} does not answer")
               for e in out["warn_only_status"]), out["warn_only_status"]

    st = out["embedded_status"]
    assert f"locator {host}:{port} answered" in st
    found = [e for e in st if e.startswith("executor driver on ") and "found store server" in e]
    assert found and f"at {host}:{port} on this host; not starting one" in found[0], st
    assert out["plugins"].split(",").count(C.PLUGIN_CLASS) == 1
    assert out["python"] == sys.executable


CLUSTER_PROGRAM = r"""
import json, sys, time
from pyspark.sql import SparkSession
import spark_ext
from spark_ext import StoreTable

locator, secret_file, master, executors = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
b = (SparkSession.builder.master(master).appName("spark-ext-plugin-cluster")
     .config("spark.ui.enabled", "false").config("spark.driver.bindAddress", "127.0.0.1"))
spark = spark_ext.configure(b, locator=locator, secret_file=secret_file, executor_start_server=True).getOrCreate()
jvm = spark.sparkContext._jvm
status = lambda: list(jvm.io.sparkext.spark.PluginDriver.status())
deadline = time.monotonic() + 240
while time.monotonic() < deadline and sum(1 for e in status() if e.startswith("executor ")) < executors:
    time.sleep(0.2)  # each executor reports once its plug-in ran
out = {"status": status(), "executors": spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1}
spark.sql("CREATE NAMESPACE IF NOT EXISTS store.plug")
spark.sql("CREATE TABLE store.plug.kv (id BIGINT NOT NULL, v STRING, PRIMARY KEY (id)) TBLPROPERTIES ('buckets'='4')")
spark.sql("INSERT INTO store.plug.kv SELECT id, concat('v', id) FROM range(0, 1000, 1, 4)")
out["put"] = spark.range(1000, 1500, numPartitions=3).selectExpr("id", "'p' as v").putInto("plug.kv")
out["count"] = spark.sql("SELECT count(*) AS n FROM store.plug.kv").collect()[0].n
out["row"] = StoreTable.forName(spark, "plug.kv").get(1200)
spark.stop()
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_executors_start_a_server_on_local_cluster(make_cluster: Any, tmp_path: Path) -> None:
    """local-cluster[2,1,1024], a locator without servers: the executors start one (one host)."""
    cluster = make_cluster("plugin", n_servers=0)
    lh, lp = cluster.locator.address
    home = tmp_path / "home"
    run_file = home / "run" / f"executor-server-{lh}_{lp}.json"
    env = _env(SPARK_EXT_HOME=str(home), SPARK_HOME=_spark_home(tmp_path), PYSPARK_PYTHON=sys.executable)
    try:
        out = _run(CLUSTER_PROGRAM, [f"{lh}:{lp}", str(cluster.secret_file), "local-cluster[2,1,1024]", "2"], env,
                   tmp_path)
        assert out["executors"] == 2
        reports = [e for e in out["status"] if e.startswith("executor ")]
        started = [e for e in reports if "started store server" in e]
        found = [e for e in reports if "found store server" in e and "not starting one" in e]
        assert len(started) == 1 and len(found) == 1, out["status"]
        assert f"log {home / 'logs'}" in started[0] and f"data {home / 'executor-server'}" in started[0]

        servers = cluster.client().servers()
        assert len(servers) == 1 and servers[0]["up"] and servers[0]["host"] == "127.0.0.1", servers
        assert servers[0]["server_id"] in started[0] and servers[0]["server_id"] in found[0]
        assert out["put"] == 500 and out["count"] == 1500
        assert out["row"] == {"id": 1200, "v": "p"}
    finally:
        _stop_by_run_file(run_file)


def _stop_by_run_file(run_file: Path) -> None:
    """SIGTERM the server named by ``run_file`` (started detached by an executor), then SIGKILL."""
    try:
        pid = int(json.loads(run_file.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return
    if not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_executor_starts_a_server_on_standalone_master(make_cluster: Any, tmp_path: Path) -> None:
    """A standalone master and worker: the executor (whose environment is the worker's, not
    the driver's) starts the server with the Python the driver names."""
    cluster = make_cluster("plugin-standalone", n_servers=0)
    lh, lp = cluster.locator.address
    home = tmp_path / "home"
    run_file = home / "run" / f"executor-server-{lh}_{lp}.json"
    spark_home = _spark_home(tmp_path)
    (tmp_path / "work").mkdir()
    worker_env = _env(SPARK_EXT_HOME=str(home), SPARK_HOME=spark_home)  # no PYSPARK_PYTHON on the worker
    sa = Standalone(tmp_path, spark_home, worker_env)
    try:
        sa.wait_worker()
        env = _env(SPARK_EXT_HOME=str(tmp_path / "driver-home"), SPARK_HOME=spark_home, PYSPARK_PYTHON=sys.executable)
        out = _run(CLUSTER_PROGRAM, [f"{lh}:{lp}", str(cluster.secret_file), sa.url, "1"], env, tmp_path)
        reports = [e for e in out["status"] if e.startswith("executor ")]
        assert len(reports) == 1 and "started store server" in reports[0], out["status"]
        assert f"data {home / 'executor-server'}" in reports[0]  # the worker's SPARK_EXT_HOME
        servers = cluster.client().servers()
        assert len(servers) == 1 and servers[0]["up"] and servers[0]["server_id"] in reports[0], servers
        assert out["put"] == 500 and out["count"] == 1500 and out["row"] == {"id": 1200, "v": "p"}
    finally:
        sa.stop()
        _stop_by_run_file(run_file)
