"""One bucket of a table: immutable Arrow base runs + a mutable delta + deleted positions.

* A *run* is an immutable storage-layout ``RecordBatch`` with a key lookup: on the int
  path its rows are sorted by key and lookup is a binary search over the key column
  itself (no per-row Python objects); on the general path a dict maps key -> position.
* The *delta* maps key -> row tuple for rows written since the last compaction.
* ``deleted[i]`` holds positions of run ``i`` that were deleted or superseded.

A key lives in at most one place: the delta, or one live position of one run. Readers
merge the three; :meth:`Bucket.compact` folds them into a single new run.

Buckets are not thread-safe on their own: the owning table's lock guards them. The one
exception is the merge step of a compaction (:meth:`Bucket.begin_compaction`,
:meth:`Compaction.build`, :meth:`Bucket.finish_compaction`): it works on a frozen
snapshot without the lock, so point writes go on while a bucket is being compacted.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from spark_ext.store.index import SecondaryIndex
from spark_ext.store.rowdecode import row_decoder
from spark_ext.store.schema import TableSchema, batch_key_array, batch_keys, rows_to_batch

#: Rough Python-object cost of one delta row beyond its values (tuple, dict slot, key).
DELTA_ROW_OVERHEAD = 120


class Run:
    """An immutable base run of one bucket. Lookup O(log n) (int path) or O(1) (general)."""

    __slots__ = ("batch", "n", "keys", "_keys_mv", "key_pos", "_decode", "nbytes")

    def __init__(self, schema: TableSchema, batch: pa.RecordBatch, presorted: bool = False) -> None:
        self.keys: np.ndarray | None = None
        self._keys_mv: Any = None  # memoryview of keys on the int path (Table.get reads it)
        self.key_pos: dict[Any, int] | None = None
        if schema.int_key:
            keys = batch_key_array(schema, batch)
            if not presorted and len(keys) > 1 and not bool(np.all(keys[:-1] <= keys[1:])):
                order = np.argsort(keys, kind="stable")
                batch = batch.take(pa.array(order))
                # Re-read the keys from the sorted batch rather than keys[order]: for an
                # int64 key this is a view of the batch's own column, so the run holds no
                # second copy (8 B/row), and a point read's decode of the key column hits
                # the cache line its binary search has just loaded.
                keys = batch_key_array(schema, batch)
            self.keys = np.ascontiguousarray(keys, dtype=np.int64)
            self._keys_mv = self.keys.data  # (a memoryview of the array's buffer)
        else:
            self.key_pos = {k: i for i, k in enumerate(batch_keys(schema, batch))}
        self.batch = batch
        self.n = batch.num_rows
        self._decode: Callable[[int], tuple[Any, ...]] | None = None
        # A sorted copy of the keys (not a view of the batch) is memory of its own.
        own_keys = self.keys.nbytes if self.keys is not None and self.keys.base is None else 0
        self.nbytes = batch.nbytes + own_keys + (0 if self.key_pos is None else 100 * self.n)

    def find(self, key: Any) -> int:
        """Position of ``key`` in this run, or -1. O(log n) or O(1)."""
        if self.key_pos is not None:
            return self.key_pos.get(key, -1)
        mv = self._keys_mv
        i = bisect_left(mv, key)
        if i < self.n and mv[i] == key:
            return i
        return -1

    def find_many(self, keys: np.ndarray) -> np.ndarray:
        """Positions of int keys (-1 where absent), vectorized. O(k log n). Int path only."""
        assert self.keys is not None
        if self.n == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        pos = np.searchsorted(self.keys, keys)
        pos_c = np.minimum(pos, self.n - 1)
        hit = self.keys[pos_c] == keys
        return np.where(hit, pos_c, -1)

    def row(self, pos: int) -> tuple[Any, ...]:
        """Decode row ``pos``. O(columns)."""
        d = self._decode
        if d is None:
            d = self._decode = row_decoder(self.batch)
        return d(pos)

    def key_at(self, schema: TableSchema, pos: int) -> Any:
        if self.keys is not None:
            return int(self.keys[pos])
        return schema.key_of(self.row(pos))


class BucketSnapshot:
    """A frozen view of a bucket at one version; later writes do not show through."""

    __slots__ = ("runs", "deleted", "delta", "version", "_delta_batch")

    def __init__(self, runs: tuple[Run, ...], deleted: tuple[frozenset[int], ...], delta: dict[Any, tuple[Any, ...]], version: int) -> None:
        self.runs = runs
        self.deleted = deleted
        self.delta = delta
        self.version = version
        self._delta_batch: pa.RecordBatch | None = None

    def get(self, key: Any) -> tuple[Any, ...] | None:
        """The row of ``key`` in this snapshot, or None. O(#runs log n)."""
        r = self.delta.get(key)
        if r is not None:
            return r
        for run, dels in zip(self.runs, self.deleted):
            p = run.find(key)
            # A deleted position may be an old version: a later run can hold the key.
            if p >= 0 and p not in dels:
                return run.row(p)
        return None

    def batches(self, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """Live rows as storage-layout batches: runs minus deletions, then the delta.

        Runs with no deletions are yielded as they are (zero copy).
        """
        for run, dels in zip(self.runs, self.deleted):
            if run.n == 0:
                continue
            if not dels:
                yield run.batch
            else:
                mask = np.ones(run.n, dtype=bool)
                mask[np.fromiter(dels, dtype=np.int64, count=len(dels))] = False
                yield run.batch.filter(pa.array(mask))
        if self.delta:
            yield self.delta_batch(schema)

    def delta_batch(self, schema: pa.Schema) -> pa.RecordBatch:
        if self._delta_batch is None:
            self._delta_batch = rows_to_batch(schema, self.delta.values())
        return self._delta_batch

    def live_count(self) -> int:
        return sum(r.n - len(d) for r, d in zip(self.runs, self.deleted)) + len(self.delta)


class Compaction:
    """A compaction of one bucket under way: the snapshot it folds, and what it built.

    Made by :meth:`Bucket.begin_compaction` under the table lock; :meth:`build` runs
    without it; :meth:`Bucket.finish_compaction` installs the result under the lock.
    """

    __slots__ = ("schema", "snap", "epoch", "run", "built")

    def __init__(self, schema: TableSchema, snap: BucketSnapshot, epoch: int) -> None:
        self.schema = schema
        self.snap = snap
        self.epoch = epoch
        self.run: Run | None = None  # None once built: the bucket holds no live row
        self.built = False

    def build(self) -> None:
        """Fold the snapshot's live rows into one sorted run. Needs no lock: a snapshot
        never changes. O(rows log rows)."""
        storage = self.schema.storage_schema
        parts = list(self.snap.batches(storage))
        if parts:
            merged = pa.Table.from_batches(parts, schema=storage).combine_chunks()
            if merged.num_rows:
                self.run = Run(self.schema, merged.to_batches()[0])
        self.built = True


class Bucket:
    """The mutable state of one bucket (guarded by its table's lock)."""

    __slots__ = ("schema", "runs", "deleted", "delta", "indexes", "version", "_snap", "delta_bytes", "row_estimate",
                 "epoch", "_touched")

    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema
        self.runs: list[Run] = []
        self.deleted: list[set[int]] = []
        self.delta: dict[Any, tuple[Any, ...]] = {}
        self.indexes: dict[str, SecondaryIndex] = {}
        self.version = 0
        self._snap: BucketSnapshot | None = None
        # Per value: an 8-byte slot in the tuple plus the object (strings assumed short).
        self.row_estimate = DELTA_ROW_OVERHEAD + sum(
            56 if pa.types.is_string(f.type) or pa.types.is_binary(f.type) else 32
            for f in schema.storage_schema
        )
        self.delta_bytes = 0
        # Bumped by every change that is not a point write (runs added or dropped,
        # clear, compaction, schema change): a compaction begun before one is dropped.
        self.epoch = 0
        # Keys point-written or removed since a compaction began (None: none under way).
        self._touched: set[Any] | None = None

    # --- reads ----------------------------------------------------------------------

    def get(self, key: Any) -> tuple[Any, ...] | None:
        """Current row of ``key`` or None. O(1) in the delta, O(#runs log n) in runs."""
        r = self.delta.get(key)
        if r is not None:
            return r
        for run, dels in zip(self.runs, self.deleted):
            p = run.find(key)
            # A deleted position may be an old version: a later run can hold the key.
            if p >= 0 and p not in dels:
                return run.row(p)
        return None

    def snapshot(self) -> BucketSnapshot:
        """A frozen view; cached until the next write. O(delta + deleted) when rebuilt."""
        s = self._snap
        if s is None:
            s = self._snap = BucketSnapshot(
                tuple(self.runs), tuple(frozenset(d) for d in self.deleted), dict(self.delta), self.version
            )
        return s

    def live_count(self) -> int:
        """Rows in the bucket. O(#runs)."""
        return sum(r.n - len(d) for r, d in zip(self.runs, self.deleted)) + len(self.delta)

    def memory_bytes(self) -> int:
        """Bytes held: runs' Arrow buffers (+ key dicts), estimated delta, index entries."""
        idx = sum(ix.entries for ix in self.indexes.values()) * 100
        dels = sum(len(d) for d in self.deleted) * 40
        return sum(r.nbytes for r in self.runs) + len(self.delta) * self.row_estimate + idx + dels

    # --- writes (the caller holds the table lock and has checked constraints) -------

    def _touch(self) -> None:
        self.version += 1
        self._snap = None

    def _restructure(self) -> None:
        """A change other than a point write: a compaction under way is dropped."""
        self.epoch += 1
        self._touch()

    def remove(self, key: Any) -> tuple[Any, ...] | None:
        """Remove the live row of ``key`` (if any) and return it. O(#runs log n)."""
        if self._touched is not None:
            self._touched.add(key)
        old = self.delta.pop(key, None)
        if old is None:
            for run, dels in zip(self.runs, self.deleted):
                p = run.find(key)
                if p >= 0 and p not in dels:
                    old = run.row(p)
                    dels.add(p)
                    break
        if old is not None:
            for ix in self.indexes.values():
                ix.remove(key, old)
            self._touch()
        return old

    def put(self, key: Any, row: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """Insert or replace the row of ``key``; returns the old row. O(#runs log n)."""
        old = self.remove(key)
        self.delta[key] = row
        for ix in self.indexes.values():
            ix.add(key, row)
        self._touch()
        return old

    def discard(self, key: Any) -> None:
        """:meth:`remove` without returning the old row: a row in a base run is decoded
        only when indexes need its values. O(#runs log n)."""
        if self.indexes:
            self.remove(key)
            return
        if self._touched is not None:
            self._touched.add(key)
        if self.delta.pop(key, None) is None:
            for run, dels in zip(self.runs, self.deleted):
                p = run.find(key)
                if p >= 0 and p not in dels:
                    dels.add(p)
                    break
            else:
                return
        self.version += 1
        self._snap = None

    def write(self, key: Any, row: tuple[Any, ...]) -> None:
        """:meth:`put` without returning the old row (see :meth:`discard`). O(#runs log n)."""
        if self.indexes:
            self.put(key, row)
            return
        if self._touched is not None:
            self._touched.add(key)
        delta = self.delta
        # pop, not overwrite: the row moves to the end of the delta, as with put.
        if delta.pop(key, None) is None:
            for run, dels in zip(self.runs, self.deleted):
                p = run.find(key)
                if p >= 0 and p not in dels:
                    dels.add(p)
                    break
        delta[key] = row
        self.version += 1
        self._snap = None

    def add_run(self, batch: pa.RecordBatch, keys: Sequence[Any] | None = None, presorted: bool = False) -> None:
        """Append a new run of rows whose keys are not live in this bucket.

        The caller has removed older versions of these keys. O(rows log rows) on the int
        path (sort; O(1) with ``presorted``: the rows are in key order already),
        O(rows) otherwise; plus index maintenance when indexes exist.
        """
        if batch.num_rows == 0:
            return
        run = Run(self.schema, batch, presorted=presorted)
        self.runs.append(run)
        self.deleted.append(set())
        if self.indexes:
            self._index_rows(run)
        self._restructure()

    def _index_rows(self, run: Run, indexes: Sequence[SecondaryIndex] | None = None) -> None:
        ixs = list(self.indexes.values()) if indexes is None else list(indexes)
        if not ixs or run.n == 0:
            return
        for ix in ixs:
            ix.add_batch(run.batch, self.schema.key_positions)

    def remove_keys_vectorized(self, keys: np.ndarray, runs: int | None = None) -> int:
        """Remove every live row whose int key is in ``keys`` (distinct; int path).

        ``runs``: only the first ``runs`` runs can hold them (the runs after them were
        appended by the same commit, whose bulks never share a live key), so only those
        are searched. Returns how many of them were dropped whole. O(k log n).
        """
        if self.delta:
            if len(self.delta) < len(keys):
                wanted = set(keys.tolist())
                hits = [k for k in self.delta if k in wanted]
            else:
                hits = [k for k in keys.tolist() if k in self.delta]
            for k in hits:
                self.remove(k)
        dead: list[int] = []
        n_runs = len(self.runs) if runs is None else runs
        for i, (run, dels) in enumerate(zip(self.runs[:n_runs], self.deleted[:n_runs])):
            pos = run.find_many(keys)
            found = pos[pos >= 0]
            if len(found):
                if not dels and not self.indexes and len(found) == run.n:
                    # Every row of the run is replaced (a bulk upsert over a bulk load):
                    # drop the run rather than record each position as deleted.
                    dead.append(i)
                    continue
                if self.indexes:
                    for p in found.tolist():
                        if p not in dels:
                            row = run.row(p)
                            k = row[self.schema.key_positions[0]]
                            for ix in self.indexes.values():
                                ix.remove(k, row)
                dels.update(found.tolist())
        for i in reversed(dead):
            del self.runs[i]
            del self.deleted[i]
        self._restructure()
        return len(dead)

    def clear(self) -> None:
        """Drop every row (indexes are emptied, definitions kept). O(1) + index rebuild."""
        self.runs = []
        self.deleted = []
        self.delta = {}
        for name, ix in list(self.indexes.items()):
            self.indexes[name] = type(ix)(ix.name, ix.columns, ix.positions)
        self._restructure()

    def compact(self) -> bool:
        """Fold runs, deletions and delta into one run, all under the caller's lock.
        O(rows log rows).

        Returns True when something changed.
        """
        job = self.begin_compaction()
        if job is None:
            return False
        job.build()
        return self.finish_compaction(job)

    def begin_compaction(self) -> Compaction | None:
        """Start a compaction (caller holds the table lock): freeze the bucket's state
        and note the keys written from now on. None when there is nothing to fold.
        O(delta + deleted) for the snapshot.

        Then :meth:`Compaction.build` (without the lock) and :meth:`finish_compaction`
        (with it). A compaction begun earlier and not finished yet is abandoned (its
        finish changes nothing): only one can track the writes made meanwhile.
        """
        if len(self.runs) <= 1 and not self.delta and not any(self.deleted):
            return None
        self.epoch += 1
        self._touched = set()
        return Compaction(self.schema, self.snapshot(), self.epoch)

    def finish_compaction(self, job: Compaction) -> bool:
        """Install what ``job`` built (caller holds the table lock), keeping the point
        writes made meanwhile: their keys' folded versions are marked deleted and their
        current rows stay in the delta. Returns False, changing nothing, when the
        bucket was restructured meanwhile (a bulk write, clear, another compaction,
        a schema change) or ``job`` was not built (its build failed). O(delta + keys
        written meanwhile x log rows).
        """
        if job.epoch != self.epoch:
            return False  # superseded: the tracking belongs to whatever came since
        touched, self._touched = self._touched, None
        if not job.built or touched is None:  # (a schema change bumps the epoch)
            return False
        run = job.run
        if run is None:
            self.runs, self.deleted = [], []
        else:
            dels: set[int] = set()
            for k in touched:
                p = run.find(k)
                if p >= 0:
                    dels.add(p)
            self.runs, self.deleted = [run], [dels]
        # Rows of the snapshot's delta are in the run now; rows written since stay.
        self.delta = {k: r for k, r in self.delta.items() if k in touched} if touched else {}
        self._restructure()
        return True

    def needs_compaction(self, min_rows: int, fraction: float, max_runs: int) -> bool:
        """Whether the delta, deletions or run count have grown past the thresholds."""
        base = sum(r.n for r in self.runs)
        churn = len(self.delta) + sum(len(d) for d in self.deleted)
        return churn >= max(min_rows, fraction * base) or len(self.runs) > max_runs

    def _check(self) -> None:
        """Invariant check for tests: one place per key, indexes match rows."""
        seen: dict[Any, tuple[Any, ...]] = {}
        for run, dels in zip(self.runs, self.deleted):
            assert all(0 <= p < run.n for p in dels), "deleted position out of range"
            if run.keys is not None:
                assert bool(np.all(run.keys[:-1] < run.keys[1:])) if run.n > 1 else True, "run keys not strictly sorted"
            for p in range(run.n):
                if p in dels:
                    continue
                row = run.row(p)
                k = self.schema.key_of(row)
                assert k not in seen, f"key {k!r} live twice in runs"
                assert self.schema.bucket_of_key(k) is not None
                seen[k] = row
        for k, row in self.delta.items():
            assert k not in seen, f"key {k!r} live in both delta and a run"
            assert self.schema.key_of(row) == k, "delta row under a wrong key"
            seen[k] = row
        for ix in self.indexes.values():
            ix._check({k: ix.value_of(r) for k, r in seen.items()})

