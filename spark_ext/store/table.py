"""A table: its buckets, its lock, its key locks, its indexes, and convenience methods.

Reads (``get``, ``get_many``, ``scan``) see committed data only. Every write method
here is a one-statement change set committed at once; use :meth:`Store.begin` to group
changes across calls and tables.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from spark_ext.exceptions import (
    BadArgumentError,
    IndexExistsError,
    NoSuchIndexError,
    NoSuchTableError,
    SchemaError,
)
from spark_ext.store import predicate as P
from spark_ext.store.bucket import Bucket
from spark_ext.store.index import KINDS, make_index
from spark_ext.store.keylocks import SortedKeyLocks
from spark_ext.store.scan import Scan
from spark_ext.store.schema import TableSchema, batch_buckets, batch_key_array, batch_keys

if TYPE_CHECKING:
    from spark_ext.store.store import Store
    from spark_ext.store.txn import ChangeSet

logger = logging.getLogger(__name__)


def storage_options(table: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The storage options of a table definition, checked. O(1).

    ``persistence`` (``memory``/``off``/``false``/``none``: not logged nor checkpointed),
    ``memory_limit_bytes`` (a positive integer) and ``flush`` (``commit``, ``group`` or
    ``off``: the log flush policy of changes to this table; absent: the store's).

    Raises:
        SchemaError: a value of the wrong form, naming the table, the option and the value.
    """
    persistent = str(options.get("persistence", "true")).lower() not in ("false", "none", "memory", "off")
    lim = options.get("memory_limit_bytes")
    try:
        limit = int(lim) if lim else None
    except ValueError:
        limit = -1
    if limit is not None and limit <= 0:
        raise SchemaError(f"table {table!r}: option memory_limit_bytes must be a positive integer, got {lim!r}")
    flush = options.get("flush")
    if flush is not None and str(flush).lower() not in ("commit", "group", "off"):
        raise SchemaError(f"table {table!r}: option flush must be commit, group or off, got {flush!r}")
    return {"persistent": persistent, "memory_limit_bytes": limit,
            "flush": None if flush is None else str(flush).lower()}


class Table:
    """One table of a :class:`Store`. Thread-safe: one re-entrant lock guards its state."""

    def __init__(self, store: "Store", schema: TableSchema) -> None:
        self.store = store
        self.schema = schema
        self.name = schema.name
        self.lock = threading.RLock()
        self.buckets = [Bucket(schema) for _ in range(schema.num_buckets)]
        self.locks: dict[Any, "ChangeSet"] = {}
        #: Int keys locked by change sets' bulk writes (see spark_ext/store/keylocks.py);
        #: a key is locked when it is in ``locks`` or here (use :meth:`lock_owner`).
        self.bulk_locks: dict["ChangeSet", SortedKeyLocks] = {}
        self.truncating: "ChangeSet | None" = None
        self.index_defs: dict[str, tuple[str, list[str]]] = {}
        self.next_rowid = 1
        #: Buckets new row ids may fall in (None: all); a server sets the ones it hosts.
        self.rowid_buckets: frozenset[int] | None = None
        self.version = 0
        self.dropped = False
        opts = storage_options(self.name, schema.options)
        self.persistent: bool = opts["persistent"]
        self.memory_limit_bytes: int | None = opts["memory_limit_bytes"]
        #: This table's log flush policy; None: the store's (see Store._wait_durable).
        self.flush: str | None = opts["flush"]

    def check_open(self) -> None:
        if self.dropped:
            raise NoSuchTableError(f"table {self.name!r} was dropped", table=self.name)

    def lock_owner(self, key: Any) -> "ChangeSet | None":
        """The change set holding the lock of a coerced key, or None (caller holds the
        lock). O(1) for point locks; plus O(log) per bulk-locked segment while change
        sets hold bulk locks on this table."""
        owner = self.locks.get(key)
        if owner is None and self.bulk_locks:
            b = self.schema.bucket_of_key(key)
            for cs, kl in self.bulk_locks.items():
                if kl.contains(b, key):
                    return cs
        return owner

    # --- reads --------------------------------------------------------------------------

    def _user_row(self, row: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        if row is None or not self.schema.hidden_rowid:
            return row
        return row[:-1]

    def get(self, key: Any) -> tuple[Any, ...] | None:
        """The row with this key (user columns, in order), or None.

        O(1) for recently written rows, O(log n) binary search in base runs on the int
        path. Raises NullKeyError / TypeMismatchError for a bad key.
        """
        schema = self.schema
        if type(key) is int and schema.int_key_min <= key <= schema.int_key_max:
            k = key  # already in key form: what coerce_key would return
        else:
            k = schema.coerce_key(key)
        b = self.buckets[schema.bucket_of_key(k)]
        lock = self.lock
        lock.acquire()  # not "with": about 0.15 us less, a few % of a point read
        try:
            # Bucket.get with Run.find (int path) and Run.row inlined: this is the
            # whole point read, and each Python call saved is a few % of it.
            row = b.delta.get(k)
            if row is None:
                runs = b.runs
                if len(runs) == 1 and runs[0]._keys_mv is not None:
                    # One sorted int run, the usual shape after compaction: searched
                    # without the loop below (its zip is about 0.3 us of a 4 us read).
                    run = runs[0]
                    mv = run._keys_mv
                    p = bisect_left(mv, k)
                    if p != run.n and mv[p] == k and p not in b.deleted[0]:
                        d = run._decode
                        row = d(p) if d is not None else run.row(p)
                else:
                    for run, dels in zip(runs, b.deleted):
                        mv = run._keys_mv
                        if mv is not None:
                            p = bisect_left(mv, k)
                            if p == run.n or mv[p] != k:
                                continue
                        else:
                            p = run.find(k)
                            if p < 0:
                                continue
                        # A deleted position may be an old version: a later run can hold the key.
                        if p not in dels:
                            d = run._decode
                            row = d(p) if d is not None else run.row(p)
                            break
        finally:
            lock.release()
        if row is None or not schema.hidden_rowid:
            return row
        return row[:-1]

    def get_many(self, keys: Sequence[Any]) -> list[tuple[Any, ...] | None]:
        """Rows for many keys (None where absent), all read at one moment. O(len(keys))."""
        schema = self.schema
        ks = [schema.coerce_key(k) for k in keys]
        bs = [self.buckets[schema.bucket_of_key(k)] for k in ks]
        with self.lock:
            rows = [b.get(k) for b, k in zip(bs, ks)]
        return [self._user_row(r) for r in rows]

    def committed_get(self, key: Any) -> tuple[Any, ...] | None:
        """Storage-layout row of an already coerced key (caller holds the lock)."""
        return self.buckets[self.schema.bucket_of_key(key)].get(key)

    def committed_existing(self, batch: pa.RecordBatch, keys: list[Any], arr: np.ndarray | None = None,
                           bounds: np.ndarray | None = None) -> Iterable[Any]:
        """Keys of ``batch`` that are live in the committed table (caller holds the lock).

        Vectorized on the int path; buckets holding no rows are skipped without a look.
        ``arr``/``bounds``: the batch's int keys already ordered by bucket, bucket ``b``
        being ``arr[bounds[b]:bounds[b + 1]]`` (see ``txn.sort_by_bucket_and_key``).
        O(rows log n).
        """
        schema = self.schema
        if schema.int_key:
            if arr is not None and bounds is not None:
                slices = [(b, arr[bounds[b]:bounds[b + 1]]) for b in range(len(bounds) - 1) if bounds[b + 1] > bounds[b]]
            else:
                bks = batch_buckets(schema, batch)
                arr = batch_key_array(schema, batch)
                slices = [(b, arr[bks == b]) for b in np.unique(bks).tolist()]
            for b, sub in slices:
                bucket = self.buckets[b]
                delta = bucket.delta
                if delta:
                    for k in sub.tolist():
                        if k in delta:
                            yield k
                for run, dels in zip(bucket.runs, bucket.deleted):
                    pos = run.find_many(sub)
                    for i in np.nonzero(pos >= 0)[0].tolist():
                        if int(pos[i]) not in dels:
                            yield int(sub[i])
        else:
            for k in keys:
                if self.committed_get(k) is not None:
                    yield k

    def keys_where(self, pred: P.Predicate | None) -> list[Any]:
        """Keys of committed rows matching a bound predicate (caller holds the lock)."""
        out: list[Any] = []
        for batch in _raw_scan(self, pred):
            out.extend(batch_keys(self.schema, batch))
        return out

    def scan(
        self,
        columns: Sequence[str] | None = None,
        where: P.Predicate | list[Any] | None = None,
        limit: int | None = None,
        buckets: Sequence[int] | None = None,
    ) -> Scan:
        """A consistent scan; iterate it for Arrow record batches.

        Args:
            columns: names to return, in order (default: every user column; the hidden
                ``_rowid`` may be named for tables without a primary key).
            where: a predicate (see :mod:`spark_ext.store.predicate`) or its JSON form.
            limit: stop after this many rows.
            buckets: only these buckets (Spark reads one bucket per task).

        Taking the snapshot is O(buckets + recent changes); iterating is O(rows examined),
        vectorized, with no per-row Python work for data unchanged since compaction.
        """
        return Scan(self, columns, where, limit, buckets)

    def count(self) -> int:
        """Number of rows. O(buckets)."""
        with self.lock:
            return sum(b.live_count() for b in self.buckets)

    def memory_bytes(self) -> int:
        """Estimated bytes held by the table's data and indexes. O(buckets)."""
        with self.lock:
            return sum(b.memory_bytes() for b in self.buckets)

    # --- autocommit writes ----------------------------------------------------------------

    # One row or one key takes Store's one-row path (same checks, log record and
    # atomicity, no change set); it answers None when it does not apply (a table
    # without a primary key, a stale Table object), and the change set path runs.

    def insert(self, rows: Any) -> int:
        """Insert rows (dicts, tuples, pandas or Arrow); any existing key rejects them all."""
        one = _one_row(rows)
        if one is not None:
            n = self.store._write_row(self, one, False)
            if n is not None:
                return n
        return self.store._autocommit(self, lambda cs: cs.insert(self.name, rows))

    def upsert(self, rows: Any) -> int:
        """Insert rows or replace the rows with the same keys."""
        one = _one_row(rows)
        if one is not None:
            n = self.store._write_row(self, one, True)
            if n is not None:
                return n
        return self.store._autocommit(self, lambda cs: cs.upsert(self.name, rows))

    def update(self, key: Any, values: Mapping[str, Any]) -> bool:
        """Set some columns of one row; False if the key does not exist."""
        n = self.store._update_key(self, key, values)
        if n is not None:
            return n == 1
        return self.store._autocommit(self, lambda cs: cs.update(self.name, [key], values)) == 1

    def update_many(self, keys: Sequence[Any], values: Mapping[str, Any]) -> int:
        """Set the same columns on many rows; returns how many existed."""
        if type(keys) is list and len(keys) == 1:
            n = self.store._update_key(self, keys[0], values)
            if n is not None:
                return n
        return self.store._autocommit(self, lambda cs: cs.update(self.name, keys, values))

    def delete(self, keys: Sequence[Any] | Any) -> int:
        """Delete rows by key (one key or a list); returns how many existed."""
        ks = keys if isinstance(keys, list) else [keys]
        if len(ks) == 1:
            n = self.store._delete_key(self, ks[0])
            if n is not None:
                return n
        return self.store._autocommit(self, lambda cs: cs.delete(self.name, ks))

    def update_where(self, where: P.Predicate | list[Any] | None, values: Mapping[str, Any]) -> int:
        """Update every row matching a predicate; returns how many."""
        return self.store._autocommit(self, lambda cs: cs.update_where(self.name, where, values))

    def delete_where(self, where: P.Predicate | list[Any] | None) -> int:
        """Delete every row matching a predicate; returns how many."""
        return self.store._autocommit(self, lambda cs: cs.delete_where(self.name, where))

    def truncate(self) -> None:
        """Delete every row."""
        self.store._autocommit(self, lambda cs: cs.truncate(self.name))

    # --- indexes ------------------------------------------------------------------------

    def create_index(self, name: str, columns: Sequence[str] | str, kind: str = "hash") -> None:
        """Create a secondary index and fill it from the current rows. O(rows).

        Raises:
            IndexExistsError, UnknownColumnError, BadArgumentError.
        """
        self.store._create_index(self, name, [columns] if isinstance(columns, str) else list(columns), kind)

    def drop_index(self, name: str) -> None:
        """Drop a secondary index. O(1)."""
        self.store._drop_index(self, name)

    def _add_index(self, name: str, columns: list[str], kind: str) -> None:
        if not isinstance(name, str) or not name:
            raise BadArgumentError(f"table {self.name!r}: an index needs a name", table=self.name)
        if name in self.index_defs:
            raise IndexExistsError(f"table {self.name!r} already has an index {name!r}", table=self.name, index=name)
        if kind not in KINDS:
            raise BadArgumentError(f"index kind must be one of {KINDS}, got {kind!r}", table=self.name)
        if not columns:
            raise BadArgumentError(f"table {self.name!r}: index {name!r} needs at least one column", table=self.name)
        positions = [self.schema.column_index(c) for c in columns]
        for b in self.buckets:
            ix = make_index(kind, name, columns, positions)
            for batch in b.snapshot().batches(self.schema.storage_schema):
                ix.add_batch(batch, self.schema.key_positions)
            b.indexes[name] = ix
        self.index_defs[name] = (kind, list(columns))

    def _remove_index(self, name: str) -> None:
        if name not in self.index_defs:
            raise NoSuchIndexError(f"table {self.name!r} has no index {name!r}", table=self.name, index=name)
        for b in self.buckets:
            del b.indexes[name]
        del self.index_defs[name]

    # --- rowids, apply, compaction ------------------------------------------------------

    def reserve_rowids(self, n: int) -> np.ndarray:
        """Reserve ``n`` new hidden row ids, all in :attr:`rowid_buckets`. O(n).

        The bucket of a row id is ``rowid mod num_buckets``; with every bucket allowed the
        ids are consecutive.
        """
        start = self.next_rowid
        allowed = self.rowid_buckets
        if allowed is None:
            ids = np.arange(start, start + n, dtype=np.int64)
        else:
            nb = self.schema.num_buckets
            owned = np.array(sorted(allowed), dtype=np.int64)
            first_block = start // nb
            blocks = first_block + np.arange(n // len(owned) + 2, dtype=np.int64)
            cand = (blocks[:, None] * nb + owned[None, :]).ravel()
            ids = cand[cand >= start][:n]
        if n:
            self.next_rowid = int(ids[-1]) + 1
        return ids

    def apply(self, truncate: bool, point: Iterable[tuple[Any, Any]], bulks: Iterable[tuple[Any, ...]]) -> None:
        """Apply a committed change (caller holds the lock). Cannot fail on valid input.

        ``bulks``: ``(batch, upsert)`` or ``(batch, upsert, bounds)``, where ``bounds``
        says the int-key rows are ordered by (bucket, key) with bucket ``b`` at rows
        ``bounds[b]:bounds[b + 1]``: each slice is appended as a sorted run as it is
        (no hashing, filtering or sorting here, under the lock).
        """
        schema = self.schema
        if truncate:
            for b in self.buckets:
                b.clear()
        # Runs each bucket had before this change: the only ones an upsert's keys can be
        # live in (the bulks of one change set never share a live key), so a statement of
        # many parts searches O(parts x old runs) runs, not O(parts^2).
        old_runs = [len(b.runs) for b in self.buckets]
        for entry in bulks:
            batch, upsert = entry[0], entry[1]
            bounds = entry[2] if len(entry) > 2 else None
            if batch.num_rows == 0:
                continue
            if schema.hidden_rowid:
                mx = int(np.max(batch.column(schema.key_positions[0]).to_numpy()))
                self.next_rowid = max(self.next_rowid, mx + 1)
            if bounds is not None:
                pieces = [(bno, batch.slice(int(bounds[bno]), int(bounds[bno + 1] - bounds[bno])))
                          for bno in range(len(bounds) - 1) if bounds[bno + 1] > bounds[bno]]
            else:
                bks = batch_buckets(schema, batch)
                pieces = [(bno, batch.filter(pa.array(bks == bno))) for bno in np.unique(bks).tolist()]
            for bno, sub in pieces:
                bucket = self.buckets[bno]
                if upsert and not truncate:
                    # A key of an upsert may be live already, or an insert brings back
                    # a key its change set deleted (flagged as upsert): drop old versions.
                    if schema.int_key:
                        old_runs[bno] -= bucket.remove_keys_vectorized(batch_key_array(schema, sub), old_runs[bno])
                    else:
                        for k in batch_keys(schema, sub):
                            bucket.remove(k)
                bucket.add_run(sub, presorted=bounds is not None)
        self.apply_points(point)

    def apply_points(self, point: Iterable[tuple[Any, Any]]) -> None:
        """Apply committed point changes ``(key, row or None)`` (caller holds the lock):
        the point part of :meth:`apply`, called alone by the one-row write path.
        O(#changes x #runs log n)."""
        schema = self.schema
        buckets = self.buckets
        bucket_of = schema.bucket_of_key
        for k, row in point:
            b = buckets[bucket_of(k)]
            if row is None:
                b.discard(k)
            else:
                if schema.hidden_rowid and k >= self.next_rowid:
                    self.next_rowid = k + 1
                b.write(k, row)
        self.version += 1

    def compact(self) -> int:
        """Compact every bucket that has changes; returns how many were compacted."""
        n = 0
        for i in range(len(self.buckets)):
            with self.lock:
                if self.buckets[i].compact():
                    n += 1
        return n

    def _check(self) -> None:
        """Invariant check for tests: every bucket consistent, keys in the right bucket."""
        with self.lock:
            for i, b in enumerate(self.buckets):
                b._check()
                for k in b.snapshot().delta:
                    assert self.schema.bucket_of_key(k) == i, f"key {k!r} in wrong bucket {i}"
                for run in b.runs:
                    if run.keys is not None and run.n:
                        ks = run.keys[:: max(1, run.n // 50)].tolist()
                        assert all(self.schema.bucket_of_key(k) == i for k in ks), "run key in wrong bucket"
            for cs, kl in self.bulk_locks.items():
                assert cs.state in ("open", "prepared"), "bulk locks of a finished change set"
                assert len(kl) > 0, "empty bulk lock entry"
            if not self.locks and not self.bulk_locks:
                assert self.truncating is None or self.truncating.state in ("open", "prepared")


def _one_row(rows: Any) -> Any:
    """The single row of a write given as one dict or tuple, or a list of one dict,
    tuple or list (what :func:`normalize_rows` reads as exactly one row); else None."""
    if isinstance(rows, (tuple, dict)):
        return rows
    if type(rows) is list and len(rows) == 1 and isinstance(rows[0], (tuple, list, dict)):
        return rows[0]
    return None


def _raw_scan(t: Table, pred: P.Predicate | None) -> Iterable[pa.RecordBatch]:
    """Storage-layout batches of committed rows matching a bound predicate."""
    s = Scan(t, columns=list(t.schema.column_names), where=None)
    for batch in s:
        if pred is not None:
            batch = batch.filter(P.evaluate(pred, batch))
        if batch.num_rows:
            yield batch
