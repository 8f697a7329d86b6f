"""Store server benchmark: point get and put round trips against Redis, on loopback.

Run::

    python -m bench.server_bench              # the full run (about 1.5 minutes)
    python -m bench.server_bench --quick      # shorter phases, no extra rows (smoke test)
    python -m bench.server_bench --procs 1    # the 8 client threads in one process
    python -m bench.server_bench --no-java-clients   # only the Python client rows

What runs: one spark-ext embedded server (locator and store server in one process,
``spark-ext server start --embedded --foreground``, log flush ``group``) and Debian's
``redis-server`` (``/usr/bin/redis-server``, started here on a free loopback port,
``--save ""`` and ``--appendonly yes --appendfsync everysec``: a log written on every
write and fsynced in the background, the nearest Redis setting to flush ``group``).
Both get the same data and the same requests:

* 100,000 keys preloaded: spark-ext table ``bench_kv (id BIGINT primary key, v STRING)``
  with a 100-byte ASCII ``v``; Redis ``SET <id> <100-byte value>`` (the key is the id's
  decimal text); optionally the same row as a Redis hash ``HSET h:<id> id <id> v <value>``;
* point get: ``StoreClient.get("bench_kv", id)`` against ``GET <id>`` (and ``HGETALL``);
* point put: ``StoreClient.put("bench_kv", [(id, value)])`` (an upsert of an existing
  key, one row, one statement) against ``SET <id> <value>`` (and ``HSET``);
* random existing keys from a fixed seed (each client thread its own stream), values
  drawn from a fixed pool of 100-byte strings; both clients return Python ``str``
  (redis-py with ``decode_responses=True``).

Each client thread has its own client and its own connection (a ``StoreClient`` per
thread; a ``redis.Redis`` per thread). With 8 threads they are spread over ``--procs``
client processes (default 8: one thread per process), so that the Python client's GIL
caps neither system; ``--procs 1`` puts all 8 threads in one process. Every thread loops
for a fixed time after a common start instant, timing each call with
``time.perf_counter_ns`` (the cyclic GC paused, as in the other benchmarks); ops/s is all
threads' calls over the wall time from the start instant to the last reply. Phases run
spark-ext and Redis alternately in short rounds, so both see the same machine load.
Server CPU per op is read from ``/proc/<pid>/stat``; client CPU per op from the client
processes' ``getrusage``.

Java load generator rows (on when ``java`` and ``javac`` are on PATH; ``--no-java-clients``
turns them off, and the run says when they are skipped): the same gets and puts driven by
``io.sparkext.bench.PointLoad`` (``jvm_bridge/src/test/java``, see ``bench/java_load.py``),
**all client threads in one JVM process**, each thread with its own connection (spark-ext's
protocol through the bridge's Java ``Connection``; RESP to Redis), random existing keys
from a fixed seed (Java's ``SplittableRandom``, one stream per thread, the same for both
systems; a put thread writes only keys ``= thread mod threads``), values from the same
pool; every reply is checked (a GET must return a value of the pool, a PUT one row, and
each put thread reads its last writes back). A Java client thread costs 10-30 us of CPU
per op, mostly socket calls and wake-ups, where a Python client costs 30-100 us, so these
rows come nearer to what the servers can do when the harness is not the limit. They run after the Python rows, alternating spark-ext
and Redis rounds like them, each round one JVM (connect and 10,000 untimed ops per thread
first, so that the JIT has compiled the client's hot path before the timed window: with
2,000 the C2 compiler was still at work in the window, about a tenth of the machine).

Extra rows (skipped with ``--quick`` / ``--no-extras``): Redis hashes (``HGETALL``/``HSET``
of the same two fields), and puts with flush ``commit`` (a second spark-ext server, fsync
on every commit) beside Redis with ``appendfsync always``.

Targets (issue 3): spark-ext p50 get <= 2x Redis's p50 get measured beside it (judged on
the Python client rows), and at least 20,000 point ops/s from one server process with 8
client threads (judged on the Java load generator rows when they ran: with the Python
clients on a 2-core machine the clients, not the server, set the rate; the Python rows
are then shown for reference). Results: tables
on stdout, JSON in ``bench/results/server.json``, Markdown in ``bench/results/server.md``.
"""

from __future__ import annotations

import argparse
import array
import gc
import json
import multiprocessing as mp
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from bench.common import (
    RESULTS_DIR,
    LatencyStats,
    fmt_num,
    fmt_ratio,
    format_table,
    gc_paused,
    load_average,
    log,
    machine_info,
    markdown_table,
    write_json,
)
from bench.java_load import JavaLoadError, java_classpath, run_point_load

SPARK = "spark-ext"
REDIS = "redis"
TABLE = "bench_kv"
HASH_PREFIX = "h:"
TARGET_P50_RATIO = 2.0
TARGET_OPS = 20_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
PY_CLIENT = "python"
JAVA_CLIENT = "java"
JAVA_WARMUP = 10_000
# What the "client" column says for each harness.
CLIENT_LABELS = {PY_CLIENT: "Python, a process per thread", JAVA_CLIENT: "Java load generator, one process"}

# (system, op) -> what the row is called in the tables
OP_LABELS = {
    (SPARK, "get"): "get",
    (SPARK, "put"): "put (1-row upsert)",
    (REDIS, "get"): "GET",
    (REDIS, "put"): "SET",
    (REDIS, "hget"): "HGETALL",
    (REDIS, "hput"): "HSET",
}


# --- configuration -------------------------------------------------------------------


@dataclass
class Config:
    keys: int = 100_000
    value_bytes: int = 100
    seed: int = 20240607
    threads: tuple[int, ...] = (1, 8)
    procs: int = 8
    round_s: float = 1.5
    rounds: int = 2
    warmup: int = 300
    extras: bool = True
    quick: bool = False
    java: bool = True
    out: Path = field(default_factory=lambda: RESULTS_DIR / "server.json")


def value_pool(cfg: Config, n: int = 256) -> list[str]:
    """``n`` distinct ASCII strings of ``value_bytes`` characters, from the seed."""
    import numpy as np

    rng = np.random.default_rng(cfg.seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", dtype=np.uint8)
    raw = letters[rng.integers(0, len(letters), (n, cfg.value_bytes))]
    return [bytes(r).decode("ascii") for r in raw]


# --- processes under test ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    secret: bytes | None = None
    workdir: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait_for(cond: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, logfile: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = Path(logfile).read_text(errors="replace")[-3000:] if os.path.exists(logfile) else ""
            raise SystemExit(f"{what} did not start (exit {proc.poll()}):\n{tail}")
        time.sleep(0.05)


def start_spark(workdir: str, flush: str, tree: Path | None = None, tag: str | None = None) -> Server:
    """An embedded spark-ext server (locator + store server) in its own process.

    ``tree``: run the ``spark_ext`` package of that source tree instead of the installed
    one (``bench/java_ab.py`` compares two trees); ``tag`` names the server's home.
    """
    home = os.path.join(workdir, f"home-{tag or flush}")
    os.makedirs(home, mode=0o700)
    run = os.path.join(home, "run.json")
    logfile = os.path.join(home, "server.log")
    env = {**os.environ, "SPARK_EXT_HOME": home}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    env.pop("SPARK_EXT_SECRET", None)
    cmd = [sys.executable, "-m", "spark_ext.cli", "server", "start", "--embedded", "--foreground",
           "--run-file", run, "--data-dir", os.path.join(home, "data"), "--flush", flush, "--log-level", "warning"]
    with open(logfile, "wb") as lf:
        # With a tree, cwd = the tree too: "-m" puts the working directory first on sys.path.
        proc = subprocess.Popen(cmd, env=env, cwd=tree, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def ready() -> bool:
        try:
            json.loads(Path(run).read_text())
            return True
        except (OSError, ValueError):
            return False

    what = f"server of tree {tag} ({tree})" if tree is not None else f"spark-ext server (flush={flush})"
    _wait_for(ready, proc, what, logfile)
    info = json.loads(Path(run).read_text())
    secret = Path(home, "secret").read_bytes().strip()
    return Server(tag or f"{SPARK} flush={flush}", proc, int(info["port"]), secret, home)


def redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise SystemExit("redis-server is not installed: `make bench-server` installs it (apt-get install -y redis-server)")
    return path


def redis_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()


def start_redis(workdir: str) -> Server:
    """Debian's redis-server on a free loopback port, AOF on (fsync every second), no RDB."""
    binary = redis_binary()
    d = os.path.join(workdir, "redis")
    os.makedirs(d)
    port = free_port()
    logfile = os.path.join(d, "redis.log")
    cmd = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", d, "--save", "",
           "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no",
           "--logfile", logfile, "--protected-mode", "yes"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    import redis

    def ready() -> bool:
        try:
            return bool(redis.Redis("127.0.0.1", port, socket_connect_timeout=0.2).ping())
        except redis.RedisError:
            return False

    _wait_for(ready, proc, "redis-server", logfile)
    return Server(f"{REDIS} appendfsync=everysec", proc, port, None, d)


# --- preload -------------------------------------------------------------------------


def preload_spark(srv: Server, cfg: Config, pool: list[str]) -> None:
    import numpy as np
    import pyarrow as pa
    from spark_ext.client.client import StoreClient

    with StoreClient(("127.0.0.1", srv.port), srv.secret) as c:
        c.create_table(TABLE, [("id", "int64"), ("v", "string")], primary_key="id")
        step = 10_000
        for lo in range(0, cfg.keys, step):
            ids = np.arange(lo, min(lo + step, cfg.keys), dtype=np.int64)
            vs = [pool[i % len(pool)] for i in ids.tolist()]
            c.put(TABLE, pa.record_batch({"id": pa.array(ids), "v": pa.array(vs, pa.string())}))
        n = c.count(TABLE)
        row = c.get(TABLE, cfg.keys - 1)
    if n != cfg.keys or row is None or len(row[1]) != cfg.value_bytes:
        raise SystemExit(f"spark-ext preload failed: {n} rows, last row {row!r}")


def preload_redis(srv: Server, cfg: Config, pool: list[str], hashes: bool) -> None:
    import redis

    r = redis.Redis("127.0.0.1", srv.port, decode_responses=True)
    step = 10_000
    for lo in range(0, cfg.keys, step):
        ids = range(lo, min(lo + step, cfg.keys))
        r.mset({str(i): pool[i % len(pool)] for i in ids})
        if hashes:
            p = r.pipeline(transaction=False)
            for i in ids:
                p.hset(f"{HASH_PREFIX}{i}", mapping={"id": str(i), "v": pool[i % len(pool)]})
            p.execute()
    want = cfg.keys * (2 if hashes else 1)
    if r.dbsize() != want or len(r.get(str(cfg.keys - 1)) or "") != cfg.value_bytes:
        raise SystemExit(f"redis preload failed: dbsize {r.dbsize()}, expected {want}")
    r.close()


# --- client worker processes ---------------------------------------------------------


def _make_op(spec: dict[str, Any], pool: list[str]) -> tuple[Callable[[int, int], Any], Callable[[], None]]:
    """The timed call ``op(key, value_index)`` for one thread, and how to close its client."""
    system, op = spec["system"], spec["op"]
    if system == SPARK:
        from spark_ext.client.client import StoreClient

        c = StoreClient(("127.0.0.1", spec["port"]), spec["secret"])
        if op == "get":
            get = c.get
            return (lambda k, vi: get(TABLE, k)), c.close
        put = c.put
        return (lambda k, vi: put(TABLE, [(k, pool[vi])])), c.close
    import redis

    r = redis.Redis("127.0.0.1", spec["port"], decode_responses=True)
    skeys = spec["skeys"]
    if op == "get":
        rget = r.get
        return (lambda k, vi: rget(skeys[k])), r.close
    if op == "put":
        rset = r.set
        return (lambda k, vi: rset(skeys[k], pool[vi])), r.close
    hkeys = spec["hkeys"]
    if op == "hget":
        hgetall = r.hgetall
        return (lambda k, vi: hgetall(hkeys[k])), r.close
    hset = r.hset
    return (lambda k, vi: hset(hkeys[k], mapping={"id": skeys[k], "v": pool[vi]})), r.close


def _thread_stream(cfg_seed: int, thread_id: int, nkeys: int, npool: int, n: int = 65536) -> tuple[list[int], list[int]]:
    """Random keys and value indexes of one client thread (fixed seed per thread)."""
    import numpy as np

    rng = np.random.default_rng([cfg_seed, thread_id])
    return rng.integers(0, nkeys, n).tolist(), rng.integers(0, npool, n).tolist()


def _warm_up(op: Callable[[int, int], Any], keys: list[int], vals: list[int], warmup: int) -> None:
    """Connect and make ``warmup`` calls (keys from the end of the thread's stream)."""
    n = len(keys)
    for i in range(warmup):
        op(keys[-1 - i % n], vals[-1 - i % n])


def _run_thread(op: Callable[[int, int], Any], keys: list[int], vals: list[int], offset: int,
                start_ns: int, end_ns: int, out: dict[str, Any]) -> None:
    try:
        n = len(keys)
        lat = array.array("q")
        append = lat.append
        clock = time.perf_counter_ns
        while clock() < start_ns:
            time.sleep(max(0.0, (start_ns - clock()) / 1e9 - 0.0005))
        i = offset
        t1 = first_ns = clock()
        while True:
            k = keys[i % n]
            v = vals[i % n]
            t0 = clock()
            op(k, v)
            t1 = clock()
            append(t1 - t0)
            i += 1
            if t1 >= end_ns:
                break
        out["lat"] = lat.tobytes()
        out["last_ns"] = t1
        out["late_ns"] = max(0, first_ns - start_ns)
    except BaseException as e:  # reported to the parent, which fails the run
        out["error"] = f"{type(e).__name__}: {e}"


def worker_main(conn: Any, pool: list[str], nkeys: int, seed: int, thread_ids: Sequence[int]) -> None:
    """A client process: runs its share of each phase's threads on command."""
    skeys = [str(i) for i in range(nkeys)]
    hkeys = [f"{HASH_PREFIX}{i}" for i in range(nkeys)]
    streams: dict[int, tuple[list[int], list[int]]] = {
        tid: _thread_stream(seed, tid, nkeys, len(pool)) for tid in thread_ids}
    gc.collect()
    gc.freeze()  # the key lists and streams: never traversed by a collection again
    conn.send("up")
    while True:
        msg = conn.recv()
        if msg is None:
            return
        spec = dict(msg)
        spec["skeys"], spec["hkeys"] = skeys, hkeys
        ops, closers, results = [], [], []
        try:
            for tid in spec["thread_ids"]:
                op, close = _make_op(spec, pool)
                ops.append(op)
                closers.append(close)
                if tid not in streams:
                    streams[tid] = _thread_stream(seed, tid, nkeys, len(pool))
                _warm_up(op, *streams[tid], spec["warmup"])
            # Connected and warmed up; collect garbage now, not in the timed window, then
            # start together at the instant the parent sends.
            with gc_paused():
                conn.send("ready")
                start_ns, end_ns = conn.recv()
                ru0 = resource.getrusage(resource.RUSAGE_SELF)
                threads = []
                for op, tid in zip(ops, spec["thread_ids"]):
                    res: dict[str, Any] = {}
                    results.append(res)
                    keys, vals = streams[tid]
                    threads.append(threading.Thread(
                        target=_run_thread, args=(op, keys, vals, spec["offset"], start_ns, end_ns, res)))
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                ru1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
            errors = [r["error"] for r in results if "error" in r]
            conn.send({"error": errors[0]} if errors else {
                "lat": [r["lat"] for r in results], "last_ns": max(r["last_ns"] for r in results), "cpu_s": cpu,
                "late_ns": max(r["late_ns"] for r in results)})
        except BaseException as e:
            conn.send({"error": f"{type(e).__name__}: {e}"})
        finally:
            for close in closers:
                try:
                    close()
                except Exception:
                    pass


class Workers:
    """``n`` client processes (spawned, so they share nothing with this one)."""

    def __init__(self, n: int, pool: list[str], cfg: Config) -> None:
        ctx = mp.get_context("spawn")
        self.conns = []
        self.procs = []
        for w in range(n):
            parent, child = ctx.Pipe()
            tids = list(range(w, max(cfg.threads), n))  # what run_round hands this worker
            p = ctx.Process(target=worker_main, args=(child, pool, cfg.keys, cfg.seed, tids), daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)
        for c in self.conns:
            if not c.poll(120) or c.recv() != "up":
                raise SystemExit("a client worker process did not start")

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(None)
            except OSError:
                pass
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()


@dataclass
class Sample:
    """One round of one phase: raw latencies and the figures to pool across rounds."""

    lat_ns: list[int]
    ops: int
    wall_s: float
    server_cpu_s: float
    client_cpu_s: float
    server_sys_s: float | None = None  # of server_cpu_s, system time (Java rows)


def run_round(workers: Workers, cfg: Config, srv: Server, system: str, op: str, threads: int, rnd: int = 0) -> Sample:
    """``threads`` client threads doing ``op`` against ``srv`` for ``cfg.round_s`` seconds."""
    nproc = min(threads, cfg.procs, len(workers.conns))
    share = [list(range(threads))[i::nproc] for i in range(nproc)]
    base = {"system": system, "op": op, "port": srv.port, "secret": srv.secret, "warmup": cfg.warmup,
            "offset": rnd * 16_384}
    used = workers.conns[:nproc]
    for c, tids in zip(used, share):
        c.send({**base, "thread_ids": tids})
    for c in used:
        msg = c.recv()
        if msg != "ready":
            raise SystemExit(f"{system} {op}: client failed during set-up: {msg.get('error') if isinstance(msg, dict) else msg}")
    cpu0 = cpu_seconds(srv.pid)
    start_ns = time.perf_counter_ns() + 100_000_000  # CLOCK_MONOTONIC: the same clock in every process
    end_ns = start_ns + int(cfg.round_s * 1e9)
    for c in used:
        c.send((start_ns, end_ns))
    replies = [c.recv() for c in used]
    cpu1 = cpu_seconds(srv.pid)
    for r in replies:
        if "error" in r:
            raise SystemExit(f"{system} {op} with {threads} threads failed: {r['error']}")
    lat: list[int] = []
    for r in replies:
        for b in r["lat"]:
            a = array.array("q")
            a.frombytes(b)
            lat.extend(a)
    wall = (max(r["last_ns"] for r in replies) - start_ns) / 1e9
    late = max(r["late_ns"] for r in replies) / 1e6
    if late > 0.05 * cfg.round_s * 1e3:
        log(f"  warning: a {system} client thread started {late:.0f} ms late (machine overloaded?)")
    return Sample(lat, len(lat), wall, cpu1 - cpu0, sum(r["cpu_s"] for r in replies))


@dataclass
class Result:
    system: str
    server: str
    op: str
    threads: int
    stats: LatencyStats
    ops: int
    ops_per_s: float
    server_cpu_us_per_op: float
    client_cpu_us_per_op: float
    client: str = PY_CLIENT
    server_sys_us_per_op: float | None = None

    @property
    def label(self) -> str:
        return OP_LABELS[(self.system, self.op)]

    @property
    def client_label(self) -> str:
        return CLIENT_LABELS[self.client]

    @property
    def server_ceiling(self) -> float | None:
        """Ops/s the server could serve if it had one CPU to itself and clients cost
        nothing: 1 s / its CPU time per op (both servers run their requests on one core:
        Redis by design, spark-ext under Python's GIL)."""
        return 1e6 / self.server_cpu_us_per_op if self.server_cpu_us_per_op > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {"system": self.system, "server": self.server, "op": self.op, "label": self.label,
                "threads": self.threads, "latency_us": self.stats.to_dict(), "ops": self.ops,
                "ops_per_s": self.ops_per_s, "server_cpu_us_per_op": self.server_cpu_us_per_op,
                "server_ceiling_ops_per_s": self.server_ceiling,
                "client_cpu_us_per_op": self.client_cpu_us_per_op, "client": self.client,
                "server_sys_us_per_op": self.server_sys_us_per_op}


def pooled(system: str, srv: Server, op: str, threads: int, samples: list[Sample], client: str = PY_CLIENT) -> Result:
    ops = sum(s.ops for s in samples)
    wall = sum(s.wall_s for s in samples)
    sys_s = [s.server_sys_s for s in samples]
    return Result(
        system=system, server=srv.name, op=op, threads=threads,
        stats=LatencyStats.from_ns(x for s in samples for x in s.lat_ns),
        ops=ops, ops_per_s=ops / wall,
        server_cpu_us_per_op=sum(s.server_cpu_s for s in samples) / ops * 1e6,
        client_cpu_us_per_op=sum(s.client_cpu_s for s in samples) / ops * 1e6,
        client=client,
        server_sys_us_per_op=None if None in sys_s else sum(x for x in sys_s if x is not None) / ops * 1e6,
    )


def run_group(workers: Workers, cfg: Config, threads: int, group: Sequence[tuple[str, Server, str]]) -> list[Result]:
    """Run several systems' phases alternately (a, b, c, a, b, c, ...) and pool each one's
    rounds, so that they all see the same machine load."""
    samples: list[list[Sample]] = [[] for _ in group]
    for rnd in range(cfg.rounds):
        for (system, srv, op), acc in zip(group, samples):
            acc.append(run_round(workers, cfg, srv, system, op, threads, rnd))
    out = [pooled(system, srv, op, threads, acc) for (system, srv, op), acc in zip(group, samples)]
    log_results(out)
    return out


def log_results(results: Sequence[Result]) -> None:
    """One progress line per result (stderr)."""
    for r in results:
        log(f"  {r.server:22s} {r.label:18s} {r.threads} thr{' [Java]' if r.client == JAVA_CLIENT else ''}: "
            f"p50 {r.stats.p50_us:7.1f} us  p99 {r.stats.p99_us:8.1f} us"
            f"  {r.ops_per_s:8.0f} ops/s  server CPU {r.server_cpu_us_per_op:5.1f} us/op"
            + (f" (system {r.server_sys_us_per_op:.1f})" if r.server_sys_us_per_op is not None else "")
            + f"  client CPU {r.client_cpu_us_per_op:5.1f} us/op")


@dataclass
class JavaRun:
    """What the Java load generator needs besides a server: its classpath and value pool."""

    cp: str
    values_file: Path


def run_java_round(java: JavaRun, cfg: Config, srv: Server, system: str, op: str, threads: int, rnd: int = 0) -> Sample:
    """One round of the Java load generator (one JVM, ``threads`` threads) against ``srv``."""
    secret_file = Path(srv.workdir, "secret") if system == SPARK else None
    try:
        lr = run_point_load(java.cp, system="spark" if system == SPARK else "redis", port=srv.port, op=op,
                            threads=threads, seconds=cfg.round_s, keys=cfg.keys, values_file=java.values_file,
                            seed=cfg.seed + rnd, warmup=500 if cfg.quick else JAVA_WARMUP, server_pid=srv.pid,
                            secret_file=secret_file, table=TABLE)
    except JavaLoadError as e:
        raise SystemExit(f"{system} {op} with {threads} Java threads failed: {e}") from e
    s = lr.summary
    if s["late_ms"] > 0.05 * cfg.round_s * 1e3:
        log(f"  warning: a Java {system} client thread started {s['late_ms']:.0f} ms late (machine overloaded?)")
    return Sample(list(lr.lat_ns), lr.ops, float(s["wall_s"]), float(s["server_cpu_s"]), float(s["client_cpu_s"]),
                  float(s["server_sys_s"]))


def run_java_group(java: JavaRun, cfg: Config, threads: int, group: Sequence[tuple[str, Server, str]]) -> list[Result]:
    """As :func:`run_group`, with the Java load generator as the client."""
    samples: list[list[Sample]] = [[] for _ in group]
    for rnd in range(cfg.rounds):
        for (system, srv, op), acc in zip(group, samples):
            acc.append(run_java_round(java, cfg, srv, system, op, threads, rnd))
    out = [pooled(system, srv, op, threads, acc, JAVA_CLIENT) for (system, srv, op), acc in zip(group, samples)]
    log_results(out)
    return out


# --- report --------------------------------------------------------------------------


def _us(v: float) -> str:
    return f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"


def results_rows(results: Sequence[Result]) -> list[list[Any]]:
    return [[r.server, r.label, r.client_label, r.threads, _us(r.stats.p50_us), _us(r.stats.p99_us), fmt_num(r.ops_per_s),
             f"{r.server_cpu_us_per_op:.1f}", fmt_num(r.server_ceiling), f"{r.client_cpu_us_per_op:.1f}", r.ops]
            for r in results]


RESULT_HEADERS = ["server", "op", "client", "threads", "p50 (us)", "p99 (us)", "ops/s",
                  "server CPU (us/op)", "server ceiling (ops/s)", "client CPU (us/op)", "calls"]
VS_HEADERS = ["op", "threads", "spark-ext p50", "Redis p50", "p50 x Redis", "spark-ext p99", "Redis p99",
              "p99 x Redis", "spark-ext ops/s", "Redis ops/s", "ops/s x Redis"]
TARGET_HEADERS = ["target", "measured", "met"]


def vs_rows(pairs: Sequence[tuple[Result, Result]]) -> list[list[Any]]:
    rows = []
    for s, r in pairs:
        by = " (Java load generator)" if s.client == JAVA_CLIENT else ""
        rows.append([f"{s.label}, flush={s.server.split('=')[-1]} vs {r.label}, {r.server.split(' ')[-1]}{by}", s.threads,
                     _us(s.stats.p50_us), _us(r.stats.p50_us), fmt_ratio(s.stats.p50_us / r.stats.p50_us),
                     _us(s.stats.p99_us), _us(r.stats.p99_us), fmt_ratio(s.stats.p99_us / r.stats.p99_us),
                     fmt_num(s.ops_per_s), fmt_num(r.ops_per_s), fmt_ratio(s.ops_per_s / r.ops_per_s)])
    return rows


def target_rows(pairs: dict[tuple[str, int], tuple[Result, Result]], threads: Sequence[int],
                java_pairs: dict[tuple[str, int], tuple[Result, Result]] | None = None) -> tuple[list[list[Any]], dict[str, bool]]:
    """The targets table. p50 targets are judged on the Python client rows; the ops/s
    targets on the Java load generator rows when there are any (the Python rows are then
    listed for reference, not judged: on a small machine their clients set the rate)."""
    rows: list[list[Any]] = []
    met: dict[str, bool] = {}
    for t in threads:
        if ("get", t) in pairs:
            s, r = pairs[("get", t)]
            ratio = s.stats.p50_us / r.stats.p50_us
            ok = ratio <= TARGET_P50_RATIO
            name = f"p50 get <= {TARGET_P50_RATIO:g}x Redis p50 GET, {t} thread{'s' if t > 1 else ''}"
            met[name] = ok
            rows.append([name, f"{_us(s.stats.p50_us)} us vs {_us(r.stats.p50_us)} us = {fmt_ratio(ratio)}",
                         "met" if ok else "NOT met"])
    tmax = max(threads)
    java_pairs = java_pairs or {}
    for op in ("get", "put"):
        judged_by_java = (op, tmax) in java_pairs
        for by, ps in ((PY_CLIENT, pairs), (JAVA_CLIENT, java_pairs)):
            if (op, tmax) not in ps:
                continue
            s, r = ps[(op, tmax)]
            ok = s.ops_per_s >= TARGET_OPS
            ceiling = f", server CPU ceiling {s.server_ceiling:,.0f}" if s.server_ceiling else ""
            measured = f"{s.ops_per_s:,.0f} ops/s (Redis {r.ops_per_s:,.0f}{ceiling})"
            name = f">= {TARGET_OPS:,} point {op} ops/s, {tmax} client threads, one server process"
            if by == JAVA_CLIENT:
                name += f" (Java load generator, {tmax} threads, one process)"
            elif judged_by_java:
                rows.append([name + f" (Python clients, {tmax} processes: for reference)", measured,
                             "not judged: client-bound"])
                continue
            met[name] = ok
            rows.append([name, measured, "met" if ok else "NOT met"])
    return rows, met


# --- main ----------------------------------------------------------------------------


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the code under test has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--", "spark_ext")
    return {"commit": git("rev-parse", "HEAD"), "spark_ext_changed_since_commit": bool(status) if status is not None else None}



def parse_args(argv: Sequence[str] | None) -> Config:
    ap = argparse.ArgumentParser(prog="python -m bench.server_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short phases, no extra rows (smoke test)")
    ap.add_argument("--keys", type=int, default=100_000, help="keys preloaded (default 100,000)")
    ap.add_argument("--value-bytes", type=int, default=100, help="size of each value (default 100)")
    ap.add_argument("--threads", default="1,8", help="client thread counts (default 1,8)")
    ap.add_argument("--procs", type=int, default=8,
                    help="client processes the threads are spread over (default 8: one thread each)")
    ap.add_argument("--round", type=float, default=1.5, dest="round_s", help="seconds per round (default 1.5)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per system and phase (default 2)")
    ap.add_argument("--no-extras", action="store_true", help="skip Redis hashes and the flush=commit rows")
    ap.add_argument("--no-java-clients", action="store_true",
                    help="skip the Java load generator rows (default: run them when java and javac are on PATH)")
    ap.add_argument("--seed", type=int, default=20240607)
    ap.add_argument("--out", type=Path, default=None, help="JSON results path (default bench/results/server.json)")
    a = ap.parse_args(argv)
    cfg = Config(keys=a.keys, value_bytes=a.value_bytes, seed=a.seed, procs=max(1, a.procs),
                 threads=tuple(sorted({int(x) for x in a.threads.split(",") if x.strip()})),
                 round_s=a.round_s, rounds=max(1, a.rounds), extras=not (a.no_extras or a.quick), quick=a.quick,
                 java=not a.no_java_clients)
    if a.quick:
        cfg.round_s, cfg.rounds, cfg.warmup = min(cfg.round_s, 0.5), 1, 100
        if a.keys == 100_000:
            cfg.keys = 20_000
    if cfg.keys < 1 or cfg.value_bytes < 1 or not cfg.threads or min(cfg.threads) < 1:
        ap.error("--keys, --value-bytes and --threads must be positive")
    cfg.out = a.out or RESULTS_DIR / ("server-quick.json" if a.quick else "server.json")
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    t_start = time.perf_counter()
    info = machine_info(["pyarrow", "numpy", "redis", "hiredis"])
    rbin = redis_binary()
    info["redis_server"] = {"path": rbin, "version": redis_version(rbin)}
    print(f"spark-ext server benchmark: {cfg.keys:,} keys, {cfg.value_bytes}-byte values, threads {list(cfg.threads)}, "
          f"{cfg.rounds} x {cfg.round_s:g} s per system and phase, client processes <= {cfg.procs}", flush=True)
    print(f"machine: {info['cpu_count']} CPUs ({info['cpu_model']}), load average {info['load_average']}, "
          f"Python {info['python']}, redis-server {info['redis_server']['version']}, redis-py {info['packages']['redis']}"
          f"{'' if info['packages'].get('hiredis') else ' (no hiredis)'}", flush=True)
    java_cp, java_note = None, "turned off (--no-java-clients)"
    if cfg.java:
        try:
            java_cp, java_note = java_classpath(), "ran"
        except JavaLoadError as e:
            java_note = f"skipped: {e}"
    info["java_load_generator"] = java_note
    print(f"Java load generator rows: {java_note}", flush=True)

    pool = value_pool(cfg)
    workdir = tempfile.mkdtemp(prefix="spark-ext-server-bench-")
    servers: list[Server] = []
    workers: Workers | None = None
    results: list[Result] = []
    pairs: list[tuple[Result, Result]] = []
    main_pairs: dict[tuple[str, int], tuple[Result, Result]] = {}
    java_pairs: dict[tuple[str, int], tuple[Result, Result]] = {}
    try:
        log(f"starting client processes, redis-server and spark-ext (flush=group) in {workdir}")
        workers = Workers(max(min(cfg.procs, max(cfg.threads)), 1), pool, cfg)
        redis_srv = start_redis(workdir)
        servers.append(redis_srv)
        spark = start_spark(workdir, "group")
        servers.append(spark)
        preload_redis(redis_srv, cfg, pool, hashes=cfg.extras)
        preload_spark(spark, cfg, pool)
        log(f"preloaded {cfg.keys:,} keys into both")

        for op, hop in (("get", "hget"), ("put", "hput")):
            for t in cfg.threads:
                group = [(SPARK, spark, op), (REDIS, redis_srv, op)] + ([(REDIS, redis_srv, hop)] if cfg.extras else [])
                rs = run_group(workers, cfg, t, group)
                results += rs
                main_pairs[(op, t)] = (rs[0], rs[1])
                pairs += [(rs[0], r) for r in rs[1:]]
        if java_cp is not None:
            log("the same gets and puts driven by the Java load generator (all threads in one JVM)")
            values_file = Path(workdir, "values.txt")
            values_file.write_text("\n".join(pool) + "\n", encoding="ascii")
            java = JavaRun(java_cp, values_file)
            for op in ("get", "put"):
                for t in cfg.threads:
                    rs = run_java_group(java, cfg, t, [(SPARK, spark, op), (REDIS, redis_srv, op)])
                    results += rs
                    java_pairs[(op, t)] = (rs[0], rs[1])
                    pairs.append((rs[0], rs[1]))
        spark.stop()
        servers.remove(spark)

        if cfg.extras:
            log("spark-ext with flush=commit beside Redis with appendfsync always")
            import redis

            rc = redis.Redis("127.0.0.1", redis_srv.port)
            rc.config_set("appendfsync", "always")
            redis_srv.name = f"{REDIS} appendfsync=always"
            commit = start_spark(workdir, "commit")
            servers.append(commit)
            preload_spark(commit, cfg, pool)
            for t in cfg.threads:
                sc, rc_ = run_group(workers, cfg, t, [(SPARK, commit, "put"), (REDIS, redis_srv, "put")])
                results += [sc, rc_]
                pairs.append((sc, rc_))
            rc.config_set("appendfsync", "everysec")
            rc.close()
    finally:
        if workers is not None:
            workers.close()
        for srv in servers:
            srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    res_rows = results_rows(results)
    v_rows = vs_rows(pairs)
    t_rows, met = target_rows(main_pairs, cfg.threads, java_pairs)
    elapsed = time.perf_counter() - t_start
    print()
    print(format_table(RESULT_HEADERS, res_rows, title="Per system (latency = one client call, send to reply decoded)"))
    print()
    print(format_table(VS_HEADERS, v_rows, title="spark-ext against Redis beside it (p50/p99 x Redis > 1: spark-ext slower; ops/s x Redis < 1: spark-ext fewer ops)"))
    print()
    print(format_table(TARGET_HEADERS, t_rows, title="Targets (issue 3)"))
    print(f"\nload average after the run: {load_average()}; took {elapsed:.0f} s", flush=True)

    payload = {
        "benchmark": "server", "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items()},
        "machine": info, "git": git_state(), "load_average_after": load_average(), "elapsed_s": elapsed,
        "results": results, "targets": met,
    }
    path = write_json(cfg.out, payload)
    md = [
        f"{cfg.keys:,} keys, {cfg.value_bytes}-byte values, {cfg.rounds} x {cfg.round_s:g} s per system and phase; "
        f"{info['cpu_count']} CPUs, load average {info['load_average']} before and {load_average()} after; "
        f"redis-server {info['redis_server']['version']}, redis-py {info['packages']['redis']}; "
        f"Java load generator rows: {java_note}.\n",
        markdown_table(RESULT_HEADERS, res_rows) + "\n",
        markdown_table(VS_HEADERS, v_rows) + "\n",
        markdown_table(TARGET_HEADERS, t_rows) + "\n",
    ]
    md_path = path.with_suffix(".md")
    md_path.write_text("\n".join(md))
    print(f"results: {path} and {md_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
