"""Spark integration: one local[2] SparkSession per test session, over an embedded spark-ext
server started in a temporary $SPARK_EXT_HOME, with the bridge jar from `make jar`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
JAR = ROOT / "build" / "spark-ext_2.13-0.1.0.jar"


def build_jar() -> Path:
    subprocess.run(["bash", str(ROOT / "jvm_bridge" / "build.sh")], check=True, cwd=ROOT)
    return JAR


@pytest.fixture(scope="session")
def sx_home() -> Iterator[Path]:
    """A private SPARK_EXT_HOME with a running embedded server (stopped at the end)."""
    home = Path(tempfile.mkdtemp(prefix="sx-it-"))
    old = os.environ.get("SPARK_EXT_HOME")
    os.environ["SPARK_EXT_HOME"] = str(home)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from spark_ext.client.embedded import ensure_embedded

    ensure_embedded()
    try:
        yield home
    finally:
        try:
            info = json.loads((home / "run" / "embedded.json").read_text())
            os.kill(int(info["pid"]), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        shutil.rmtree(home, ignore_errors=True)
        if old is None:
            os.environ.pop("SPARK_EXT_HOME", None)
        else:
            os.environ["SPARK_EXT_HOME"] = old


@pytest.fixture(scope="session")
def spark(sx_home: Path):
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    from spark_ext.client.embedded import ensure_embedded

    jar = build_jar()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Python workers need this venv's pyarrow
    (host, port), _ = ensure_embedded()
    # Another suite's session in this process would be handed back by getOrCreate() with its own
    # catalogs: start a fresh one. The catalogs get the server explicitly, because the JVM (and
    # its environment) may predate this test session's SPARK_EXT_HOME.
    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()
    b = (
        SparkSession.builder.master("local[2]")
        .appName("spark-ext-it")
        .config("spark.jars", str(jar))
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.warehouse.dir", str(sx_home / "warehouse"))
        .config("spark.sql.extensions", "io.sparkext.spark.SparkExtSessionExtensions")  # as configure() sets
    )
    for cat, cls in (("store", "SparkExtCatalog"), ("spark_catalog", "SparkExtSessionCatalog")):
        b = (b.config(f"spark.sql.catalog.{cat}", f"io.sparkext.spark.{cls}")
             .config(f"spark.sql.catalog.{cat}.locator", f"{host}:{port}")
             .config(f"spark.sql.catalog.{cat}.secretFile", str(sx_home / "secret")))
    s = b.getOrCreate()
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


@pytest.fixture
def tname() -> str:
    """A fresh table name in the store catalog."""
    return f"store.default.t_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def client(sx_home: Path):
    from spark_ext.client.embedded import connect

    c = connect()
    yield c
    c.close()
