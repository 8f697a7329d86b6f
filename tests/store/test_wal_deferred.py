"""Deferred appends of the write-ahead log (``append(..., defer=True)`` and
``write_pending``): LSNs at once, bytes on disk only when written, order kept across
deferred and plain appends, rotation, sync and close; a failed deferred write fails the
log without leaving a torn record behind."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from spark_ext.store import wal as wal_mod
from spark_ext.store.wal import HEADER_SIZE, WalError, WriteAheadLog


def _disk_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.glob("wal-*.log"))


def _replayed(d: Path) -> list[tuple[int, bytes]]:
    with WriteAheadLog(d, flush="off") as w:
        return list(w.replay())


@pytest.mark.parametrize("flush", ["group", "off"])
def test_deferred_records_reach_disk_only_when_written(tmp_path: Path, flush: str) -> None:
    w = WriteAheadLog(tmp_path, flush=flush)
    assert w.append(b"plain-1") == 1
    on_disk = _disk_bytes(tmp_path)
    assert [w.append(b"d-%d" % i, defer=True) for i in range(3)] == [2, 3, 4]
    assert w.last_lsn == 4
    assert _disk_bytes(tmp_path) == on_disk  # held in memory
    w.write_pending()
    assert _disk_bytes(tmp_path) == on_disk + 3 * (HEADER_SIZE + 3)
    w.write_pending()  # nothing held: no-op
    w.close()
    assert _replayed(tmp_path) == [(1, b"plain-1"), (2, b"d-0"), (3, b"d-1"), (4, b"d-2")]


def test_plain_append_sync_rotate_replay_and_close_write_what_is_held(tmp_path: Path) -> None:
    rng = random.Random(11)
    w = WriteAheadLog(tmp_path, flush="group", segment_bytes=300)
    want: list[tuple[int, bytes]] = []
    for i in range(400):
        payload = b"r%d-" % i * rng.randrange(1, 6)
        action = rng.random()
        lsn = w.append(payload, defer=action < 0.7)
        want.append((lsn, payload))
        if action > 0.97:
            w.sync()
            assert w.durable_lsn == lsn
        elif action > 0.94:
            w.rotate()
        elif action > 0.92:
            assert list(w.replay()) == want  # replay reads what was appended, held or not
    assert len(w.segments) > 10  # rotations happened with records held
    w.close()
    assert _replayed(tmp_path) == want


def test_commit_mode_ignores_defer(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, flush="commit") as w:
        lsn = w.append(b"x", defer=True)
        assert w.durable_lsn == lsn and _disk_bytes(tmp_path) == HEADER_SIZE + 1


def test_a_failed_deferred_write_fails_the_log_and_leaves_no_torn_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = WriteAheadLog(tmp_path, flush="group")
    w.append(b"kept")
    w.append(b"lost-1", defer=True)
    w.append(b"lost-2", defer=True)
    real = os.writev

    def half_then_fail(fd: int, bufs: list[bytes]) -> int:
        os.write(fd, bufs[0][:5])  # a torn header reaches the file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wal_mod.os, "writev", half_then_fail)
    with pytest.raises(WalError, match="deferred write of 2 record"):
        w.write_pending()
    monkeypatch.setattr(wal_mod.os, "writev", real)
    with pytest.raises(WalError, match="failed earlier"):
        w.append(b"after")
    assert _disk_bytes(tmp_path) == HEADER_SIZE + 4  # cut back to the last whole record
    w.close()
    assert _replayed(tmp_path) == [(1, b"kept")]


def test_a_buffer_that_may_change_is_written_at_once(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, flush="group") as w:
        buf = bytearray(b"mutable")
        w.append(buf, defer=True)
        buf[:] = b"changed"
        assert _disk_bytes(tmp_path) == HEADER_SIZE + 7
    assert _replayed(tmp_path) == [(1, b"mutable")]
