"""The Java load generator (io.sparkext.bench.PointLoad) against a real embedded server and
a real redis-server: it does operations, checks every value it reads, and fails loudly
when a value is wrong. Short runs (1 s); no timing thresholds.

The spark-ext tests need no Redis. The Redis test is never skipped: a missing
redis-server is installed as ``make bench-server`` installs it (apt-get; ``sudo -n``
when not root), and the test fails, saying how to install it, when that is not possible.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.jvm.conftest import run_java

KEYS = 2000
TABLE = "pl_kv"
MAIN = "io.sparkext.bench.PointLoad"


def pool_values(n: int = 16, size: int = 100) -> list[str]:
    import random

    rng = random.Random(7)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return ["".join(rng.choice(letters) for _ in range(size)) for _ in range(n)]


POOL = pool_values()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An embedded server with table pl_kv: keys 0..KEYS-1, key k holding POOL[k % 16]."""
    from spark_ext.client.client import StoreClient
    from spark_ext.client.embedded import ensure_embedded
    from spark_ext.spark.testing import PrivateHome

    home = PrivateHome(tmp_path_factory.mktemp("plhome")).start()
    try:
        (host, port), secret = ensure_embedded()
        pid = home.server_pid()
        with StoreClient((host, port), secret) as c:
            c.create_table(TABLE, [("id", "int64"), ("v", "string")], primary_key="id")
            c.put(TABLE, [(i, POOL[i % len(POOL)]) for i in range(KEYS)])
            c.create_table("pl_bad", [("id", "int64"), ("n", "int64")], primary_key="id")
        values = home.path / "values.txt"
        values.write_text("\n".join(POOL) + "\n")
        yield {"host": host, "port": port, "secret": home.path / "secret", "pid": pid, "values": values,
               "client": lambda: StoreClient((host, port), secret)}
    finally:
        home.stop()


def spark_args(srv: dict[str, Any], op: str, *extra: str) -> list[str]:
    return ["--system", "spark", "--host", srv["host"], "--port", str(srv["port"]), "--secret-file", str(srv["secret"]),
            "--table", TABLE, "--op", op, "--values", str(srv["values"]), "--keys", str(KEYS), "--threads", "2",
            "--seconds", "1", "--warmup", "200", "--seed", "11", *extra]


def run_ok(java_cp: str, args: list[str]) -> dict[str, Any]:
    r = run_java(java_cp, MAIN, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_usage_errors_name_the_option(java_cp: str) -> None:
    r = run_java(java_cp, MAIN, "--system", "spark", "--port", "1", "--op", "scan", "--values", "x")
    assert r.returncode == 2 and "--op must be get or put, got 'scan'" in r.stderr, r.stderr
    r = run_java(java_cp, MAIN, "--system", "redis", "--port", "1", "--op", "put", "--values", "x", "--keys", "3")
    assert r.returncode == 2 and "--keys (3) must be at least --threads (8)" in r.stderr, r.stderr


def test_spark_gets_checked_then_puts_read_back(java_cp: str, server: dict[str, Any], tmp_path: Path) -> None:
    lat = tmp_path / "lat.bin"
    out = run_ok(java_cp, spark_args(server, "get", "--expect", "preloaded", "--server-pid", str(server["pid"]),
                                      "--clk-tck", str(os.sysconf("SC_CLK_TCK")), "--lat-out", str(lat)))
    assert out["system"] == "spark" and out["op"] == "get" and out["threads"] == 2
    assert out["ops"] > 0 and out["gets_checked"] == out["ops"]  # every reply matched POOL[k % 16]
    assert lat.stat().st_size == 8 * out["ops"]
    assert out["server_cpu_s"] is not None and out["server_cpu_s"] >= 0
    assert 0 < out["latency_us"]["p50"] <= out["latency_us"]["p99"] <= out["latency_us"]["max"]

    out = run_ok(java_cp, spark_args(server, "put"))
    assert out["ops"] > 0 and out["puts_read_back"] >= 2  # each thread read its last writes back
    with server["client"]() as c:
        assert c.count(TABLE) == KEYS  # upserts of existing keys: no row added
        rows = c.scan(TABLE).to_pylist()
    assert all(r["v"] in POOL for r in rows)
    assert sum(r["v"] != POOL[r["id"] % len(POOL)] for r in rows) > 0  # the puts changed values

    # The keys no longer hold their preloaded values: the exact check must now fail.
    r = run_java(java_cp, MAIN, *spark_args(server, "get", "--expect", "preloaded"))
    assert r.returncode == 1 and "expected the preloaded value" in r.stderr, r.stdout + r.stderr
    # ... while any value of the pool still passes.
    out = run_ok(java_cp, spark_args(server, "get"))
    assert out["ops"] > 0 and out["gets_checked"] == out["ops"]


def test_spark_wrong_table_shape_is_refused(java_cp: str, server: dict[str, Any]) -> None:
    args = spark_args(server, "get")
    args[args.index(TABLE)] = "pl_bad"
    r = run_java(java_cp, MAIN, *args)
    assert r.returncode == 1 and "table 'default.pl_bad' has columns [id, n]" in r.stderr, r.stderr


def redis_binary() -> str:
    """The redis-server executable, installed first when missing (as ``make bench-server``
    does); fails the test, never skips it, when it cannot be had."""
    binary = shutil.which("redis-server")
    if binary is not None:
        return binary
    apt = shutil.which("apt-get")
    why = "apt-get is not available"
    if apt is not None:
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]  # -n: fail at once rather than ask for a password
        why = ""
        for cmd in (["update", "-qq"], ["install", "-y", "-qq", "redis-server"]):
            r = subprocess.run([*sudo, "env", "DEBIAN_FRONTEND=noninteractive", apt, *cmd],
                               capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                why = f"apt-get {cmd[0]} failed: {(r.stderr or r.stdout).strip()[-400:]}"
                break
        binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(f"redis-server is needed to test PointLoad's RESP side and could not be installed ({why}); "
                    "install it (apt-get install redis-server) and run again")
    return binary


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = redis_binary()
    import redis

    d = tmp_path_factory.mktemp("plredis")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(d), "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis("127.0.0.1", port)
        for _ in range(200):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        r.mset({str(i): POOL[i % len(POOL)] for i in range(KEYS)})
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_gets_checked_and_sets_read_back(java_cp: str, redis_server: int, tmp_path: Path) -> None:
    values = tmp_path / "values.txt"
    values.write_text("\n".join(POOL) + "\n")
    base = ["--system", "redis", "--port", str(redis_server), "--values", str(values), "--keys", str(KEYS),
            "--threads", "2", "--seconds", "1", "--warmup", "200"]
    out = run_ok(java_cp, [*base, "--op", "get", "--expect", "preloaded"])
    assert out["ops"] > 0 and out["gets_checked"] == out["ops"]
    out = run_ok(java_cp, [*base, "--op", "put"])
    assert out["ops"] > 0 and out["puts_read_back"] >= 2
    import redis

    vals = redis.Redis("127.0.0.1", redis_server, decode_responses=True).mget([str(i) for i in range(KEYS)])
    assert all(v in POOL for v in vals)
    assert sum(v != POOL[i % len(POOL)] for i, v in enumerate(vals)) > 0
