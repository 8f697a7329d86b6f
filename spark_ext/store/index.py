"""Secondary indexes of one bucket: hash (equality) and ordered (ranges).

An index maps the value of its column(s) (a scalar, or a tuple for several columns) to
the set of primary keys (or hidden row ids) of the rows holding it. The table keeps them
current under every change; the scan planner asks them for candidate keys.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from sortedcontainers import SortedDict

HASH = "hash"
ORDERED = "ordered"
KINDS = (HASH, ORDERED)


class _NaN:
    """Stands for a float NaN in index values: one object, so its entries can be found
    and removed again (NaN != NaN), kept out of the sorted map (NaN does not order), and
    never equal to a literal (NaN = NaN is false in scans too)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NaN"


NAN = _NaN()


class SecondaryIndex:
    """Base of the two index kinds.

    Attributes:
        name: index name, unique in its table.
        columns: indexed column names in order.
        positions: their positions in the storage layout.
    """

    kind = ""

    def __init__(self, name: str, columns: Sequence[str], positions: Sequence[int]) -> None:
        self.name = name
        self.columns = list(columns)
        self.positions = list(positions)
        self._single = len(self.positions) == 1
        self.entries = 0

    def value_of(self, row: Sequence[Any]) -> Any:
        """The indexed value of a storage-layout row. O(#columns)."""
        if self._single:
            v = row[self.positions[0]]
            return NAN if v != v else v
        return tuple(NAN if v != v else v for v in (row[p] for p in self.positions))

    def add(self, key: Any, row: Sequence[Any]) -> None:
        raise NotImplementedError

    def remove(self, key: Any, row: Sequence[Any]) -> None:
        raise NotImplementedError

    def _add_group(self, value: Any, keys: list[Any]) -> None:
        raise NotImplementedError

    def add_batch(self, batch: pa.RecordBatch, key_positions: Sequence[int]) -> None:
        """Index every row of a storage-layout batch (index creation, bulk loads).

        Reads only the key and indexed columns and groups keys by value before touching
        the index, so the cost per row is a dict append, not a row tuple and an index
        update. O(rows) + O(distinct values) index updates.
        """
        if batch.num_rows == 0:
            return
        kcols = [batch.column(i).to_pylist() for i in key_positions]
        keys = kcols[0] if len(kcols) == 1 else list(zip(*kcols))
        vcols = []
        for p in self.positions:
            col = batch.column(p)
            vals = col.to_pylist()
            if pa.types.is_floating(col.type) and pc.any(pc.is_nan(col)).as_py():
                vals = [NAN if v != v else v for v in vals]
            vcols.append(vals)
        values = vcols[0] if self._single else list(zip(*vcols))
        groups: dict[Any, list[Any]] = {}
        for k, v in zip(keys, values):
            g = groups.get(v)
            if g is None:
                groups[v] = [k]
            else:
                g.append(k)
        for v, ks in groups.items():
            self._add_group(v, ks)
        self.entries += len(keys)

    def lookup(self, value: Any) -> Iterable[Any]:
        """Keys of rows whose indexed value equals ``value``."""
        raise NotImplementedError

    def _check(self, expected: dict[Any, Any]) -> None:
        """Invariant check: the index holds exactly ``expected`` (key -> value)."""
        raise NotImplementedError


class HashIndex(SecondaryIndex):
    """Equality index on a dict. add/remove/lookup are O(1) on average."""

    kind = HASH

    def __init__(self, name: str, columns: Sequence[str], positions: Sequence[int]) -> None:
        super().__init__(name, columns, positions)
        self._map: dict[Any, set[Any]] = {}

    def add(self, key: Any, row: Sequence[Any]) -> None:
        """Index ``row`` under ``key``. O(1) average."""
        v = self.value_of(row)
        s = self._map.get(v)
        if s is None:
            self._map[v] = {key}
        else:
            s.add(key)
        self.entries += 1

    def remove(self, key: Any, row: Sequence[Any]) -> None:
        """Remove the entry of ``row`` under ``key``. O(1) average."""
        v = self.value_of(row)
        s = self._map.get(v)
        if s is not None and key in s:
            s.discard(key)
            self.entries -= 1
            if not s:
                del self._map[v]

    def _add_group(self, value: Any, keys: list[Any]) -> None:
        s = self._map.get(value)
        if s is None:
            self._map[value] = set(keys)
        else:
            s.update(keys)

    def lookup(self, value: Any) -> Iterable[Any]:
        """Keys with this value. O(1) average plus the result size."""
        return tuple(self._map.get(value, ()))

    def _check(self, expected: dict[Any, Any]) -> None:
        got = {k: v for v, ks in self._map.items() for k in ks}
        assert got == expected, f"hash index {self.name} differs from the rows"
        assert self.entries == len(expected)
        assert all(self._map.values()), "empty key set left in hash index"


class OrderedIndex(SecondaryIndex):
    """Range index on a ``SortedDict``; rows with a NULL (or NaN) in the value are kept aside.

    add/remove are O(log n); a range lookup is O(log n + result).
    """

    kind = ORDERED

    def __init__(self, name: str, columns: Sequence[str], positions: Sequence[int]) -> None:
        super().__init__(name, columns, positions)
        self._sorted: SortedDict = SortedDict()
        self._nulls: dict[Any, set[Any]] = {}

    def _has_null(self, v: Any) -> bool:
        if self._single:
            return v is None or v is NAN
        return any(x is None or x is NAN for x in v)

    def add(self, key: Any, row: Sequence[Any]) -> None:
        """Index ``row`` under ``key``. O(log n)."""
        v = self.value_of(row)
        target = self._nulls if self._has_null(v) else None
        if target is not None:
            target.setdefault(v, set()).add(key)
        else:
            s = self._sorted.get(v)
            if s is None:
                self._sorted[v] = {key}
            else:
                s.add(key)
        self.entries += 1

    def remove(self, key: Any, row: Sequence[Any]) -> None:
        """Remove the entry of ``row`` under ``key``. O(log n)."""
        v = self.value_of(row)
        m: Any = self._nulls if self._has_null(v) else self._sorted
        s = m.get(v)
        if s is not None and key in s:
            s.discard(key)
            self.entries -= 1
            if not s:
                del m[v]

    def _add_group(self, value: Any, keys: list[Any]) -> None:
        m: Any = self._nulls if self._has_null(value) else self._sorted
        s = m.get(value)
        if s is None:
            m[value] = set(keys)
        else:
            s.update(keys)

    def lookup(self, value: Any) -> Iterable[Any]:
        """Keys with this value. O(log n + result)."""
        m: Any = self._nulls if self._has_null(value) else self._sorted
        return tuple(m.get(value, ()))

    def range(
        self, low: Any = None, high: Any = None, low_inclusive: bool = True, high_inclusive: bool = True
    ) -> Iterator[Any]:
        """Keys whose value (its first column, for several columns) lies in the range.

        ``None`` for a bound means unbounded. NULL values never match. O(log n + result).
        """
        if self._single:
            for v in self._sorted.irange(low, high, (low_inclusive, high_inclusive)):
                yield from self._sorted[v]
            return
        # Several columns: tuples sort by their first column, so scan from the first
        # tuple that can match and stop past the high bound.
        start = None if low is None else (low,)
        for v in self._sorted.irange(minimum=start):
            first = v[0]
            if low is not None and (first < low or (first == low and not low_inclusive)):
                continue
            if high is not None and (first > high or (first == high and not high_inclusive)):
                break
            yield from self._sorted[v]
        # Rows with a NULL in a later column are kept aside but still match a range on
        # a non-NULL first column. O(rows with NULLs).
        for v, ks in self._nulls.items():
            first = v[0]
            if first is None or first is NAN:
                continue
            if low is not None and (first < low or (first == low and not low_inclusive)):
                continue
            if high is not None and (first > high or (first == high and not high_inclusive)):
                continue
            yield from ks

    def _check(self, expected: dict[Any, Any]) -> None:
        got = {k: v for v, ks in self._sorted.items() for k in ks}
        got.update({k: v for v, ks in self._nulls.items() for k in ks})
        assert got == expected, f"ordered index {self.name} differs from the rows"
        assert self.entries == len(expected)
        self._sorted._check()


def make_index(kind: str, name: str, columns: Sequence[str], positions: Sequence[int]) -> SecondaryIndex:
    """Build an empty index of the given kind."""
    if kind == HASH:
        return HashIndex(name, columns, positions)
    if kind == ORDERED:
        return OrderedIndex(name, columns, positions)
    raise ValueError(f"unknown index kind {kind!r}; use one of {KINDS}")
