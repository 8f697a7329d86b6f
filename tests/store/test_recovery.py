"""Durability: close and reopen a store in a data directory, for every flush policy,
with and without checkpoints, with DDL, undecided change sets and memory-only tables."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from spark_ext.exceptions import ConflictError, NoSuchTableError, TransactionStateError
from spark_ext.store import Store, col
from tests.store.unit_helpers import contents

D = decimal.Decimal
UTC = dt.timezone.utc
FLUSHES = ["commit", "group", "off"]


def _open(path: Path, flush: str = "commit") -> Store:
    return Store(path, flush=flush, background=False)


def state(store: Store) -> dict[str, Any]:
    """Everything that must survive a restart: definitions, indexes, rows."""
    out = {}
    for name in sorted(store.tables):
        t = store.tables[name]
        out[name] = {
            "schema": t.schema.to_json(),
            "indexes": {k: (kind, list(cols)) for k, (kind, cols) in t.index_defs.items()},
            "rows": contents(t),
            "count": t.count(),
        }
    return out


def _populate(s: Store) -> None:
    """A bit of every kind of change, in several tables."""
    t = s.create_table("db.t", [("id", "int64"), ("k", "int32"), ("s", "string"), ("d", "decimal(10,2)"),
                                ("ts", "timestamp_tz"), ("b", "binary"), ("f", "float32")],
                       primary_key="id", num_buckets=4)
    t.insert([(i, i % 7, f"s{i}", D(i) / 4, dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=i),
               bytes([i % 256]), i / 3) for i in range(50)])
    t.insert(pa.table({"id": pa.array(range(1000, 1300), pa.int64()), "k": pa.array([i % 7 for i in range(300)], pa.int32()),
                       "s": [f"bulk{i}" for i in range(300)]}))
    t.upsert([(5, 0, "ups", None, None, None, None), (2000, 1, "new", D("1.5"), None, b"", 0.1)])
    t.upsert(pa.table({"id": pa.array(range(1250, 1400), pa.int64()), "s": ["bulk-ups"] * 150}))
    t.update(6, {"s": "upd", "d": D("-3.25")})
    t.update(7, {"id": 7000})  # key change
    t.delete([8, 9, 1001])
    t.update_where(col("k") == 3, {"s": "k3"})
    t.delete_where(col("id").isin([10, 11, 1100]))
    t.create_index("t_k", "k")
    t.create_index("t_s", ["s", "k"], "ordered")

    c = s.create_table("db.c", [("a", "string"), ("n", "date"), ("v", "int64")], primary_key=["a", "n"], num_buckets=3)
    c.insert([(f"a{i % 5}", dt.date(2024, 1, 1) + dt.timedelta(days=i), i) for i in range(40)])
    c.update(("a1", dt.date(2024, 1, 2)), {"v": -1})

    h = s.create_table("db.h", [("x", "int32"), ("y", "string")], num_buckets=2)
    h.insert([(i, "h") for i in range(20)])
    h.insert(pa.table({"x": pa.array(range(200), pa.int32()), "y": ["hb"] * 200}))
    h.delete([3, 4])
    h.update(5, {"y": "h5"})

    o = s.create_table("db.overwrite", [("id", "int32")], primary_key="id")
    o.insert([(i,) for i in range(10)])
    with s.begin() as cs:  # INSERT OVERWRITE
        cs.truncate("db.overwrite")
        cs.insert("db.overwrite", [(100,), (101,)])

    with s.begin() as cs:  # a change set across tables
        cs.insert("db.t", (3000, 1, "cs", None, None, None, None))
        cs.delete("db.c", [("a0", dt.date(2024, 1, 1))])
        cs.insert("db.h", (999, "cs"))
    cs = s.begin()  # aborted after prepare: leaves nothing
    cs.insert("db.t", (4000, 1, "aborted", None, None, None, None))
    cs.prepare()
    cs.abort()
    cs = s.begin()  # aborted while open
    cs.delete("db.t", [1, 2, 3])
    cs.abort()

    gone = s.create_table("db.gone", [("id", "int32")], primary_key="id")
    gone.insert((1,))
    gone.create_index("g", "id")
    s.drop_table("db.gone")
    t.create_index("tmp", "s")
    t.drop_index("tmp")


def _more_writes(s: Store) -> None:
    t = s.table("db.t")
    t.insert((5000, 2, "after", None, None, None, None))
    t.delete([12, 13])
    t.update(14, {"s": "after"})
    t.insert(pa.table({"id": pa.array(range(6000, 6200), pa.int64()), "s": ["after-bulk"] * 200}))
    s.table("db.h").insert((12345, "after"))
    s.table("db.c").delete([("a2", dt.date(2024, 1, 3))])


@pytest.mark.parametrize("flush", FLUSHES)
def test_reopen_gives_same_contents(tmp_path: Path, flush: str) -> None:
    s = _open(tmp_path / "data", flush)
    _populate(s)
    want = state(s)
    assert set(want) == {"db.t", "db.c", "db.h", "db.overwrite"}
    assert want["db.overwrite"]["rows"] == [(100,), (101,)]
    s.close()
    s2 = _open(tmp_path / "data", flush)
    try:
        assert state(s2) == want
        for t in s2.tables.values():
            t._check()
        # The indexes are rebuilt and used.
        t = s2.table("db.t")
        sc = t.scan(columns=["id"], where=col("k") == 3)
        assert sc.access_path == "index:t_k"
        assert sorted(sc.to_table().column(0).to_pylist()) == sorted(r[0] for r in want["db.t"]["rows"] if r[1] == 3)
        assert s2.in_doubt() == []
        # More writes after the restart, and a second restart.
        _more_writes(s2)
        want2 = state(s2)
    finally:
        s2.close()
    s3 = _open(tmp_path / "data", flush)
    try:
        assert state(s3) == want2
    finally:
        s3.close()


@pytest.mark.parametrize("flush", FLUSHES)
def test_checkpoint_then_more_writes(tmp_path: Path, flush: str) -> None:
    s = _open(tmp_path, flush)
    _populate(s)
    lsn = s.checkpoint()
    assert lsn > 0
    assert list((tmp_path / "checkpoints").iterdir())
    _more_writes(s)
    s.table("db.t").create_index("after_ckpt", "s", "ordered")
    s.table("db.t").drop_index("t_k")
    s.drop_table("db.overwrite")
    want = state(s)
    s.close()
    s2 = _open(tmp_path, flush)
    try:
        assert state(s2) == want
        assert "db.overwrite" not in s2.tables
        assert set(s2.table("db.t").index_defs) == {"t_s", "after_ckpt"}
        for t in s2.tables.values():
            t._check()
        # A second checkpoint and a restart with nothing after it.
        s2.table("db.h").insert((777, "x"))
        s2.checkpoint()
        want2 = state(s2)
    finally:
        s2.close()
    s3 = _open(tmp_path, flush)
    try:
        assert state(s3) == want2
    finally:
        s3.close()


def test_checkpoint_only_restart(tmp_path: Path) -> None:
    s = _open(tmp_path)
    _populate(s)
    s.compact()
    s.checkpoint()
    want = state(s)
    s.close()
    s2 = _open(tmp_path)
    try:
        assert state(s2) == want
    finally:
        s2.close()


def test_hidden_row_ids_are_not_reused_after_restart(tmp_path: Path) -> None:
    s = _open(tmp_path)
    h = s.create_table("h", [("x", "int32")])
    h.insert([(i,) for i in range(10)])
    h.delete([9, 10])  # the highest row ids
    s.close()
    s = _open(tmp_path)
    s.table("h").insert((100,))
    got = s.table("h").scan(columns=["_rowid"], where=col("x") == 100).to_table().column(0).to_pylist()
    assert got == [11]
    s.checkpoint()
    s.table("h").delete([11])
    s.close()
    s = _open(tmp_path)
    try:
        s.table("h").insert((200,))
        got = s.table("h").scan(columns=["_rowid"], where=col("x") == 200).to_table().column(0).to_pylist()
        assert got == [12]
    finally:
        s.close()


def test_drops_survive_restart(tmp_path: Path) -> None:
    s = _open(tmp_path)
    t = s.create_table("t", [("id", "int32"), ("v", "int32")], primary_key="id")
    t.insert([(1, 1), (2, 2)])
    t.create_index("v", "v")
    t.create_index("v2", ["v", "id"], "ordered")
    s.create_table("x", [("id", "int32")], primary_key="id").insert((1,))
    s.drop_table("x")
    s.create_table("x", [("id", "string")], primary_key="id").insert(("re-created",))
    s.create_table("y", [("id", "int32")], primary_key="id")
    s.checkpoint()
    t.drop_index("v")
    s.drop_table("y")
    s.close()
    s = _open(tmp_path)
    try:
        assert set(s.tables) == {"t", "x"}
        assert s.table("t").index_defs == {"v2": ("ordered", ["v", "id"])}
        assert contents(s.table("x")) == [("re-created",)]
        assert s.table("x").schema.arrow_schema.types == [pa.string()]
        with pytest.raises(NoSuchTableError):
            s.table("y")
        assert s.table("t").scan(where=col("v") == 1).access_path == "index:v2"
    finally:
        s.close()


@pytest.mark.parametrize("decision", ["commit", "abort"])
@pytest.mark.parametrize("checkpoint", [False, True], ids=["log", "checkpoint"])
def test_prepared_change_set_is_in_doubt_after_restart(tmp_path: Path, decision: str, checkpoint: bool) -> None:
    s = _open(tmp_path)
    a = s.create_table("a", [("id", "int64"), ("v", "string")], primary_key="id", num_buckets=3)
    b = s.create_table("b", [("id", "string"), ("n", "int32")], primary_key="id")
    a.insert([(i, "a") for i in range(10)])
    b.insert([("x", 1), ("y", 2)])
    cs = s.begin("txn-42")
    cs.insert("a", (100, "new"))
    cs.insert("a", pa.table({"id": pa.array(range(200, 400), pa.int64()), "v": ["bulk"] * 200}))
    cs.update("a", [1], {"v": "upd"})
    cs.delete("a", [2])
    cs.delete("b", ["x"])
    cs.upsert("b", ("z", 3))
    cs.prepare()
    other = s.begin("open-one")  # never prepared: must vanish
    other.insert("a", (500, "open"))
    if checkpoint:
        s.checkpoint()
    before = state(s)
    s.close()

    s2 = _open(tmp_path)
    try:
        assert s2.in_doubt() == ["txn-42"]
        assert state(s2) == before  # nothing of it is visible
        a2, b2 = s2.table("a"), s2.table("b")
        # Its keys are still locked.
        with pytest.raises(ConflictError):
            a2.update(1, {"v": "other"})
        with pytest.raises(ConflictError):
            b2.insert(("z", 9))
        with pytest.raises(ConflictError):
            a2.truncate()
        a2.insert((600, "free key"))
        before = state(s2)
        tx = s2.transaction("txn-42")
        assert tx.state == "prepared"
        with pytest.raises(TransactionStateError):
            tx.insert("a", (700, "x"))
        getattr(tx, decision)()
        assert s2.in_doubt() == []
        if decision == "commit":
            assert a2.get(100) == (100, "new") and a2.get(1) == (1, "upd") and a2.get(2) is None
            assert a2.get(250) == (250, "bulk")
            assert b2.get("x") is None and b2.get("z") == ("z", 3)
        else:
            assert state(s2) == before
        assert a2.get(500) is None
        assert not a2.locks and not b2.locks
        a2.update(1, {"v": "after decision"})
        want = state(s2)
    finally:
        s2.close()
    s3 = _open(tmp_path)
    try:
        assert s3.in_doubt() == []
        assert state(s3) == want
    finally:
        s3.close()


def test_memory_only_table_keeps_definition_not_rows(tmp_path: Path) -> None:
    s = _open(tmp_path)
    m = s.create_table("mem", [("id", "int32"), ("v", "string")], primary_key="id", options={"persistence": "memory"})
    p = s.create_table("disk", [("id", "int32"), ("v", "string")], primary_key="id")
    assert m.persistent is False and p.persistent is True
    m.insert([(1, "a"), (2, "b")])
    m.insert(pa.table({"id": pa.array(range(10, 210), pa.int32()), "v": ["x"] * 200}))
    m.create_index("mv", "v")
    with s.begin() as cs:  # a set over both kinds: the durable part survives
        cs.insert("mem", (3, "c"))
        cs.insert("disk", (1, "d"))
    p.insert((2, "e"))
    s.close()
    s = _open(tmp_path)
    try:
        m2, p2 = s.table("mem"), s.table("disk")
        assert m2.count() == 0 and contents(m2) == []
        assert m2.schema.options == {"persistence": "memory"} and m2.persistent is False
        assert m2.schema.arrow_schema.names == ["id", "v"] and m2.schema.primary_key == ["id"]
        assert m2.index_defs == {"mv": ("hash", ["v"])}
        assert contents(p2) == [(1, "d"), (2, "e")]
        m2.insert((5, "again"))
        assert m2.scan(where=col("v") == "again").count() == 1
        s.checkpoint()
    finally:
        s.close()
    s = _open(tmp_path)  # after a checkpoint too
    try:
        assert s.table("mem").count() == 0
        assert contents(s.table("disk")) == [(1, "d"), (2, "e")]
    finally:
        s.close()


def test_data_dir_is_created_and_empty_store_reopens(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c"
    s = _open(path)
    s.close()
    s.close()  # idempotent
    assert path.is_dir()
    s = _open(path)
    try:
        assert s.tables == {} and s.in_doubt() == []
    finally:
        s.close()


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    from spark_ext.exceptions import ShuttingDownError

    s = _open(tmp_path)
    s.close()
    with pytest.raises(ShuttingDownError):
        s.create_table("t", [("id", "int32")], primary_key="id")
    with pytest.raises(ShuttingDownError):
        s.begin()


def test_store_context_manager_and_background_upkeep(tmp_path: Path) -> None:
    with Store(tmp_path, flush="group", background=True, compaction_min_rows=1) as s:
        t = s.create_table("t", [("id", "int32")], primary_key="id")
        t.insert([(i,) for i in range(100)])
        t.compact()
        want = state(s)
    with Store(tmp_path, background=False) as s:
        assert state(s) == want
