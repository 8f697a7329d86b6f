"""Compaction in three steps (begin under the table lock, build without it, finish under
it): point writes made while a bucket is being compacted are kept, anything that
restructures the bucket meanwhile makes the compaction step aside, and the background
upkeep compacts under a stream of writes without losing one.

The randomized test interleaves the steps of several compactions with every kind of
change, checks the table against a plain dict after every step, and runs the engine's
invariant check (``Table._check``) each time.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import pyarrow as pa
import pytest

from spark_ext.store import Store
from spark_ext.store.bucket import Compaction
from spark_ext.store.predicate import col
from spark_ext.store.table import Table
from tests.store.unit_helpers import contents, sort_rows


def _table(store: Store, int_key: bool, indexed: bool) -> Table:
    key_type = "int64" if int_key else "string"
    t = store.create_table("t", [("id", key_type), ("g", "int32"), ("s", "string")], primary_key="id", num_buckets=4)
    if indexed:
        t.create_index("by_g", "g")
    return t


def _key(int_key: bool, i: int) -> Any:
    return i if int_key else f"k{i:04d}"


def _check(t: Table, model: dict[Any, tuple[Any, ...]], indexed: bool, rng: random.Random) -> None:
    t._check()
    assert contents(t) == sort_rows(model.values())
    assert t.count() == len(model)
    for k in rng.sample(sorted(model), min(5, len(model))):
        assert t.get(k) == model[k]
    if indexed:
        g = rng.randrange(5)
        got = sorted(t.scan(where=col("g") == g).to_table().column("id").to_pylist())
        assert got == sorted(k for k, r in model.items() if r[1] == g)


@pytest.mark.parametrize("int_key", [True, False], ids=["int-key", "string-key"])
@pytest.mark.parametrize("indexed", [False, True], ids=["plain", "indexed"])
def test_interleaved_compaction_steps_keep_every_write(int_key: bool, indexed: bool) -> None:
    rng = random.Random(20261121 + 2 * int_key + indexed)
    store = Store(background=False)
    t = _table(store, int_key, indexed)
    model: dict[Any, tuple[Any, ...]] = {}
    jobs: list[tuple[int, Compaction]] = []  # (bucket number, compaction under way)
    installed = abandoned = 0
    for step in range(1500):
        op = rng.random()
        if op < 0.35:  # one-row upsert
            k = _key(int_key, rng.randrange(300))
            row = (k, rng.randrange(5), f"v{step}")
            t.upsert(row)
            model[k] = row
        elif op < 0.50:  # one-row delete
            k = _key(int_key, rng.randrange(300))
            assert t.delete(k) == (1 if k in model else 0)
            model.pop(k, None)
        elif op < 0.515:  # a bulk upsert: adds runs, so compactions under way step aside
            ks = sorted({_key(int_key, rng.randrange(300)) for _ in range(rng.randrange(1, 40))})
            batch = pa.record_batch({
                "id": pa.array(ks, pa.int64() if int_key else pa.string()),
                "g": pa.array([rng.randrange(5) for _ in ks], pa.int32()),
                "s": pa.array([f"b{step}"] * len(ks)),
            })
            t.upsert(batch)
            for k, g in zip(ks, batch.column("g").to_pylist()):
                model[k] = (k, g, f"b{step}")
        elif op < 0.518:  # truncate
            t.truncate()
            model.clear()
        elif op < 0.60:  # begin a compaction (mostly of a bucket with none under way)
            busy = {n for n, _ in jobs}
            idle = [n for n in range(len(t.buckets)) if n not in busy]
            bno = rng.choice(idle) if idle and rng.random() < 0.9 else rng.randrange(len(t.buckets))
            with t.lock:
                job = t.buckets[bno].begin_compaction()
            if job is not None:
                jobs.append((bno, job))
        elif op < 0.80 and jobs:  # build one (no lock)
            rng.choice(jobs)[1].build()
        elif jobs:  # finish one (mostly a built one)
            built = [i for i, (_, j) in enumerate(jobs) if j.built]
            i = rng.choice(built) if built and rng.random() < 0.9 else rng.randrange(len(jobs))
            bno, job = jobs.pop(i)
            b = t.buckets[bno]
            with t.lock:
                runs_before = list(b.runs)
                ok = b.finish_compaction(job)
            if ok:
                installed += 1
                assert len(b.runs) <= 1
            else:
                abandoned += 1
                assert b.runs == runs_before  # stepped aside: nothing changed
        _check(t, model, indexed, rng)
    for bno, job in jobs:  # a compaction never finished leaves nothing behind
        job.build()
        with t.lock:
            t.buckets[bno].finish_compaction(job)
    t.compact()
    _check(t, model, indexed, rng)
    assert all(len(b.runs) <= 1 and not b.delta for b in t.buckets)
    assert installed > 30 and abandoned > 30, (installed, abandoned)  # both outcomes exercised


def test_compaction_keeps_writes_made_between_begin_and_finish() -> None:
    store = Store(background=False)
    t = store.create_table("t", [("id", "int64"), ("s", "string")], primary_key="id", num_buckets=1)
    t.upsert(pa.record_batch({"id": pa.array(range(10), pa.int64()), "s": pa.array(["a"] * 10)}))
    t.upsert((3, "delta"))  # in the delta when the compaction begins
    b = t.buckets[0]
    with t.lock:
        job = b.begin_compaction()
    assert job is not None
    t.upsert((3, "after"))  # rewritten meanwhile
    t.delete(5)  # deleted meanwhile (its row is in the folded run)
    t.upsert((42, "new"))  # new meanwhile
    job.build()
    with t.lock:
        assert b.finish_compaction(job)
    assert len(b.runs) == 1 and sorted(b.delta) == [3, 42]
    t._check()
    want = [(i, "a") for i in range(10) if i not in (3, 5)] + [(3, "after"), (42, "new")]
    assert contents(t) == sort_rows(want)


def test_a_failed_build_stops_tracking_and_changes_nothing() -> None:
    store = Store(background=False)
    t = store.create_table("t", [("id", "int64"), ("s", "string")], primary_key="id", num_buckets=1)
    for i in range(20):
        t.upsert((i, "x"))
    b = t.buckets[0]
    with t.lock:
        job = b.begin_compaction()
    assert job is not None
    t.upsert((1, "y"))
    with t.lock:
        assert not b.finish_compaction(job)  # never built
    assert b._touched is None and len(b.delta) == 20
    t._check()
    assert t.get(1) == (1, "y")


def test_background_compaction_under_concurrent_point_writes() -> None:
    """The upkeep thread compacts (small threshold) while two threads write and delete:
    every acknowledged change is in the table at the end, and it was compacted."""
    store = Store(background=True, compaction_min_rows=64, compaction_fraction=0.05)
    t = store.create_table("t", [("id", "int64"), ("s", "string")], primary_key="id", num_buckets=2)
    models: list[dict[int, tuple[int, str]]] = [{}, {}]

    epochs_before = [b.epoch for b in t.buckets]

    def compacted_twice() -> bool:
        return all(b.epoch >= e + 4 for b, e in zip(t.buckets, epochs_before))  # begin + finish, twice

    def writer(n: int) -> None:
        rng = random.Random(7 + n)
        m = models[n]
        i = 0
        # Until every bucket was compacted twice under the writes (the upkeep looks every
        # 0.25 s); bounded, and the assertion below fails if it never happened.
        while i < 6000 or (not compacted_twice() and i < 2_000_000):
            k = 2 * rng.randrange(500) + n  # the two writers' keys never collide
            if rng.random() < 0.2:
                t.delete(k)
                m.pop(k, None)
            else:
                t.upsert((k, f"w{n}-{i}"))
                m[k] = (k, f"w{n}-{i}")
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    store.close()
    t._check()
    assert contents(t) == sort_rows([*models[0].values(), *models[1].values()])
    assert compacted_twice(), "the upkeep did not compact every bucket twice"
