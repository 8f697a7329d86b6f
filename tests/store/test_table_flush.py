"""A table's ``flush`` option overrides the store's log flush policy for changes to it.

"commit": a write returns only once its log record is fsynced; "group": it returns at
once and a background flusher fsyncs it within the group interval; "off": nothing
fsyncs it before a checkpoint or close. A change set touching several tables takes the
strictest of their policies. The fsync is the counting wrapper of test_group_commit.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from spark_ext.exceptions import SchemaError
from spark_ext.store import Store
from tests.store.test_group_commit import WAIT, Fsyncs, fsyncs  # noqa: F401 - the fixture

COLS = [("id", "int64"), ("v", "string")]


def _writes(s: Store, name: str) -> list[Callable[[], Any]]:
    t = s.tables[name]

    def in_change_set() -> None:
        with s.begin() as cs:
            cs.upsert(name, (50, "cs"))

    return [lambda: t.upsert((1, "a")), lambda: t.insert([(2, "b"), (3, "c")]), lambda: t.update(1, {"v": "A"}),
            lambda: t.delete(3), in_change_set]


def test_commit_table_in_an_off_store_waits_for_each_fsync(tmp_path: Path, fsyncs: Fsyncs) -> None:
    s = Store(tmp_path / "db", flush="off", background=False)
    try:
        s.create_table("t", COLS, primary_key="id", options={"flush": "commit"})
        assert s._wal is not None
        for write in _writes(s, "t"):
            fsyncs.callers.clear()
            write()
            assert s._wal.durable_lsn == s._wal.last_lsn  # durable before the write returned
            assert threading.get_ident() in fsyncs.callers
    finally:
        s.close()


def test_off_table_in_a_commit_store_does_not_wait(tmp_path: Path, fsyncs: Fsyncs) -> None:
    s = Store(tmp_path / "db", flush="commit", background=False)
    try:
        s.create_table("t", COLS, primary_key="id", options={"flush": "OFF"})
        assert s.tables["t"].flush == "off"
        assert s._wal is not None
        before = s._wal.durable_lsn
        fsyncs.callers.clear()
        for write in _writes(s, "t"):
            write()
        assert s._wal.last_lsn > before and s._wal.durable_lsn == before  # nobody fsynced them
        assert threading.get_ident() not in fsyncs.callers
        # A change set that also touches a table of the store's policy ("commit") waits.
        s.create_table("c", COLS, primary_key="id")
        with s.begin() as cs:
            cs.upsert("t", (60, "x"))
            cs.upsert("c", (60, "x"))
        assert s._wal.durable_lsn == s._wal.last_lsn
    finally:
        s.close()


def test_group_table_in_a_commit_store_is_fsynced_by_a_flusher(tmp_path: Path, fsyncs: Fsyncs) -> None:
    s = Store(tmp_path / "db", flush="commit", background=False)
    try:
        s.create_table("t", COLS, primary_key="id", options={"flush": "group"})
        assert s._wal is not None
        fsyncs.callers.clear()
        for write in _writes(s, "t"):
            write()
        assert threading.get_ident() not in fsyncs.callers
        target = s._wal.last_lsn
        deadline = time.monotonic() + WAIT  # a hang guard, not a timing check
        while s._wal.durable_lsn < target:
            assert time.monotonic() < deadline, "no flusher made the group table's records durable"
            time.sleep(0.01)
        assert fsyncs.callers and threading.get_ident() not in fsyncs.callers
    finally:
        s.close()


@pytest.mark.parametrize("bad", ["always", "", "1"])
def test_bad_flush_option_is_refused_and_creates_nothing(tmp_path: Path, bad: str) -> None:
    s = Store(tmp_path / "db", background=False)
    try:
        with pytest.raises(SchemaError, match=rf"table 't': option flush must be commit, group or off, got '{bad}'"):
            s.create_table("t", COLS, primary_key="id", options={"flush": bad})
        assert "t" not in s.tables
    finally:
        s.close()


def test_flush_option_survives_reopen(tmp_path: Path) -> None:
    s = Store(tmp_path / "db", background=False)
    s.create_table("t", COLS, primary_key="id", options={"flush": "group"})
    s.tables["t"].upsert((1, "a"))
    s.close()
    s = Store(tmp_path / "db", background=False)
    try:
        assert s.tables["t"].flush == "group" and s.tables["t"].get(1) == (1, "a")
        s.checkpoint()
    finally:
        s.close()
    s = Store(tmp_path / "db", background=False)
    try:
        assert s.tables["t"].flush == "group"
    finally:
        s.close()
