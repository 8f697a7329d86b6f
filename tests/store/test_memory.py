"""Memory accounting per table, table and store limits, and the size of compacted data
against its Arrow size."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pyarrow as pa
import pytest

from spark_ext.exceptions import BadArgumentError, MemoryLimitError
from spark_ext.store import Store, col
from tests.store.unit_helpers import assert_refused, contents

COLUMNS = [("id", "int64"), ("k", "int32"), ("x", "float64"), ("s", "string"), ("t", "timestamp_tz")]


def _arrow(ids, s: str = "some text") -> pa.Table:
    ids = np.asarray(list(ids), dtype=np.int64)
    return pa.table({
        "id": ids,
        "k": pa.array((ids % 1000).astype(np.int32)),
        "x": ids.astype(np.float64) / 3,
        "s": pa.array([f"{s}{i % 1000:04d}" for i in ids.tolist()]),
        "t": pa.array(ids * 1_000_000, pa.timestamp("us", tz="UTC")),
    })


def test_memory_bytes_follows_the_data(store: Store) -> None:
    t = store.create_table("m", COLUMNS, primary_key="id", num_buckets=4)
    assert t.memory_bytes() == 0
    sizes = [0]
    t.insert([(i, i, float(i), "abc", None) for i in range(100)])  # delta rows
    sizes.append(t.memory_bytes())
    t.insert(_arrow(range(1000, 3000)))  # base runs
    sizes.append(t.memory_bytes())
    t.create_index("k", "k")
    sizes.append(t.memory_bytes())
    t.insert([(i, i, float(i), "abc", None) for i in range(5000, 5100)])  # delta rows, indexed
    sizes.append(t.memory_bytes())
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), sizes
    # The bulk-loaded rows are accounted at least at their Arrow size.
    assert sizes[2] - sizes[1] >= _arrow(range(1000, 3000)).nbytes
    assert store.memory_bytes() == t.memory_bytes()
    # Deleting delta rows gives memory back; compaction folds deletions away.
    t.delete(list(range(5000, 5100)))
    assert t.memory_bytes() < sizes[-1]
    t.delete(list(range(1000, 2000)))
    before_compact = t.memory_bytes()
    t.compact()
    assert t.memory_bytes() < before_compact
    t.truncate()
    assert t.memory_bytes() == 0
    # A second table adds to the store's total.
    u = store.create_table("u", COLUMNS, primary_key="id")
    u.insert(_arrow(range(500)))
    t.insert(_arrow(range(500)))
    assert store.memory_bytes() == t.memory_bytes() + u.memory_bytes() > 0


def test_table_memory_limit(store: Store) -> None:
    t = store.create_table("lim", COLUMNS, primary_key="id", num_buckets=2,
                           options={"memory_limit_bytes": "60000"})
    assert t.memory_limit_bytes == 60000
    t.insert(_arrow(range(200)))
    t.insert([(10_000 + i, 1, 1.0, "x", None) for i in range(10)])
    used = t.memory_bytes()
    assert 0 < used < 60000
    # Oversized on the bulk path and on the point path: refused, naming the table.
    assert_refused(t, lambda: t.insert(_arrow(range(1000, 3000))), MemoryLimitError, "'lim'", "60000")
    assert_refused(t, lambda: t.upsert(_arrow(range(0, 3000))), MemoryLimitError, "'lim'")
    assert_refused(t, lambda: t.insert([(20_000 + i, 1, 1.0, "x", None) for i in range(1000)]),
                   MemoryLimitError, "'lim'")
    err = assert_refused(t, lambda: t.update_where(None, {"s": "y" * 10}), MemoryLimitError, "'lim'")
    assert err.details["table"] == "lim" and err.code == "MEMORY_LIMIT"
    assert t.memory_bytes() == used
    # Changes that add nothing always pass, even near the limit.
    assert t.delete([0, 1]) == 2
    # In a change set: prepare (and one-phase commit) refuse; abort leaves nothing.
    before = contents(t)
    cs = store.begin()
    cs.insert("lim", _arrow(range(5000, 8000)))
    with pytest.raises(MemoryLimitError) as ei:
        cs.prepare()
    assert "'lim'" in str(ei.value)
    with pytest.raises(MemoryLimitError):
        cs.commit()
    cs.abort()
    assert contents(t) == before and not t.locks
    # INSERT OVERWRITE is judged on the new contents only.
    with store.begin() as cs:
        cs.truncate("lim")
        cs.insert("lim", _arrow(range(300, 500)))
    assert t.count() == 200


def test_store_memory_limit() -> None:
    probe = Store(background=False)
    p = probe.create_table("p", COLUMNS, primary_key="id")
    p.insert(_arrow(range(1000)))
    per_1000 = p.memory_bytes()
    probe.close()

    s = Store(memory_limit_bytes=int(per_1000 * 2.5), background=False)
    try:
        a = s.create_table("a", COLUMNS, primary_key="id")
        b = s.create_table("b", COLUMNS, primary_key="id")
        a.insert(_arrow(range(1000)))
        b.insert(_arrow(range(1000)))
        total = s.memory_bytes()
        err = assert_refused(b, lambda: b.insert(_arrow(range(5000, 6000))), MemoryLimitError, "'b'", "store")
        assert err.details["table"] == "b"
        assert_refused(a, lambda: a.insert([(50_000 + i, 1, 1.0, "x", None) for i in range(2000)]),
                       MemoryLimitError, "'a'")
        cs = s.begin()
        cs.insert("a", _arrow(range(7000, 7400)))
        cs.insert("b", _arrow(range(7000, 7400)))
        with pytest.raises(MemoryLimitError) as ei:
            cs.commit()
        assert "'a'" in str(ei.value) and "'b'" in str(ei.value)
        cs.abort()
        assert s.memory_bytes() == total
        assert a.count() == 1000 and b.count() == 1000
        # Freeing memory in one table makes room in another.
        a.truncate()
        b.insert(_arrow(range(5000, 6000)))
        assert b.count() == 2000
    finally:
        s.close()


@pytest.mark.parametrize("bad", [0, -5, "100", 1.5])
def test_bad_store_memory_limit(bad) -> None:
    with pytest.raises(BadArgumentError):
        Store(memory_limit_bytes=bad, background=False)


def test_compacted_int_key_table_is_within_2x_of_arrow_size(store: Store) -> None:
    n = 100_000
    rng = np.random.default_rng(11)
    ids = rng.permutation(n).astype(np.int64)
    data = _arrow(ids)
    arrow_bytes = sum(b.nbytes for b in data.combine_chunks().to_batches())
    gc.collect()
    tracemalloc.start()
    try:
        pool0 = pa.total_allocated_bytes()
        py0 = tracemalloc.get_traced_memory()[0]
        t = store.create_table("big", COLUMNS, primary_key="id", num_buckets=8)
        t.insert(data)
        t.insert([(n + i, 1, 1.0, "delta", None) for i in range(1000)])  # some delta rows
        t.delete(list(range(0, n, 10)))
        t.compact()
        gc.collect()
        real = (pa.total_allocated_bytes() - pool0) + (tracemalloc.get_traced_memory()[0] - py0)
    finally:
        tracemalloc.stop()
    live = t.count()
    assert live == n - n // 10 + 1000
    live_arrow = arrow_bytes * live / n
    accounted = t.memory_bytes()
    assert all(len(b.runs) == 1 and not b.delta and not any(b.deleted) for b in t.buckets)
    # The engine's own accounting and the memory really held both stay within 2x.
    assert live_arrow * 0.9 <= accounted <= 2 * live_arrow, (accounted, live_arrow)
    assert real <= 2 * live_arrow, (real, live_arrow)
    # Reads still work on the compacted table.
    assert t.get(int(ids[5])) is not None or int(ids[5]) % 10 == 0
    assert t.scan(where=col("id") == 11).count() == 1


def test_store_limit_check_does_not_deadlock_across_tables() -> None:
    """Two committers on different tables under a store-wide limit both finish."""
    import threading

    from spark_ext.store import Store

    s = Store(background=False, memory_limit_bytes=1 << 30)
    a = s.create_table("a", [("id", "int64")], primary_key="id")
    b = s.create_table("b", [("id", "int64")], primary_key="id")
    done = []

    def writer(t, base):
        for i in range(300):
            with s.begin() as cs:
                cs.insert(t.name, [(base + i,)])
        done.append(t.name)

    ths = [threading.Thread(target=writer, args=(a, 0)), threading.Thread(target=writer, args=(b, 0))]
    for th in ths:
        th.start()
    for th in ths:
        th.join(60)
    assert sorted(done) == ["a", "b"] and a.count() == 300 and b.count() == 300
    s.close()


def test_finishing_a_change_set_does_not_drop_a_user_transaction_with_the_same_id() -> None:
    from spark_ext.store import Store

    s = Store(background=False)
    t = s.create_table("t", [("id", "int64")], primary_key="id")
    anonymous = s.begin()  # gets a generated id such as local-7; not registered by name
    named = s.begin(anonymous.id)  # a user may pick that very name
    anonymous.insert("t", [(1,)])
    anonymous.commit()
    assert s.transaction(named.id) is named  # still there: forgotten by identity, not by id
    named.insert("t", [(2,)])
    named.commit()
    assert t.count() == 2
    s.close()
