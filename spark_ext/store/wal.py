"""Write-ahead log: checksummed, LSN-numbered records in segment files.

On-disk format. A log is a directory of segment files ``wal-<first_lsn:020d>.log`` plus
a ``wal.lock`` file (an exclusive ``flock`` so two processes never append to one log).
A segment is a plain sequence of records, no file header::

    offset  size  field
    0       2     magic   u16 little-endian, 0x4C57 ("WL")
    2       4     length  u32 little-endian, payload bytes
    6       4     crc32   u32 little-endian, zlib.crc32 of the 8 LSN bytes then payload
    10      8     lsn     u64 little-endian
    18      len   payload

LSNs are assigned by the log: 1, 2, 3, ... with no gaps, across segments and restarts.
Every segment's first record carries the LSN in its file name, so inside the log each
record's LSN is exactly one more than the one before it; anything else is corruption.

Flush policies (``flush=``):

* ``"commit"``: ``append`` returns after the record is written and fsynced. Concurrent
  appenders share fsyncs (group commit): whoever holds the sync lock fsyncs everything
  written so far, and the others find their record already durable. ``append(...,
  wait=False)`` followed by :meth:`WriteAheadLog.wait_durable` splits the two steps, so
  a caller can release its own locks in between (the store does, for commits).
* ``"group"``: ``append`` returns once the record is written to the OS (one ``writev``,
  no user-space buffer), so a process crash loses nothing; a daemon thread fsyncs every
  ``group_interval_ms`` when there is unsynced data, so a power loss loses at most
  about that window.
* ``"off"``: written to the OS; the append path never fsyncs. ``sync()`` and
  ``close()`` still fsync when called explicitly.

Deferred appends (``append(..., defer=True)``, not in ``"commit"`` mode): the record
gets its LSN at once but is held in memory until :meth:`WriteAheadLog.write_pending`
(or any other append, sync, rotation, replay or close) writes every held record with
one ``writev``. A caller that answers several requests per pass of an event loop
defers their records and writes them before sending the replies: one system call per
pass instead of one per request, and still nothing is acknowledged before it is
written to the OS. A failed deferred write fails the log (the records were applied by
their callers already), like a failed fsync.

Recovery when a directory is opened: every segment is scanned and checksummed. At the
first torn or corrupt record (short header, short payload, bad magic, bad CRC, an LSN
other than the next expected one) of the *last* segment the file is truncated there
with a warning and appends continue after it: that tail was never acknowledged in
``"commit"`` mode, it is the torn write of a crash.

Damage in a *non-last* segment (or a gap between segments) is different: records after
it were acknowledged and may matter, so nothing is truncated or deleted. The damage is
logged as a warning and listed in :attr:`WriteAheadLog.damage`; :meth:`replay` stops at
it (yielding the records before it) whenever the lost LSN range lies after the
requested ``after_lsn``, because applying later changes over a hole would build a state
that never existed. New appends take LSNs above every LSN found on disk, so LSNs never
repeat. A checkpoint taken after such a recovery lets :meth:`truncate_before` drop the
damaged segment, after which replay is whole again.

Write and fsync errors: a failed write is cut back off the file and raised as
:class:`WalError`; the log stays usable. A failed fsync leaves the kernel's copy of
the data in an unknown state, so the log then refuses every further append (raising
the original error) until it is reopened.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, Iterator

from spark_ext.exceptions import StorageError
from spark_ext.store.files import fsync_dir

try:  # POSIX only; without it the lock file is advisory-free (single process assumed)
    import fcntl
except ImportError:  # pragma: no cover - exercised on non-POSIX platforms only
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

__all__ = [
    "FLUSH_MODES",
    "HEADER_SIZE",
    "MAGIC",
    "WalDamage",
    "WalError",
    "WriteAheadLog",
    "segment_name",
]

MAGIC: Final = 0x4C57
"""Magic number at the start of every record header."""

_HEADER: Final = struct.Struct("<HIIQ")
HEADER_SIZE: Final = _HEADER.size  # 18 bytes
_LSN_SLICE: Final = slice(10, 18)  # where the LSN sits in a packed header
_MAX_PAYLOAD: Final = 0xFFFFFFFF

FLUSH_MODES: Final = ("commit", "group", "off")

_SEGMENT_RE: Final = re.compile(r"^wal-(\d{20})\.log$")
_LOCK_NAME: Final = "wal.lock"
_READ_BUFFER: Final = 1 << 20


class WalError(StorageError):
    """The write-ahead log cannot do what was asked (closed, failed I/O, locked)."""


@dataclass(frozen=True)
class WalDamage:
    """A place where the log lost records that later segments depend on.

    Attributes:
        path: the damaged segment file.
        offset: byte offset in ``path`` of the first unreadable record.
        reason: what was wrong there.
        last_good_lsn: LSN of the last readable record before the damage (``0`` if
            none).
        resume_lsn: first LSN readable again after the damage (first LSN of the next
            segment). The records ``last_good_lsn + 1 .. resume_lsn - 1`` are lost.
    """

    path: Path
    offset: int
    reason: str
    last_good_lsn: int
    resume_lsn: int


@dataclass
class _Segment:
    first_lsn: int
    path: Path
    end: int  # bytes of valid records
    last_lsn: int  # LSN of its last valid record, first_lsn - 1 when empty


@dataclass
class _ScanState:
    end: int = 0
    last_lsn: int = 0
    error: str | None = None


def segment_name(first_lsn: int) -> str:
    """File name of the segment whose first record has ``first_lsn``. O(1)."""
    return f"wal-{first_lsn:020d}.log"


_HAVE_WRITEV: Final = hasattr(os, "writev")
#: Buffers per writev of deferred records (well under any platform's IOV_MAX).
_IOV_BATCH: Final = 512


def _write_all(fd: int, header: bytes, payload: bytes | memoryview, size: int) -> None:
    # One writev: the record reaches the kernel without being copied into a user-space
    # buffer; the loop covers short writes (signals, nearly full disks). ``size``: the
    # payload's length in bytes.
    total = len(header) + size
    written = os.writev(fd, [header, payload]) if _HAVE_WRITEV else -1
    if written == -1:  # pragma: no cover - no writev on this platform
        written = os.write(fd, header + bytes(payload))
    while written < total:
        if written < len(header):
            rest = header[written:] + bytes(payload)
        else:
            rest = bytes(payload[written - len(header):])
        n = os.write(fd, rest)
        if n <= 0:  # pragma: no cover - write(2) returns >0 or raises on files
            raise OSError(errno.EIO, "write returned no progress")
        written += n


def _scan_records(
    f: BinaryIO,
    end: int,
    expected_lsn: int,
    skip_through: int,
    state: _ScanState,
) -> Iterator[tuple[int, bytes]]:
    """Read records from ``f`` up to ``end``; yield those with LSN > ``skip_through``.

    Stops at the first invalid record and leaves the reason in ``state.error``;
    ``state.end`` and ``state.last_lsn`` describe the valid prefix. Skipped records are
    seeked over without reading their payload: they were checksummed when the log was
    opened, and a replay after a checkpoint should not read what it will not use.
    """
    pos = 0
    state.end = 0
    state.last_lsn = expected_lsn - 1
    state.error = None
    while pos < end:
        if end - pos < HEADER_SIZE:
            state.error = f"short header ({end - pos} of {HEADER_SIZE} bytes)"
            return
        header = f.read(HEADER_SIZE)
        if len(header) < HEADER_SIZE:
            state.error = f"short header ({len(header)} of {HEADER_SIZE} bytes)"
            return
        magic, length, crc, lsn = _HEADER.unpack(header)
        if magic != MAGIC:
            state.error = f"bad magic 0x{magic:04x}"
            return
        available = end - pos - HEADER_SIZE
        if length > available:
            # Checked before reading so a corrupt length never allocates gigabytes.
            state.error = f"short payload ({available} of {length} bytes)"
            return
        if lsn <= skip_through and lsn == expected_lsn:
            f.seek(length, os.SEEK_CUR)
        else:
            payload = f.read(length)
            if len(payload) < length:
                state.error = f"short payload ({len(payload)} of {length} bytes)"
                return
            if zlib.crc32(payload, zlib.crc32(header[_LSN_SLICE])) != crc:
                state.error = f"bad CRC in record of {length} bytes"
                return
            if lsn != expected_lsn:
                kind = "non-increasing" if lsn < expected_lsn else "unexpected"
                state.error = f"{kind} LSN {lsn} (expected {expected_lsn})"
                return
            if lsn > skip_through:
                yield lsn, payload
        pos += HEADER_SIZE + length
        state.end = pos
        state.last_lsn = lsn
        expected_lsn += 1


class WriteAheadLog:
    """An append-only, checksummed log of byte records numbered by LSN.

    Thread-safe: any number of threads may append concurrently; LSN order is file
    order. One process per directory (enforced with a lock file).

    Args:
        directory: the log's directory; created if missing.
        flush: ``"commit"``, ``"group"`` or ``"off"`` (see the module docstring).
        group_interval_ms: how often the ``"group"`` flusher fsyncs unsynced data.
        segment_bytes: a new segment starts once the current one holds at least this
            many bytes (a segment exceeds it by at most one record).

    Raises:
        ValueError: an unknown ``flush`` or a non-positive interval or segment size.
        WalError: the directory is locked by another open log.
        OSError: the directory cannot be created or read.
    """

    def __init__(
        self,
        directory: str | Path,
        flush: str = "commit",
        group_interval_ms: float = 5.0,
        segment_bytes: int = 64 << 20,
    ) -> None:
        if flush not in FLUSH_MODES:
            raise ValueError(f"flush must be one of {FLUSH_MODES}, got {flush!r}")
        if not group_interval_ms > 0:
            raise ValueError(f"group_interval_ms must be positive, got {group_interval_ms!r}")
        if segment_bytes <= 0:
            raise ValueError(f"segment_bytes must be positive, got {segment_bytes!r}")
        self._dir = Path(directory)
        self._flush = flush
        self._interval = group_interval_ms / 1000.0
        self._segment_bytes = segment_bytes

        # Lock order: _sync_lock before _lock. _lock guards the segment list, the
        # active fd and LSN assignment; _sync_lock serializes fsyncs and is the only
        # place (besides close) where retired segment fds are closed, so an fd is never
        # closed while another thread fsyncs it.
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._damage: list[WalDamage] = []
        self._retired: list[int] = []
        self._fd = -1
        self._last_lsn = 0
        self._durable_lsn = 0
        self._closed = False
        self._failed: WalError | None = None
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._lock_fd = -1
        # Deferred records (header, payload, header, payload, ...) not yet written, and
        # the active segment's size on disk before them.
        self._pending: list[bytes] = []
        self._pending_base = 0

        created = not self._dir.exists()
        self._dir.mkdir(parents=True, exist_ok=True)
        if created:
            fsync_dir(self._dir.parent)
        self._acquire_dir_lock()
        try:
            self._recover()
        except BaseException:
            self._release_fds()
            raise
        if flush == "group":
            self._flusher = threading.Thread(
                target=self._flush_loop, name=f"wal-flusher:{self._dir.name}", daemon=True
            )
            self._flusher.start()

    # ------------------------------------------------------------------ properties

    @property
    def directory(self) -> Path:
        """The log's directory. O(1)."""
        return self._dir

    @property
    def flush(self) -> str:
        """The flush policy. O(1)."""
        return self._flush

    @property
    def last_lsn(self) -> int:
        """LSN of the newest record (``0`` for an empty log). O(1)."""
        return self._last_lsn

    @property
    def durable_lsn(self) -> int:
        """Highest LSN this log has fsynced; all records up to it survive power loss. O(1)."""
        return self._durable_lsn

    @property
    def first_lsn(self) -> int:
        """LSN of the oldest record still held (``last_lsn + 1`` when none is). O(1).

        A recovery that needs records from ``after_lsn + 1`` on should check
        ``first_lsn <= after_lsn + 1``; :meth:`replay` yields nothing otherwise.
        """
        with self._lock:
            return self._segments[0].first_lsn if self._segments else self._last_lsn + 1

    @property
    def damage(self) -> tuple[WalDamage, ...]:
        """Damage found in non-last segments when the log was opened. O(d)."""
        with self._lock:
            return tuple(self._damage)

    @property
    def segments(self) -> list[Path]:
        """Paths of the segment files, oldest first. O(s) in the number of segments."""
        with self._lock:
            return [seg.path for seg in self._segments]

    # ------------------------------------------------------------------ writing

    def append(self, payload: bytes | bytearray | memoryview, *, wait: bool = True, defer: bool = False) -> int:
        """Append one record and return its LSN.

        Complexity: O(n) in the payload size (one CRC pass, one ``writev``); in
        ``"commit"`` mode plus one fsync, shared with concurrent appenders.

        Args:
            payload: the record's bytes (at most 4 GiB - 1).
            wait: in ``"commit"`` mode, False returns as soon as the record is written
                to the OS, without the fsync: the caller must then call
                :meth:`wait_durable` with the LSN before treating the record as
                durable. This lets a caller release its own locks before waiting, so
                that concurrent appenders share one fsync. Ignored in other modes.
            defer: hold the record in memory until :meth:`write_pending` (see the
                module doc); ``payload`` must then be ``bytes``. Not in ``"commit"``
                mode, where it is ignored.

        Returns:
            The record's LSN, one more than the previous record's.

        Raises:
            ValueError: the payload is larger than a record can hold.
            WalError: the log is closed, an earlier fsync failed, or the write or
                fsync failed (the record is then not in the log).
        """
        if type(payload) is bytes:  # the usual case: no view needed
            view: bytes | memoryview = payload
            size = len(payload)
        else:
            defer = False  # a caller's buffer may change after this returns
            view = memoryview(payload).cast("B")
            size = view.nbytes
        if size > _MAX_PAYLOAD:
            raise ValueError(f"record of {size} bytes exceeds the {_MAX_PAYLOAD}-byte limit")
        with self._lock:
            self._check_writable()
            active = self._segments[-1]
            if active.end >= self._segment_bytes:
                self._write_pending_locked()
                self._rotate_locked()
                active = self._segments[-1]
            lsn = self._last_lsn + 1
            crc = zlib.crc32(view, zlib.crc32(lsn.to_bytes(8, "little")))
            header = _HEADER.pack(MAGIC, size, crc, lsn)
            if defer and self._flush != "commit":
                if not self._pending:
                    self._pending_base = active.end
                self._pending.append(header)
                self._pending.append(view)  # type: ignore[arg-type]  # bytes (checked above)
            else:
                if self._pending:
                    self._write_pending_locked()
                try:
                    _write_all(self._fd, header, view, size)
                except OSError as exc:
                    self._undo_partial_write(active, exc)
                    raise WalError(f"write to {active.path} failed: {exc}") from exc
            active.end += HEADER_SIZE + size
            active.last_lsn = lsn
            self._last_lsn = lsn
        if wait and self._flush == "commit":
            self._sync_through(lsn)
        return lsn

    def write_pending(self) -> None:
        """Write the records held by deferred appends to the OS, in one ``writev``.

        O(1) when none is held; otherwise O(bytes held) and one system call (a few
        for very many records).

        Raises:
            WalError: the write failed; the log then refuses further appends, since
                the callers of the held records have applied them already.
        """
        if self._pending:
            with self._lock:
                self._write_pending_locked()

    def _write_pending_locked(self) -> None:
        # Caller holds _lock.
        bufs = self._pending
        if not bufs:
            return
        active = self._segments[-1]
        try:
            for i in range(0, len(bufs), _IOV_BATCH):
                chunk = bufs[i:i + _IOV_BATCH]
                n = os.writev(self._fd, chunk)
                if n < sum(len(b) for b in chunk):  # short write (signal, nearly full disk)
                    rest = b"".join(chunk)[n:]
                    while rest:
                        m = os.write(self._fd, rest)
                        if m <= 0:  # pragma: no cover - write(2) returns >0 or raises on files
                            raise OSError(errno.EIO, "write returned no progress")
                        rest = rest[m:]
        except OSError as exc:
            self._pending = []
            self._failed = WalError(f"deferred write of {len(bufs) // 2} record(s) to {active.path} failed: {exc}")
            logger.error("%s; the log refuses further appends", self._failed)
            try:
                os.ftruncate(self._fd, self._pending_base)  # no torn record for recovery
            except OSError:
                pass
            raise self._failed from exc
        # Cleared only now: a thread that finds records held (write_pending's unlocked
        # look) waits for this write under the lock instead of replying before it.
        self._pending = []

    def wait_durable(self, lsn: int) -> None:
        """Return once every record up to ``lsn`` is fsynced, in any flush mode.

        O(1) when it already is; otherwise one fsync of everything written so far,
        shared with concurrent callers: whoever holds the sync lock fsyncs every record
        written up to then, and the callers that waited for it find their records
        durable. ``lsn`` must be one :meth:`append` returned (or ``last_lsn``).

        Raises:
            WalError: the fsync failed (the log then refuses further appends), or the
                log was closed before the records were fsynced.
        """
        if self._durable_lsn < lsn:
            self._sync_through(lsn)

    def sync_soon(self) -> None:
        """Make records appended so far durable within the group interval, in any mode.

        For records that ask for ``"group"`` durability in a log whose own policy is
        ``"commit"`` or ``"off"`` (a table's flush option): starts the background flusher
        the ``"group"`` policy runs, once; it fsyncs whatever is unsynced every interval.
        O(1).
        """
        if self._flusher is not None or self._closed:
            return
        with self._lock:
            if self._flusher is None and not self._closed:
                self._flusher = threading.Thread(
                    target=self._flush_loop, name=f"wal-flusher:{self._dir.name}", daemon=True
                )
                self._flusher.start()

    def sync(self) -> None:
        """Fsync every record appended so far, in any flush mode.

        Complexity: one fsync per segment written since the last sync (usually one);
        O(1) when everything is already durable.

        Raises:
            WalError: the fsync failed (the log then refuses further appends).
        """
        self._sync_through(self._last_lsn)

    def rotate(self) -> None:
        """Start a new segment for the next record.

        Does nothing when the current segment is still empty, so repeated calls never
        leave empty files behind.

        Complexity: O(1): create one file and fsync the directory.

        Raises:
            WalError: the log is closed or failed, or the file cannot be created.
        """
        with self._lock:
            self._check_writable()
            if self._segments[-1].end > 0:
                self._write_pending_locked()
                self._rotate_locked()

    def truncate_before(self, lsn: int) -> int:
        """Delete whole segments whose records all have LSNs below ``lsn``.

        Meant for after a checkpoint covering everything up to ``lsn - 1``. The active
        (newest) segment is never deleted; call :meth:`rotate` first to let it go too.

        Complexity: O(s) in the number of segments, plus one unlink per deleted segment
        and one directory fsync.

        Args:
            lsn: the first LSN that must stay in the log.

        Returns:
            The number of segment files deleted.
        """
        with self._lock:
            count = 0
            while (
                count + 1 < len(self._segments)
                and self._segments[count + 1].first_lsn <= lsn
            ):
                count += 1
            doomed = self._segments[:count]
            del self._segments[:count]
            gone = {seg.path for seg in doomed}
            self._damage = [d for d in self._damage if d.path not in gone]
        # Unlinking outside the lock: a concurrent replay already holds open fds of
        # the segments it reads, and appends need not wait for the filesystem.
        for seg in doomed:
            try:
                seg.path.unlink()
            except FileNotFoundError:
                pass
            logger.debug("removed WAL segment %s (records %d..%d)", seg.path,
                         seg.first_lsn, seg.last_lsn)
        if doomed:
            fsync_dir(self._dir)
        return len(doomed)

    def close(self) -> None:
        """Fsync everything, stop the flusher thread and release the directory.

        Idempotent. After ``close`` every method but :meth:`replay` (which then raises)
        and the properties raises :class:`WalError`.

        Complexity: one fsync per unsynced segment plus joining the flusher thread.

        Raises:
            WalError: the final fsync failed (files and lock are released anyway).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        error: WalError | None = None
        if self._failed is None:
            try:
                self._sync_through(self._last_lsn, closing=True)
            except WalError as exc:
                error = exc
        with self._sync_lock, self._lock:
            self._release_fds()
        if error is not None:
            raise error

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"WriteAheadLog({str(self._dir)!r}, flush={self._flush!r}, "
            f"last_lsn={self._last_lsn})"
        )

    # ------------------------------------------------------------------ reading

    def replay(self, after_lsn: int = 0) -> Iterator[tuple[int, bytes]]:
        """Yield ``(lsn, payload)`` for every record with LSN > ``after_lsn``, in order.

        Reads the segments as they are when ``replay`` is called (records appended
        later are not included) and may run while other threads append. Stops with a
        warning, never raises, at damage whose lost records lie after ``after_lsn``,
        at corruption that appeared on disk since the log was opened, or (with an
        error log, yielding nothing) when records after ``after_lsn`` were already
        deleted by :meth:`truncate_before`.

        Complexity: O(bytes) of the segments holding LSNs > ``after_lsn``; earlier
        records in those segments are seeked over, earlier segments are not read.

        Args:
            after_lsn: yield only records newer than this (a checkpoint's LSN).

        Returns:
            An iterator of ``(lsn, payload)``.

        Raises:
            WalError: the log is closed.
        """
        with self._lock:
            if self._closed:
                raise WalError(f"write-ahead log {self._dir} is closed")
            if self._failed is None:
                self._write_pending_locked()  # what was appended is read back
            segments = [
                _Segment(s.first_lsn, s.path, s.end, s.last_lsn) for s in self._segments
            ]
            damage = list(self._damage)
            last_lsn = self._last_lsn
            if not segments or after_lsn >= last_lsn:
                return iter(())
            if segments[0].first_lsn > after_lsn + 1:
                logger.error(
                    "WAL %s: records %d..%d were already removed; replay after LSN %d "
                    "yields nothing", self._dir, after_lsn + 1, segments[0].first_lsn - 1,
                    after_lsn,
                )
                return iter(())
            # Only segments that can hold LSNs > after_lsn; opened now so a concurrent
            # truncate_before cannot pull them away.
            wanted = [
                seg for i, seg in enumerate(segments)
                if i + 1 == len(segments) or segments[i + 1].first_lsn > after_lsn + 1
            ]
            files = [open(seg.path, "rb", buffering=_READ_BUFFER) for seg in wanted]
        # The read itself stops at a hole (a damaged segment's valid end, then a first
        # LSN that does not follow on); say so once, naming what is lost.
        for d in sorted(damage, key=lambda d: d.last_good_lsn):
            if d.resume_lsn - 1 > after_lsn:
                logger.warning(
                    "WAL %s: replay stops after LSN %d: records %d..%d are lost (%s at "
                    "offset %d of %s)", self._dir, d.last_good_lsn, d.last_good_lsn + 1,
                    d.resume_lsn - 1, d.reason, d.offset, d.path.name,
                )
                break
        return self._replay_files(wanted, files, after_lsn)

    def _replay_files(
        self,
        segments: list[_Segment],
        files: list[BinaryIO],
        after_lsn: int,
    ) -> Iterator[tuple[int, bytes]]:
        state = _ScanState()
        try:
            expected = segments[0].first_lsn
            for seg, f in zip(segments, files):
                if seg.first_lsn != expected:
                    return  # a hole: reported as damage when the log opened
                yield from _scan_records(f, seg.end, seg.first_lsn, after_lsn, state)
                if state.error is not None and state.end < seg.end:
                    logger.warning(
                        "WAL %s: replay stops at offset %d: %s (corrupted since the log "
                        "was opened)", seg.path, state.end, state.error,
                    )
                    return
                expected = state.last_lsn + 1
        finally:
            for f in files:
                f.close()

    # ------------------------------------------------------------------ internals

    def check_writable(self) -> None:
        """Raise :class:`WalError` if the log is closed or has failed (an append would).
        O(1)."""
        if self._closed or self._failed is not None:
            self._check_writable()

    def _check_writable(self) -> None:
        if self._closed:
            raise WalError(f"write-ahead log {self._dir} is closed")
        if self._failed is not None:
            raise WalError(f"write-ahead log {self._dir} failed earlier: {self._failed}")

    def _acquire_dir_lock(self) -> None:
        self._lock_fd = os.open(self._dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:  # pragma: no cover - non-POSIX
            return
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise WalError(f"write-ahead log {self._dir} is open elsewhere: {exc}") from exc

    def _release_fds(self) -> None:
        for fd in self._retired:
            os.close(fd)
        self._retired = []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the fd releases the flock
            self._lock_fd = -1

    def _recover(self) -> None:
        found: list[tuple[int, Path]] = []
        for entry in self._dir.iterdir():
            m = _SEGMENT_RE.match(entry.name)
            if m and entry.is_file():
                found.append((int(m.group(1)), entry))
        found.sort()
        max_lsn = 0
        prev: _Segment | None = None
        prev_damaged = False
        state = _ScanState()
        for index, (first_lsn, path) in enumerate(found):
            is_last = index + 1 == len(found)
            if prev is not None and not prev_damaged and first_lsn != prev.last_lsn + 1:
                self._add_damage(prev.path, prev.end,
                                 f"next segment starts at LSN {first_lsn}, expected "
                                 f"{prev.last_lsn + 1}", prev.last_lsn, first_lsn)
            size = path.stat().st_size
            with open(path, "rb", buffering=_READ_BUFFER) as f:
                for _ in _scan_records(f, size, first_lsn, 0, state):
                    pass
            seg = _Segment(first_lsn, path, state.end, state.last_lsn)
            prev_damaged = state.error is not None
            if state.error is not None:
                if is_last:
                    logger.warning(
                        "WAL segment %s: torn or corrupt record at offset %d (%s); "
                        "truncating %d bytes and appending after LSN %d",
                        path, state.end, state.error, size - state.end, state.last_lsn,
                    )
                    self._truncate_file(path, state.end)
                else:
                    self._add_damage(path, state.end, state.error, state.last_lsn,
                                     found[index + 1][0])
            max_lsn = max(max_lsn, seg.last_lsn)
            self._segments.append(seg)
            prev = seg

        if not self._segments:
            self._segments.append(self._create_segment(1))
        else:
            active = self._segments[-1]
            self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND)
            if self._flush != "off":
                # Records found on disk may sit only in the page cache (a crash in
                # "group" mode); make them durable before anything builds on them.
                for seg in self._segments:
                    self._fsync_path(seg.path)
            if active.last_lsn != max_lsn:
                # The newest segment ends below an LSN seen in an older (damaged)
                # one; continue in a fresh segment so LSNs never repeat and every
                # segment stays consecutive inside.
                self._last_lsn = max_lsn
                self._rotate_locked()
        self._last_lsn = max(max_lsn, self._segments[-1].first_lsn - 1)
        self._durable_lsn = self._last_lsn if self._flush != "off" else 0
        logger.debug("opened WAL %s: %d segments, last LSN %d", self._dir,
                     len(self._segments), self._last_lsn)

    def _add_damage(
        self, path: Path, offset: int, reason: str, last_good: int, resume: int
    ) -> None:
        logger.warning(
            "WAL segment %s: damage at offset %d (%s); records %d..%d are lost, later "
            "segments are kept; replay stops there until a checkpoint covers it",
            path, offset, reason, last_good + 1, resume - 1,
        )
        self._damage.append(WalDamage(path, offset, reason, last_good, resume))

    @staticmethod
    def _truncate_file(path: Path, size: int) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _fsync_path(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _create_segment(self, first_lsn: int) -> _Segment:
        path = self._dir / segment_name(first_lsn)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except OSError as exc:
            raise WalError(f"cannot create WAL segment {path}: {exc}") from exc
        self._fd = fd
        fsync_dir(self._dir)
        logger.debug("started WAL segment %s", path)
        return _Segment(first_lsn, path, 0, first_lsn - 1)

    def _rotate_locked(self) -> None:
        # Caller holds _lock. The old fd is retired, not closed: a syncer may be
        # fsyncing it right now; the next sync fsyncs and closes it.
        old_fd = self._fd
        self._segments.append(self._create_segment(self._last_lsn + 1))
        if old_fd >= 0:
            self._retired.append(old_fd)
        if self._flush == "off" and self._sync_lock.acquire(blocking=False):
            # Nobody syncs in "off" mode, so close retired fds here when it is safe.
            try:
                for fd in self._retired:
                    os.close(fd)
                self._retired = []
            finally:
                self._sync_lock.release()

    def _undo_partial_write(self, active: _Segment, exc: OSError) -> None:
        # A half-written record would make replay stop there and hide every later
        # record, so cut it off; if even that fails the log cannot go on.
        try:
            os.ftruncate(self._fd, active.end)
        except OSError as exc2:
            self._failed = WalError(
                f"write to {active.path} failed ({exc}) and the partial record could not "
                f"be removed ({exc2})"
            )
            logger.error("%s", self._failed)

    def _sync_through(self, lsn: int, closing: bool = False) -> None:
        with self._sync_lock:
            if self._durable_lsn >= lsn and not (closing and self._retired):
                return
            with self._lock:
                if self._failed is not None:
                    raise WalError(f"write-ahead log {self._dir} failed earlier: {self._failed}")
                if self._fd < 0:
                    raise WalError(f"write-ahead log {self._dir} is closed")
                self._write_pending_locked()
                fd = self._fd
                target = self._last_lsn
                retired, self._retired = self._retired, []
            try:
                for old in retired:
                    os.fsync(old)
                os.fsync(fd)
            except OSError as exc:
                # After a failed fsync the kernel may have dropped the dirty pages;
                # retrying could report success for data that is gone.
                error = WalError(f"fsync of {self._dir} failed: {exc}")
                with self._lock:
                    self._failed = error
                    self._retired.extend(retired)
                logger.error("%s; the log refuses further appends", error)
                raise error from exc
            for old in retired:
                os.close(old)
            self._durable_lsn = max(self._durable_lsn, target)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._interval):
            if self._last_lsn > self._durable_lsn:
                try:
                    self._sync_through(self._last_lsn)
                except WalError:
                    return  # logged in _sync_through; appends now raise
