"""Two code trees side by side under the Java load generator, rounds interleaved.

On a shared machine the load moves by the minute, so a figure measured before a change
and one measured after it are not comparable. This runs two embedded servers at once,
one from each tree (``PYTHONPATH`` = the tree, so the tree's ``spark_ext`` is the one
imported), preloads both the same way as :mod:`bench.server_bench`, and alternates
Java load generator rounds between them (A B, B A, A B, ...), printing per round and
on average the ops/s, the server's CPU per op (from its ``/proc`` times over the
window) and its system part. Example, the code of a commit against the worktree::

    mkdir -p /tmp/base && git archive <commit> spark_ext | tar -x -C /tmp/base
    .venv/bin/python -m bench.java_ab --a /tmp/base --b . --op put --rounds 6
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Sequence

from bench.java_load import java_classpath, run_point_load
from bench.server_bench import JAVA_WARMUP, TABLE, Config, Server, preload_spark, start_spark, value_pool


def start_tree(tree: Path, workdir: str, tag: str, flush: str) -> Server:
    """An embedded server (locator + store server) running the ``spark_ext`` of ``tree``."""
    return start_spark(workdir, flush, tree=tree, tag=tag)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", type=Path, required=True, help="first tree (holding spark_ext/)")
    ap.add_argument("--b", type=Path, required=True, help="second tree")
    ap.add_argument("--op", choices=("get", "put"), default="put")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4, help="rounds per tree (default 4)")
    ap.add_argument("--seconds", type=float, default=2.5, help="timed window per round")
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--flush", choices=("commit", "group", "off"), default="group")
    ap.add_argument("--warmup", type=int, default=JAVA_WARMUP, help="untimed ops per thread per round")
    args = ap.parse_args(argv)
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    for tag, tree in trees.items():
        if not (tree / "spark_ext" / "__init__.py").exists():
            ap.error(f"--{tag.lower()} {tree}: no spark_ext/ package there")
    cfg = Config(keys=args.keys)
    pool = value_pool(cfg)
    cp = java_classpath()
    with tempfile.TemporaryDirectory(prefix="java-ab-") as wd:
        values = Path(wd, "values.txt")
        values.write_text("\n".join(pool) + "\n", encoding="ascii")
        servers: list[Server] = []
        try:
            for tag, tree in trees.items():
                servers.append(start_tree(tree, wd, tag, args.flush))
            for s in servers:
                preload_spark(s, cfg, pool)
            totals: dict[str, list[tuple[float, float, float]]] = {s.name: [] for s in servers}
            for r in range(args.rounds):
                for s in servers if r % 2 == 0 else servers[::-1]:
                    lr = run_point_load(cp, system="spark", port=s.port, op=args.op, threads=args.threads,
                                        seconds=args.seconds, keys=cfg.keys, values_file=values, seed=cfg.seed + r,
                                        warmup=args.warmup, server_pid=s.pid, secret_file=Path(s.workdir, "secret"),
                                        table=TABLE)
                    sm = lr.summary
                    ops = int(sm["ops"])
                    row = (ops / float(sm["wall_s"]), float(sm["server_cpu_s"]) / ops * 1e6,
                           float(sm["server_sys_s"]) / ops * 1e6)
                    totals[s.name].append(row)
                    print(f"round {r} {s.name}: {row[0]:8,.0f} ops/s  server CPU {row[1]:5.1f} us/op "
                          f"(system {row[2]:4.1f})  load {os.getloadavg()[0]:.1f}", flush=True)
            for name, rows in totals.items():
                n = len(rows)
                print(f"{name} ({trees[name]}): mean {sum(x[0] for x in rows) / n:8,.0f} ops/s, server CPU "
                      f"{sum(x[1] for x in rows) / n:5.1f} us/op (system {sum(x[2] for x in rows) / n:4.1f}), "
                      f"lowest {min(x[1] for x in rows):5.1f}")
        finally:
            for s in servers:
                s.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
