"""The store server's side of a bulk INSERT, without Spark: where its seconds go.

Stages the same kind of rows as ``bench.spark_bench`` (``id BIGINT`` key, ``k INT``,
``x DOUBLE``, ``s STRING``, ``t TIMESTAMP``; 4 buckets) straight into an in-process
:class:`~spark_ext.server.store_service.StoreService` over a durable store (flush policy
``commit``), as the JVM writer does: ``--tasks`` parts, each sent as Arrow IPC batches of
``--batch`` rows (interleaved between the parts), each part prepared when its last batch
is in, then one one-phase ``TXN_COMMIT``. Prints the CPU and wall seconds of each phase
(stage, part prepares, commit); ``--profile`` adds a cProfile listing.

    python -m bench.bulk_stage_repro --rows 5000000 [--upsert] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa

from spark_ext.server.store_service import StoreService
from spark_ext.store import Store
from spark_ext.wire.arrowio import write_ipc_stream
from spark_ext.wire.frames import Flags, Frame
from spark_ext.wire.kinds import Kind


def make_rows(ids: np.ndarray, seed: int) -> pa.RecordBatch:
    """Rows with these keys (``bench.spark_bench``'s source holds a permutation of 0..n)."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    return pa.RecordBatch.from_arrays(
        [pa.array(ids), pa.array(rng.integers(0, 1000, n, dtype=np.int32)), pa.array(rng.random(n)),
         pa.array([f"s{i % 10007}" for i in range(n)]),
         pa.array((ids * 1000).astype("datetime64[us]")).cast(pa.timestamp("us", tz="UTC"))],
        names=["id", "k", "x", "s", "t"])


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(rows: int, tasks: int, batch: int, upsert: bool, data_dir: str) -> dict[str, Any]:
    store = Store(data_dir=data_dir, flush="commit", background=False)
    svc = StoreService(store)
    store.create_table("bench.t", [("id", "int64"), ("k", "int32"), ("x", "float64"), ("s", "string"),
                                   ("t", "timestamp_tz")], "id", 4)
    svc.owned["bench.t"] = None
    per = rows // tasks
    bodies: list[list[bytes]] = []
    ids = np.random.default_rng(20240601).permutation(per * tasks).astype(np.int64)
    for p in range(tasks):
        b = make_rows(ids[p * per:(p + 1) * per], seed=p)
        bodies.append([bytes(write_ipc_stream(b.slice(i, batch))) for i in range(0, per, batch)])
    out: dict[str, Any] = {}
    rid = iter(range(1, 1 << 30))
    for rnd in range(2 if upsert else 1):
        txn = f"tx{rnd}"
        op = "upsert" if rnd else "insert"
        c0, w0 = cpu(), time.perf_counter()
        for i in range(max(len(x) for x in bodies)):
            for p in range(tasks):
                if i < len(bodies[p]):
                    meta = {"txn": txn, "part": f"p{p}", "table": "bench.t", "op": op}
                    r = svc.txn_stage(Frame(int(Kind.TXN_STAGE), next(rid), meta, bodies[p][i],
                                            int(Flags.HAS_ARROW)), None)
                    assert not r.is_error, r.metadata
        c1, w1 = cpu(), time.perf_counter()
        for p in range(tasks):
            svc.txn_prepare(Frame(int(Kind.TXN_PREPARE), next(rid), {"txn": txn, "part": f"p{p}"}), None)
        c2, w2 = cpu(), time.perf_counter()
        svc.txn_commit(Frame(int(Kind.TXN_COMMIT), next(rid), {"txn": txn, "parts": [f"p{p}" for p in range(tasks)]}),
                       None)
        c3, w3 = cpu(), time.perf_counter()
        out[op] = {"stage": (c1 - c0, w1 - w0), "prepare": (c2 - c1, w2 - w1), "commit": (c3 - c2, w3 - w2),
                   "total": (c3 - c0, w3 - w0)}
        assert store.table("bench.t").count() == per * tasks
        store.compact()  # untimed: as the server's background upkeep does between statements
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--tasks", type=int, default=2)
    ap.add_argument("--batch", type=int, default=131_072)
    ap.add_argument("--upsert", action="store_true", help="also a second statement replacing every row")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bulk-repro-") as d:
        prof = cProfile.Profile() if a.profile else None
        if prof:
            prof.enable()
        res = run(a.rows, a.tasks, a.batch, a.upsert, d)
        if prof:
            prof.disable()
    for op, phases in res.items():
        print(f"{a.rows:,} rows, {op}: " + ", ".join(f"{k} {c:.2f} cpu / {w:.2f} wall s" for k, (c, w) in phases.items()))
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
