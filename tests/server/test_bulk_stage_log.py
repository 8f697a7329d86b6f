"""A store server logs bulk rows when they are staged (STAGE records); the commit record
only refers to them. Recovery applies exactly the committed parts' rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from spark_ext.exceptions import DuplicateKeyError
from spark_ext.server.store_service import StoreService
from spark_ext.store import Store
from spark_ext.wire.arrowio import write_ipc_stream
from spark_ext.wire.errors import WireError
from spark_ext.wire.frames import Flags, Frame
from spark_ext.wire.kinds import Kind
from tests.store.unit_helpers import contents

SCHEMA = [("id", "int64"), ("v", "string")]


def _body(ids: np.ndarray) -> bytes:
    return bytes(write_ipc_stream(pa.record_batch({"id": pa.array(ids, pa.int64()),
                                                   "v": [f"v{i}" for i in ids.tolist()]})))


def _stage(svc: StoreService, txn: str, part: str, ids: np.ndarray, op: str = "insert") -> None:
    meta = {"txn": txn, "part": part, "table": "t", "op": op}
    r = svc.txn_stage(Frame(int(Kind.TXN_STAGE), 1, meta, _body(ids), int(Flags.HAS_ARROW)), None)
    assert r.metadata == {"staged": len(ids)}


def _wal_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in (path / "wal").iterdir())


def test_committed_parts_are_recovered_from_their_stage_records(tmp_path: Path) -> None:
    store = Store(tmp_path, background=False)
    svc = StoreService(store)
    store.create_table("t", SCHEMA, primary_key="id", num_buckets=4)
    svc.owned["t"] = None  # (tables created on the store directly: this server holds every bucket)
    rng = np.random.default_rng(5)
    ids = rng.permutation(6000).astype(np.int64)
    _stage(svc, "tx", "p0", ids[:2000])
    _stage(svc, "tx", "p0", ids[2000:3000])
    _stage(svc, "tx", "p1", ids[3000:6000])
    _stage(svc, "tx", "p2", np.arange(10_000, 11_000, dtype=np.int64))  # a failed attempt
    assert svc.txns.abort_part("tx", "p2") == "aborted"
    for p in ("p0", "p1"):
        svc.txns.prepare_part("tx", p, svc._apply)
    before = _wal_bytes(tmp_path)
    assert svc.txns.commit("tx", ["p0", "p1"]) == "committed"
    assert _wal_bytes(tmp_path) - before < 1000  # the commit record refers to the logged rows
    t = store.table("t")
    assert t.count() == 6000 and t.get(int(ids[4321])) == (int(ids[4321]), f"v{ids[4321]}")
    store._wal.close()  # kill -9 after the acknowledged commit
    s2 = Store(tmp_path, background=False)
    try:
        t2 = s2.table("t")
        assert t2.count() == 6000 and t2.get(10_500) is None
        assert sorted(r[0] for r in contents(t2)) == sorted(ids.tolist())
        t2._check()
    finally:
        s2.close()


def test_refused_statement_with_logged_rows_leaves_the_table_as_it_was(tmp_path: Path) -> None:
    store = Store(tmp_path, background=False)
    svc = StoreService(store)
    t = store.create_table("t", SCHEMA, primary_key="id", num_buckets=4)
    svc.owned["t"] = None
    t.insert([(5000, "old")])
    _stage(svc, "tx", "p0", np.arange(0, 3000, dtype=np.int64))
    _stage(svc, "tx", "p1", np.arange(3000, 6000, dtype=np.int64))  # holds key 5000
    svc.txns.prepare_part("tx", "p0", svc._apply)
    with pytest.raises(DuplicateKeyError, match="'t'.*5000"):
        svc.txns.prepare_part("tx", "p1", svc._apply)
    assert svc.txns.abort("tx") == "aborted"
    assert t.count() == 1 and t.get(0) is None
    store._wal.close()
    s2 = Store(tmp_path, background=False)
    try:
        assert s2.table("t").count() == 1 and s2.table("t").get(5000) == (5000, "old")
        assert not s2._staged and not s2.in_doubt()
    finally:
        s2.close()


def test_stage_refused_after_the_commit_began_logs_nothing_that_pins_the_log(tmp_path: Path) -> None:
    store = Store(tmp_path, background=False)
    svc = StoreService(store)
    store.create_table("t", SCHEMA, primary_key="id", num_buckets=4)
    svc.owned["t"] = None  # (tables created on the store directly: this server holds every bucket)
    _stage(svc, "tx", "p0", np.arange(0, 1000, dtype=np.int64))
    svc.txns.prepare_part("tx", "p0", svc._apply)
    assert svc.txns.prepare_all("tx", ["p0"]) == "prepared"
    with pytest.raises(Exception) as e:  # TXN_STATE: the job-commit phase has begun
        _stage(svc, "tx", "p1", np.arange(1000, 2000, dtype=np.int64))
    assert WireError.from_exception(e.value).to_metadata()["name"] == "TXN_STATE"
    assert svc.txns.commit("tx", None) == "committed"
    assert not store._staged  # nothing keeps old log records from checkpoints
    store.close()
