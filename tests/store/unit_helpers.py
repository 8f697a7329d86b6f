"""Helpers shared by the engine unit tests (not a test module)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import pytest

from spark_ext.store.schema import ROWID
from spark_ext.store.table import Table


def _sort_key(row: Sequence[Any]) -> tuple[Any, ...]:
    # Rows may hold None and mixed types: order by (is-null, type, value) per column.
    return tuple((v is None, type(v).__name__, 0 if v is None else v) for v in row)


def sort_rows(rs: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Rows as tuples in the order :func:`rows` and :func:`contents` use."""
    return sorted((tuple(r) for r in rs), key=_sort_key)


def rows(table: Table, **scan_args: Any) -> list[tuple[Any, ...]]:
    """Every row a scan returns, as tuples of Arrow's ``as_py`` values, sorted."""
    tbl = table.scan(**scan_args).to_table()
    cols = [c.to_pylist() for c in tbl.columns]
    return sort_rows(zip(*cols)) if cols else []


def contents(table: Table) -> list[tuple[Any, ...]]:
    """The full stored state of a table (hidden row id included), sorted."""
    names = list(table.schema.column_names)
    return rows(table, columns=names)


def snapshot_state(table: Table) -> tuple[Any, ...]:
    """Everything a failed statement must not change: rows, count, key locks (point and bulk)."""
    bulk = {cs.id: sorted(kl.keys()) for cs, kl in table.bulk_locks.items()}
    return (contents(table), table.count(), dict(table.locks), bulk, table.truncating)


def assert_refused(
    table: Table,
    fn: Callable[[], Any],
    exc: type[BaseException],
    *must_mention: str,
) -> BaseException:
    """``fn`` raises ``exc`` (exactly that class or a subclass), its message names every
    string in ``must_mention``, and the table is left exactly as it was."""
    before = snapshot_state(table)
    with pytest.raises(exc) as ei:
        fn()
    msg = str(ei.value)
    for m in must_mention:
        assert m in msg, f"error message {msg!r} does not mention {m!r}"
    assert snapshot_state(table) == before, "a refused statement changed the table"
    table._check()
    return ei.value


__all__ = ["ROWID", "assert_refused", "contents", "rows", "snapshot_state", "sort_rows"]
