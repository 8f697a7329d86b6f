"""Change sets: atomic groups of changes over several tables; prepare, commit, abort,
conflicts, state errors, read-your-writes, and isolation from readers."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from spark_ext.exceptions import (
    BadArgumentError,
    ConflictError,
    DuplicateKeyError,
    NoSuchTransactionError,
    TransactionStateError,
    TypeMismatchError,
)
from spark_ext.store import Store, col
from tests.store.unit_helpers import contents, rows, sort_rows


@pytest.fixture
def two(store: Store):
    a = store.create_table("a", [("id", "int64"), ("v", "string")], primary_key="id", num_buckets=4)
    b = store.create_table("b", [("name", "string"), ("n", "int32")], primary_key="name", num_buckets=3)
    a.insert([(i, f"a{i}") for i in range(10)])
    a.insert(pa.table({"id": pa.array(range(100, 400), pa.int64()), "v": [f"a{i}" for i in range(100, 400)]}))
    b.insert([(f"n{i}", i) for i in range(10)])
    return a, b


def _stage_everything(cs, a, b) -> None:
    cs.insert("a", [(50, "new"), (51, "new")])
    cs.insert("a", pa.table({"id": pa.array(range(1000, 1200), pa.int64()), "v": ["bulk"] * 200}))
    cs.upsert("a", (1, "ups"))
    cs.update("a", [2, 150], {"v": "upd"})
    cs.delete("a", [3, 160])
    cs.insert("b", {"name": "zz", "n": 99})
    cs.update("b", ["n1"], {"name": "n1-moved"})
    cs.delete("b", ["n2"])
    cs.update_where("b", col("n") >= 8, {"n": -1})
    cs.delete_where("a", (col("id") >= 390) & (col("id") < 1000))


def _expected_after(a_before, b_before):
    a = {r[0]: r for r in a_before}
    a.update({50: (50, "new"), 51: (51, "new"), 1: (1, "ups"), 2: (2, "upd"), 150: (150, "upd")})
    a.update({i: (i, "bulk") for i in range(1000, 1200)})
    for k in [3, 160] + list(range(390, 400)):
        a.pop(k, None)
    b = {r[0]: r for r in b_before}
    b["zz"] = ("zz", -1)  # the set's own insert is matched by its update_where
    b["n1-moved"] = ("n1-moved", 1)
    del b["n1"], b["n2"]
    b["n8"], b["n9"] = ("n8", -1), ("n9", -1)
    return sort_rows(a.values()), sort_rows(b.values())


def test_abort_leaves_nothing_visible(store: Store, two) -> None:
    a, b = two
    a0, b0 = contents(a), contents(b)
    cs = store.begin()
    _stage_everything(cs, a, b)
    # Nothing is visible to readers before commit.
    assert contents(a) == a0 and contents(b) == b0
    assert a.get(50) is None and a.get(3) == (3, "a3") and b.get("zz") is None
    cs.abort()
    assert cs.state == "aborted"
    assert contents(a) == a0 and contents(b) == b0
    assert not a.locks and not b.locks and a.truncating is None
    # The keys are free again.
    a.insert((50, "after"))
    assert a.get(50) == (50, "after")
    a._check()
    b._check()


def test_prepare_then_commit_makes_everything_visible(store: Store, two) -> None:
    a, b = two
    a0, b0 = contents(a), contents(b)
    cs = store.begin("txn-1")
    assert store.transaction("txn-1") is cs
    _stage_everything(cs, a, b)
    cs.prepare()
    assert cs.state == "prepared"
    cs.prepare()  # idempotent
    assert contents(a) == a0 and contents(b) == b0
    cs.commit()
    assert cs.state == "committed"
    want_a, want_b = _expected_after(a0, b0)
    assert contents(a) == want_a
    assert contents(b) == want_b
    assert not a.locks and not b.locks
    with pytest.raises(NoSuchTransactionError):
        store.transaction("txn-1")
    a._check()
    b._check()


def test_one_phase_commit(store: Store, two) -> None:
    a, b = two
    a0, b0 = contents(a), contents(b)
    cs = store.begin()
    _stage_everything(cs, a, b)
    cs.commit()
    assert (contents(a), contents(b)) == _expected_after(a0, b0)


def test_context_manager(store: Store, two) -> None:
    a, b = two
    a0, b0 = contents(a), contents(b)
    with pytest.raises(RuntimeError):
        with store.begin() as cs:
            _stage_everything(cs, a, b)
            raise RuntimeError("boom")
    assert cs.state == "aborted"
    assert contents(a) == a0 and contents(b) == b0
    with store.begin() as cs:
        _stage_everything(cs, a, b)
    assert cs.state == "committed"
    assert (contents(a), contents(b)) == _expected_after(a0, b0)
    # A staging error inside the block aborts the whole set.
    a1 = contents(a)
    with pytest.raises(DuplicateKeyError):
        with store.begin() as cs:
            cs.insert("a", (777, "x"))
            cs.insert("a", (1, "dup"))
    assert contents(a) == a1 and not a.locks


def test_state_errors(store: Store, two) -> None:
    a, _ = two
    cs = store.begin("s1")
    cs.insert("a", (60, "x"))
    cs.commit()
    for fn in (lambda: cs.insert("a", (61, "x")), lambda: cs.update("a", [1], {"v": "x"}),
               lambda: cs.delete("a", [1]), lambda: cs.truncate("a"), cs.commit, cs.abort, cs.prepare):
        with pytest.raises(TransactionStateError) as ei:
            fn()
        assert "s1" in str(ei.value) and "committed" in str(ei.value)
    assert a.get(61) is None and a.get(60) == (60, "x") and a.get(1) == (1, "a1")

    cs = store.begin("s2")
    cs.insert("a", (62, "x"))
    cs.abort()
    cs.abort()  # idempotent
    with pytest.raises(TransactionStateError):
        cs.insert("a", (63, "x"))
    with pytest.raises(TransactionStateError):
        cs.commit()
    assert a.get(62) is None

    cs = store.begin("s3")
    cs.insert("a", (64, "x"))
    cs.prepare()
    with pytest.raises(TransactionStateError) as ei:
        cs.insert("a", (65, "x"))
    assert "prepared" in str(ei.value)
    cs.abort()
    assert a.get(64) is None and a.get(65) is None and not a.locks

    store.begin("dup-id")
    with pytest.raises(BadArgumentError):
        store.begin("dup-id")
    with pytest.raises(NoSuchTransactionError):
        store.transaction("never")


def test_conflicting_change_sets(store: Store, two) -> None:
    a, b = two
    a0, b0 = contents(a), contents(b)
    one = store.begin("one")
    one.update("a", [5], {"v": "one"})
    one.insert("b", ("new", 1))
    one.insert("a", pa.table({"id": pa.array(range(2000, 2200), pa.int64()), "v": ["one"] * 200}))
    two_ = store.begin("two")
    two_.insert("a", (600, "ok?"))  # an unrelated key first: it must survive the failures below
    with pytest.raises(DuplicateKeyError):
        two_.insert("a", (600, "dup within the same set"))
    conflicts = [
        lambda: two_.update("a", [5], {"v": "two"}),
        lambda: two_.delete("a", [4, 5]),
        lambda: two_.upsert("a", (5, "two")),
        lambda: two_.insert("b", ("new", 2)),
        lambda: two_.insert("a", [(700, "x"), (2100, "x")]),
        lambda: two_.upsert("a", pa.table({"id": pa.array(range(2150, 2350), pa.int64()), "v": ["two"] * 200})),
        lambda: two_.update("a", [8], {"id": 2001}),  # moving onto a locked key
        lambda: two_.delete_where("a", col("id") <= 5),
        lambda: two_.truncate("a"),
    ]
    for fn in conflicts:
        with pytest.raises(ConflictError) as ei:
            fn()
        assert "'a'" in str(ei.value) or "'b'" in str(ei.value)
        assert "one" in str(ei.value)
    # The failed calls staged nothing: two's earlier change is intact, nothing else.
    assert set(two_.pending["a"].point) == {600}
    assert {k for k, o in a.locks.items() if o is two_} == {600}
    assert contents(a) == a0 and contents(b) == b0
    two_.commit()
    one.commit()
    assert a.get(5) == (5, "one") and a.get(600) == (600, "ok?") and b.get("new") == ("new", 1)
    assert a.get(2150) == (2150, "one")
    assert not a.locks and not b.locks
    # Once one is done the keys are free for others.
    a.update(5, {"v": "later"})
    assert a.get(5) == (5, "later")


def test_autocommit_writes_conflict_with_open_change_sets(store: Store, two) -> None:
    a, _ = two
    cs = store.begin()
    cs.delete("a", [1])
    before = contents(a)
    with pytest.raises(ConflictError):
        a.update(1, {"v": "x"})
    with pytest.raises(ConflictError):
        a.upsert((1, "x"))
    with pytest.raises(ConflictError):
        a.truncate()
    assert contents(a) == before
    a.update(2, {"v": "free key"})
    cs.commit()
    assert a.get(1) is None and a.get(2) == (2, "free key")


def test_truncate_conflicts(store: Store, two) -> None:
    a, b = two
    a0 = contents(a)
    tr = store.begin("tr")
    tr.truncate("a")
    tr.insert("a", (1, "only"))  # INSERT OVERWRITE: truncate + insert
    assert a.truncating is tr
    other = store.begin("other")
    for fn in (lambda: other.insert("a", (5000, "x")), lambda: other.update("a", [2], {"v": "x"}),
               lambda: other.delete("a", [2]), lambda: other.truncate("a")):
        with pytest.raises(ConflictError) as ei:
            fn()
        assert "'a'" in str(ei.value) and "tr" in str(ei.value)
    with pytest.raises(ConflictError):
        a.insert((5000, "autocommit"))
    with pytest.raises(ConflictError):
        store.drop_table("a")
    other.insert("b", ("other", 1))  # other tables are free
    assert contents(a) == a0
    tr.commit()
    assert contents(a) == [(1, "only")]
    assert a.truncating is None and not a.locks
    other.commit()
    assert b.get("other") == ("other", 1)
    # truncate is refused while another set holds keys
    holder = store.begin("holder")
    holder.update("a", [1], {"v": "held"})
    with pytest.raises(ConflictError) as ei:
        store.begin().truncate("a")
    assert "holder" in str(ei.value)
    holder.abort()


def test_truncate_then_reinsert_old_keys_and_abort(store: Store, two) -> None:
    a, _ = two
    a0 = contents(a)
    cs = store.begin()
    cs.truncate("a")
    cs.insert("a", [(1, "x"), (2, "y")])  # old keys: not duplicates after the truncate
    cs.insert("a", pa.table({"id": pa.array(range(100, 300), pa.int64()), "v": ["z"] * 200}))
    assert cs.matching_keys("a", None) and sorted(cs.matching_keys("a", col("id") < 5)) == [1, 2]
    cs.abort()
    assert contents(a) == a0
    with store.begin() as cs:
        cs.truncate("a")
        cs.insert("a", [(1, "x"), (2, "y")])
    assert contents(a) == [(1, "x"), (2, "y")]


def test_read_your_writes_inside_a_change_set(store: Store, two) -> None:
    a, b = two
    with store.begin() as cs:
        cs.insert("a", (70, "x"))
        assert cs.update("a", [70], {"v": "y"}) == 1  # sees its own insert
        assert cs.delete("a", [1]) == 1
        assert cs.delete("a", [1]) == 0  # already deleted here
        assert cs.update("a", [1], {"v": "gone"}) == 0
        cs.insert("a", (1, "reborn"))  # insert after delete of the same key
        with pytest.raises(DuplicateKeyError):
            cs.insert("a", (70, "dup of own insert"))
        cs.insert("a", pa.table({"id": pa.array(range(3000, 3200), pa.int64()), "v": ["bulk"] * 200}))
        assert cs.update("a", [3005], {"v": "bulk-upd"}) == 1  # point change over own bulk row
        assert cs.delete("a", [3006]) == 1
        with pytest.raises(DuplicateKeyError):
            cs.insert("a", (3007, "dup of own bulk row"))
        cs.upsert("a", pa.table({"id": pa.array(range(3100, 3300), pa.int64()), "v": ["bulk2"] * 200}))
        got = sorted(cs.matching_keys("a", col("v") == "bulk"))
        assert got == [k for k in range(3000, 3100) if k not in (3005, 3006)]
        assert sorted(cs.matching_keys("a", col("id") >= 3295)) == list(range(3295, 3300))
        assert cs.delete_where("a", col("v") == "bulk2") == 200
        assert cs.update_where("a", col("id") == 70, {"v": "z"}) == 1
        # nothing of this is visible outside
        assert a.get(70) is None and a.get(1) == (1, "a1")
    assert a.get(70) == (70, "z")
    assert a.get(1) == (1, "reborn")
    assert a.get(3005) == (3005, "bulk-upd") and a.get(3006) is None
    assert a.get(3150) is None and a.get(3050) == (3050, "bulk")
    a._check()


def test_failed_staging_call_changes_nothing_in_the_set(store: Store, two) -> None:
    a, _ = two
    cs = store.begin()
    cs.insert("a", (80, "kept"))
    for fn in (lambda: cs.insert("a", [(81, "x"), (1, "dup")]),
               lambda: cs.insert("a", [(82, "x"), (83, 5)]),
               lambda: cs.update("a", [80, 2], {"v": 7}),
               lambda: cs.insert("a", pa.table({"id": pa.array(list(range(4000, 4200)) + [80], pa.int64()),
                                                "v": ["x"] * 201}))):
        with pytest.raises((DuplicateKeyError, TypeMismatchError)):
            fn()
    assert cs.pending["a"].point == {80: (80, "kept")} and not cs.pending["a"].bulks
    assert set(a.locks) == {80}
    cs.commit()
    assert a.get(80) == (80, "kept")
    assert all(a.get(k) is None for k in (81, 82, 83, 4000))


def test_scan_started_before_commit_sees_old_state(store: Store, two) -> None:
    a, b = two
    a0 = contents(a)
    scan_a = a.scan()
    scan_b = b.scan(where=col("n") >= 0)
    b0 = contents(b)
    with store.begin() as cs:
        _stage_everything(cs, a, b)
    tbl = scan_a.to_table()
    assert sort_rows(zip(*[c.to_pylist() for c in tbl.columns])) == a0
    tbl = scan_b.to_table()
    assert sort_rows(zip(*[c.to_pylist() for c in tbl.columns])) == b0
    assert contents(a) != a0


def test_commit_is_atomic_for_concurrent_readers(store: Store) -> None:
    """Writers move amounts between rows of two tables in change sets; readers that
    read both tables at one moment (under both locks) never see a half-applied set."""
    acc = store.create_table("acc", [("id", "int32"), ("bal", "int64")], primary_key="id", num_buckets=4)
    log = store.create_table("log", [("id", "int32"), ("n", "int64")], primary_key="id", num_buckets=2)
    acc.insert([(i, 100) for i in range(20)])
    log.insert((0, 0))
    errors: list[str] = []
    done = threading.Event()

    def writer(seed: int) -> None:
        import random

        rng = random.Random(seed)
        for _ in range(150):
            x, y = rng.sample(range(20), 2)
            try:
                with store.begin() as cs:
                    # Lock the keys first (stage a no-op), then read values nobody else
                    # can change until this set ends.
                    cs.update("acc", [x, y], {"bal": 0})
                    cs.update("log", [0], {"n": 0})
                    bx, by, n = acc.get(x)[1], acc.get(y)[1], log.get(0)[1]
                    cs.update("acc", [x], {"bal": bx - 1})
                    cs.update("acc", [y], {"bal": by + 1})
                    cs.update("log", [0], {"n": n + 1})
            except ConflictError:
                continue

    def reader() -> None:
        while not done.is_set():
            with acc.lock, log.lock:
                total = sum(r[1] for r in acc.get_many(list(range(20))))
            if total != 2000:
                errors.append(f"saw total {total}")

    threads = [threading.Thread(target=writer, args=(s,)) for s in (1, 2, 3)]
    r = threading.Thread(target=reader)
    r.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    done.set()
    r.join()
    assert errors == []
    assert sum(row[1] for row in rows(acc)) == 2000
    moved = log.get(0)[1]
    assert moved > 0 and sum(abs(row[1] - 100) for row in rows(acc)) <= 2 * moved
    assert not acc.locks and not log.locks


def test_change_set_on_dropped_table(store: Store, two) -> None:
    a, b = two
    cs = store.begin()
    cs.insert("b", ("x", 1))
    store.drop_table("a")
    from spark_ext.exceptions import NoSuchTableError

    with pytest.raises(NoSuchTableError):
        cs.insert("a", (1, "x"))
    cs.commit()
    assert b.get("x") == ("x", 1)
