"""The child process of the crash test (tests/store/test_crash.py).

Usage: ``python crash_child.py DATA_DIR SEED ROUND CKPT_EVERY AUTO_CKPT_BYTES PAUSE_AT_PREPARE``

It opens ``Store(DATA_DIR, flush="commit")``, creates two tables if needed and then
mutates them forever (until the parent kills it with SIGKILL), printing to stdout, each
line flushed at once (every line is far below PIPE_BUF, so it is written whole or not
at all)::

    R                     ready: the store is open
    I <json>              intent: the operation about to run (its full description)
    A <seq> <result>      acknowledged: operation <seq> (0, 1, ... in intent order)
                          returned <result> (a row count, or null)
    P <txn>               a two-phase change set is prepared (not yet committed); at
                          the PAUSE_AT_PREPARE-th one (0: never) the child then sleeps
                          long enough for the parent to kill it in that window, leaving
                          the set in doubt

An operation whose ``A`` line was printed is *acknowledged*: it must survive the kill.
The last ``I`` line without an ``A`` is *in flight*: it may or may not have happened,
but never in part. ``CKPT_EVERY`` > 0 makes every that-many-th operation a
``checkpoint()`` call; ``AUTO_CKPT_BYTES`` > 0 also turns on background upkeep with
checkpoints every that many log bytes.

Operations (rows derive from the description, see :func:`apply_op`, which the parent
uses to build its model from the acknowledged lines):

* ``put``: upsert of a few rows of ``acct`` (point path);
* ``del``: delete of a few ``acct`` keys (present or not);
* ``bulk``: insert of an Arrow batch of >= 128 rows into ``item`` (vectorized path);
* ``bulkup``: upsert of an Arrow batch of >= 128 rows into ``acct`` over the point keys;
* ``uw``: update by predicate of every ``item`` row of one tag;
* ``cs``: one change set: a marker row in ``acct`` (``v`` = its item count), that many
  rows in ``item`` with the same tag (point or bulk), a few point upserts, and maybe the
  removal (delete by predicate in both tables) of an earlier change set; some are
  prepared first and committed after (two-phase);
* ``ckpt``: ``Store.checkpoint()``.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sys
import time
from typing import Any

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 5, 1, tzinfo=UTC)
POINT_IDS = 3000
MARKER_BASE = 1_000_000

ACCT_COLS = [("id", "int64"), ("tag", "string"), ("v", "int64"), ("s", "string")]
ITEM_COLS = [("tag", "string"), ("i", "int32"), ("v", "int64"), ("ts", "timestamp_tz")]


# --- rows of an operation (shared with the parent) ----------------------------------------


def put_rows(ids: list[int], v: int) -> list[tuple[Any, ...]]:
    return [(k, "p", v + j, None if (v + j) % 4 == 0 else f"s{v + j}") for j, k in enumerate(ids)]


def item_rows(tag: str, n: int, v: int) -> list[tuple[Any, ...]]:
    return [(tag, i, v + i, None if i % 5 == 4 else T0 + dt.timedelta(microseconds=v * 1000 + i)) for i in range(n)]


def bulkup_rows(lo: int, n: int, v: int) -> list[tuple[Any, ...]]:
    return [(lo + i, "u", v + i, None if i % 3 == 0 else f"u{i}") for i in range(n)]


def marker_row(op: dict[str, Any]) -> tuple[Any, ...]:
    return (op["id"], op["tag"], op["n"], "marker")


def apply_op(acct: dict[Any, tuple[Any, ...]], item: dict[Any, tuple[Any, ...]], op: dict[str, Any]) -> Any:
    """Apply one operation to the model (key -> row dicts); returns the expected result."""
    kind = op["op"]
    if kind == "put":
        for r in put_rows(op["ids"], op["v"]):
            acct[r[0]] = r
        return len(op["ids"])
    if kind == "del":
        hit = [k for k in dict.fromkeys(op["ids"]) if k in acct]
        for k in hit:
            del acct[k]
        return len(hit)
    if kind == "bulk":
        for r in item_rows(op["tag"], op["n"], op["v"]):
            item[(r[0], r[1])] = r
        return op["n"]
    if kind == "bulkup":
        for r in bulkup_rows(op["lo"], op["n"], op["v"]):
            acct[r[0]] = r
        return op["n"]
    if kind == "uw":
        hit = [k for k, r in item.items() if r[0] == op["tag"]]
        for k in hit:
            r = item[k]
            item[k] = (r[0], r[1], op["v"], r[3])
        return len(hit)
    if kind == "cs":
        old = op.get("drop")
        if old is not None:
            for k in [k for k, r in acct.items() if r[1] == old]:
                del acct[k]
            for k in [k for k, r in item.items() if r[0] == old]:
                del item[k]
        m = marker_row(op)
        acct[m[0]] = m
        for r in item_rows(op["tag"], op["n"], op["v"]):
            item[(r[0], r[1])] = r
        for r in put_rows(op["puts"], op["v"]):
            acct[r[0]] = r
        return None
    if kind == "ckpt":
        return None
    raise ValueError(f"unknown operation {kind!r}")


# --- the child ----------------------------------------------------------------------------


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _arrow(cols: list[tuple[str, str]], rows: list[tuple[Any, ...]]) -> Any:
    import pyarrow as pa

    from spark_ext.store.types import arrow_type

    return pa.table({name: pa.array([r[i] for r in rows], type=arrow_type(t)) for i, (name, t) in enumerate(cols)})


def main(argv: list[str]) -> None:
    data_dir, seed, rnd, ckpt_every, auto_ckpt = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    pause_at_prepare = int(argv[5])
    prepares = 0
    from spark_ext.store import Store, col

    kw: dict[str, Any] = {"background": False}
    if auto_ckpt > 0:
        kw = {"background": True, "checkpoint_log_bytes": auto_ckpt, "compaction_min_rows": 256}
    store = Store(data_dir, flush="commit", **kw)
    acct = store.create_table("acct", ACCT_COLS, primary_key="id", num_buckets=4, if_not_exists=True)
    item = store.create_table("item", ITEM_COLS, primary_key=["tag", "i"], num_buckets=3, if_not_exists=True)
    if "acct_tag" not in acct.index_defs:
        acct.create_index("acct_tag", "tag", "hash")
    if "item_v" not in item.index_defs:
        item.create_index("item_v", "v", "ordered")
    _emit("R")
    rng = random.Random(seed * 1000 + rnd)
    tags: list[str] = []  # acknowledged change-set tags of this round, still present
    bulk_tags: list[str] = []
    seq = 0
    while True:
        r = rng.random()
        v = rng.randrange(1, 1_000_000)
        if ckpt_every and seq % ckpt_every == ckpt_every - 1:
            op: dict[str, Any] = {"op": "ckpt"}
        elif r < 0.22:
            op = {"op": "put", "ids": rng.sample(range(POINT_IDS), rng.randint(1, 5)), "v": v}
        elif r < 0.34:
            op = {"op": "del", "ids": [rng.randrange(POINT_IDS) for _ in range(rng.randint(1, 5))]}
        elif r < 0.44:
            op = {"op": "bulk", "tag": f"r{rnd}-b{seq}", "n": rng.randint(128, 260), "v": v}
        elif r < 0.52:
            op = {"op": "bulkup", "lo": rng.randrange(POINT_IDS - 300), "n": rng.randint(128, 300), "v": v}
        elif r < 0.6 and (tags or bulk_tags):
            op = {"op": "uw", "tag": rng.choice(tags + bulk_tags), "v": v}
        else:
            n = rng.randint(128, 200) if rng.random() < 0.25 else rng.randint(2, 8)
            drop = tags.pop(rng.randrange(len(tags))) if tags and rng.random() < 0.3 else None
            op = {
                "op": "cs", "tag": f"r{rnd}-c{seq}", "id": MARKER_BASE + rnd * 100_000 + seq, "n": n, "v": v,
                "puts": rng.sample(range(POINT_IDS), rng.randint(0, 3)), "drop": drop,
                "prepare": rng.random() < 0.3, "txn": f"txn-{seed}-{rnd}-{seq}",
            }
        _emit("I " + json.dumps(op))
        kind = op["op"]
        result: Any = None
        if kind == "put":
            result = acct.upsert(put_rows(op["ids"], op["v"]))
        elif kind == "del":
            result = acct.delete(op["ids"])
        elif kind == "bulk":
            result = item.insert(_arrow(ITEM_COLS, item_rows(op["tag"], op["n"], op["v"])))
            bulk_tags.append(op["tag"])
        elif kind == "bulkup":
            result = acct.upsert(_arrow(ACCT_COLS, bulkup_rows(op["lo"], op["n"], op["v"])))
        elif kind == "uw":
            result = item.update_where(col("tag") == op["tag"], {"v": op["v"]})
        elif kind == "ckpt":
            store.checkpoint()
        else:
            cs = store.begin(op["txn"])
            if op["drop"] is not None:
                cs.delete_where("acct", col("tag") == op["drop"])
                cs.delete_where("item", ["=", "tag", op["drop"]])
            cs.upsert("acct", [marker_row(op)])
            rows = item_rows(op["tag"], op["n"], op["v"])
            cs.insert("item", _arrow(ITEM_COLS, rows) if op["n"] >= 128 else rows)
            if op["puts"]:
                cs.upsert("acct", put_rows(op["puts"], op["v"]))
            if op["prepare"]:
                cs.prepare()
                _emit(f"P {op['txn']}")
                prepares += 1
                if prepares == pause_at_prepare:
                    time.sleep(10)
            cs.commit()
            tags.append(op["tag"])
        _emit(f"A {seq} {json.dumps(result)}")
        seq += 1
        if seq >= 5000:
            store.close()
            _emit("DONE")
            return


if __name__ == "__main__":
    main(sys.argv[1:])
