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

While the locked keys are dense (their span at most a few times their count, as the
ids of a bulk load usually are) they are also marked in a flat boolean array indexed by
``key - base``: then a part's check against the keys locked before is one vectorized
gather, O(k) without binary searches into arrays of millions of keys (which cost about
as much as the rest of a part's prepare put together), and the segments are not merged
at all. The array is at most ``max(DENSE_MIN, DENSE_PER_KEY x keys)`` bytes, so its
memory is O(keys) (it is not counted by the memory limits, like the rest of a change
set's lock bookkeeping): keys spread too thinly turn it off; the segments are then
merged into the levels above once and the binary searches take over. Since the first
parts of a statement may be spread while the whole is dense (a few rows of every part
of a key range), the array is tried again each time the key count has doubled, marking
the keys locked so far: O(keys) amortized.

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

    __slots__ = ("levels", "count", "dense", "base", "low", "high", "retry_at")

    #: The dense array is kept while it spans at most this many keys per key locked
    #: (a bool each), or :attr:`DENSE_MIN` keys (so small sets of spread keys use it too).
    DENSE_PER_KEY = 64
    DENSE_MIN = 1 << 16

    def __init__(self, num_buckets: int) -> None:
        self.levels: list[list[np.ndarray]] = [[] for _ in range(num_buckets)]
        self.count = 0  # keys added (a key is added at most once per change set)
        #: ``dense[k - base]`` is True for every locked key ``k`` (None: keys too spread).
        self.dense: np.ndarray | None = np.zeros(0, dtype=bool)
        self.base = 0  # the key of dense[0]
        self.low = self.high = 0  # the lowest and highest key locked (while dense)
        #: While ``dense`` is None: the key count at which to try the array again.
        self.retry_at = 0

    def _limit(self, count: int) -> int:
        """Most keys the dense array may span while ``count`` keys are locked."""
        return max(self.DENSE_MIN, self.DENSE_PER_KEY * count)

    def add(self, keys: np.ndarray, bounds: np.ndarray) -> None:
        """Lock ``keys`` (int64, sorted within each bucket; bucket ``b`` is
        ``keys[bounds[b]:bounds[b + 1]]``), none of them locked here already.

        O(k) while the keys are dense (see the module docstring), else O(k log parts)
        amortized.
        """
        if not len(keys):
            return
        if self.dense is None and self.count + len(keys) >= self.retry_at:
            self._redensify(keys)
        if self.dense is not None and self._mark_dense(keys):
            for b, lv in enumerate(self.levels):  # kept unmerged: only keys() reads them
                lo, hi = int(bounds[b]), int(bounds[b + 1])
                if hi > lo:
                    lv.append(keys[lo:hi])
            self.count += len(keys)
            return
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

    def _mark_dense(self, keys: np.ndarray) -> bool:
        """Mark ``keys`` in the dense array, growing it; False (and the array turned off,
        the segments merged into levels) when it would get too sparse. O(k) amortized."""
        dense = self.dense
        assert dense is not None
        lo, hi = int(keys.min()), int(keys.max())
        if self.count:
            lo, hi = min(lo, self.low), max(hi, self.high)
        span = hi - lo + 1  # of the keys locked, not of the array (which has headroom)
        limit = self._limit(self.count + len(keys))
        if span > limit:
            self.dense = None
            self.retry_at = 2 * (self.count + len(keys))
            for lv in self.levels:  # from here on the binary searches need merged levels
                if len(lv) > 1:
                    lv[:] = [np.sort(np.concatenate(lv))]
            return False
        if lo < self.base or hi >= self.base + len(dense):
            # Grow with headroom on the side that grew (ids usually grow, some statements
            # write them in falling order), up to the span again and within the limit,
            # so that parts arriving in key order do not copy the array each time.
            # (The array stays within int64, so that comparisons cannot overflow.)
            room = min(span, limit - span)
            if len(dense) and lo < self.base:
                start, end = max(lo - room, -(1 << 63)), hi
            else:
                start, end = lo, min(hi + room, (1 << 63) - 1)
            grown = np.zeros(end - start + 1, dtype=bool)
            # Copy what of the old array lies inside (its headroom may not: it is empty).
            a, b = max(self.base, start), min(self.base + len(dense) - 1, end)
            if b >= a:
                grown[a - start:b - start + 1] = dense[a - self.base:b - self.base + 1]
            self.dense = dense = grown
            self.base = start
        dense[keys - self.base] = True
        self.low, self.high = lo, hi
        return True

    def _redensify(self, keys: np.ndarray) -> None:
        """Build the dense array again over the keys locked so far and ``keys`` if they
        now lie close enough (:meth:`_limit`); else try again once the count doubles.
        O(keys locked)."""
        arrays = [arr for lv in self.levels for arr in lv if len(arr)]
        lo = min([int(keys.min()), *(int(a[0]) for a in arrays)])  # each array is sorted
        hi = max([int(keys.max()), *(int(a[-1]) for a in arrays)])
        total = self.count + len(keys)
        if hi - lo + 1 > self._limit(total):
            self.retry_at = 2 * total
            return
        dense = np.zeros(hi - lo + 1, dtype=bool)
        for arr in arrays:
            dense[arr - lo] = True
        self.dense, self.base, self.low, self.high = dense, lo, lo, hi

    def contains(self, bucket: int, key: int) -> bool:
        """Whether ``key`` (of bucket ``bucket``) is locked here. O(1) while the keys are
        dense, else O(log parts x log k)."""
        dense = self.dense
        if dense is not None:
            i = key - self.base
            return 0 <= i < len(dense) and bool(dense[i])
        for arr in self.levels[bucket]:
            i = int(np.searchsorted(arr, key))
            if i < len(arr) and int(arr[i]) == key:
                return True
        return False

    def hits(self, keys: np.ndarray, bounds: np.ndarray) -> np.ndarray:
        """Boolean mask over ``keys`` (ordered as in :meth:`add`): locked here.

        O(k) while the locked keys are dense, else O(k log parts x log n); vectorized.
        """
        dense = self.dense
        if dense is not None:
            if not len(dense):
                return np.zeros(len(keys), dtype=bool)
            # Compared before subtracting: a key far from ``base`` would wrap around.
            inside = (keys >= self.base) & (keys <= self.base + len(dense) - 1)
            if bool(inside.all()):
                return dense[keys - self.base]
            mask = np.zeros(len(keys), dtype=bool)
            mask[inside] = dense[keys[inside] - self.base]
            return mask
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
