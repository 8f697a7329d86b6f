"""Separate Spark applications: local-cluster (two executor JVMs) and tables shared between apps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


from integration.spark.conftest import ROOT, build_jar


def spark_home(tmp: Path) -> str:
    """A SPARK_HOME of symlinks, so local-cluster executor logs land in tmp, not in site-packages."""
    import pyspark

    src = Path(pyspark.__file__).parent
    home = tmp / "spark_home"
    home.mkdir(exist_ok=True)
    for d in ("bin", "sbin", "jars", "python", "conf"):
        if (src / d).exists() and not (home / d).exists():
            (home / d).symlink_to(src / d)
    return str(home)


def run_app(mode: str, master: str, table: str, tmp: Path, timeout: float = 600) -> dict:
    jar = str(build_jar())
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": spark_home(tmp), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "integration.spark.apps", mode, master, jar, table],
                       capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp)
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-6000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_local_cluster_all_statements(sx_home, tmp_path: Path) -> None:
    out = run_app("cluster", "local-cluster[2,1,1024]", "store.default.lc_t", tmp_path)
    assert out["count"] == 300
    assert out["point"] == [[7, "v7", 7]] and out["point_parts"] == 1
    n_expected = 250 + 1 + 1  # ids 0..249, 400 from MERGE, 1000 from INSERT
    sum_expected = sum(range(250)) - 5 + 50 + 400 + 1
    assert out["after_dml"] == [n_expected, sum_expected, 9]
    assert out["row5"] == [[5, "m", 50]]
    assert out["failure"] is True and out["unchanged_after_failure"] is True
    assert "DUPLICATE_KEY" in out["dup"] and "lc_t" in out["dup"] and "id=1000" in out["dup"], out["dup"]
    assert out["overwrite"] == [[0, "u", 0], [1, "u", 1], [2, "u", 2]]


def test_local_cluster_aggregate_push_down(sx_home, tmp_path: Path) -> None:
    """GROUP BY k % 100 and friends, pushed to the store from two executor JVMs, equal Spark's own answer."""
    out = run_app("aggregates", "local-cluster[2,1,1024]", "store.default.lc_agg", tmp_path)
    assert out["executors"] == 2
    for q in out["queries"]:
        assert q["same"] and q["pushed"] and q["groups"] > 0, q
    assert out["queries"][0]["groups"] == 199 + 1  # -99..99 and the NULL group
    assert out["queries"][0]["negative_keys"] and out["queries"][1]["negative_keys"]
    assert out["zero"] is True


def test_two_apps_share_tables_and_a_third_sees_them(sx_home, tmp_path: Path) -> None:
    t = "store.default.shared_apps"
    first = run_app("writer", "local[1]", t, tmp_path)
    assert first["rows"] == [[1, "app1"], [2, "app1"]]
    second = run_app("second", "local[1]", t, tmp_path)
    assert second["before"] == [[1, "app1"], [2, "app1"]]
    third = run_app("reader", "local[1]", t, tmp_path)
    assert third["rows"] == [[1, "app2"], [2, "app1"], [3, "app2"]]
