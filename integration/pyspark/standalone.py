"""Spark deployments for the PySpark integration tests, beyond ``local[N]``.

``spark_home`` builds a SPARK_HOME of symlinks to pyspark's own folders, so executor logs
and work directories land in a test's temporary folder instead of site-packages.
``Standalone`` runs a real standalone Master and one Worker on loopback: the pip package of
pyspark has no ``start-master.sh``, so both run through ``bin/spark-class`` (see
``../shared/SPARK_NOTES.md``).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from integration.cluster import _pdeathsig, free_port, spark_home

__all__ = ["Standalone", "spark_home"]


class Standalone:
    """A standalone Spark master and one worker on loopback (free ports), stopped by pid."""

    def __init__(self, root: Path, spark_home: str, env: dict[str, str]) -> None:
        self.root = root
        self.port, self.ui = free_port(), free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        cls = str(Path(spark_home) / "bin" / "spark-class")
        for name, args in (
            ("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(self.port),
                        "--webui-port", str(self.ui)]),
            ("worker", ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "2",
                        "--memory", "2g", "--webui-port", str(free_port()), "--work-dir", str(root / "work"),
                        f"spark://127.0.0.1:{self.port}"]),
        ):
            with open(root / f"{name}.log", "ab") as log:
                self.procs.append(subprocess.Popen([cls, *args], stdout=log, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL, env=env, preexec_fn=_pdeathsig))

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def wait_worker(self, timeout: float = 180) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ui}/json/", timeout=5) as r:
                    if json.loads(r.read()).get("aliveworkers", 0) >= 1:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"the standalone worker did not register within {timeout}s; see {self.root}/*.log")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
