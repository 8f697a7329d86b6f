"""The store: a set of tables, their change sets, durability and background upkeep.

Durability (when a data directory is given): every committed change is appended to the
write-ahead log before it becomes visible; periodic checkpoints write every persistent
table as Arrow IPC files; recovery loads the newest good checkpoint and replays the log
after it. Two-phase change sets log a PREPARE record with their changes and a small
COMMIT or ABORT record; one still undecided after recovery is restored as *in doubt*
(holding its locks) for the server to resolve with its coordinator.

Commit with ``flush="commit"`` (group commit): under the locks of its tables a commit
writes its record to the log (to the OS, not yet fsynced), applies the change and
releases the locks; only then does it wait for the fsync, and it returns (is
acknowledged) after the fsync. Commits that wait at the same time share one fsync. So:

* an acknowledged change is durable: it survives a process crash and a power loss;
* a change becomes visible to readers and to other writers when it is applied, which
  is slightly *before* it is durable (as in PostgreSQL, whose commits are visible
  before their WAL flush as well). A change that is visible is always in the log
  already, so a process crash (kill -9) never loses it; only an OS crash or power loss
  in the window before its fsync can, and then its writer was never acknowledged;
* a writer that read such a change and commits on top of it is acknowledged only
  after an fsync that covers the earlier change too (log order is LSN order, and an
  fsync covers every record before it): an acknowledged commit never depends on a lost
  one. What this does *not* cover is a reader that hands what it read to the outside
  world (a reply to a client) before the writer of that data is acknowledged: after a
  power loss in that window the reader has shown a change that recovery does not bring
  back. Readers needing "only durable data" must not rely on reads racing a commit;
* if the fsync fails, the commit raises :class:`~spark_ext.store.wal.WalError` even
  though its change is already applied in memory; the log then refuses every further
  write (see :mod:`spark_ext.store.wal`), so the store must be reopened, and recovery
  keeps or drops the change according to what reached the disk.

With ``flush="group"`` and ``"off"`` commits return once the record is written to the
OS, as before. A checkpoint first makes the log durable through its own LSN.

Log records (tuples, encoded by :mod:`spark_ext.store.codec`)::

    ("create_table", schema_json)        ("drop_table", name)
    ("create_index", table, name, kind, columns)   ("drop_index", table, name)
    ("add_columns", table, [field_json])  ("rename_table", old_name, new_name)
    ("commit1", txn_id, changes)         one-phase commit
    ("prepare", txn_id, changes[, meta])  ("commit", txn_id)  ("abort", txn_id)
    ("stage", txn_id, table, rows)       a bulk's rows, logged when they were staged

``changes`` is ``ChangeSet.changes()``: per table (name, truncate, point items, bulks);
a bulk is ``(rows, upsert)``, where ``rows`` is either the Arrow rows or the LSN (an int)
of the STAGE record that holds them. Bulk writes through a server log their rows when
each batch arrives (:meth:`Store.log_staged`, while the statement's other batches are
still being produced), so that the statement's commit (or prepare) record is small and
its end has only the fsync left. A STAGE record is garbage unless a COMMIT1 or PREPARE
of its transaction refers to it (an aborted statement, a failed task attempt); an
undecided transaction's STAGE records are kept by checkpoints like its PREPARE (a
change set whose commit failed is undecided too: it can still be committed again or
aborted). A checkpoint trims the log only up to where recovery from the *older* kept
checkpoint (its fallback when the newest is unreadable) starts replaying.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pyarrow as pa

from spark_ext.exceptions import (
    BadArgumentError,
    NoSuchTableError,
    NoSuchTransactionError,
    StorageError,
    TableExistsError,
)
from spark_ext.store import alter
from spark_ext.store import checkpoint as ckpt
from spark_ext.store.codec import IpcBatch, decode_record, encode_point_commit, encode_record, encode_stage_record
from spark_ext.store.schema import TableSchema
from spark_ext.store.table import Table
from spark_ext.store.txn import (
    PREPARED,
    ChangeSet,
    Pending,
    check_memory,
    exists_error,
    key_locked_error,
    move_exists_error,
    truncating_error,
    update_setters,
)
from spark_ext.store.txn import _ids as _txn_ids
from spark_ext.store.wal import WalError, WriteAheadLog

logger = logging.getLogger(__name__)

FLUSH_POLICIES = ("commit", "group", "off")


class Store:
    """Tables in memory, optionally durable in ``data_dir``.

    Args:
        data_dir: folder for the log and checkpoints; None keeps everything in memory.
        flush: ``commit`` (fsync before a commit returns), ``group`` (fsync every few
            milliseconds in the background) or ``off`` (leave flushing to the OS).
        memory_limit_bytes: refuse changes that would take the store past this size.
        background: run compaction and checkpoints in a background thread.
        checkpoint_log_bytes: checkpoint once the log has grown this much.
        compaction_min_rows / compaction_fraction / compaction_max_runs: a bucket is
            compacted when its changed rows reach max(min_rows, fraction x base rows) or
            it has more than max_runs base runs.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        flush: str = "commit",
        memory_limit_bytes: int | None = None,
        background: bool = True,
        checkpoint_log_bytes: int = 256 << 20,
        compaction_min_rows: int = 4096,
        compaction_fraction: float = 0.25,
        compaction_max_runs: int = 8,
    ) -> None:
        if flush not in FLUSH_POLICIES:
            raise BadArgumentError(f"flush must be one of {FLUSH_POLICIES}, got {flush!r}")
        if memory_limit_bytes is not None and (not isinstance(memory_limit_bytes, int) or memory_limit_bytes <= 0):
            raise BadArgumentError(f"memory_limit_bytes must be a positive integer, got {memory_limit_bytes!r}")
        self.tables: dict[str, Table] = {}
        self.memory_limit_bytes = memory_limit_bytes
        self.flush = flush
        self.checkpoint_log_bytes = checkpoint_log_bytes
        self.compaction = (compaction_min_rows, compaction_fraction, compaction_max_runs)
        self._ddl_lock = threading.RLock()
        self._commit_lock = threading.Lock()
        # One-row upserts checked and waiting to be logged and applied together (see
        # group_row); their tables' locks are held meanwhile.
        self._point_groups: dict[Table, list[tuple[Any, tuple[Any, ...]]]] = {}
        self._txns: dict[str, ChangeSet] = {}
        self._in_doubt: dict[str, ChangeSet] = {}
        self._closed = False
        self._log_bytes_since_ckpt = 0
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._wal: WriteAheadLog | None = None
        self._prepare_lsns: dict[str, int] = {}
        #: Ids of the two-phase commits whose COMMIT records recovery replayed (the
        #: in-doubt resolver's ledger is rebuilt from them, see spark_ext/server/indoubt.py).
        self.recovered_commits: list[str] = []
        #: Called before a checkpoint trims the log (the in-doubt resolver makes its
        #: ledger durable first: the trimmed COMMIT records were its backup).
        self.before_log_trim: Callable[[], None] | None = None
        #: Transactions with STAGE records: txn id -> [first STAGE LSN (kept by
        #: checkpoints), bytes logged (counted towards the next checkpoint at the end),
        #: the change set (by identity: an autocommit set's id may equal a txn id)].
        self._staged: dict[str, list[Any]] = {}
        #: Checkpoint LSN -> the LSN after which recovery from that checkpoint replays
        #: the log (min of its ``replay_from`` and its LSN), for the checkpoints written
        #: or loaded by this process: the log is trimmed only up to what the oldest kept
        #: checkpoint needs (recovery falls back to it if the newest is unreadable).
        self._ckpt_floors: dict[int, int] = {}
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._recover()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._upkeep, name="spark-ext-store-upkeep", daemon=True)
            self._thread.start()

    # --- tables -------------------------------------------------------------------------

    def create_table(
        self,
        name: str,
        schema: pa.Schema | Sequence[tuple[str, Any]],
        primary_key: Sequence[str] | str | None = None,
        num_buckets: int = 8,
        options: dict[str, str] | None = None,
        if_not_exists: bool = False,
    ) -> Table:
        """Create a table. O(buckets).

        Args:
            name: table name.
            schema: an Arrow schema, or ``(name, type)`` pairs with type names such as
                ``"int64"``, ``"string"``, ``"decimal(10,2)"``, ``"timestamp_tz"``.
            primary_key: key column(s); none gives the table a hidden row id.
            num_buckets: hash buckets.
            options: e.g. ``{"persistence": "memory", "memory_limit_bytes": "1000000"}``.
            if_not_exists: return the existing table instead of failing.
        """
        if not isinstance(schema, pa.Schema):
            from spark_ext.store.types import arrow_type

            try:
                schema = pa.schema([pa.field(n, arrow_type(t) if isinstance(t, str) else t) for n, t in schema])
            except (TypeError, ValueError) as e:
                raise BadArgumentError(f"table {name!r}: bad column list: {e}") from None
        pk = [primary_key] if isinstance(primary_key, str) else list(primary_key or [])
        ts = TableSchema(name, schema, pk, num_buckets, dict(options or {}))
        with self._ddl_lock:
            self._check_open()
            existing = self.tables.get(name)
            if existing is not None:
                if if_not_exists:
                    return existing
                raise TableExistsError(f"table {name!r} already exists", table=name)
            t = Table(self, ts)
            self._log(("create_table", ts.to_json()))
            self.tables[name] = t
            return t

    def table(self, name: str) -> Table:
        """The table of that name. O(1). Raises NoSuchTableError."""
        t = self.tables.get(name)
        if t is None:
            raise NoSuchTableError(f"no table {name!r}", table=name)
        return t

    def drop_table(self, name: str, if_exists: bool = False) -> bool:
        """Drop a table and its data. Refused while a change set holds changes in it."""
        with self._ddl_lock:
            t = self.tables.get(name)
            if t is None:
                if if_exists:
                    return False
                raise NoSuchTableError(f"no table {name!r}", table=name)
            with t.lock:
                if t.locks or t.bulk_locks or t.truncating is not None:
                    from spark_ext.exceptions import ConflictError

                    raise ConflictError(f"table {name!r} has uncommitted changes of open transactions", table=name)
                self._log(("drop_table", name))
                t.dropped = True
                del self.tables[name]
            return True

    def add_columns(self, name: str, columns: Any) -> Table:
        """Add nullable columns at the end of a table's user columns; rows read NULL.

        Durable like every DDL: the change is logged before it is applied, and
        checkpoints hold the new schema. O(runs + recent changes) (no row is copied).

        Args:
            name: the table.
            columns: ``(name, type)`` pairs, Arrow fields or an Arrow schema.

        Raises:
            NoSuchTableError; SchemaError (a NOT NULL column, a column the table has,
            an unsupported type: naming the table and the column); ConflictError while
            an open transaction holds changes of the table.
        """
        with self._ddl_lock:
            self._check_open()
            t = self.table(name)
            with t.lock:
                self._check_no_txn(t, "add columns to")
                fields = alter.new_fields(name, columns)
                new = alter.schema_with_columns(t.schema, fields)
                self._log(("add_columns", name, alter.field_json(fields)))
                alter.apply_schema(t, new)
            return t

    def rename_table(self, name: str, new_name: str) -> Table:
        """Give a table another name (same data, indexes and options). O(buckets).

        Raises:
            NoSuchTableError; TableExistsError when ``new_name`` is taken;
            ConflictError while an open transaction holds changes of the table.
        """
        with self._ddl_lock:
            self._check_open()
            t = self.table(name)
            if new_name in self.tables:
                raise TableExistsError(f"cannot rename table {name!r} to {new_name!r}: that table already exists",
                                       table=new_name)
            with t.lock:
                self._check_no_txn(t, "rename")
                new = alter.renamed_schema(t.schema, new_name)
                self._log(("rename_table", name, new_name))
                alter.apply_schema(t, new)
                del self.tables[name]
                self.tables[new_name] = t
            return t

    @staticmethod
    def _check_no_txn(t: Table, what: str) -> None:
        """Refuse a schema change while change sets hold rows in the old layout."""
        if t.locks or t.truncating is not None:
            from spark_ext.exceptions import ConflictError

            raise ConflictError(
                f"cannot {what} table {t.name!r}: open transactions hold uncommitted changes of it; retry when they end",
                table=t.name,
            )

    def _create_index(self, t: Table, name: str, columns: list[str], kind: str) -> None:
        with self._ddl_lock, t.lock:
            t.check_open()
            t._add_index(name, columns, kind)
            try:
                self._log(("create_index", t.name, name, kind, columns))
            except BaseException:
                t._remove_index(name)
                raise

    def _drop_index(self, t: Table, name: str) -> None:
        with self._ddl_lock, t.lock:
            t.check_open()
            kind, cols = t.index_defs.get(name, ("", []))
            t._remove_index(name)
            self._log(("drop_index", t.name, name))

    def memory_bytes(self) -> int:
        """Estimated bytes held by every table. O(tables x buckets).

        Reads each table without its lock: a committer checking the store-wide limit
        holds its own table's lock, and taking the others' here could deadlock with a
        committer on another table. An estimate read mid-change is good enough for a limit.
        """
        total = 0
        for t in list(self.tables.values()):
            for _ in range(3):
                try:
                    total += sum(b.memory_bytes() for b in list(t.buckets))
                    break
                except RuntimeError:  # a dict changed size while read: read again
                    continue
        return total

    # --- change sets --------------------------------------------------------------------

    def begin(self, txn_id: str | None = None) -> ChangeSet:
        """Start a change set (transaction). O(1)."""
        self._check_open()
        cs = ChangeSet(self, txn_id)
        if txn_id is not None:
            if txn_id in self._txns:
                raise BadArgumentError(f"transaction id {txn_id!r} is already in use")
            self._txns[txn_id] = cs
        return cs

    def transaction(self, txn_id: str) -> ChangeSet:
        """An open, prepared or in-doubt change set by id. Raises NoSuchTransactionError."""
        cs = self._txns.get(txn_id) or self._in_doubt.get(txn_id)
        if cs is None:
            raise NoSuchTransactionError(f"no open transaction {txn_id!r}", txn=txn_id)
        return cs

    def in_doubt(self) -> list[str]:
        """Ids of prepared change sets restored by recovery, awaiting a decision."""
        return [i for i, cs in self._in_doubt.items() if cs.state == PREPARED]

    def _autocommit(self, t: Table, stage: Callable[[ChangeSet], Any]) -> Any:
        """Run one staging call and commit it under a single hold of the table lock
        (then, with flush "commit", wait for the fsync with the lock released)."""
        lsn = 0
        with t.lock:
            cs = ChangeSet(self, autocommit=True)
            result = stage(cs)
            if any(not p.is_empty() for p in cs.pending.values()):
                lsn = cs._commit()
        if lsn:  # the policy only matters when a record was logged
            self._wait_durable(lsn, self._durability(self._tables_of(cs)))
        return result

    # --- one-row autocommit path ---------------------------------------------------------
    # A statement writing one row or one key needs no change set: under one hold of the
    # table lock it runs the checks staging and commit would run, in the same order and
    # with the same errors (built by the helpers in txn), then logs the same ``commit1``
    # record and applies it. The point overlay of such a statement holds its key alone,
    # so "the row as the change set sees it" is the committed row. Each method returns
    # None, having done nothing, when the change set path must run instead: the Table
    # object is no longer the store's table of that name (dropped, maybe re-created),
    # or (inserting and upserting) the table has no primary key.

    def _point_ready(self, t: Table) -> bool:
        """Common prologue of the one-row paths (caller holds the table lock): False for a
        stale Table object (the caller falls back to the change-set path, which reports
        it); raises while the table is dropped or being truncated by a change set."""
        if self.tables.get(t.name) is not t:
            return False
        t.check_open()
        owner = t.truncating
        if owner is not None:
            raise truncating_error(t, owner)
        return True

    def _write_row(self, t: Table, raw: Any, upsert: bool) -> int | None:
        """Insert or upsert one row (a dict, tuple or list of user columns).

        The hottest write path (every one-row write of the server): see
        :meth:`_checked_row`. O(#columns + #runs log n).
        """
        lock = t.lock
        lock.acquire()  # acquire/release rather than "with": cheaper on this hot path
        try:
            item = self._checked_row(t, raw, upsert)
            if item is None:
                return None  # the change-set path reports a stale Table object
            lsn = self._commit_point(t, [item])
        finally:
            lock.release()
        if lsn and (t.flush is not None or self.flush == "commit"):
            # Otherwise the policy is the store's "group" or "off": nothing to wait for
            # (the log's own flusher fsyncs "group" records).
            self._wait_durable(lsn, t.flush)
        return 1

    def _checked_row(self, t: Table, raw: Any, upsert: bool) -> tuple[Any, tuple[Any, ...]] | None:
        """One row to write, checked (caller holds the table lock): ``(key, row)``, or
        None for a case of the change-set path (hidden row id, stale Table object).

        The checks of :meth:`_point_ready`, :func:`_check_key_free` and
        :meth:`_check_row_memory` are made inline, each helper called only when its
        check has something to do, with the same errors in the same order.
        O(#columns).
        """
        schema = t.schema
        if schema.hidden_rowid or self.tables.get(t.name) is not t:
            return None
        if t.dropped or t.truncating is not None:
            self._point_ready(t)  # raises the error of a dropped or truncating table
        row = tuple(schema.coerce_row(schema.dict_to_values(raw) if isinstance(raw, dict) else raw))
        kp = schema.key_positions
        k = row[kp[0]] if len(kp) == 1 else schema.key_of(row)
        if t.locks or t.bulk_locks:
            _check_key_free(t, k)
        if not upsert and t.committed_get(k) is not None:
            raise exists_error(t, k)
        if self.memory_limit_bytes is not None or t.memory_limit_bytes is not None:
            self._check_row_memory(t)
        return k, row

    def group_row(self, t: Table, raw: Any) -> bool:
        """Check one upserted row as :meth:`_write_row` does and add it to ``t``'s point
        group, which :meth:`flush_point_group` logs (one record) and applies. False,
        adding nothing, for a case of the change-set path.

        The caller holds ``t.lock`` from the first grouped row to the flush, so nothing
        can lock, change or read the table in between (the server's event loop groups
        the one-row PUTs of one pass). Memory limits are checked per row against the
        table without the group. O(#columns).
        """
        item = self._checked_row(t, raw, True)
        if item is None:
            return False
        if t.persistent and self._wal is not None:
            self._wal.check_writable()  # a failed log refuses the row now, not at the flush
        self._point_groups.setdefault(t, []).append(item)
        return True

    def flush_point_group(self, t: Table) -> None:
        """Log (one deferred record, see :meth:`write_deferred`) and apply ``t``'s
        grouped rows, in the order they were grouped (caller holds ``t.lock``). O(rows).
        """
        items = self._point_groups.pop(t, None)
        if not items:
            return
        lsn = self._commit_point(t, items, True)
        if lsn and t.flush is not None:
            self._wait_durable(lsn, t.flush)  # not "commit" (the caller's rule): never waits

    def _delete_key(self, t: Table, raw_key: Any) -> int | None:
        """Delete the row of one key; 1 if it existed, else 0 (and nothing is logged)."""
        with t.lock:
            if not self._point_ready(t):
                return None
            k = t.schema.coerce_key(raw_key)
            _check_key_free(t, k)
            if t.committed_get(k) is None:
                return 0
            lsn = self._commit_point(t, [(k, None)])
        self._wait_durable(lsn, t.flush)
        return 1

    def _update_key(self, t: Table, raw_key: Any, values: Any) -> int | None:
        """Set columns of the row of one key (a key column change moves the row)."""
        with t.lock:
            if not self._point_ready(t):
                return None
            schema = t.schema
            setters = update_setters(t, values)
            kp = schema.key_positions
            key_cols_changed = any(i in kp for i, _ in setters)
            k = schema.coerce_key(raw_key)
            owner = t.locks.get(k)
            if owner is None and t.bulk_locks:
                owner = t.lock_owner(k)
            if owner is not None:
                raise key_locked_error(t, k, owner)
            cur = t.committed_get(k)
            if cur is None:
                return 0
            new = list(cur)
            for i, v in setters:
                new[i] = v
            row = tuple(new)
            nk = schema.key_of(row) if key_cols_changed else k
            if nk != k:
                owner = t.locks.get(nk)
                if owner is None and t.bulk_locks:
                    owner = t.lock_owner(nk)
                if owner is not None:
                    raise key_locked_error(t, nk, owner)
                if t.committed_get(nk) is not None:
                    raise move_exists_error(t, k, nk)
                items: list[tuple[Any, Any]] = [(k, None), (nk, row)]
            else:
                items = [(k, row)]
            self._check_row_memory(t)
            lsn = self._commit_point(t, items)
        self._wait_durable(lsn, t.flush)
        return 1

    def _check_row_memory(self, t: Table) -> None:
        """The memory limit check of a change set adding one row to ``t``."""
        if self.memory_limit_bytes is not None or t.memory_limit_bytes is not None:
            est = t.buckets[0].row_estimate if t.buckets else 200
            check_memory(self, [(t.name, t, est, False)])

    def commit_busy(self) -> bool:
        """Whether a commit holds the store's log-and-apply lock at this moment: a hint
        for callers that must not wait (the server's event loop), stale at once. O(1)."""
        return self._commit_lock.locked()

    def _commit_point(self, t: Table, items: list[tuple[Any, Any]], defer: bool = False) -> int:
        """Log and apply checked point changes of one statement (caller holds t.lock).

        Returns the LSN to pass to :meth:`_wait_durable` once the lock is released.
        ``defer``: hold the log record until :meth:`write_deferred` (the server's event
        loop writes the records of one pass together, before it sends their replies);
        only where the change's flush policy does not wait for an fsync.
        """
        lsn = 0
        commit_lock = self._commit_lock
        commit_lock.acquire()
        try:
            if t.persistent and self._wal is not None:
                # The record Store._commit writes for this change, encoded directly.
                rec = encode_point_commit(f"local-{next(_txn_ids)}", t.name, items, t.schema.plain_values)
                lsn = self._log_data(rec, False, defer)
            t.check_open()
            t.apply_points(items)  # what t.apply(False, items, ()) does, without its prologue
        finally:
            commit_lock.release()
        return lsn

    def _tables_of(self, cs: ChangeSet) -> list[Table]:
        return [cs.pending[n].table for n in sorted(cs.pending)]

    def _commit(self, cs: ChangeSet, one_phase: bool) -> int:
        """Log and apply a change set under its tables' locks.

        Returns the LSN of its record (0: none) for :meth:`_wait_durable`, which the
        caller runs after releasing every lock it holds.
        """
        tables = self._tables_of(cs)
        lsn = 0
        record: bytes | None = None
        if one_phase and self._wal is not None:
            # Encoded before the table locks are taken (a bulk's Arrow data takes a while):
            # the change set cannot change meanwhile, its caller holds its mutex.
            changes = cs.changes()
            if changes and any(p.table.persistent for p in cs.pending.values()):
                record = encode_record(("commit1", cs.id, self._durable(cs, changes)))
        for t in tables:
            t.lock.acquire()
        try:
            with self._commit_lock:
                if record is not None:
                    lsn = self._log_data(record, wait=False)
                elif cs.id in self._prepare_lsns:
                    lsn = self._log(("commit", cs.id), wait=False)
                for p in cs.pending.values():
                    if not p.is_empty():
                        p.table.check_open()
                        p.table.apply(p.truncate, p.point.items(), [b.apply_form() for b in p.bulks])
            self._prepare_lsns.pop(cs.id, None)
        finally:
            for t in reversed(tables):
                t.lock.release()
        # Only a commit that went through ends the change set. After an error (a failed
        # log write, a dropped table) it is still open or prepared, holding its key
        # locks, its id and the pin on its STAGE records, for its owner to retry the
        # commit (the in-doubt resolver does) or to abort it: a checkpoint meanwhile
        # must keep the STAGE records its PREPARE (or a retried COMMIT1) refers to.
        self._forget(cs)  # by identity: an autocommit id may equal a user's txn id
        return lsn

    def _wait_durable(self, lsn: int, policy: str | None = None) -> None:
        """Make the log record ``lsn`` as durable as ``policy`` asks before returning.

        ``policy`` is the flush policy of the change (:meth:`_durability`; None: the
        store's). "commit": return once the log is fsynced through ``lsn``; "group":
        make sure a flusher fsyncs it within the group interval; "off": nothing. Called
        by committers after releasing their locks, so that concurrent commits share
        fsyncs (see the module docstring for what readers may see meanwhile).
        """
        if not lsn:
            return
        policy = policy or self.flush
        if policy == "commit":
            assert self._wal is not None
            self._wal.wait_durable(lsn)
        elif policy == "group" and self.flush != "group":
            assert self._wal is not None
            self._wal.sync_soon()

    def _durability(self, tables: Iterable[Table]) -> str:
        """The flush policy of a change to ``tables``: the strictest of their ``flush``
        options, each defaulting to the store's. O(#tables)."""
        best = "off"
        for t in tables:
            p = t.flush or self.flush
            if p == "commit":
                return "commit"
            if p == "group":
                best = "group"
        return best

    def _durable(self, cs: ChangeSet, changes: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        persistent = {n for n, p in cs.pending.items() if p.table.persistent}
        return [c for c in changes if c[0] in persistent]

    def _log_prepare(self, cs: ChangeSet) -> None:
        if self._wal is None:
            return
        changes = self._durable(cs, cs.changes())
        if changes:
            with self._commit_lock:
                rec = ("prepare", cs.id, changes) if cs.meta is None else ("prepare", cs.id, changes, cs.meta)
                lsn = self._prepare_lsns[cs.id] = self._log(rec, wait=False)
            self._wait_durable(lsn, self._durability(self._tables_of(cs)))

    def logged_prepare(self, txn_id: str) -> bool:
        """Whether ``txn_id`` has a PREPARE record in the log awaiting its outcome. O(1)."""
        return txn_id in self._prepare_lsns

    def _forget(self, cs: ChangeSet) -> None:
        """Drop a change set that ended (its commit went through, or it is being
        aborted) from the registry of named ones (its id is free), and drop the pin
        that kept its STAGE records in the log. Never called for a failed commit. O(1)."""
        if self._txns.get(cs.id) is cs:
            del self._txns[cs.id]
        if self._in_doubt.get(cs.id) is cs:
            del self._in_doubt[cs.id]
        if cs.id in self._staged:
            with self._commit_lock:  # (a checkpoint reads the pins under it)
                pin = self._staged.get(cs.id)
                if pin is not None and pin[2] is cs:
                    del self._staged[cs.id]
                    self._log_bytes_since_ckpt += pin[1]

    def _log_abort(self, cs: ChangeSet) -> None:
        lsn = 0
        policy = None
        if cs.id in self._prepare_lsns:
            policy = self._durability(self._tables_of(cs))  # only a logged abort waits
            with self._commit_lock:
                lsn = self._log(("abort", cs.id), wait=False)
                self._prepare_lsns.pop(cs.id, None)
        self._forget(cs)
        self._wait_durable(lsn, policy)

    def _log_unstaged(self, cs: ChangeSet) -> None:
        """An open change set that logged STAGE records is aborted: log an ABORT for it.

        Not needed for correctness (no decision refers to those records, so recovery
        ignores them) and not waited for; it lets recovery drop them when it reads it
        rather than hold them to the end of the log. O(1).
        """
        if self._wal is not None and self._staged.get(cs.id, (0, 0, None))[2] is cs:
            try:
                with self._commit_lock:
                    self._log(("abort", cs.id), wait=False)
            except WalError as e:  # not needed (see above): the abort must still free the locks
                logger.warning("transaction %s: its abort record could not be logged (%s)", cs.id, e)

    def log_staged(self, cs: ChangeSet, table: Table, ipc: IpcBatch) -> int:
        """Write a bulk's rows to the log as they are staged; returns the STAGE record's
        LSN for :meth:`ChangeSet.insert` / ``upsert`` (via ``OrderedBatch.lsn``), or 0 when
        nothing was logged (no log, a table in memory only).

        Not fsynced here: the commit's fsync covers it (an fsync covers every earlier
        record). Runs outside the commit lock (the write of a few MB must not hold up
        other commits); the transaction's first STAGE LSN is registered before the
        append, so a checkpoint running meanwhile keeps the record. O(bytes).
        """
        if self._wal is None or not table.persistent or cs.state != "open":
            return 0
        data = encode_stage_record(cs.id, table.name, ipc)
        with self._commit_lock:
            pin = self._staged.get(cs.id)
            if pin is None:
                pin = self._staged[cs.id] = [self._wal.last_lsn + 1, 0, cs]
            pin[1] += len(data)
        return self._wal.append(data, wait=False)

    def _log(self, record: tuple[Any, ...], wait: bool = True) -> int:
        """Append a record; returns its LSN (0 without a log).

        ``wait=False``: with flush "commit" the record is written but not yet fsynced;
        the caller must call :meth:`_wait_durable` before acknowledging it.
        """
        if self._wal is None:
            return 0
        return self._log_data(encode_record(record), wait)

    def _log_data(self, data: bytes, wait: bool = True, defer: bool = False) -> int:
        assert self._wal is not None
        self._log_bytes_since_ckpt += len(data)
        return self._wal.append(data, wait=wait, defer=defer)

    def write_deferred(self) -> None:
        """Write the log records of deferred point commits (:meth:`flush_point_group`)
        to the OS. O(1) when there are none.

        Raises:
            WalError: the write failed; the log refuses further writes.
        """
        w = self._wal
        if w is not None:
            w.write_pending()

    def _check_open(self) -> None:
        if self._closed:
            from spark_ext.exceptions import ShuttingDownError

            raise ShuttingDownError("the store is closed")

    # --- recovery -----------------------------------------------------------------------

    def _recover(self) -> None:
        assert self.data_dir is not None
        t0 = time.monotonic()
        cp = ckpt.read_latest_checkpoint(self.data_dir / "checkpoints")
        ckpt_lsn = 0
        replay_from = 0
        if cp is not None:
            ckpt_lsn = cp.lsn
            replay_from = int(cp.catalog.get("replay_from", ckpt_lsn))
            self._ckpt_floors[ckpt_lsn] = min(replay_from, ckpt_lsn)
            for tdef in cp.catalog.get("tables", []):
                ts = TableSchema.from_json(tdef["schema"])
                t = Table(self, ts)
                t.next_rowid = int(tdef.get("next_rowid", 1))
                self.tables[ts.name] = t
                if t.persistent:
                    batches = list(cp.open_table(ts.name))
                    if batches:
                        t.apply(False, (), [(b, False) for b in batches if b.num_rows])
                for iname, (kind, cols) in tdef.get("indexes", {}).items():
                    t._add_index(iname, cols, kind)
        self._wal = WriteAheadLog(self.data_dir / "wal", flush=self.flush)
        prepared: dict[str, tuple[int, list[Any], Any]] = {}
        staged: dict[str, dict[int, Any]] = {}  # txn id -> {STAGE LSN: rows}
        n = 0
        for lsn, payload in self._wal.replay(after_lsn=min(replay_from, ckpt_lsn)):
            rec = decode_record(payload)
            n += 1
            kind = rec[0]
            if kind == "stage":
                # Kept (whatever its LSN) until its transaction's decision refers to it.
                staged.setdefault(rec[1], {})[lsn] = rec[3]
                continue
            if kind == "prepare":
                prepared[rec[1]] = (lsn, rec[2], rec[3] if len(rec) > 3 else None)  # [3]: coordination meta
                continue
            if kind == "commit":
                self.recovered_commits.append(rec[1])
                entry = prepared.pop(rec[1], None)
                if entry is not None and lsn > ckpt_lsn:
                    self._replay_changes(_resolve_staged(rec[1], entry[1], staged.get(rec[1], {})))
                staged.pop(rec[1], None)
                continue
            if kind == "abort":
                prepared.pop(rec[1], None)
                staged.pop(rec[1], None)
                continue
            if lsn <= ckpt_lsn:
                if kind == "commit1":
                    staged.pop(rec[1], None)
                continue  # already in the checkpoint
            if kind == "commit1":
                rec = (kind, rec[1], _resolve_staged(rec[1], rec[2], staged.pop(rec[1], {})))
            self._replay(rec)
        for txn_id, (lsn, changes, meta) in prepared.items():
            refs = [b for c in changes for b, _ in c[3] if isinstance(b, int)]
            cs = self._restage(txn_id, _resolve_staged(txn_id, changes, staged.get(txn_id, {})))
            cs.meta = meta
            if refs:
                self._staged[txn_id] = [min(refs), 0, cs]  # still referred to: kept by checkpoints
            self._prepare_lsns[txn_id] = lsn
            self._in_doubt[txn_id] = cs
            logger.warning("transaction %s was prepared but not decided before the restart; it is in doubt", txn_id)
        logger.info(
            "recovered %d table(s) from %s: checkpoint lsn %d, %d log record(s) replayed in %.2fs",
            len(self.tables), self.data_dir, ckpt_lsn, n, time.monotonic() - t0,
        )

    def _replay(self, rec: tuple[Any, ...]) -> None:
        kind = rec[0]
        if kind == "create_table":
            ts = TableSchema.from_json(rec[1])
            self.tables[ts.name] = Table(self, ts)
        elif kind == "drop_table":
            t = self.tables.pop(rec[1], None)
            if t is not None:
                t.dropped = True
        elif kind == "create_index":
            self.tables[rec[1]]._add_index(rec[2], list(rec[4]), rec[3])
        elif kind == "drop_index":
            self.tables[rec[1]]._remove_index(rec[2])
        elif kind == "add_columns":
            t = self.tables[rec[1]]
            alter.apply_schema(t, alter.schema_with_columns(t.schema, alter.fields_from_json(rec[1], rec[2])))
        elif kind == "rename_table":
            t = self.tables.pop(rec[1])
            alter.apply_schema(t, alter.renamed_schema(t.schema, rec[2]))
            self.tables[rec[2]] = t
        elif kind == "commit1":
            self._replay_changes(rec[2])
        else:
            logger.warning("unknown log record kind %r skipped", kind)

    def _replay_changes(self, changes: list[Any]) -> None:
        for name, truncate, point, bulks in changes:
            t = self.tables.get(name)
            if t is None:
                continue  # dropped later in the log
            t.apply(truncate, point, [(b if isinstance(b, pa.RecordBatch) else b.to_batch(), up) for b, up in bulks])

    def _restage(self, txn_id: str, changes: list[Any]) -> ChangeSet:
        cs = ChangeSet(self, txn_id)
        for name, truncate, point, bulks in changes:
            t = self.tables[name]
            p = cs.pending[name] = Pending(t, dict(point), [], truncate)
            from spark_ext.store.txn import Bulk
            from spark_ext.store.schema import batch_keys

            for b, up in bulks:
                b = b if isinstance(b, pa.RecordBatch) else b.to_batch()
                p.bulks.append(Bulk(b, up, keys=batch_keys(t.schema, b)))
            for k in p.locked_keys():
                t.locks[k] = cs
                # Row ids this set reserved must not be handed out again by new inserts.
                if t.schema.hidden_rowid and k >= t.next_rowid:
                    t.next_rowid = k + 1
            if truncate:
                t.truncating = cs
        cs.state = PREPARED
        return cs

    # --- checkpoints and upkeep ---------------------------------------------------------

    def checkpoint(self) -> int:
        """Write every persistent table to a checkpoint and trim the log. Returns its LSN.

        Holds the locks only to take snapshots (cheap); the files are written after.
        """
        if self._wal is None or self.data_dir is None:
            return 0
        with self._ddl_lock:
            tables = [self.tables[n] for n in sorted(self.tables)]
            for t in tables:
                t.lock.acquire()
            try:
                with self._commit_lock:
                    lsn = self._wal.last_lsn
                    self._wal.rotate()
                    # Records after replay_from are replayed: keep every undecided PREPARE,
                    # and the STAGE records of every undecided transaction.
                    replay_from = min([lsn, *(p - 1 for p in self._prepare_lsns.values()),
                                       *(pin[0] - 1 for pin in self._staged.values())])
                    catalog: dict[str, Any] = {"replay_from": replay_from, "tables": []}
                    contents = {}
                    for t in tables:
                        catalog["tables"].append(
                            {
                                "schema": t.schema.to_json(),
                                "next_rowid": t.next_rowid,
                                "indexes": {n: [k, c] for n, (k, c) in t.index_defs.items()},
                            }
                        )
                        if t.persistent:
                            snaps = [b.snapshot() for b in t.buckets]
                            contents[t.name] = (t.schema.storage_schema, _batches_of(snaps, t.schema.storage_schema))
                    self._log_bytes_since_ckpt = 0
            finally:
                for t in reversed(tables):
                    t.lock.release()
        # The snapshot may hold commits whose records are written but not yet fsynced
        # (flush "group", or "commit" before its committer's wait). A checkpoint at an
        # LSN past the durable log would let a power loss cut those records, after which
        # the log hands their LSNs out again and recovery skips the new records as
        # "in the checkpoint": make the log durable through the checkpoint LSN first.
        self._wal.wait_durable(lsn)
        ckpt_dir = self.data_dir / "checkpoints"
        ckpt.write_checkpoint(ckpt_dir, lsn, catalog, contents)
        # (min: write_checkpoint keeps a checkpoint of this LSN written before, if any)
        self._ckpt_floors[lsn] = min(replay_from, self._ckpt_floors.get(lsn, lsn))
        # Keep the log back to what the oldest kept checkpoint replays: if the newest one
        # turns out unreadable, recovery falls back to the older one and replays from
        # *its* replay_from, which can lie before its LSN (the PREPARE and STAGE records
        # of a transaction undecided then, decided since). A checkpoint whose floor is
        # not known here (written before a restart, not the one loaded) keeps the log.
        kept = [c for c, _ in ckpt.list_checkpoints(ckpt_dir)] or [lsn]
        self._ckpt_floors = {c: f for c, f in self._ckpt_floors.items() if c in kept}
        floor = min(self._ckpt_floors.get(c, 0) for c in kept)
        if self.before_log_trim is not None:
            self.before_log_trim()
        self._wal.truncate_before(floor + 1)
        logger.info("checkpoint at lsn %d written", lsn)
        return lsn

    def _upkeep(self) -> None:
        min_rows, fraction, max_runs = self.compaction
        while not self._stop.wait(0.25):
            try:
                for t in list(self.tables.values()):
                    for i in range(len(t.buckets)):
                        with t.lock:
                            if t.dropped:
                                break
                            b = t.buckets[i]
                            job = b.begin_compaction() if b.needs_compaction(min_rows, fraction, max_runs) else None
                        if job is None:
                            continue
                        # The merge and sort run without the table lock: point writes
                        # to the bucket go on meanwhile and are kept by the finish.
                        try:
                            job.build()
                        finally:  # also after a failed build: stop tracking writes
                            with t.lock:
                                b.finish_compaction(job)
                if self._wal is not None and self._log_bytes_since_ckpt >= self.checkpoint_log_bytes:
                    self.checkpoint()
            except Exception:  # keep the store serving; the error is logged in full
                logger.exception("background upkeep failed")

    def compact(self) -> int:
        """Compact every table now; returns how many buckets changed."""
        return sum(t.compact() for t in list(self.tables.values()))

    def close(self) -> None:
        """Stop background work and flush the log. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._wal is not None:
            self._wal.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _resolve_staged(txn_id: str, changes: list[Any], staged: dict[int, Any]) -> list[Any]:
    """``changes`` of a COMMIT1 or PREPARE record with each bulk logged by LSN (an int)
    replaced by the rows of that STAGE record of the same transaction. O(bulks).

    Raises:
        StorageError: a referenced STAGE record is not in the log (damaged or cut log).
    """
    out = []
    for name, truncate, point, bulks in changes:
        rows = []
        for b, up in bulks:
            if isinstance(b, int):
                got = staged.get(b)
                if got is None:
                    raise StorageError(
                        f"log damaged: transaction {txn_id} refers to the rows of STAGE record "
                        f"{b} (table {name!r}), which the log does not hold")
                b = got
            rows.append((b, up))
        out.append((name, truncate, point, rows))
    return out


def _batches_of(snaps: Iterable[Any], schema: pa.Schema) -> Iterable[pa.RecordBatch]:
    for s in snaps:
        yield from s.batches(schema)


def _check_key_free(t: Table, k: Any) -> None:
    """Refuse a one-row write to a key an open change set has locked."""
    owner = t.locks.get(k)
    if owner is None and t.bulk_locks:
        owner = t.lock_owner(k)
    if owner is not None:
        raise key_locked_error(t, k, owner)
