"""Fixtures of the PySpark integration tests: one private store and one local[2] session.

Both are session-scoped (a Spark session costs seconds): ``SPARK_EXT_HOME`` points at a
temporary folder for the whole run, its embedded server is started once and stopped by
pid at the end. Tests create tables with unique names (:func:`table_name`).
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Iterator

import pytest

from spark_ext.spark.testing import PrivateHome, local_session

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
_names = itertools.count(1)


@pytest.fixture(scope="session")
def store_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateHome]:
    h = PrivateHome(tmp_path_factory.mktemp("pyspark-home")).start()
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="session")
def spark(store_home: PrivateHome) -> Iterator[Any]:
    from pyspark import SparkContext

    # Another suite's session in this process (integration/spark) would be handed back by
    # getOrCreate() with its own settings: start a fresh one configured for this store.
    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()
    s = local_session("local[2]", "spark-ext-pyspark-tests")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def table_name() -> str:
    """A fresh table name in namespace ``it``."""
    return f"it.t{os.getpid()}_{next(_names)}"


@pytest.fixture
def items(spark: Any, table_name: str) -> Any:
    """A fresh table ``(id long key, item string, qty int)`` with three rows."""
    from spark_ext import StoreTable

    t = StoreTable.create(spark, table_name, "id long, item string, qty int", primaryKey="id")
    t.put([(1, "apple", 3), (2, "pear", 5), (3, "fig", 1)])
    return t
