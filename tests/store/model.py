"""A plain reference model of store tables, for the stress and crash tests.

Nothing here imports the engine's internals: a keyed table is a ``dict`` key -> row
(a tuple of the user columns), a table without a primary key is a list of rows compared
as a multiset, and predicates (the engine's expression tree from
``spark_ext.store.predicate``) are evaluated row by row with SQL's three-valued logic in
plain Python. Every mutating method checks everything first and changes nothing when it
raises, like the engine.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from spark_ext.store import predicate as P


class ModelDuplicate(Exception):
    """The model's answer where the engine must raise DuplicateKeyError."""


# --- predicates -------------------------------------------------------------------------


def evaluate(p: Any, row: Sequence[Any], index_of: Mapping[str, int]) -> bool | None:
    """SQL value of a predicate on one row: True, False or None (unknown)."""
    if isinstance(p, P.And):
        out: bool | None = True
        for c in p.children:
            v = evaluate(c, row, index_of)
            if v is False:
                return False
            if v is None:
                out = None
        return out
    if isinstance(p, P.Or):
        out = False
        for c in p.children:
            v = evaluate(c, row, index_of)
            if v is True:
                return True
            if v is None:
                out = None
        return out
    if isinstance(p, P.Not):
        v = evaluate(p.child, row, index_of)
        return None if v is None else not v
    x = row[index_of[p.column]]
    if isinstance(p, P.IsNull):
        return (x is not None) if p.negated else (x is None)
    if x is None:
        return None
    if isinstance(p, P.Compare):
        v = p.value
        if v is None:
            return None
        return {
            "=": x == v, "<>": x != v, "<": x < v, "<=": x <= v, ">": x > v, ">=": x >= v,
        }[p.op]
    if isinstance(p, P.In):
        if any(v is not None and x == v for v in p.values):
            return True
        return None if any(v is None for v in p.values) else False
    if isinstance(p, P.StartsWith):
        return x.startswith(p.prefix)
    raise TypeError(f"not a predicate: {p!r}")


def sort_key(row: Sequence[Any]) -> tuple[Any, ...]:
    """A total order for rows whose columns each hold one type (NULLs first)."""
    return tuple((v is not None, v) if v is not None else (False, 0) for v in row)


def sorted_rows(rows: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in rows), key=sort_key)


# --- tables -----------------------------------------------------------------------------


class ModelTable:
    """A table with a primary key: ``rows`` maps key -> row (user columns)."""

    def __init__(self, name: str, columns: Sequence[str], key: Sequence[str]) -> None:
        self.name = name
        self.columns = list(columns)
        self.index_of = {c: i for i, c in enumerate(self.columns)}
        self.key = list(key)
        self.key_pos = [self.index_of[c] for c in self.key]
        self.rows: dict[Any, tuple[Any, ...]] = {}
        # Change tracking for change-set clones: keys written or deleted, and truncation.
        self.touched: set[Any] = set()
        self.truncated = False

    hidden = False

    def key_of(self, row: Sequence[Any]) -> Any:
        if len(self.key_pos) == 1:
            return row[self.key_pos[0]]
        return tuple(row[i] for i in self.key_pos)

    def clone(self) -> "ModelTable":
        c = ModelTable(self.name, self.columns, self.key)
        c.rows = dict(self.rows)
        return c

    def merge_into(self, base: "ModelTable") -> None:
        """Apply a clone's tracked changes onto ``base`` (commit of a change set)."""
        if self.truncated:
            base.rows.clear()
        for k in sorted(self.touched):  # sorted: the same order in every process
            if k in self.rows:
                base.rows[k] = self.rows[k]
            else:
                base.rows.pop(k, None)

    def _set(self, k: Any, row: tuple[Any, ...] | None) -> None:
        self.touched.add(k)
        if row is None:
            self.rows.pop(k, None)
        else:
            self.rows[k] = row

    def add_column(self, name: str) -> None:
        """ALTER TABLE ADD COLUMNS: every row gets NULL in the new last column."""
        self.columns.append(name)
        self.index_of[name] = len(self.columns) - 1
        self.rows = {k: r + (None,) for k, r in self.rows.items()}

    # --- writes ---

    def insert(self, rows: Sequence[Sequence[Any]]) -> int:
        staged = self._distinct(rows)
        for k in staged:
            if k in self.rows:
                raise ModelDuplicate(k)
        for k, r in staged.items():
            self._set(k, r)
        return len(staged)

    def upsert(self, rows: Sequence[Sequence[Any]]) -> int:
        staged = self._distinct(rows)
        for k, r in staged.items():
            self._set(k, r)
        return len(staged)

    def _distinct(self, rows: Sequence[Sequence[Any]]) -> dict[Any, tuple[Any, ...]]:
        staged: dict[Any, tuple[Any, ...]] = {}
        for r in rows:
            r = tuple(r)
            k = self.key_of(r)
            if k in staged:
                raise ModelDuplicate(k)
            staged[k] = r
        return staged

    def update(self, keys: Sequence[Any], values: Mapping[str, Any]) -> int:
        """Set columns of existing rows; a changed key moves the row."""
        plan = []
        for k in dict.fromkeys(keys):
            cur = self.rows.get(k)
            if cur is None:
                continue
            new = list(cur)
            for c, v in values.items():
                new[self.index_of[c]] = v
            row = tuple(new)
            plan.append((k, self.key_of(row), row))
        return self._moves(plan)

    def _moves(self, plan: list[tuple[Any, Any, tuple[Any, ...]]]) -> int:
        """Apply (old key, new key, new row) changes: new keys distinct, and a changed key
        may not land on a live row other than one of the old keys."""
        olds = {ok for ok, _, _ in plan}
        news = [nk for _, nk, _ in plan]
        if len(set(news)) != len(news):
            raise ModelDuplicate(news)
        for ok, nk, _ in plan:
            if nk != ok and nk not in olds and nk in self.rows:
                raise ModelDuplicate(nk)
        new_set = set(news)
        for ok, _, _ in plan:
            if ok not in new_set:
                self._set(ok, None)
        for _, nk, row in plan:
            self._set(nk, row)
        return len(plan)

    def replace(self, pairs: Sequence[tuple[Any, Sequence[Any]]]) -> int:
        """Replace whole rows by key, ``(old_key, new_row)``; a new key moves the row."""
        plan = [(ok, self.key_of(row), tuple(row)) for ok, row in pairs]
        return self._moves(plan)

    def delete(self, keys: Sequence[Any]) -> int:
        hit = [k for k in dict.fromkeys(keys) if k in self.rows]
        for k in hit:
            self._set(k, None)
        return len(hit)

    def matching_keys(self, pred: Any) -> list[Any]:
        return [k for k, r in self.rows.items() if pred is None or evaluate(pred, r, self.index_of) is True]

    def update_where(self, pred: Any, values: Mapping[str, Any]) -> int:
        return self.update(self.matching_keys(pred), values)

    def delete_where(self, pred: Any) -> int:
        return self.delete(self.matching_keys(pred))

    def truncate(self) -> None:
        self.rows.clear()
        self.touched.clear()
        self.truncated = True

    # --- reads ---

    def get(self, key: Any) -> tuple[Any, ...] | None:
        return self.rows.get(key)

    def all_rows(self) -> list[tuple[Any, ...]]:
        return list(self.rows.values())

    def select(self, pred: Any = None, columns: Sequence[str] | None = None) -> list[tuple[Any, ...]]:
        """Matching rows projected on ``columns``, sorted."""
        return _select(self.all_rows(), self.index_of, pred, columns)

    def __len__(self) -> int:
        return len(self.rows)


class ModelBag:
    """A table without a primary key: a multiset of rows (the hidden row id is ignored)."""

    hidden = True

    def __init__(self, name: str, columns: Sequence[str]) -> None:
        self.name = name
        self.columns = list(columns)
        self.index_of = {c: i for i, c in enumerate(self.columns)}
        self.rows: list[tuple[Any, ...]] = []
        self.touched: set[Any] = set()
        self.truncated = False

    def clone(self) -> "ModelBag":
        c = ModelBag(self.name, self.columns)
        c.rows = list(self.rows)
        return c

    def merge_into(self, base: "ModelBag") -> None:
        """Commit of a change set: the bag is replaced whole (no concurrent writers)."""
        base.rows = list(self.rows)

    def add_column(self, name: str) -> None:
        """ALTER TABLE ADD COLUMNS: every row gets NULL in the new last column."""
        self.columns.append(name)
        self.index_of[name] = len(self.columns) - 1
        self.rows = [r + (None,) for r in self.rows]

    def insert(self, rows: Sequence[Sequence[Any]]) -> int:
        new = [tuple(r) for r in rows]
        self.rows.extend(new)
        return len(new)

    def update_where(self, pred: Any, values: Mapping[str, Any]) -> int:
        n = 0
        out = []
        for r in self.rows:
            if pred is None or evaluate(pred, r, self.index_of) is True:
                new = list(r)
                for c, v in values.items():
                    new[self.index_of[c]] = v
                out.append(tuple(new))
                n += 1
            else:
                out.append(r)
        self.rows = out
        return n

    def delete_where(self, pred: Any) -> int:
        keep = [r for r in self.rows if not (pred is None or evaluate(pred, r, self.index_of) is True)]
        n = len(self.rows) - len(keep)
        self.rows = keep
        return n

    def truncate(self) -> None:
        self.rows = []
        self.truncated = True

    def all_rows(self) -> list[tuple[Any, ...]]:
        return list(self.rows)

    def select(self, pred: Any = None, columns: Sequence[str] | None = None) -> list[tuple[Any, ...]]:
        return _select(self.rows, self.index_of, pred, columns)

    def __len__(self) -> int:
        return len(self.rows)


def _select(
    rows: Iterable[tuple[Any, ...]], index_of: Mapping[str, int], pred: Any, columns: Sequence[str] | None
) -> list[tuple[Any, ...]]:
    out = [r for r in rows if pred is None or evaluate(pred, r, index_of) is True]
    if columns is not None:
        pos = [index_of[c] for c in columns]
        out = [tuple(r[i] for i in pos) for r in out]
    return sorted_rows(out)


def is_sub_multiset(small: Iterable[Any], big: Iterable[Any]) -> bool:
    need = Counter(small)
    have = Counter(big)
    return all(have[k] >= n for k, n in need.items())
