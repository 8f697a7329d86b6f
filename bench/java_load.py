"""Run the Java load generator (``io.sparkext.bench.PointLoad``) from the benchmarks.

The generator lives in ``jvm_bridge/src/test/java/io/sparkext/bench/`` and is compiled
into ``build/test-classes`` by ``jvm_bridge/build.sh`` (not shipped in the jar). One run
is one JVM: N threads in one process, each with its own connection, doing GET or PUT of
random existing keys for a fixed time after a common start, checking every reply. This
module finds or builds it (:func:`java_classpath`) and runs one timed round
(:func:`run_point_load`), returning its JSON summary and raw per-op latencies.
"""

from __future__ import annotations

import array
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MAIN = "io.sparkext.bench.PointLoad"
# One GC thread and no concurrent collector: the generator allocates little, and on a
# small machine every extra JVM thread competes with the server under test.
JVM_FLAGS = ("-XX:+UseSerialGC", "-Xms64m", "-Xmx512m")


class JavaLoadError(RuntimeError):
    """The load generator is unavailable, or a run failed (the message says which)."""


def _pyspark_jars() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent / "jars"


def java_classpath() -> str:
    """The classpath of the load generator, building it first if needed.

    Runs ``jvm_bridge/build.sh`` (quick when nothing changed). The generator needs only
    the bridge's wire classes and Jackson from pyspark's jars.

    Raises:
        JavaLoadError: no ``java``/``javac`` on PATH, or the build failed.
    """
    for tool in ("java", "javac"):
        if shutil.which(tool) is None:
            raise JavaLoadError(f"no `{tool}` on PATH: the Java load generator needs a JDK 17")
    r = subprocess.run(["bash", str(ROOT / "jvm_bridge" / "build.sh")], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHON": sys.executable})
    if r.returncode != 0:
        raise JavaLoadError(f"jvm_bridge/build.sh failed: {(r.stderr or r.stdout).strip()[-2000:]}")
    classes, tests = ROOT / "build" / "classes", ROOT / "build" / "test-classes"
    if not (tests / "io" / "sparkext" / "bench" / "PointLoad.class").exists():
        raise JavaLoadError(f"{MAIN} was not compiled into {tests}")
    jackson = sorted(glob.glob(str(_pyspark_jars() / "jackson-*.jar")))
    if not jackson:
        raise JavaLoadError(f"no Jackson jars in {_pyspark_jars()}")
    return os.pathsep.join([str(classes), str(tests), *jackson])


@dataclass
class LoadRound:
    """One run of the generator: its JSON summary and every op's latency (ns)."""

    summary: dict[str, Any]
    lat_ns: array.array  # of 'q'

    @property
    def ops(self) -> int:
        return int(self.summary["ops"])


def run_point_load(cp: str, *, system: str, port: int, op: str, threads: int, seconds: float, keys: int,
                   values_file: Path, seed: int, warmup: int, server_pid: int, secret_file: Path | None = None,
                   table: str = "bench_kv", expect: str = "pool", timeout_s: float = 300.0) -> LoadRound:
    """One timed round of the Java load generator against ``127.0.0.1:port``.

    Args:
        cp: from :func:`java_classpath`.
        system: ``"spark"`` (spark-ext protocol) or ``"redis"`` (RESP).
        op: ``"get"`` or ``"put"``.
        threads: client threads, one connection each, all in the one JVM.
        seconds: length of the timed window.
        keys: keys ``0 .. keys-1`` exist; ``values_file`` holds the value pool, one a line.
        seed: the key streams' seed.
        warmup: untimed ops per thread before the window (connect, JIT).
        server_pid: the server process whose CPU time is read over the window.
        secret_file: the spark-ext secret (None for Redis).
        expect: ``"pool"`` (a GET must return a pool value) or ``"preloaded"``.

    Raises:
        JavaLoadError: the run failed (a connection, a wrong reply, a failed check).
    """
    with tempfile.NamedTemporaryFile(prefix="pointload-", suffix=".lat", delete=False) as f:
        lat_path = Path(f.name)
    try:
        cmd = ["java", *JVM_FLAGS, "-cp", cp, MAIN, "--system", system, "--host", "127.0.0.1", "--port", str(port),
               "--op", op, "--threads", str(threads), "--seconds", f"{seconds:g}", "--keys", str(keys),
               "--values", str(values_file), "--seed", str(seed), "--warmup", str(warmup), "--expect", expect,
               "--server-pid", str(server_pid), "--clk-tck", str(os.sysconf("SC_CLK_TCK")), "--lat-out", str(lat_path)]
        if system == "spark":
            if secret_file is None:
                raise JavaLoadError("a spark-ext run needs the server's secret file")
            cmd += ["--secret-file", str(secret_file), "--table", table]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise JavaLoadError(f"Java load generator ({system} {op}) did not finish in {timeout_s:g} s") from e
        if r.returncode != 0:
            raise JavaLoadError(f"Java load generator ({system} {op}, {threads} threads) failed "
                                f"(exit {r.returncode}): {(r.stderr or r.stdout).strip()[-2000:]}")
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        lat = array.array("q")
        lat.frombytes(lat_path.read_bytes())
        if sys.byteorder != "little":
            lat.byteswap()  # the generator writes little-endian int64
        if len(lat) != summary["ops"]:
            raise JavaLoadError(f"Java load generator wrote {len(lat)} latencies for {summary['ops']} ops")
        return LoadRound(summary, lat)
    finally:
        lat_path.unlink(missing_ok=True)
