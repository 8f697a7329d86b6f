"""Helpers for tests and notebooks: a private store home and a configured local session.

Example (pytest, session-scoped)::

    home = PrivateHome().start()                # temp SPARK_EXT_HOME, embedded server
    spark = local_session("local[2]")           # configure()d, quiet logs
    ...
    spark.stop(); home.stop()
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any


class PrivateHome:
    """A temporary ``SPARK_EXT_HOME`` (set in ``os.environ``) with its own embedded server.

    :meth:`stop` terminates that server by its pid (from the run file) and restores the
    previous ``SPARK_EXT_HOME``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, server_args: list[str] | None = None) -> None:
        self.server_args = list(server_args or [])
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="spark-ext-home-")
        self.path = Path(root if root is not None else self._tmp.name) / "home"  # type: ignore[union-attr]
        self._old = os.environ.get("SPARK_EXT_HOME")

    def start(self) -> "PrivateHome":
        os.environ["SPARK_EXT_HOME"] = str(self.path)
        from spark_ext.client.embedded import ensure_embedded

        ensure_embedded(extra_args=self.server_args)
        return self

    def server_pid(self) -> int | None:
        try:
            return int(json.loads((self.path / "run" / "embedded.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def stop(self) -> None:
        from spark_ext.spark import address

        address.forget_clients()
        pid = self.server_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._old is None:
            os.environ.pop("SPARK_EXT_HOME", None)
        else:
            os.environ["SPARK_EXT_HOME"] = self._old
        if self._tmp is not None:
            self._tmp.cleanup()


def local_session(master: str = "local[2]", app_name: str = "spark-ext-test", **options: Any) -> Any:
    """A ``SparkSession`` on ``master`` with spark-ext configured; logs at WARN or above."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    import spark_ext

    b = (SparkSession.builder.master(master).appName(app_name)
         .config("spark.sql.shuffle.partitions", "4")
         .config("spark.ui.enabled", "false")
         .config("spark.driver.bindAddress", "127.0.0.1"))
    spark = spark_ext.configure(b, **options).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def rows(table: Any) -> list[dict[str, Any]]:
    """All rows of a :class:`~spark_ext.StoreTable` as dicts, sorted by primary key."""
    data = table.toArrow().to_pylist()
    pk = table.primaryKey
    return sorted(data, key=lambda r: tuple(r[k] for k in pk)) if pk else data
