"""conf/ templates used as a user would (spark-submit + spark-defaults.conf), and the shell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from spark_ext import StoreTable
from spark_ext.spark import configure as C

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_CONF_DIR", "SPARK_EXT_LOCATOR")}
    return {**env, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable, **extra}


def fill_spark_defaults(values: dict[str, str], jar: str | None) -> str:
    """The template with the user's values; lines naming classes the jar lacks are commented."""
    classes = C.jar_classes(jar) if jar else set()
    out = []
    for line in (REPO / "conf" / "spark-defaults.conf").read_text().splitlines():
        bits = line.split(None, 1)
        if not bits or line.startswith("#"):
            out.append(line)
            continue
        key, value = bits[0], bits[1].strip() if len(bits) > 1 else ""
        value = values.get(key, value)
        if key == "spark.jars" and not jar:
            line = "# " + line
        elif value.startswith("io.sparkext.") and value not in classes:
            line = f"# (not in this jar) {key} {value}"
        elif key.startswith("spark.sql.catalog.store.") and C.CATALOG_CLASS not in classes:
            line = "# " + line
        else:
            line = f"{key} {value}"
        out.append(line)
    return "\n".join(out) + "\n"


def test_templates_exist_and_parse() -> None:
    conf = REPO / "conf"
    for name in ("spark-defaults.conf", "server.conf", "locator.conf", "log4j2.properties", "logging.ini"):
        assert (conf / name).is_file(), name
    keys = {ln.split()[0] for ln in (conf / "spark-defaults.conf").read_text().splitlines() if ln and not ln.startswith("#")}
    assert {"spark.jars", "spark.sql.catalog.store", "spark.sparkext.locator", "spark.sparkext.secretFile"} <= keys
    for name in ("server.conf", "locator.conf"):
        for ln in (conf / name).read_text().splitlines():
            assert not ln.strip() or ln.startswith("#") or "=" in ln, ln
    import configparser
    import logging.config

    logging.config.fileConfig(conf / "logging.ini", disable_existing_loggers=False)
    configparser.ConfigParser().read(conf / "logging.ini")


def test_spark_submit_with_spark_defaults_template(cluster: Any, tmp_path: Path) -> None:
    """A user fills in conf/spark-defaults.conf and runs spark-submit: no configure() in the app."""
    admin = cluster.admin()
    admin.create_namespace("sub", if_not_exists=True)
    admin.create_table("sub.t", [("id", "int64"), ("v", "string")], primary_key="id", if_not_exists=True)
    conf_dir = tmp_path / "sparkconf"
    conf_dir.mkdir()
    jar = C.default_jar()
    vals = {"spark.jars": jar or "", "spark.sql.catalog.store.locator": cluster.locator_arg,
            "spark.sql.catalog.store.secretFile": str(cluster.secret_file),
            "spark.sparkext.locator": cluster.locator_arg, "spark.sparkext.secretFile": str(cluster.secret_file)}
    (conf_dir / "spark-defaults.conf").write_text(fill_spark_defaults(vals, jar))
    app = tmp_path / "app.py"
    app.write_text(
        "from pyspark.sql import SparkSession\n"
        "import spark_ext\n"
        "from spark_ext import StoreTable\n"
        "spark = SparkSession.builder.getOrCreate()\n"
        "t = StoreTable.forName(spark, 'sub.t')\n"
        "n = spark.range(100).selectExpr('id', 'cast(id as string) as v').putInto('sub.t')\n"
        "d = spark.range(0, 100, 2).deleteFrom(t)\n"
        "spark.sql(\"UPDATE store.sub.t SET v = 'seven' WHERE id = 7\")\n"  # the template's SQL extension
        "p = spark._jvm.io.sparkext.spark.PointWriteCommand.executed()\n"
        "print('RESULT', n, d, t.count(), t.get(7), spark.conf.get('spark.sparkext.locator'), p)\n"
        "spark.stop()\n")
    r = subprocess.run([str(BIN / "spark-submit"), "--master", "local[2]", str(app)], capture_output=True, text=True,
                       env=_env(SPARK_CONF_DIR=str(conf_dir)), cwd=str(tmp_path), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + "\n".join(ln for ln in r.stderr.splitlines() if " INFO " not in ln)[-3000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT"))
    assert line == f"RESULT 100 50 50 {{'id': 7, 'v': 'seven'}} {cluster.locator_arg} 1"
    assert admin.count("sub.t") == 50


def test_shell(items: Any, store_home: Any, tmp_path: Path) -> None:
    script = (f"t = StoreTable.forName(spark, {items.name!r})\n"
              "print('GOT', t.get(2)['item'], spark.range(4).count())\n"
              "spark.createDataFrame([(2, 'PEAR', 9)], 'id long, item string, qty int').putInto(t)\n"
              "print('AFTER', t.get(2)['item'])\n")
    r = subprocess.run([str(BIN / "spark-ext"), "shell", "--master", "local[1]"], input=script, capture_output=True,
                       text=True, env=_env(SPARK_EXT_HOME=str(store_home.path)), cwd=str(tmp_path), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "spark-ext 0.1.0 on Spark" in r.stdout
    assert items.name in r.stdout and "3 rows" in r.stdout
    assert "GOT pear 4" in r.stdout and "AFTER PEAR" in r.stdout
    assert StoreTable.forName(items.name).get(2)["qty"] == 9


def test_shell_bad_option(store_home: Any, tmp_path: Path) -> None:
    r = subprocess.run([str(BIN / "spark-ext"), "shell", "--locator", "nohost"], capture_output=True, text=True,
                       env=_env(SPARK_EXT_HOME=str(store_home.path)), cwd=str(tmp_path), timeout=120, input="")
    assert r.returncode == 2 and "option locator='nohost'" in r.stderr
    r = subprocess.run([str(BIN / "spark-ext"), "shell", "--conf", "novalue"], capture_output=True, text=True,
                       env=_env(SPARK_EXT_HOME=str(store_home.path)), cwd=str(tmp_path), timeout=120, input="")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr
