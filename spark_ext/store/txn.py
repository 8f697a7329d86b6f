"""Change sets: groups of changes staged, prepared, then committed or aborted as a unit.

Staging checks everything (types, NULL keys, duplicate keys, conflicts) at once and
records the result in an *overlay* per table: key -> new row, or ``None`` for a delete,
plus vectorized *bulk* batches for large Arrow inputs. Every key a change set touches is
locked in its table until commit or abort, so a prepared change set can always commit:
another change set touching the same key gets a :class:`ConflictError` at once (no
waiting, so no deadlocks). Nothing is visible to readers before commit, and commit
applies all tables under their locks, so no reader ever sees half a change set.

A failed staging call changes nothing: neither the overlay nor the locks.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from spark_ext.exceptions import (
    BadArgumentError,
    ConflictError,
    DuplicateKeyError,
    MemoryLimitError,
    TransactionStateError,
)
from spark_ext.store import predicate as P
from spark_ext.store.codec import IpcBatch, batch_to_ipc
from spark_ext.store.keylocks import SortedKeyLocks
from spark_ext.store.rowdecode import row_decoder
from spark_ext.store.rows import BULK_MIN_ROWS, normalize_rows
from spark_ext.store.schema import ROWID, batch_buckets, batch_key_array, batch_keys, rows_to_batch

if TYPE_CHECKING:
    from spark_ext.store.store import Store
    from spark_ext.store.table import Table

logger = logging.getLogger(__name__)

OPEN, PREPARED, COMMITTED, ABORTED = "open", "prepared", "committed", "aborted"
_ids = itertools.count(1)


class Bulk:
    """A vectorized insert or upsert of a storage-layout batch.

    On the int-key path the rows are ordered by (bucket, key) when staged: ``key_arr``
    holds their keys and ``bounds[b]:bounds[b + 1]`` is bucket ``b``'s slice. Commit
    then appends each slice as a sorted run without hashing, filtering or sorting
    again, and the keys are locked as sorted arrays (``array_locked``, see
    :mod:`spark_ext.store.keylocks`) rather than one dict entry each.
    """

    __slots__ = ("batch", "upsert", "_keys", "key_arr", "bounds", "live", "array_locked", "_pos", "ipc", "lsn")

    def __init__(self, batch: pa.RecordBatch, upsert: bool, keys: list[Any] | None = None,
                 key_arr: np.ndarray | None = None, bounds: np.ndarray | None = None,
                 ipc: IpcBatch | None = None, lsn: int = 0) -> None:
        self.batch = batch
        #: ``batch`` already encoded for the log (``batch`` is a view of it), or None.
        self.ipc = ipc
        #: LSN of the STAGE log record holding ``batch`` already (0: none), see
        #: :meth:`Store.log_staged`: the commit record then refers to it.
        self.lsn = lsn
        self.upsert = upsert
        self._keys = keys
        self.key_arr = key_arr
        self.bounds = bounds
        self.live: np.ndarray | None = None  # False where a later change in the set superseded a row
        self.array_locked = False
        self._pos: dict[Any, int] | None = None

    @property
    def keys(self) -> list[Any]:
        """The keys in key form, in row order (made from ``key_arr`` on first use). O(rows)."""
        if self._keys is None:
            assert self.key_arr is not None
            self._keys = self.key_arr.tolist()
        return self._keys

    def find(self, key: Any) -> int:
        """Live position of ``key`` in this batch, or -1 (index built on first use)."""
        if self._pos is None:
            self._pos = {k: i for i, k in enumerate(self.keys)}
        p = self._pos.get(key, -1)
        if p >= 0 and self.live is not None and not self.live[p]:
            return -1
        return p

    def kill(self, pos: int) -> None:
        if self.live is None:
            self.live = np.ones(self.batch.num_rows, dtype=bool)
        self.live[pos] = False

    def live_batch(self) -> pa.RecordBatch:
        return self.batch if self.live is None else self.batch.filter(pa.array(self.live))

    def apply_form(self) -> tuple[pa.RecordBatch, bool, np.ndarray | None]:
        """``(live rows, upsert, bucket bounds or None)`` for :meth:`Table.apply`."""
        if self.live is None:
            return self.batch, self.upsert, self.bounds
        return self.batch.filter(pa.array(self.live)), self.upsert, None


class OrderedBatch:
    """Rows for :meth:`ChangeSet.insert` / :meth:`ChangeSet.upsert`, conformed to a
    table's layout and ordered by (bucket, key) ahead of time (see :func:`order_rows`),
    so that staging them does not sort again. A change of the table's schema since then
    makes the change set conform them again."""

    __slots__ = ("schema", "batch", "keys", "bounds", "ipc", "lsn")

    def __init__(self, schema: Any, batch: pa.RecordBatch, keys: np.ndarray, bounds: np.ndarray,
                 ipc: IpcBatch | None = None) -> None:
        self.schema = schema
        self.batch = batch
        self.keys = keys
        self.bounds = bounds
        self.ipc = ipc  # the batch encoded for the write-ahead log (batch is a view of it)
        self.lsn = 0  # the STAGE log record already holding ``ipc`` (Store.log_staged), if any

    @property
    def num_rows(self) -> int:
        return self.batch.num_rows


def order_rows(schema: Any, data: pa.RecordBatch | pa.Table, buckets: np.ndarray | None = None,
               encode: bool = False) -> Any:
    """Arrow rows for a table with one integer key column, conformed and ordered by
    (bucket, key) as an :class:`OrderedBatch`; other inputs are returned as they are.

    A store server calls it when a batch arrives, before the transaction step that
    stages it; ``buckets``: the rows' buckets when the caller has them already.
    ``encode``: also encode the ordered rows for the write-ahead log now (the table is
    logged), so that the commit writes them as they are instead of encoding every
    statement's rows at its end; the batch then becomes a zero-copy view of that encoding.
    O(rows log rows), vectorized. Raises the conform errors (types, NULLs).
    """
    if not schema.int_key or schema.hidden_rowid or data.num_rows < BULK_MIN_ROWS:
        return data
    batch = schema.conform_batch(data)
    batch, keys, bounds = sort_by_bucket_and_key(schema, batch, buckets)
    ipc = None
    if encode:
        ipc = IpcBatch(batch_to_ipc(batch))
        batch = ipc.to_batch()
    return OrderedBatch(schema, batch, keys, bounds, ipc)


def sort_by_bucket_and_key(schema: Any, batch: pa.RecordBatch,
                           buckets: np.ndarray | None = None) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]:
    """Order an int-key batch by (bucket, key): ``(batch, keys, bounds)``.

    Equal keys end up next to each other (a key has one bucket), so duplicates are found
    by comparing neighbours. ``buckets``: the rows' buckets if known (else computed).
    O(rows log rows), vectorized; no copy when already ordered.
    """
    keys = batch_key_array(schema, batch)
    bks = batch_buckets(schema, batch) if buckets is None else buckets
    order = np.argsort(keys)  # (introsort: several times faster than a stable sort here)
    # A stable sort on the small bucket numbers keeps the key order within each bucket
    # (numpy sorts 16-bit ints stably by radix: linear).
    small = np.int16 if schema.num_buckets <= np.iinfo(np.int16).max else np.int64
    order = order[np.argsort(bks[order].astype(small), kind="stable")]
    if bool(np.any(order != np.arange(len(order)))):
        batch = batch.take(pa.array(order))
        keys = keys[order]
        bks = bks[order]
    bounds = np.searchsorted(bks, np.arange(schema.num_buckets + 1), side="left")
    return batch, np.ascontiguousarray(keys, dtype=np.int64), bounds


@dataclass
class Pending:
    """The overlay of one change set on one table."""

    table: "Table"
    point: dict[Any, tuple[Any, ...] | None] = field(default_factory=dict)
    bulks: list[Bulk] = field(default_factory=list)
    truncate: bool = False

    def is_empty(self) -> bool:
        return not self.point and not self.bulks and not self.truncate

    def added_bytes(self) -> int:
        rows = sum(1 for r in self.point.values() if r is not None)
        est = self.table.buckets[0].row_estimate if self.table.buckets else 200
        return rows * est + sum(b.batch.nbytes for b in self.bulks)

    def locked_keys(self) -> Iterable[Any]:
        """Every key this overlay holds a lock for (point and bulk). O(keys)."""
        yield from self.point.keys()
        for b in self.bulks:
            yield from b.keys


class ChangeSet:
    """A transaction over the tables of one store.

    Use as a context manager to commit on success and abort on error::

        with store.begin() as cs:
            cs.insert("t", rows)
            cs.delete("u", [1, 2])

    Staging calls are thread-safe; each runs under its table's lock.
    """

    def __init__(self, store: "Store", txn_id: str | None = None, autocommit: bool = False) -> None:
        self.store = store
        self.id = txn_id or f"local-{next(_ids)}"
        self.state = OPEN
        self.pending: dict[str, Pending] = {}
        self.prepare_lsn = 0
        #: Coordination facts logged with the PREPARE record and restored with an in-doubt
        #: set (participants, decider, fence; see spark_ext/server/indoubt.py). Opaque here.
        self.meta: dict[str, Any] | None = None
        # Autocommit change sets stage and commit under one hold of the table lock, so
        # they need not register key locks.
        self._register = not autocommit
        self._mutex = threading.RLock()

    # --- context manager --------------------------------------------------------------

    def __enter__(self) -> "ChangeSet":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None and self.state in (OPEN, PREPARED):
            try:
                self.commit()
            except BaseException:
                # A one-phase commit that failed (a log write, say) left nothing applied:
                # release the locks. A prepared one stays in doubt for its coordinator.
                if self.state == OPEN:
                    try:
                        self.abort()
                    except Exception:
                        logger.exception("transaction %s: abort after a failed commit failed", self.id)
                raise
        elif self.state in (OPEN, PREPARED):
            self.abort()

    # --- helpers ----------------------------------------------------------------------

    def _require_open(self) -> None:
        if self.state != OPEN:
            raise TransactionStateError(
                f"transaction {self.id} is {self.state}; no more changes can be staged", txn=self.id
            )

    def _pending(self, table: "Table") -> Pending:
        p = self.pending.get(table.name)
        if p is None or p.table is not table:
            p = self.pending[table.name] = Pending(table)
        return p

    def _check_table_free(self, table: "Table") -> None:
        owner = table.truncating
        if owner is not None and owner is not self:
            raise truncating_error(table, owner)

    def _check_key_free(self, table: "Table", key: Any) -> None:
        owner = table.locks.get(key)
        if owner is None and table.bulk_locks:
            owner = table.lock_owner(key)
        if owner is not None and owner is not self:
            raise key_locked_error(table, key, owner)

    def _current(self, table: "Table", p: Pending, key: Any) -> tuple[Any, ...] | None:
        """The row of ``key`` as this change set sees it (its own changes applied)."""
        if key in p.point:
            return p.point[key]
        if p.bulks and (not self._register or table.lock_owner(key) is self):
            for b in reversed(p.bulks):
                pos = b.find(key)
                if pos >= 0:
                    return _batch_row(b.batch, pos)
        if p.truncate:
            return None
        return table.committed_get(key)

    def _lock(self, table: "Table", keys: Iterable[Any]) -> None:
        if self._register:
            table.locks.update(dict.fromkeys(keys, self))  # C-level: bulks lock ~1M keys

    def _kill_in_bulks(self, p: Pending, key: Any) -> None:
        if not p.bulks or (self._register and p.table.lock_owner(key) is not self):
            return  # not staged by this set: no bulk of it holds the key
        for b in p.bulks:
            pos = b.find(key)
            if pos >= 0:
                b.kill(pos)

    # --- staging: point path ------------------------------------------------------------

    def insert(self, table: str, rows: Any) -> int:
        """Stage new rows; a key that exists (or repeats) rejects the whole call.

        Complexity: O(rows x columns); Arrow inputs of many rows are checked vectorized.

        Raises:
            DuplicateKeyError: naming the table and the key.
            ConflictError: a key is locked by another open change set.
        """
        return self._write(table, rows, upsert=False)

    def upsert(self, table: str, rows: Any) -> int:
        """Stage rows that replace existing rows with the same key or are added. O(rows)."""
        return self._write(table, rows, upsert=True)

    def _write(self, name: str, rows: Any, upsert: bool) -> int:
        t = self.store.table(name)
        with t.lock, self._mutex:
            self._require_open()
            t.check_open()
            self._check_table_free(t)
            if upsert and t.schema.hidden_rowid:
                raise BadArgumentError(
                    f"table {t.name!r} has no primary key, so rows cannot be matched for an "
                    "upsert; use insert, or declare a primary key",
                    table=t.name,
                )
            if isinstance(rows, OrderedBatch):
                if rows.schema is t.schema:
                    return self._write_bulk(t, rows.batch, upsert, (rows.keys, rows.bounds), rows.ipc, rows.lsn)
                rows = rows.batch  # the table changed since: conform again
            data = normalize_rows(t.schema, rows)
            if isinstance(data, pa.RecordBatch):
                return self._write_bulk(t, data, upsert)
            return self._write_points(t, data, upsert)

    def _write_points(self, t: "Table", rows: list[list[Any]], upsert: bool) -> int:
        schema = t.schema
        if schema.hidden_rowid:
            for r, rowid in zip(rows, t.reserve_rowids(len(rows)).tolist()):
                r.append(rowid)
        p = self._pending(t)
        staged: dict[Any, tuple[Any, ...]] = {}
        for r in rows:
            row = tuple(r)
            k = schema.key_of(row)
            if k in staged:
                raise DuplicateKeyError(
                    f"table {t.name!r}: key {k!r} appears twice in the rows given",
                    table=t.name, column=",".join(schema.key_columns), value=repr(k),
                )
            self._check_key_free(t, k)
            if not upsert and self._current(t, p, k) is not None:
                raise exists_error(t, k)
            staged[k] = row
        for k, row in staged.items():
            if k not in p.point:
                self._kill_in_bulks(p, k)
            p.point[k] = row
        self._lock(t, staged)
        return len(staged)

    # --- staging: bulk path -------------------------------------------------------------

    def _write_bulk(self, t: "Table", batch: pa.RecordBatch, upsert: bool,
                    ordered: tuple[np.ndarray, np.ndarray] | None = None, ipc: IpcBatch | None = None,
                    lsn: int = 0) -> int:
        """Stage a conformed batch; ``ordered``: its keys and bucket bounds when the rows
        are ordered by (bucket, key) already, ``ipc`` their log encoding and ``lsn`` the
        log record holding it already (an :class:`OrderedBatch`)."""
        schema = t.schema
        n = batch.num_rows
        if schema.hidden_rowid:
            batch = batch.append_column(pa.field(ROWID, pa.int64(), nullable=False), pa.array(t.reserve_rowids(n)))
        p = self._pending(t)
        arr: np.ndarray | None
        if schema.int_key:
            if ordered is not None:
                arr, bounds = ordered
            else:
                batch, arr, bounds = sort_by_bucket_and_key(schema, batch)
            same = np.flatnonzero(arr[1:] == arr[:-1])
            if len(same):
                raise _twice_error(t, int(arr[same[0]]))
            bulk = Bulk(batch, upsert, key_arr=arr, bounds=bounds, ipc=ipc if ordered is not None else None,
                        lsn=lsn if ordered is not None else 0)
            overlap = self._bulk_overlap(t, arr, bounds)
        else:
            arr = bounds = None
            bulk = Bulk(batch, upsert, keys=batch_keys(schema, batch))
            keys = bulk.keys
            if len(set(keys)) != n:
                seen: set[Any] = set()
                raise _twice_error(t, next(k for k in keys if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
            overlap = bool(t.locks) and not t.locks.keys().isdisjoint(keys)
        # Keys locked already: another change set's (a conflict) or this one's (it staged
        # them before: they are in its point overlay or live in one of its bulks). With
        # none, which is the usual case of a statement's parts, the checks against this
        # set's own changes below are skipped: they could only find keys it locked.
        if overlap:
            for k in bulk.keys:
                self._check_key_free(t, k)
        own = overlap or not self._register  # an autocommit set's changes are not in the locks
        if not upsert:
            dup = self._first_existing(t, p, batch, bulk.keys if own or arr is None else [], own, arr, bounds)
            if dup is not None:
                raise exists_error(t, dup)
        # Earlier changes of this set to the same keys are superseded. A key this set
        # staged is locked by it: if it is not in the point overlay it is live in a bulk.
        # An insert's keys were just checked not live in this set's view: none to kill.
        again: list[Any] = []
        if p.bulks and own and upsert:
            if self._register:
                again = [k for k in bulk.keys if t.lock_owner(k) is self and k not in p.point]
            else:
                again = bulk.keys
        replaces = False  # an insert of a key this set deleted: the committed row must go
        if p.point and own:
            point = p.point
            keys = bulk.keys
            hit = [k for k in point if k in set(keys)] if len(point) < n else [k for k in keys if k in point]
            for k in hit:
                if point[k] is None:
                    replaces = True
                del point[k]
                if arr is not None and self._register:
                    t.locks.pop(k, None)  # locked again below, with the bulk's keys (in arrays)
        for k in again:
            for b in p.bulks:
                pos = b.find(k)
                if pos >= 0:
                    b.kill(pos)
        # ``upsert`` on a bulk also tells apply() to drop older versions of its keys;
        # a plain insert of keys checked absent skips that search.
        bulk.upsert = upsert or replaces
        p.bulks.append(bulk)
        if self._register:
            if arr is not None:
                # (A key this set locked before may be locked again here: harmless, the
                # whole entry goes at release.)
                kl = t.bulk_locks.get(self)
                if kl is None:
                    kl = t.bulk_locks[self] = SortedKeyLocks(schema.num_buckets)
                assert bounds is not None  # (set with arr above)
                kl.add(arr, bounds)
                bulk.array_locked = True
            else:
                self._lock(t, bulk.keys)
        return n

    def _bulk_overlap(self, t: "Table", arr: np.ndarray, bounds: np.ndarray) -> bool:
        """Whether any of these int keys (ordered by bucket) is locked already, by any
        change set. Vectorized against bulk locks; point locks are few, or probed in C."""
        locks = t.locks
        if locks:
            if len(locks) * 64 < len(arr):
                bucket_of = t.schema.bucket_of_key
                for k in locks:
                    b = bucket_of(k)
                    seg = arr[bounds[b]:bounds[b + 1]]
                    i = int(np.searchsorted(seg, k))
                    if i < len(seg) and int(seg[i]) == k:
                        return True
            elif not locks.keys().isdisjoint(arr.tolist()):
                return True
        return any(bool(kl.hits(arr, bounds).any()) for kl in t.bulk_locks.values())

    def _first_existing(self, t: "Table", p: Pending, batch: pa.RecordBatch, keys: list[Any], own: bool = True,
                        arr: np.ndarray | None = None, bounds: np.ndarray | None = None) -> Any:
        """First key of ``keys`` already live in this change set's view, or None.

        ``own`` False: no key of ``keys`` is locked by this set, so none is in its own
        changes (only the committed table is searched). ``arr``/``bounds``: the int keys
        ordered by bucket (see :func:`sort_by_bucket_and_key`).
        """
        if own and p.bulks and not self._register:  # (autocommit stages one call: not reached)
            key_set = set(keys)
            for b in p.bulks:
                for i, k in enumerate(b.keys):
                    if k in key_set and (b.live is None or b.live[i]):
                        return k
        if own and (p.point or p.bulks):
            point = p.point
            for k in keys:
                if k in point:
                    if point[k] is not None:
                        return k
                elif self._register and t.lock_owner(k) is self:
                    return k  # live in a bulk this set staged earlier
        if p.truncate:
            return None
        deleted_here = {k for k, r in p.point.items() if r is None}
        for k in t.committed_existing(batch, keys, arr, bounds):
            if k not in deleted_here:
                return k
        return None

    # --- staging: updates and deletes ----------------------------------------------------

    def update(self, table: str, keys: Sequence[Any], values: Mapping[str, Any]) -> int:
        """Set columns of the rows with these keys; absent keys are skipped.

        Changing a key column moves the row (the new key must not exist).
        O(len(keys) x columns). Returns how many rows were updated.
        """
        t = self.store.table(table)
        with t.lock, self._mutex:
            self._require_open()
            t.check_open()
            self._check_table_free(t)
            schema = t.schema
            setters = update_setters(t, values)
            key_cols_changed = any(i in schema.key_positions for i, _ in setters)
            p = self._pending(t)
            plan: list[tuple[Any, Any, tuple[Any, ...]]] = []
            for k in dict.fromkeys(schema.coerce_key(k) for k in keys):
                self._check_key_free(t, k)
                cur = self._current(t, p, k)
                if cur is None:
                    continue
                new = list(cur)
                for i, v in setters:
                    new[i] = v
                row = tuple(new)
                plan.append((k, schema.key_of(row) if key_cols_changed else k, row))
            self._stage_moves(t, p, plan)
            return len(plan)

    def replace(self, table: str, pairs: Sequence[tuple[Any, Any]]) -> int:
        """Replace whole rows by key: ``(old_key, new_row)`` pairs (Spark's delta update).

        The new row may carry a different key (the row moves). O(pairs x columns).
        """
        t = self.store.table(table)
        with t.lock, self._mutex:
            self._require_open()
            t.check_open()
            self._check_table_free(t)
            schema = t.schema
            p = self._pending(t)
            plan = []
            for old_key, new_row in pairs:
                ok = schema.coerce_key(old_key)
                vals = schema.dict_to_values(new_row) if isinstance(new_row, dict) else new_row
                row_l = schema.coerce_row(vals)
                if schema.hidden_rowid:
                    row_l.append(ok)
                row = tuple(row_l)
                nk = schema.key_of(row)
                self._check_key_free(t, ok)
                self._check_key_free(t, nk)
                plan.append((ok, nk, row))
            self._stage_moves(t, p, plan)
            return len(plan)

    def _stage_moves(self, t: "Table", p: Pending, plan: list[tuple[Any, Any, tuple[Any, ...]]]) -> None:
        """Stage ``(old_key, new_key, new_row)`` changes; a row whose key changes moves.

        A new key may be one of the old keys of the same call (``SET id = id + 1``),
        but may not collide with any other live row, nor with another new key.
        """
        schema = t.schema
        olds = {ok for ok, _, _ in plan}
        news = [nk for _, nk, _ in plan]
        new_set = set(news)
        if len(new_set) != len(news):
            dup = next(k for k in news if news.count(k) > 1)
            raise DuplicateKeyError(
                f"table {t.name!r}: the change gives two rows the key {_show_key(schema, dup)}",
                table=t.name, column=",".join(schema.key_columns), value=repr(dup),
            )
        for ok, nk, _ in plan:
            self._check_key_free(t, ok)
            if nk != ok:
                self._check_key_free(t, nk)
                if nk not in olds and self._current(t, p, nk) is not None:
                    raise move_exists_error(t, ok, nk)
        for ok, _, _ in plan:
            if ok not in new_set:
                self._set(p, ok, None)
        for _, nk, row in plan:
            self._set(p, nk, row)
        self._lock(t, list(olds) + news)

    def delete(self, table: str, keys: Sequence[Any]) -> int:
        """Delete the rows with these keys; returns how many existed. O(len(keys))."""
        t = self.store.table(table)
        with t.lock, self._mutex:
            self._require_open()
            t.check_open()
            self._check_table_free(t)
            schema = t.schema
            p = self._pending(t)
            ks = list(dict.fromkeys(schema.coerce_key(k) for k in keys))
            for k in ks:
                self._check_key_free(t, k)
            hit = [k for k in ks if self._current(t, p, k) is not None]
            for k in hit:
                self._set(p, k, None)
            self._lock(t, hit)
            return len(hit)

    def _set(self, p: Pending, key: Any, row: tuple[Any, ...] | None) -> None:
        if key not in p.point:
            self._kill_in_bulks(p, key)
        p.point[key] = row

    def matching_keys(self, table: str, where: P.Predicate | list[Any] | None) -> list[Any]:
        """Keys of the rows matching ``where`` in this change set's view. O(rows)."""
        t = self.store.table(table)
        with t.lock, self._mutex:
            pred = _as_predicate(where, t)
            p = self.pending.get(t.name)
            overridden: set[Any] = set()
            extra: list[pa.RecordBatch] = []
            if p is not None:
                overridden = set(p.point)
                for b in p.bulks:
                    overridden.update(b.keys)
                    extra.append(b.live_batch())
                live = [r for r in p.point.values() if r is not None]
                if live:
                    extra.append(rows_to_batch(t.schema.storage_schema, live))
            out: list[Any] = []
            if p is None or not p.truncate:
                for k in t.keys_where(pred):
                    if k not in overridden:
                        out.append(k)
            for b in extra:
                if pred is not None:
                    b = b.filter(P.evaluate(pred, b))
                out.extend(batch_keys(t.schema, b))
            return out

    def update_where(self, table: str, where: P.Predicate | list[Any] | None, values: Mapping[str, Any]) -> int:
        """Update the rows matching a predicate (None: every row). O(rows)."""
        t = self.store.table(table)
        with t.lock, self._mutex:
            return self.update(table, self.matching_keys(table, where), values)

    def delete_where(self, table: str, where: P.Predicate | list[Any] | None) -> int:
        """Delete the rows matching a predicate (None: every row). O(rows)."""
        t = self.store.table(table)
        with t.lock, self._mutex:
            return self.delete(table, self.matching_keys(table, where))

    def truncate(self, table: str) -> None:
        """Stage removal of every row (INSERT OVERWRITE = truncate + insert). O(1).

        Raises:
            ConflictError: another change set holds locks in this table.
        """
        t = self.store.table(table)
        with t.lock, self._mutex:
            self._require_open()
            t.check_open()
            self._check_table_free(t)
            others = {o.id for o in t.locks.values() if o is not self}
            others.update(o.id for o in t.bulk_locks if o is not self)
            if others:
                raise ConflictError(
                    f"table {t.name!r} cannot be truncated: transaction(s) {', '.join(sorted(others))} "
                    "hold changes in it", table=t.name,
                )
            p = self._pending(t)
            if self._register:
                # The staged rows are dropped: release their key locks (holding the
                # table as truncating keeps every other writer out from here on).
                self._unlock(t, p)
            p.point.clear()
            p.bulks.clear()
            p.truncate = True
            if self._register:
                t.truncating = self

    # --- outcome ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Make the change set ready to commit: checks limits and logs it durably.

        After a successful prepare, :meth:`commit` cannot fail for data reasons.
        O(size of the changes) for the log record.
        """
        with self._mutex:
            if self.state == PREPARED:
                return
            self._require_open()
            self._check_memory()
            self.store._log_prepare(self)
            self.state = PREPARED

    def _check_memory(self) -> None:
        check_memory(self.store, [(n, p.table, p.added_bytes(), p.truncate) for n, p in self.pending.items()])

    def commit(self) -> None:
        """Apply every staged change at once and release the locks.

        Open change sets are checked and committed in one step. With flush "commit"
        this returns once the commit record is fsynced; the change is visible from the
        moment it is applied, just before (see :mod:`spark_ext.store.store`).
        """
        policy = self.store._durability(self.store._tables_of(self))
        self.store._wait_durable(self._commit(), policy)

    def _commit(self) -> int:
        """:meth:`commit` but the wait for durability: returns the LSN to wait for
        (0: none), which the caller waits for after releasing its table locks."""
        with self._mutex:
            if self.state == OPEN:
                self._check_memory()
                one_phase = True
            elif self.state == PREPARED:
                one_phase = False
            else:
                raise TransactionStateError(f"transaction {self.id} is {self.state}; it cannot commit", txn=self.id)
            lsn = self.store._commit(self, one_phase)
            self._release()
            self.state = COMMITTED
            return lsn

    def abort(self) -> None:
        """Discard every staged change and release the locks. Idempotent."""
        with self._mutex:
            if self.state in (ABORTED,):
                return
            if self.state == COMMITTED:
                raise TransactionStateError(f"transaction {self.id} is committed; it cannot abort", txn=self.id)
            if self.state == PREPARED:
                self.store._log_abort(self)
            else:
                self.store._log_unstaged(self)
            self._release()
            self.pending.clear()
            self.state = ABORTED
            self.store._forget(self)

    def _release(self) -> None:
        if not self._register:
            return
        for p in self.pending.values():
            t = p.table
            with t.lock:
                self._unlock(t, p)
                if t.truncating is self:
                    t.truncating = None

    def _unlock(self, t: "Table", p: Pending) -> None:
        """Release every key lock this set holds in ``t`` (caller holds its lock)."""
        locks = t.locks
        for k in p.point:
            if locks.get(k) is self:
                del locks[k]
        t.bulk_locks.pop(self, None)
        # Every key of a bulk this set holds is locked by this set (staging refuses
        # keys locked by others; truncate drops the bulks with their locks), so dict
        # locks are popped without a look at the owner, in C.
        for b in p.bulks:
            if not b.array_locked:
                deque(map(locks.pop, b.keys, itertools.repeat(None)), maxlen=0)

    # --- log form -------------------------------------------------------------------------

    def changes(self) -> list[tuple[Any, ...]]:
        """The change set's content in a loggable form (see the log records in
        :mod:`spark_ext.store.store`): a bulk whose rows are in a STAGE record already
        (and all still live) is given by that record's LSN, not by its rows again."""
        out = []
        for name, p in self.pending.items():
            if p.is_empty():
                continue
            out.append((name, p.truncate, list(p.point.items()), [(_log_form(b), b.upsert) for b in p.bulks]))
        return out


# --- checks shared with the one-row autocommit path (Store._write_row & co.) ------------
# Both paths build their errors here, so a statement is refused with the same error and
# message whichever path it takes.


def truncating_error(table: "Table", owner: "ChangeSet") -> ConflictError:
    return ConflictError(
        f"table {table.name!r} is being truncated by transaction {owner.id}",
        table=table.name, txn=owner.id,
    )


def key_locked_error(table: "Table", key: Any, owner: "ChangeSet") -> ConflictError:
    return ConflictError(
        f"table {table.name!r}: key {key!r} is locked by transaction {owner.id}",
        table=table.name, value=repr(key), txn=owner.id,
    )


def _twice_error(t: "Table", k: Any) -> DuplicateKeyError:
    schema = t.schema
    return DuplicateKeyError(
        f"table {t.name!r}: key {_show_key(schema, k)} appears twice in the rows given",
        table=t.name, column=",".join(schema.key_columns), value=repr(k),
    )


def exists_error(t: "Table", k: Any) -> DuplicateKeyError:
    schema = t.schema
    return DuplicateKeyError(
        f"table {t.name!r}: a row with key {_show_key(schema, k)} already exists",
        table=t.name, column=",".join(schema.key_columns), value=repr(k),
    )


def move_exists_error(t: "Table", ok: Any, nk: Any) -> DuplicateKeyError:
    schema = t.schema
    return DuplicateKeyError(
        f"table {t.name!r}: changing key {_show_key(schema, ok)} to "
        f"{_show_key(schema, nk)} would duplicate an existing row",
        table=t.name, column=",".join(schema.key_columns), value=repr(nk),
    )


def update_setters(t: "Table", values: Mapping[str, Any]) -> list[tuple[int, Any]]:
    """``(position, engine value)`` for each column an update sets, checked. O(columns)."""
    schema = t.schema
    if not values:
        raise BadArgumentError(f"table {t.name!r}: update needs at least one column to set", table=t.name)
    setters = []
    for c, v in values.items():
        i = schema.column_index(c)
        if c == ROWID:
            raise BadArgumentError(f"table {t.name!r}: the hidden row id cannot be updated", table=t.name)
        if v is None:
            if not schema.nullable[i]:
                raise schema._null_error(i)
            setters.append((i, None))
        else:
            setters.append((i, schema.coercers[i](v)))
    return setters


def check_memory(store: "Store", entries: list[tuple[str, "Table", int, bool]]) -> None:
    """Refuse a change that would take a table or the store past its memory limit.

    ``entries``: per table changed, ``(name, table, estimated bytes added, truncates)``.
    """
    store_limit = store.memory_limit_bytes
    added_total = 0
    for _, table, added, truncate in entries:
        added_total += added
        limit = table.memory_limit_bytes
        if limit is not None and added:
            cur = 0 if truncate else table.memory_bytes()
            if cur + added > limit:
                raise MemoryLimitError(
                    f"table {table.name!r} would hold about {cur + added} bytes, over its "
                    f"limit of {limit} bytes; the change was not applied",
                    table=table.name, value=cur + added,
                )
    if store_limit is not None and added_total:
        cur = store.memory_bytes()
        if cur + added_total > store_limit:
            names = sorted(n for n, _, added, _ in entries if added)
            raise MemoryLimitError(
                f"the store would hold about {cur + added_total} bytes, over its limit of "
                f"{store_limit} bytes; the change to table(s) {', '.join(map(repr, names))} "
                "was not applied",
                table=",".join(names), value=cur + added_total,
            )


def _log_form(b: Bulk) -> Any:
    """A bulk's rows as a log record holds them: the LSN of the STAGE record with them,
    their IPC encoding, or the batch of its live rows."""
    if b.live is None:
        if b.lsn:
            return b.lsn
        if b.ipc is not None:
            return b.ipc
    return b.live_batch()


def _batch_row(batch: pa.RecordBatch, pos: int) -> tuple[Any, ...]:
    # Engine value forms (``as_py`` gives zoneinfo-aware timestamps, which the log
    # codec refuses and the delta must not hold).
    return row_decoder(batch)(pos)


def _show_key(schema: Any, k: Any) -> str:
    if len(schema.key_columns) == 1:
        return f"{schema.key_columns[0]}={k!r}"
    return "(" + ", ".join(f"{c}={v!r}" for c, v in zip(schema.key_columns, k)) + ")"


def _as_predicate(where: Any, t: "Table") -> P.Predicate | None:
    if where is None:
        return None
    if isinstance(where, list):
        where = P.from_obj(where)
    return P.bind(where, t.schema)
