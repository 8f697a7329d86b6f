"""Tests for spark_ext.store.wal: format, recovery, flush modes, crashes."""

from __future__ import annotations

import logging
import os
import random
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path
from typing import Callable, Iterator

import pytest

from spark_ext.store import wal as wal_mod
from spark_ext.store.wal import (
    HEADER_SIZE,
    MAGIC,
    WalError,
    WriteAheadLog,
    segment_name,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def payload_for(lsn: int) -> bytes:
    """Deterministic, varied payloads so a crash test can check contents by LSN."""
    return (b"%d:" % lsn) * (1 + lsn % 13)


@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    return tmp_path / "wal"


@pytest.fixture
def opened(wal_dir: Path) -> Iterator[Callable[..., WriteAheadLog]]:
    """Open logs through this so every one is closed even when a test fails."""
    logs: list[WriteAheadLog] = []

    def open_log(**kwargs: object) -> WriteAheadLog:
        log = WriteAheadLog(wal_dir, **kwargs)  # type: ignore[arg-type]
        logs.append(log)
        return log

    yield open_log
    for log in logs:
        try:
            log.close()
        except WalError:
            pass


def fill(log: WriteAheadLog, first: int, last: int) -> None:
    for lsn in range(first, last + 1):
        assert log.append(payload_for(lsn)) == lsn


def expect_records(log: WriteAheadLog, first: int, last: int, after: int = 0) -> None:
    got = list(log.replay(after))
    assert [lsn for lsn, _ in got] == list(range(first, last + 1))
    for lsn, payload in got:
        assert payload == payload_for(lsn), lsn


def record_bytes(lsn: int, payload: bytes) -> bytes:
    lsn_bytes = struct.pack("<Q", lsn)
    crc = zlib.crc32(payload, zlib.crc32(lsn_bytes))
    return struct.pack("<HII", MAGIC, len(payload), crc) + lsn_bytes + payload


# ---------------------------------------------------------------------- basics


def test_append_and_replay(opened: Callable[..., WriteAheadLog], wal_dir: Path) -> None:
    log = opened()
    assert log.last_lsn == 0 and log.first_lsn == 1
    assert list(log.replay()) == []
    fill(log, 1, 50)
    assert log.last_lsn == 50
    expect_records(log, 1, 50)
    expect_records(log, 31, 50, after=30)
    assert list(log.replay(50)) == []
    assert list(log.replay(1000)) == []


def test_payload_types_and_empty_payload(opened: Callable[..., WriteAheadLog]) -> None:
    log = opened()
    assert log.append(b"") == 1
    assert log.append(bytearray(b"ba")) == 2
    assert log.append(memoryview(b"xxmvxx")[2:4]) == 3
    assert list(log.replay()) == [(1, b""), (2, b"ba"), (3, b"mv")]


def test_on_disk_format_matches_spec(opened: Callable[..., WriteAheadLog], wal_dir: Path) -> None:
    log = opened()
    log.append(b"hello")
    log.append(b"")
    data = (wal_dir / segment_name(1)).read_bytes()
    assert data == record_bytes(1, b"hello") + record_bytes(2, b"")
    assert HEADER_SIZE == 18
    assert segment_name(7) == "wal-00000000000000000007.log"


def test_lsns_continue_across_restarts(opened: Callable[..., WriteAheadLog]) -> None:
    log = opened()
    fill(log, 1, 10)
    log.close()
    log = opened(flush="group")
    assert log.last_lsn == 10
    fill(log, 11, 20)
    log.close()
    log = opened(flush="off")
    assert log.last_lsn == 20
    expect_records(log, 1, 20)
    fill(log, 21, 21)
    log.close()
    log = opened()
    expect_records(log, 1, 21)


def test_closed_log_refuses_work(opened: Callable[..., WriteAheadLog]) -> None:
    log = opened()
    log.append(b"x")
    log.close()
    log.close()  # idempotent
    with pytest.raises(WalError, match="closed"):
        log.append(b"y")
    with pytest.raises(WalError, match="closed"):
        log.rotate()
    with pytest.raises(WalError, match="closed"):
        log.replay()


def test_second_open_of_same_directory_is_refused(opened: Callable[..., WriteAheadLog]) -> None:
    log = opened()
    with pytest.raises(WalError, match="open elsewhere"):
        opened()
    log.close()
    assert opened().last_lsn == 0


def test_context_manager(wal_dir: Path) -> None:
    with WriteAheadLog(wal_dir) as log:
        log.append(b"a")
    with pytest.raises(WalError):
        log.append(b"b")
    with WriteAheadLog(wal_dir) as log:
        assert list(log.replay()) == [(1, b"a")]


@pytest.mark.parametrize("bad", ["Commit", "always", "", "none"])
def test_invalid_flush_mode_names_the_value(wal_dir: Path, bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad)):
        WriteAheadLog(wal_dir, flush=bad)


def test_invalid_sizes(wal_dir: Path) -> None:
    with pytest.raises(ValueError, match="group_interval_ms"):
        WriteAheadLog(wal_dir, group_interval_ms=0)
    with pytest.raises(ValueError, match="segment_bytes"):
        WriteAheadLog(wal_dir, segment_bytes=0)


# ---------------------------------------------------------------------- segments


def test_rotation_by_size(opened: Callable[..., WriteAheadLog], wal_dir: Path) -> None:
    log = opened(segment_bytes=200)
    fill(log, 1, 40)
    names = sorted(p.name for p in wal_dir.glob("wal-*.log"))
    assert len(names) > 3
    assert names == [p.name for p in log.segments]
    # Each segment's name is the LSN of its first record, and each stays near the limit.
    for path in log.segments:
        data = path.read_bytes()
        first = struct.unpack_from("<Q", data, 10)[0]
        assert path.name == segment_name(first)
    for path in log.segments[:-1]:
        assert 200 <= path.stat().st_size < 200 + HEADER_SIZE + 64
    expect_records(log, 1, 40)
    log.close()
    log = opened(segment_bytes=200)
    expect_records(log, 1, 40)
    fill(log, 41, 45)
    expect_records(log, 1, 45)


def test_rotate_and_truncate_before(opened: Callable[..., WriteAheadLog], wal_dir: Path) -> None:
    log = opened()
    fill(log, 1, 5)
    log.rotate()
    log.rotate()  # no-op: the new segment is still empty
    fill(log, 6, 10)
    log.rotate()
    fill(log, 11, 12)
    assert [p.name for p in log.segments] == [segment_name(1), segment_name(6), segment_name(11)]

    assert log.truncate_before(5) == 0  # segment 1 still holds LSN 5
    assert log.truncate_before(6) == 1
    assert not (wal_dir / segment_name(1)).exists()
    assert log.first_lsn == 6
    expect_records(log, 6, 12, after=5)
    assert log.truncate_before(10**9) == 1  # the active segment always stays
    assert [p.name for p in log.segments] == [segment_name(11)]
    expect_records(log, 11, 12, after=10)
    log.close()

    log = opened()
    assert log.last_lsn == 12 and log.first_lsn == 11
    fill(log, 13, 14)
    expect_records(log, 11, 14, after=10)


def test_truncate_everything_keeps_lsn_continuity(opened: Callable[..., WriteAheadLog], wal_dir: Path) -> None:
    log = opened()
    fill(log, 1, 7)
    log.rotate()
    assert log.truncate_before(8) == 1
    log.close()
    assert [p.name for p in wal_dir.glob("wal-*.log")] == [segment_name(8)]
    log = opened()
    assert log.last_lsn == 7 and log.first_lsn == 8
    assert log.append(b"x") == 8


def test_replay_after_removed_records_yields_nothing(
    opened: Callable[..., WriteAheadLog], caplog: pytest.LogCaptureFixture
) -> None:
    log = opened()
    fill(log, 1, 6)
    log.rotate()
    fill(log, 7, 9)
    log.truncate_before(7)
    with caplog.at_level(logging.ERROR, logger="spark_ext.store.wal"):
        assert list(log.replay(3)) == []
    assert "already removed" in caplog.text
    expect_records(log, 7, 9, after=6)


def test_replay_is_a_snapshot_while_appending(opened: Callable[..., WriteAheadLog]) -> None:
    log = opened(segment_bytes=256)
    fill(log, 1, 20)
    it = log.replay()
    fill(log, 21, 40)
    log.truncate_before(35)  # files already opened by the replay stay readable
    assert [lsn for lsn, _ in it] == list(range(1, 21))


# ---------------------------------------------------------------------- flush modes


@pytest.fixture
def fsync_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """File (not directory) fsyncs made while the test runs."""
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_commit_mode_fsyncs_every_append(opened: Callable[..., WriteAheadLog], fsync_calls: list[int]) -> None:
    log = opened(flush="commit")
    for lsn in range(1, 6):
        before = len(fsync_calls)
        assert log.append(b"x") == lsn
        assert len(fsync_calls) == before + 1
        assert log.durable_lsn == lsn


def test_append_without_wait_then_wait_durable(
    opened: Callable[..., WriteAheadLog], fsync_calls: list[int]
) -> None:
    log = opened(flush="commit")
    fsync_calls.clear()
    lsns = [log.append(b"r%d" % i, wait=False) for i in range(3)]
    assert lsns == [1, 2, 3]
    assert fsync_calls == [] and log.durable_lsn == 0
    log.wait_durable(2)  # one fsync covers everything written so far
    assert len(fsync_calls) == 1 and log.durable_lsn == 3
    log.wait_durable(1)
    log.wait_durable(3)
    assert len(fsync_calls) == 1
    assert log.append(b"x") == 4 and log.durable_lsn == 4  # wait=True as before
    assert len(fsync_calls) == 2


def test_wait_durable_in_other_modes(opened: Callable[..., WriteAheadLog], fsync_calls: list[int]) -> None:
    for mode in ("group", "off"):
        log = opened(flush=mode, group_interval_ms=60_000)
        fsync_calls.clear()
        lsn = log.append(b"x", wait=False)
        assert fsync_calls == []
        log.wait_durable(lsn)
        assert log.durable_lsn >= lsn and len(fsync_calls) == 1
        log.close()


def test_concurrent_waiters_share_an_fsync(
    opened: Callable[..., WriteAheadLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one waiter is inside fsync, records appended by others are covered by the
    next single fsync, whoever of them makes it."""
    import threading

    log = opened(flush="commit")
    real = os.fsync
    calls: list[int] = []
    inside, release = threading.Event(), threading.Event()

    def gated(fd: int) -> None:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            calls.append(fd)
            if len(calls) == 1:
                inside.set()
                assert release.wait(30)
        real(fd)

    monkeypatch.setattr(os, "fsync", gated)
    first = threading.Thread(target=lambda: log.wait_durable(log.append(b"a", wait=False)))
    first.start()
    assert inside.wait(30)
    lsns: list[int] = []
    others = []
    for i in range(4):
        lsn = log.append(b"b%d" % i, wait=False)  # appends are not blocked by the fsync
        lsns.append(lsn)
        others.append(threading.Thread(target=log.wait_durable, args=(lsn,)))
    for th in others:
        th.start()
    assert log.durable_lsn == 0 and all(th.is_alive() for th in others)
    release.set()
    for th in [first, *others]:
        th.join(30)
    assert log.durable_lsn == 5
    assert len(calls) == 2  # the first waiter's fsync, then one for the other four


def test_group_mode_syncs_in_background(
    opened: Callable[..., WriteAheadLog], wal_dir: Path, fsync_calls: list[int]
) -> None:
    log = opened(flush="group", group_interval_ms=2)
    assert log.flush == "group"
    lsn = log.append(b"group")
    # The record is already in the OS: another reader sees it without any sync.
    assert (wal_dir / segment_name(1)).stat().st_size == HEADER_SIZE + 5
    deadline = time.monotonic() + 5
    while log.durable_lsn < lsn and time.monotonic() < deadline:
        time.sleep(0.002)
    assert log.durable_lsn == lsn
    assert fsync_calls
    synced = len(fsync_calls)
    time.sleep(0.05)  # nothing new to sync: the flusher stays idle
    assert len(fsync_calls) == synced


def test_group_mode_append_does_not_fsync(opened: Callable[..., WriteAheadLog], fsync_calls: list[int]) -> None:
    log = opened(flush="group", group_interval_ms=60_000)
    durable = log.durable_lsn
    fsync_calls.clear()
    fill(log, 1, 20)
    assert fsync_calls == []
    assert log.durable_lsn == durable
    log.sync()
    assert log.durable_lsn == 20
    assert fsync_calls


def test_off_mode_never_fsyncs_on_append(
    opened: Callable[..., WriteAheadLog], wal_dir: Path, fsync_calls: list[int]
) -> None:
    log = opened(flush="off", segment_bytes=100)
    fsync_calls.clear()
    fill(log, 1, 30)
    assert len(log.segments) > 3
    assert fsync_calls == []
    assert log.durable_lsn == 0
    total = sum(p.stat().st_size for p in wal_dir.glob("wal-*.log"))
    assert total == sum(HEADER_SIZE + len(payload_for(i)) for i in range(1, 31))
    log.sync()
    assert log.durable_lsn == 30
    expect_records(log, 1, 30)


def test_concurrent_appends(opened: Callable[..., WriteAheadLog]) -> None:
    log = opened(flush="commit", segment_bytes=4096)
    per_thread = 200
    results: dict[int, list[int]] = {}
    barrier = threading.Barrier(8)

    def worker(tid: int) -> None:
        barrier.wait()
        mine = []
        for i in range(per_thread):
            mine.append(log.append(f"{tid}:{i}".encode()))
        results[tid] = mine

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_lsns = sorted(lsn for lsns in results.values() for lsn in lsns)
    assert all_lsns == list(range(1, 8 * per_thread + 1))
    for lsns in results.values():  # each thread sees its own appends in order
        assert lsns == sorted(lsns)
    assert log.durable_lsn == 8 * per_thread
    log.close()
    log = opened()
    replayed = dict(log.replay())
    assert sorted(replayed) == all_lsns
    for tid, lsns in results.items():
        assert [replayed[lsn] for lsn in lsns] == [f"{tid}:{i}".encode() for i in range(per_thread)]


# ---------------------------------------------------------------------- recovery


def test_torn_tail_at_every_offset(
    wal_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with WriteAheadLog(wal_dir) as log:
        fill(log, 1, 5)
    path = wal_dir / segment_name(1)
    pristine = path.read_bytes()
    last_start = len(pristine) - HEADER_SIZE - len(payload_for(5))
    assert last_start > 0
    for cut in range(last_start, len(pristine) + 1):
        path.write_bytes(pristine[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="spark_ext.store.wal"):
            log = WriteAheadLog(wal_dir, flush="off")
        complete = 5 if cut == len(pristine) else 4
        try:
            if cut in (last_start, len(pristine)):
                assert caplog.text == "", cut  # a clean record boundary needs no repair
            else:
                assert path.name in caplog.text and f"offset {last_start}" in caplog.text
                assert "short header" in caplog.text or "short payload" in caplog.text
            assert log.last_lsn == complete, cut
            expect_records(log, 1, complete)
            assert log.append(b"after") == complete + 1
        finally:
            log.close()
        with WriteAheadLog(wal_dir, flush="off") as log:
            got = list(log.replay())
            assert [lsn for lsn, _ in got] == list(range(1, complete + 2)), cut
            assert got[-1][1] == b"after"


def _flip_bit(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_flipped_bit_in_payload_of_last_segment(wal_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with WriteAheadLog(wal_dir) as log:
        fill(log, 1, 10)
    path = wal_dir / segment_name(1)
    offsets = [0]
    for lsn in range(1, 10):
        offsets.append(offsets[-1] + HEADER_SIZE + len(payload_for(lsn)))
    _flip_bit(path, offsets[6] + HEADER_SIZE + 1)  # inside record 7's payload
    with caplog.at_level(logging.WARNING, logger="spark_ext.store.wal"):
        log = WriteAheadLog(wal_dir)
    try:
        assert "bad CRC" in caplog.text and f"offset {offsets[6]}" in caplog.text
        assert log.last_lsn == 6
        expect_records(log, 1, 6)
        assert path.stat().st_size == offsets[6]
        assert log.append(b"new7") == 7
    finally:
        log.close()


@pytest.mark.parametrize(
    "corrupt,reason",
    [
        (lambda data, at: data[:at] + b"\x00" * 64, "bad magic"),  # preallocated zeros
        (lambda data, at: data[:at] + b"\xff\xff" + data[at + 2:], "bad magic"),
        (lambda data, at: data + record_bytes(3, b"stale"), "non-increasing LSN 3"),
        (lambda data, at: data + record_bytes(9, b"future"), "unexpected LSN 9"),
        (lambda data, at: data[:at + 10] + b"\x01" + data[at + 11:], "bad CRC"),  # LSN byte
        (lambda data, at: data[:at + 2] + b"\xff\xff\xff\x7f" + data[at + 6:], "short payload"),
    ],
    ids=["zeros", "magic", "old-lsn", "gap-lsn", "lsn-bitflip", "huge-length"],
)
def test_corrupt_tail_variants(
    wal_dir: Path,
    caplog: pytest.LogCaptureFixture,
    corrupt: Callable[[bytes, int], bytes],
    reason: str,
) -> None:
    with WriteAheadLog(wal_dir) as log:
        fill(log, 1, 5)
    path = wal_dir / segment_name(1)
    data = path.read_bytes()
    at = len(data) - HEADER_SIZE - len(payload_for(5))  # start of record 5
    if reason in ("non-increasing LSN 3", "unexpected LSN 9"):
        at = len(data)
    path.write_bytes(corrupt(data, at))
    with caplog.at_level(logging.WARNING, logger="spark_ext.store.wal"):
        log = WriteAheadLog(wal_dir)
    try:
        assert reason in caplog.text
        good = 5 if at == len(data) else 4
        expect_records(log, 1, good)
        assert log.append(b"x") == good + 1
    finally:
        log.close()


def test_damage_in_older_segment_is_kept_and_bounded(
    wal_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with WriteAheadLog(wal_dir) as log:
        fill(log, 1, 5)
        log.rotate()
        fill(log, 6, 10)
        log.rotate()
        fill(log, 11, 12)
    first = wal_dir / segment_name(1)
    size_before = first.stat().st_size
    # Record 3's payload, in the first (non-last) segment.
    at = sum(HEADER_SIZE + len(payload_for(i)) for i in (1, 2)) + HEADER_SIZE
    _flip_bit(first, at)
    with caplog.at_level(logging.WARNING, logger="spark_ext.store.wal"):
        log = WriteAheadLog(wal_dir)
    try:
        assert "bad CRC" in caplog.text and first.name in caplog.text
        # Nothing was cut or deleted: the later segments' records were acknowledged.
        assert first.stat().st_size == size_before
        assert (wal_dir / segment_name(6)).exists()
        assert (wal_dir / segment_name(11)).exists()
        (damage,) = log.damage
        assert damage.path == first and damage.last_good_lsn == 2 and damage.resume_lsn == 6
        assert log.last_lsn == 12
        assert log.append(payload_for(13)) == 13

        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="spark_ext.store.wal"):
            expect_records(log, 1, 2)  # a full replay stops at the hole
        assert "replay stops after LSN 2" in caplog.text
        expect_records(log, 2, 2, after=1)
        assert list(log.replay(3)) == []  # still needs the lost 4..5
        expect_records(log, 6, 13, after=5)  # a checkpoint past the hole: whole again
        expect_records(log, 9, 13, after=8)

        assert log.truncate_before(6) == 1
        assert log.damage == ()
        expect_records(log, 6, 13, after=5)
    finally:
        log.close()
    with WriteAheadLog(wal_dir) as log:
        assert log.damage == ()
        expect_records(log, 6, 13, after=5)


def test_corruption_after_open_stops_replay(
    opened: Callable[..., WriteAheadLog], wal_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = opened()
    fill(log, 1, 6)
    at = sum(HEADER_SIZE + len(payload_for(i)) for i in (1, 2, 3)) + HEADER_SIZE
    _flip_bit(wal_dir / segment_name(1), at)  # bit rot in record 4 under a running log
    with caplog.at_level(logging.WARNING, logger="spark_ext.store.wal"):
        expect_records(log, 1, 3)
    assert "corrupted since the log was opened" in caplog.text and "bad CRC" in caplog.text


def test_missing_middle_segment_is_damage(wal_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with WriteAheadLog(wal_dir) as log:
        fill(log, 1, 3)
        log.rotate()
        fill(log, 4, 6)
        log.rotate()
        fill(log, 7, 9)
    (wal_dir / segment_name(4)).unlink()
    with caplog.at_level(logging.WARNING, logger="spark_ext.store.wal"):
        log = WriteAheadLog(wal_dir)
    try:
        assert "next segment starts at LSN 7, expected 4" in caplog.text
        (damage,) = log.damage
        assert (damage.last_good_lsn, damage.resume_lsn) == (3, 7)
        expect_records(log, 1, 3)
        expect_records(log, 7, 9, after=6)
        assert log.append(payload_for(10)) == 10
    finally:
        log.close()


def test_stale_segment_never_makes_lsns_repeat(wal_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A stale copy of an old segment sorts last but ends below LSNs already used in an
    # older file: appends must go above every LSN on disk, in a fresh segment.
    with WriteAheadLog(wal_dir) as log:
        fill(log, 1, 10)
    (wal_dir / segment_name(5)).write_bytes(
        record_bytes(5, payload_for(5)) + record_bytes(6, payload_for(6))
    )
    with caplog.at_level(logging.WARNING, logger="spark_ext.store.wal"):
        log = WriteAheadLog(wal_dir)
    try:
        assert "next segment starts at LSN 5, expected 11" in caplog.text
        assert log.last_lsn == 10
        assert log.append(payload_for(11)) == 11
        assert log.segments[-1].name == segment_name(11)
        expect_records(log, 11, 11, after=10)
    finally:
        log.close()
    with WriteAheadLog(wal_dir) as log:
        assert log.last_lsn == 11
        expect_records(log, 11, 11, after=10)


def test_failed_write_is_cut_back(
    opened: Callable[..., WriteAheadLog], wal_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = opened()
    fill(log, 1, 3)
    real_writev = os.writev

    def half_then_fail(fd: int, buffers: list[bytes]) -> int:
        real_writev(fd, [bytes(buffers[0])[:7]])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "writev", half_then_fail)
    with pytest.raises(WalError, match="No space left"):
        log.append(b"doomed")
    monkeypatch.setattr(os, "writev", real_writev)
    assert log.last_lsn == 3
    assert log.append(payload_for(4)) == 4  # the log is still usable
    log.close()
    log = opened()
    expect_records(log, 1, 4)


def test_failed_fsync_poisons_the_log(
    opened: Callable[..., WriteAheadLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = opened()
    fill(log, 1, 2)

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(WalError, match="fsync"):
        log.append(b"x")
    monkeypatch.undo()
    with pytest.raises(WalError, match="failed earlier"):
        log.append(b"y")
    log.close()  # releases everything without raising again
    log = opened()
    assert log.last_lsn == 3  # the record was written, only its durability is unknown


# ---------------------------------------------------------------------- crash test

_CHILD = textwrap.dedent(
    """
    import importlib.util
    import sys

    # Load wal.py by path: importing the spark_ext.store package would pull in the
    # whole engine (pandas, pyarrow) and make each crash round ~20x slower to start.
    spec = importlib.util.spec_from_file_location("_wal_under_test", sys.argv[2])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    WriteAheadLog = module.WriteAheadLog

    def payload_for(lsn):
        return (b"%d:" % lsn) * (1 + lsn % 13)

    log = WriteAheadLog(sys.argv[1], flush="commit", segment_bytes=2048)
    out = sys.stdout
    while True:
        lsn = log.last_lsn + 1
        assert log.append(payload_for(lsn)) == lsn
        out.write(f"{lsn}\\n")
        out.flush()
    """
)


@pytest.mark.slow
def test_sigkill_never_loses_acknowledged_records(wal_dir: Path) -> None:
    rng = random.Random(20240611)
    env = dict(os.environ, PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    all_acked: set[int] = set()
    for _round in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(wal_dir), wal_mod.__file__],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        target = rng.randint(1, 400)
        acked: list[int] = []
        try:
            for line in proc.stdout:
                acked.append(int(line))
                if len(acked) >= target:
                    break
            time.sleep(rng.uniform(0, 0.003))  # land the kill at a random point
        finally:
            proc.send_signal(signal.SIGKILL)
            rest = proc.stdout.read()
            proc.wait()
            proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        lines = rest.decode().split("\n")
        acked += [int(x) for x in lines[:-1]]  # the last piece is empty or a torn line
        assert len(acked) >= target

        all_acked.update(acked)
        with WriteAheadLog(wal_dir) as log:
            got = list(log.replay())
            assert log.damage == ()
        lsns = [lsn for lsn, _ in got]
        assert lsns == list(range(1, len(lsns) + 1))
        missing = all_acked - set(lsns)
        assert not missing, f"acknowledged but lost: {sorted(missing)[:10]}"
        for lsn, payload in got:
            assert payload == payload_for(lsn)
