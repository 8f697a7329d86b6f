"""The log keeps the STAGE records a decision refers to: after a failed commit (the
change set is still open or prepared and may be retried), and for the older checkpoint
recovery falls back to when the newest is unreadable. Real logs in temporary folders;
the failure is a log append that raises once (as a full disk would)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spark_ext.store import Store
from spark_ext.store import checkpoint as ckpt
from spark_ext.store.wal import WalError
from tests.store.test_bulk_write import SCHEMA, _batch, _staged
from tests.store.unit_helpers import contents, sort_rows


class _FailOnce:
    """Stands in for ``WriteAheadLog.append`` and raises once, then appends for real."""

    def __init__(self, wal: Any) -> None:
        self.real = wal.append
        self.armed = True

    def __call__(self, payload: Any, *, wait: bool = True, defer: bool = False) -> int:
        if self.armed:
            self.armed = False
            raise WalError("injected: write to the log failed (no space left on device)")
        return int(self.real(payload, wait=wait, defer=defer))


@pytest.mark.parametrize("phases,then", [
    ("two_phase", "retry"), ("two_phase", "crash_in_doubt"), ("two_phase", "abort"),
    ("one_phase", "retry"), ("one_phase", "abort"),
])
def test_failed_commit_keeps_its_stage_records_through_checkpoints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phases: str, then: str) -> None:
    s = Store(tmp_path, background=False)
    t = s.create_table("t", SCHEMA, primary_key="id", num_buckets=4)
    t.insert(_batch(range(0, 10)))
    cs = s.begin("x")
    ob = _staged(s, cs, t, np.arange(100, 1100))
    cs.insert("t", ob)
    s.checkpoint()  # the STAGE record is now in an older log segment than what follows
    if phases == "two_phase":
        cs.prepare()
    monkeypatch.setattr(s._wal, "append", _FailOnce(s._wal))
    with pytest.raises(WalError, match="injected"):
        cs.commit()
    # The change set did not end: same state, same id, same locks.
    assert cs.state == ("prepared" if phases == "two_phase" else "open")
    assert s.transaction("x") is cs
    assert t.get(100) is None and t.lock_owner(100) is cs
    for i in range(2):  # checkpoints meanwhile (the background upkeep's) keep its records
        t.insert(_batch(range(20 + 10 * i, 30 + 10 * i)))
        s.checkpoint()
    assert s._wal.first_lsn <= ob.lsn
    if then == "retry":
        cs.commit()  # e.g. the in-doubt resolver deciding it again
        assert t.get(100) is not None and cs.state == "committed"
    elif then == "abort":
        cs.abort()
    expected = contents(t)
    s._wal.close()  # kill -9
    s2 = Store(tmp_path, background=False)  # refused to start when the records were trimmed
    try:
        if then == "crash_in_doubt":
            assert s2.in_doubt() == ["x"]
            s2.transaction("x").commit()
            expected = sort_rows(expected + [(i, f"v{i}", i / 2) for i in range(100, 1100)])
        t2 = s2.table("t")
        assert contents(t2) == expected
        assert len(expected) == 30 + (1000 if then != "abort" else 0)
        t2._check()
    finally:
        s2.close()


def test_ended_change_sets_release_their_pin_so_the_log_is_trimmed(tmp_path: Path) -> None:
    s = Store(tmp_path, background=False)
    try:
        t = s.create_table("t", SCHEMA, primary_key="id", num_buckets=4)
        for txn, end in (("c", "commit"), ("a", "abort")):
            cs = s.begin(txn)
            ob = _staged(s, cs, t, np.arange(100, 600) + (1000 if txn == "a" else 0))
            cs.insert("t", ob)
            cs.prepare()
            getattr(cs, end)()
        assert not s._staged
        for i in range(2):
            t.insert(_batch([i]))
            s.checkpoint()
        assert s._wal.first_lsn > ob.lsn  # nothing keeps the STAGE records any more
    finally:
        s.close()


def test_fallback_to_the_older_checkpoint_finds_the_stage_records_it_replays(tmp_path: Path) -> None:
    s = Store(tmp_path, background=False)
    t = s.create_table("t", SCHEMA, primary_key="id", num_buckets=4)
    t.insert(_batch(range(0, 10)))
    cs = s.begin("y")
    ob = _staged(s, cs, t, np.arange(100, 1100))
    cs.insert("t", ob)
    cs.prepare()
    c1 = s.checkpoint()  # "y" undecided: recovery from c1 replays from before its STAGE record
    cs.commit()
    t.insert(_batch(range(20, 30)))
    c2 = s.checkpoint()  # "y" decided: c2 itself needs nothing before c2
    assert c1 < c2 and [c for c, _ in ckpt.list_checkpoints(tmp_path / "checkpoints")] == [c1, c2]
    assert s._wal.first_lsn <= ob.lsn
    expected = contents(t)
    assert len(expected) == 1020
    s._wal.close()  # kill -9
    newest = ckpt.list_checkpoints(tmp_path / "checkpoints")[-1][1]
    (newest / ckpt.MANIFEST).write_text("{damaged")  # recovery must fall back to c1
    s2 = Store(tmp_path, background=False)
    try:
        t2 = s2.table("t")
        assert contents(t2) == expected and not s2.in_doubt()
        t2._check()
    finally:
        s2.close()


def test_a_with_block_whose_commit_fails_releases_its_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``with store.begin()``: the commit at the end fails on a log write; nothing is
    applied, the keys are free again (the abort record, not needed, fails as well)."""
    s = Store(tmp_path, flush="group", background=False)
    t = s.create_table("t", [("id", "int64"), ("v", "string")], "id")
    t.upsert((1, "before"))
    failing = _FailOnce(s._wal)

    def fail_every_time(payload: Any, *, wait: bool = True, defer: bool = False) -> int:
        failing.armed = True
        return failing(payload, wait=wait, defer=defer)

    monkeypatch.setattr(s._wal, "append", fail_every_time)
    with pytest.raises(WalError, match="injected"):
        with s.begin() as cs:
            cs.upsert("t", [(1, "in the failed commit"), (2, "new")])
    monkeypatch.undo()
    assert cs.state == "aborted" and not t.locks and not t.bulk_locks
    t.upsert((1, "after"))  # the key is free
    assert contents(t) == sort_rows([(1, "after")])
    s.close()
