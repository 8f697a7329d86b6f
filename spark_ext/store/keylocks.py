"""Key locks of bulk writes on integer keys, held as sorted arrays instead of dict entries.

A change set locks every key it stages until it commits or aborts (see
:mod:`spark_ext.store.txn`). Point writes lock their keys in the table's ``locks`` dict;
a bulk insert of a million rows would add a million dict entries (and remove them
again), about half a microsecond each. On the int-key path a bulk's keys are already
sorted within each bucket (``txn.sort_by_bucket_and_key``), so they are locked here as
those sorted segments: adding a part costs a few array merges, a point check one binary
search per segment, and releasing the lock dropping the arrays.

Per bucket the segments of one change set are kept as a short list of sorted arrays of
decreasing size, merging two when the newer one grows to half the older one's size (as
a log-structured merge tree does), so a statement of many parts keeps O(log parts)
arrays per bucket and merges O(rows log parts) keys in all.

Not thread-safe on its own: the owning table's lock guards it.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


class SortedKeyLocks:
    """The int keys one change set locked by bulk writes in one table, per bucket.

    Args:
        num_buckets: the table's bucket count.
    """

    __slots__ = ("levels", "count")

    def __init__(self, num_buckets: int) -> None:
        self.levels: list[list[np.ndarray]] = [[] for _ in range(num_buckets)]
        self.count = 0  # keys added (a key is added at most once per change set)

    def add(self, keys: np.ndarray, bounds: np.ndarray) -> None:
        """Lock ``keys`` (int64, sorted within each bucket; bucket ``b`` is
        ``keys[bounds[b]:bounds[b + 1]]``), none of them locked here already.

        O(k log parts) amortized.
        """
        for b, lv in enumerate(self.levels):
            lo, hi = int(bounds[b]), int(bounds[b + 1])
            if hi <= lo:
                continue
            lv.append(keys[lo:hi])
            # Merge while the newest array is at least half the size of the one before.
            while len(lv) > 1 and 2 * len(lv[-1]) >= len(lv[-2]):
                newer = lv.pop()
                older = lv.pop()
                # Two sorted runs: numpy's stable sort (timsort) merges them in linear time.
                lv.append(np.sort(np.concatenate([older, newer]), kind="stable"))
        self.count += len(keys)

    def contains(self, bucket: int, key: int) -> bool:
        """Whether ``key`` (of bucket ``bucket``) is locked here. O(log parts x log k)."""
        for arr in self.levels[bucket]:
            i = int(np.searchsorted(arr, key))
            if i < len(arr) and int(arr[i]) == key:
                return True
        return False

    def hits(self, keys: np.ndarray, bounds: np.ndarray) -> np.ndarray:
        """Boolean mask over ``keys`` (ordered as in :meth:`add`): locked here.

        O(k log parts x log n), vectorized.
        """
        mask = np.zeros(len(keys), dtype=bool)
        for b, lv in enumerate(self.levels):
            lo, hi = int(bounds[b]), int(bounds[b + 1])
            if hi <= lo or not lv:
                continue
            seg = keys[lo:hi]
            for arr in lv:
                pos = np.minimum(np.searchsorted(arr, seg), len(arr) - 1)
                mask[lo:hi] |= arr[pos] == seg
        return mask

    def keys(self) -> Iterator[int]:
        """Every locked key (Python ints). O(k)."""
        for lv in self.levels:
            for arr in lv:
                yield from arr.tolist()

    def __len__(self) -> int:
        return self.count
