"""`spark-submit --packages io.sparkext:spark-ext_2.13:0.1.0` resolves offline from the local Maven
layout written by `make publish-local` (jvm_bridge/publish_local.sh), and the app uses both SQL
and the Python package that rides in the jar."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from integration.spark.conftest import ROOT, build_jar

APP = textwrap.dedent('''
    import sys
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.appName("submit-app")
             .config("spark.sql.catalog.store", "io.sparkext.spark.SparkExtCatalog").getOrCreate())
    spark.sql("CREATE TABLE IF NOT EXISTS store.default.submitted (id INT PRIMARY KEY, v STRING)")
    spark.sql("INSERT INTO store.default.submitted VALUES (1, 'one'), (2, 'two')")
    n = spark.sql("SELECT count(*) FROM store.default.submitted").collect()[0][0]
    import spark_ext
    from spark_ext.client.embedded import connect
    with connect() as c:
        row = c.get("default.submitted", 2)
    where = spark.sparkContext.parallelize([0], 1).map(lambda _: __import__("spark_ext").__file__).collect()[0]
    print("RESULT", n, row[1], "driver_pkg", spark_ext.__file__, "executor_pkg", where)
    spark.stop()
''')


def test_spark_submit_packages_offline(sx_home, tmp_path: Path) -> None:
    build_jar()
    m2 = tmp_path / "m2"
    subprocess.run(["bash", str(ROOT / "jvm_bridge" / "publish_local.sh")], check=True,
                   env={**os.environ, "M2_REPO": str(m2)})
    assert (m2 / "io/sparkext/spark-ext_2.13/0.1.0/spark-ext_2.13-0.1.0.pom").exists()
    settings = tmp_path / "ivysettings.xml"
    settings.write_text(f'''<ivysettings>
  <settings defaultResolver="local-m2"/>
  <resolvers><ibiblio name="local-m2" root="{m2.as_uri()}" m2compatible="true"/></resolvers>
</ivysettings>''')
    app = tmp_path / "app.py"
    app.write_text(APP)
    submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    # The app must find spark_ext in the jar, not in this checkout.
    env.pop("PYTHONPATH", None)
    r = subprocess.run(
        [str(submit), "--master", "local[2]", "--packages", "io.sparkext:spark-ext_2.13:0.1.0",
         "--conf", f"spark.jars.ivySettings={settings}", "--conf", f"spark.jars.ivy={tmp_path / 'ivy'}",
         "--conf", "spark.ui.enabled=false", str(app)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    out = [line for line in r.stdout.splitlines() if line.startswith("RESULT")]
    assert r.returncode == 0 and out, r.stdout[-3000:] + r.stderr[-5000:]
    parts = out[0].split()
    assert parts[1] == "2" and parts[2] == "two"
    assert "spark-ext_2.13-0.1.0.jar" in parts[6], out[0]  # executors import spark_ext from the jar
