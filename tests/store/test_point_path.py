"""The one-row autocommit path (``Table.insert / upsert / update / update_many / delete``
of one row or key, see ``Store._write_row`` & co.) against the change set path it
short-cuts.

Two stores get the same operations: one through the ``Table`` methods (one-row path),
one through ``Store._autocommit`` with a change set (the path every write took before,
kept for every other input). Results, errors (class, message, details), table contents,
key locks, log records and recovered contents must be identical, including when a key
is locked by an open change set, a table is being truncated, a memory limit is reached,
the input is bad, or the ``Table`` object is stale (dropped, re-created).
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import pytest

from spark_ext.exceptions import ConflictError, DuplicateKeyError, SparkExtError
from spark_ext.store import Store
from spark_ext.store import store as store_mod
from spark_ext.store.codec import decode_record
from spark_ext.store.table import Table
from spark_ext.store.wal import WalError, WriteAheadLog
from tests.store.unit_helpers import contents

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 3, 1, tzinfo=UTC)

TABLES: dict[str, dict[str, Any]] = {
    "a": {  # int key
        "schema": [("id", "int64"), ("k", "int32"), ("s", "string"), ("x", "double"),
                   ("ts", "timestamp_tz"), ("d", "decimal(10,2)")],
        "primary_key": "id", "num_buckets": 4,
    },
    "b": {  # composite key, general path
        "schema": [("r", "string"), ("n", "int32"), ("v", "int64"), ("dt", "date")],
        "primary_key": ["r", "n"], "num_buckets": 3,
    },
    "c": {  # hidden row id
        "schema": [("g", "int32"), ("s", "string")],
        "primary_key": None, "num_buckets": 2,
    },
}


class ChangeSetPath:
    """The write methods of a table as they were before the one-row path: every call
    one change set, committed under one hold of the table lock."""

    def __init__(self, t: Table) -> None:
        self.t = t

    def _auto(self, stage: Callable[[Any], Any]) -> Any:
        return self.t.store._autocommit(self.t, stage)

    def insert(self, rows: Any) -> int:
        return self._auto(lambda cs: cs.insert(self.t.name, rows))

    def upsert(self, rows: Any) -> int:
        return self._auto(lambda cs: cs.upsert(self.t.name, rows))

    def update(self, key: Any, values: Any) -> bool:
        return self._auto(lambda cs: cs.update(self.t.name, [key], values)) == 1

    def update_many(self, keys: Any, values: Any) -> int:
        return self._auto(lambda cs: cs.update(self.t.name, keys, values))

    def delete(self, keys: Any) -> int:
        ks = keys if isinstance(keys, list) else [keys]
        return self._auto(lambda cs: cs.delete(self.t.name, ks))


def make_store(data_dir: Path | None = None, **kw: Any) -> Store:
    s = Store(data_dir, flush="off", background=False, **kw) if data_dir else Store(background=False, **kw)
    for name, spec in TABLES.items():
        s.create_table(name, spec["schema"], primary_key=spec["primary_key"], num_buckets=spec["num_buckets"])
    return s


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", fn())
    except SparkExtError as e:
        return ("error", type(e).__name__, str(e), e.details)


def a_row(rng: random.Random, i: int | None = None) -> Any:
    i = rng.randrange(60) if i is None else i
    row = [i, rng.randrange(-5, 5), rng.choice([None, "", "x", "é", "yy"]), rng.choice([None, 0.5, -1.25]),
           rng.choice([None, T0, T0 + dt.timedelta(microseconds=rng.randrange(10**9))]),
           rng.choice([None, Decimal("1.25"), Decimal("-3.10"), 7])]
    return row


def b_row(rng: random.Random) -> Any:
    return [rng.choice(["p", "q", "r", "é"]), rng.randrange(8), rng.randrange(100),
            rng.choice([None, dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(30))])]


def bad_row(rng: random.Random, good: list[Any], spec: dict[str, Any]) -> Any:
    """A row the engine must refuse (or, rarely, accept), in one of many ways."""
    names = [c for c, _ in spec["schema"]]
    row = list(good)
    kind = rng.randrange(6)
    if kind == 0:
        row[0] = None  # NULL key (or NULL in a key column)
    elif kind == 1:
        row[rng.randrange(len(row))] = rng.choice([object(), 1.5, "str", b"b", [1]])
    elif kind == 2:
        row = row[:-1]  # wrong column count
    elif kind == 3:
        return {**dict(zip(names, row)), "nope": 1}  # unknown column
    elif kind == 4:
        row[0] = 1 << 70 if spec["primary_key"] == "id" else row[0]  # out of range
    else:
        return {names[-1]: row[-1]}  # a dict lacking the key column(s)
    return tuple(row)


def random_op(rng: random.Random) -> tuple[str, str, tuple[Any, ...]]:
    """(table, method, args) of one random statement, good or bad."""
    name = rng.choice("aab")
    spec = TABLES[name]
    names = [c for c, _ in spec["schema"]]
    mk = a_row if name == "a" else b_row
    row = mk(rng)
    key = row[0] if name == "a" else (row[0], row[1])
    form = rng.randrange(5)
    shaped: Any = {0: tuple(row), 1: dict(zip(names, row)), 2: [tuple(row)], 3: [dict(zip(names, row))],
                   4: [list(row)]}[form]
    if rng.random() < 0.15:
        shaped = bad_row(rng, row, spec)
    if rng.random() < 0.05:
        shaped = [tuple(row), tuple(mk(rng))]  # two rows: the change set path for both
    op = rng.choice(["insert", "insert", "upsert", "upsert", "update", "update_many", "delete", "delete"])
    if op in ("insert", "upsert"):
        return name, op, (shaped,)
    if rng.random() < 0.1:
        key = rng.choice([None, 1.5, "x", (1, 2), [key], (None, 1), object()])
    if op == "delete":
        return name, op, (rng.choice([key, [key], [key, key]]),)
    col = rng.choice(names[1:] + names[:1])  # sometimes a key column: the row moves
    val = mk(rng)[names.index(col)]
    values: Any = {col: val}
    if rng.random() < 0.1:
        values = rng.choice([{}, {"nope": 1}, {names[0]: None}, {col: object()}, {"_rowid": 1}])
    if op == "update_many":
        return name, op, (rng.choice([[key], [key, key]]), values)
    return name, op, (key, values)


def state(s: Store) -> Any:
    return {n: (contents(t), t.count(), {k: cs.id for k, cs in t.locks.items()},
                None if t.truncating is None else t.truncating.id) for n, t in s.tables.items()}


def hold_locks(s: Store) -> None:
    """Open change sets that lock keys the random statements hit."""
    h = s.begin("holder")
    h.upsert("a", [tuple(a_row(random.Random(1), i)) for i in (3, 4, 5)])
    h.delete("a", [6, 7])
    h.update("b", [("p", 1)], {"v": 5})
    h.insert("b", ("q", 2, 1, None))
    h2 = s.begin("holder2")
    h2.upsert("b", [("é", 7, 1, None)])
    h2.prepare()


def test_same_results_errors_and_contents_as_change_set_path() -> None:
    fast, slow = make_store(), make_store()
    try:
        rng = random.Random(7)
        for s in (fast, slow):
            s.table("a").insert([tuple(a_row(random.Random(i), i)) for i in range(0, 60, 2)])
            s.table("b").insert([("p", i, i, None) for i in range(4)])
            s.table("c").insert([(i, f"c{i}") for i in range(10)])
            s.table("a").compact()  # rows in base runs as well as in the delta
            hold_locks(s)
        for step in range(3000):
            r = random.Random(rng.random())
            name, op, args = random_op(r)
            results = []
            for s, wrap in ((fast, lambda t: t), (slow, ChangeSetPath)):
                t = s.table(name)
                results.append(outcome(lambda: getattr(wrap(t), op)(*args)))
            assert results[0] == results[1], (step, name, op, args)
            if step % 100 == 0:
                assert state(fast) == state(slow), step
                for s in (fast, slow):
                    s.table("a").compact() if step % 300 == 0 else None
        # The hidden row id table: updates and deletes by row id take the one-row path.
        for s in (fast, slow):
            rows = [(i, None) for i in range(5)]
            s.table("c").insert(rows)
        ids = [r[-1] for r in contents(fast.table("c"))]
        for i, rid in enumerate(ids + [10**6]):
            for op, args in (("update", (rid, {"s": f"u{i}"})), ("update", (rid, {"_rowid": 1})),
                             ("delete", (rid,)) if i % 3 == 0 else ("update_many", ([rid], {"g": i}))):
                res = [outcome(lambda: getattr(w(s.table("c")), op)(*args))
                       for s, w in ((fast, lambda t: t), (slow, ChangeSetPath))]
                assert res[0] == res[1], (op, args)
        assert state(fast) == state(slow)
        for s in (fast, slow):
            for t in s.tables.values():
                t._check()
    finally:
        fast.close()
        slow.close()


def test_conflicts_with_open_change_sets_and_truncation(store: Store) -> None:
    t = store.create_table("t", [("id", "int64"), ("v", "string")], primary_key="id")
    t.insert([(i, "v") for i in range(10)])
    cs = store.begin("owner")
    cs.update("t", [1], {"v": "mine"})
    cs.delete("t", [2])
    cs.insert("t", (50, "new"))
    for fn in (lambda: t.upsert((1, "x")), lambda: t.upsert({"id": 2, "v": "x"}), lambda: t.insert((50, "x")),
               lambda: t.insert([(50, "x")]), lambda: t.update(1, {"v": "x"}), lambda: t.update_many([2], {"v": "x"}),
               lambda: t.delete(50), lambda: t.delete([1]), lambda: t.update(3, {"id": 50})):
        before = state(store)
        with pytest.raises(ConflictError) as ei:
            fn()
        assert "owner" in str(ei.value) and ei.value.details["txn"] == "owner"
        assert state(store) == before
    # Keys the set does not hold are free.
    assert t.upsert((3, "free")) == 1 and t.get(3) == (3, "free")
    cs.commit()
    assert t.get(1) == (1, "mine") and t.get(2) is None and t.get(50) == (50, "new")
    tr = store.begin("trunc")
    tr.truncate("t")
    for fn in (lambda: t.upsert((9, "x")), lambda: t.delete(9), lambda: t.update(9, {"v": "x"}),
               lambda: t.insert((99, "x"))):
        with pytest.raises(ConflictError) as ei:
            fn()
        assert "being truncated by transaction trunc" in str(ei.value)
    tr.abort()
    assert t.upsert((9, "after")) == 1


def test_memory_limits_refuse_alike() -> None:
    for limit_kind in ("table", "store"):
        outs = []
        for path in ("fast", "slow"):
            kw = {"memory_limit_bytes": 40_000} if limit_kind == "store" else {}
            s = Store(background=False, **kw)
            opts = {"memory_limit_bytes": "40000"} if limit_kind == "table" else {}
            t = s.create_table("m", [("id", "int64"), ("s", "string")], primary_key="id", options=opts)
            w: Any = t if path == "fast" else ChangeSetPath(t)
            seq = []
            for i in range(400):
                seq.append(outcome(lambda: w.upsert((i, "x" * 10))))
                if i % 7 == 0:
                    seq.append(outcome(lambda: w.update(i // 2, {"s": "y"})))
                    seq.append(outcome(lambda: w.delete(i // 3)))
            seq.append(contents(t))
            outs.append(seq)
            s.close()
        assert outs[0] == outs[1]
        assert any(o[0] == "error" and o[1] == "MemoryLimitError" for o in outs[0][:-1])


def test_stale_table_object_behaves_as_before() -> None:
    outs = []
    for path in ("fast", "slow"):
        s = make_store()
        old = s.table("a")
        w: Any = old if path == "fast" else ChangeSetPath(old)
        s.drop_table("a")
        seq = [outcome(lambda: w.upsert(tuple(a_row(random.Random(1), 1)))),
               outcome(lambda: w.delete(1)), outcome(lambda: w.update(1, {"k": 2}))]
        spec = TABLES["a"]
        s.create_table("a", spec["schema"], primary_key=spec["primary_key"])
        seq += [outcome(lambda: w.upsert(tuple(a_row(random.Random(2), 2)))),
                outcome(lambda: w.update(2, {"k": 3})), outcome(lambda: w.delete(2)),
                outcome(lambda: w.insert(tuple(a_row(random.Random(3), 3)))), contents(s.table("a"))]
        outs.append(seq)
        s.close()
    assert outs[0] == outs[1]


def test_one_row_statements_build_no_change_set(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    made = []

    class Counting(store_mod.ChangeSet):
        def __init__(self, *a: Any, **k: Any) -> None:
            made.append(1)
            super().__init__(*a, **k)

    monkeypatch.setattr(store_mod, "ChangeSet", Counting)
    t = store.create_table("t", [("id", "int64"), ("v", "string")], primary_key="id")
    t.upsert((1, "a"))
    t.upsert([{"id": 2, "v": "b"}])
    t.insert({"id": 3, "v": "c"})
    t.update(1, {"v": "z"})
    t.update_many([2], {"v": "y"})
    t.delete(3)
    t.delete([2])
    assert made == []
    t.upsert([(5, "a"), (6, "b")])
    assert made == [1]


def _records(data_dir: Path) -> list[Any]:
    log = WriteAheadLog(data_dir / "wal", flush="off")
    try:
        out = []
        for _, payload in log.replay():
            rec = decode_record(payload)
            if rec[0] == "commit1":
                rec = (rec[0], "<id>", rec[2])  # ids are numbered per process
            out.append(rec)
        return out
    finally:
        log.close()


def test_same_log_records_and_recovery(tmp_path: Path) -> None:
    dirs = {p: tmp_path / p for p in ("fast", "slow")}
    expected = {}
    for path, d in dirs.items():
        s = make_store(d)
        rng = random.Random(11)
        for _ in range(600):
            name, op, args = random_op(rng)
            t = s.table(name)
            outcome(lambda: getattr(t if path == "fast" else ChangeSetPath(t), op)(*args))
        expected[path] = state(s)
        s.close()
    assert expected["fast"] == expected["slow"]
    assert _records(dirs["fast"]) == _records(dirs["slow"])
    for d in dirs.values():
        s = Store(d, background=False)
        try:
            got = state(s)
            assert got == {n: (c, k, {}, None) for n, (c, k, _, _) in expected["fast"].items()}
        finally:
            s.close()


def test_failed_log_append_applies_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path, flush="commit", background=False)
    try:
        t = s.create_table("t", [("id", "int64"), ("v", "string")], primary_key="id")
        t.insert([(1, "a"), (2, "b")])
        before = state(s)
        assert s._wal is not None

        def broken(payload: Any, **kw: Any) -> int:
            raise WalError("disk on fire")

        monkeypatch.setattr(s._wal, "append", broken)
        for fn in (lambda: t.upsert((1, "x")), lambda: t.insert((3, "x")), lambda: t.update(2, {"v": "x"}),
                   lambda: t.delete(1), lambda: t.update(1, {"id": 9})):
            with pytest.raises(WalError):
                fn()
            assert state(s) == before
        monkeypatch.undo()
        assert t.upsert((1, "ok")) == 1
    finally:
        s.close()
    s = Store(tmp_path, background=False)
    try:
        assert contents(s.table("t")) == [(1, "ok"), (2, "b")]
    finally:
        s.close()


def test_one_row_writes_race_with_change_sets(store: Store) -> None:
    """One-row writes from several threads never touch a row while a change set holds
    its key: the holder reads the same committed row before and after a pause, and its
    commit is the one that lands."""
    t = store.create_table("acct", [("id", "int64"), ("v", "int64")], primary_key="id", num_buckets=4)
    n = 12
    t.insert([(i, 0) for i in range(n)])
    stop = threading.Event()
    errors: list[BaseException] = []
    commits = [0]

    def holder(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            k = rng.randrange(n)
            cs = store.begin()
            try:
                try:
                    locked = cs.update("acct", [k], {"v": -1}) == 1  # takes the key lock
                except ConflictError:
                    locked = False
                if not locked:  # held by the other holder, or deleted just now
                    cs.abort()
                    continue
                seen = t.get(k)
                for _ in range(20):
                    threading.Event().wait(0.0002)  # let the writers run
                    if t.get(k) != seen:
                        errors.append(AssertionError(f"row {k} changed under a key lock: {seen} -> {t.get(k)}"))
                mark = 10**9 + seed * 10**6 + commits[0]
                commits[0] += 1
                cs.update("acct", [k], {"v": mark})
                cs.commit()
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
                cs.abort()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        c = 0
        while not stop.is_set():
            k = rng.randrange(n)
            c += 1
            v = seed * 10**6 + c
            try:
                op = rng.randrange(4)
                if op == 0:
                    t.upsert((k, v))
                elif op == 1:
                    t.update(k, {"v": v})
                elif op == 2:
                    if t.delete(k):
                        t.insert({"id": k, "v": v})
                else:
                    t.update_many([k], {"v": v})
            except (ConflictError, DuplicateKeyError):  # another writer re-inserted it first
                pass
            except BaseException as e:  # pragma: no cover
                errors.append(e)

    threads = [threading.Thread(target=holder, args=(i + 1,)) for i in range(2)]
    threads += [threading.Thread(target=writer, args=(100 + i,)) for i in range(3)]
    for th in threads:
        th.start()
    stop.wait(1.5)
    stop.set()
    for th in threads:
        th.join()
    assert not errors, errors[:3]
    assert commits[0] > 0
    assert not t.locks
    t._check()
