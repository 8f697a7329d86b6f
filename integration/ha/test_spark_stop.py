"""``spark.stop()`` of an HA session gives the leadership up at once.

A PySpark application (a child process) leads group G through ``configure(ha_group=G)``,
stops its session, and then checks, in the same process, that its JVM (which outlives
the session) no longer carries the token, and that the lease is free at once rather than
after its TTL: a second HA session in the same process leads again right away, with a
newer token.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from integration.cluster import Cluster

PROGRAM = r"""
import json, sys
from pyspark import SparkContext
from pyspark.sql import SparkSession
import spark_ext
from spark_ext.ha.backends import LocatorLeases
locator, secret_file, group = sys.argv[1:4]
def session():
    b = (SparkSession.builder.master("local[1]").appName("ha-stop").config("spark.ui.enabled", "false"))
    return spark_ext.configure(b, locator=locator, secret_file=secret_file, ha_group=group, ha_ttl=30.0).getOrCreate()
out = {}
spark = session()
lead = spark._spark_ext_leadership
out["token1"] = lead.token
out["jvm_before"] = spark._jvm.io.sparkext.wire.Fence.current() is not None
jvm = spark._jvm
spark.stop()
out["jvm_after"] = jvm.io.sparkext.wire.Fence.current() is not None
host, port = locator.rsplit(":", 1)
leases = LocatorLeases((host, int(port)), open(secret_file, "rb").read().strip())
out["holders_after_stop"] = [l.get("holder") for l in leases.status(group) if l.get("holder")]
if out["holders_after_stop"] or out["jvm_after"]:  # a second session would wait out the lease
    print("RESULT " + json.dumps(out), flush=True)
    import os; os._exit(0)
spark = session()  # leads again (a newer token) in the same process
out["token2"] = spark._spark_ext_leadership.token
spark.stop()
print("RESULT " + json.dumps(out), flush=True)
"""


def test_stop_releases_the_lease_and_the_jvm_token(ha_cluster: Cluster, tmp_path: Path) -> None:
    env = {**ha_cluster.app_env(), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run([sys.executable, "-c", PROGRAM, ha_cluster.locator_arg, str(ha_cluster.secret_file),
                        "stop-releases"], capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stdout[-2000:] + r.stderr[-6000:]
    out = json.loads(lines[0][len("RESULT "):])
    assert out["jvm_before"] is True and out["jvm_after"] is False, out
    assert out["holders_after_stop"] == [], out
    assert out.get("token2", 0) > out["token1"], out
