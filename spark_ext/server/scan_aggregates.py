"""Partial aggregates of a SCAN (``aggregates`` / ``group_by``, docs/protocol.md section 10.2).

A server answers the aggregates of the rows it scans (the buckets of the request, after
the ``where``): one row per group, or exactly one row without ``group_by``. Results are
*partial*: a client that asked several servers (or several buckets) merges them
(count -> sum of counts, sum -> sum, min -> min, max -> max), as Spark does when a scan
builder answers ``supportCompletePushDown = false``.

The arithmetic follows Spark SQL so that a merged result equals Spark's own:

- ``count_star`` counts rows, ``count`` non-NULL values (NaN is a value), both int64;
- ``sum`` ignores NULLs and is NULL over no non-NULL value. Integer columns sum into
  int64, exactly (an overflow of int64 is VALUE_OUT_OF_RANGE, as Spark's ANSI mode
  fails); float columns sum in float64; decimal(p,s) sums into decimal(min(38, p+10), s);
- ``min`` / ``max`` keep the column type and ignore NULLs; for float columns NaN is
  larger than every other value (Spark's ordering): ``max`` is NaN when the group holds a
  NaN, ``min`` only when it holds nothing but NaN.

Group keys and aggregate arguments may also be arithmetic expressions over columns and
literals (:mod:`spark_ext.server.scan_expressions`): they are evaluated on the scanned
columns first, vectorized, then grouped and aggregated like columns of their result type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence, Union

import pyarrow as pa
import pyarrow.compute as pc

from spark_ext.exceptions import BadArgumentError, UnknownColumnError, ValueOutOfRangeError
from spark_ext.server import scan_expressions as sx
from spark_ext.server.scan_expressions import Expr

#: A group key or aggregate argument: a column name or an arithmetic expression.
Input = Union[str, Expr]

#: Functions a SCAN can compute; AVG is not one: Spark rewrites it into SUM and COUNT.
FUNCTIONS = ("count_star", "count", "sum", "min", "max")

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
#: Above this float64 estimate an int64 sum may have wrapped: it is recomputed exactly.
_INT_SUM_SAFE = float(1 << 62)


@dataclass(frozen=True)
class AggregateRequest:
    """A checked ``group_by`` + ``aggregates`` of one SCAN request.

    Attributes:
        group_by: the group keys, distinct, in request order: column names or expressions.
        aggregates: ``(fn, input)`` pairs in request order (input None for count_star).
    """

    group_by: tuple[Input, ...]
    aggregates: tuple[tuple[str, Input | None], ...]

    def input_columns(self) -> list[str]:
        """The distinct columns the scan must produce, group columns first."""
        cols: list[str] = []
        for c in list(self.group_by) + [c for _, c in self.aggregates]:
            for name in ([] if c is None else [c] if isinstance(c, str) else c.columns()):
                if name not in cols:
                    cols.append(name)
        return cols

    def reply_names(self) -> list[str]:
        """The reply's column names, distinct: each group column's name (``group<i>`` for an
        expression), then ``agg0``, ``agg1``, ... O(names).

        A generated name that a group column of the request also has (a table may have a
        column ``group1`` or ``agg0``) gets ``_`` prepended until it is free; generated
        names never start with ``_``, so they stay distinct (docs/protocol.md section 10.2;
        the Java reader, ``StoreColumnarReader``, names them the same way).
        """
        taken = {g for g in self.group_by if isinstance(g, str)}

        def free(name: str) -> str:
            while name in taken:
                name = "_" + name
            return name

        names = [g if isinstance(g, str) else free(f"group{i}") for i, g in enumerate(self.group_by)]
        return names + [free(f"agg{j}") for j in range(len(self.aggregates))]


def parse(table: str, schema: pa.Schema, column_names: Sequence[str], meta: dict[str, Any]) -> AggregateRequest | None:
    """The aggregate part of a SCAN request, or None for a plain SCAN. O(request).

    ``aggregates`` entries are ``["count_star"]``, ``[fn, column]`` or the object form
    ``{"fn": fn, "column": column}``. ``schema`` holds the storage type of every column in
    ``column_names`` (the user columns, and ``_rowid`` for tables without a key). A
    ``group_by`` entry or an aggregate's column may instead be an expression (a JSON
    array, :func:`spark_ext.server.scan_expressions.parse`).

    Raises:
        BadArgumentError: a malformed entry, an unknown function, ``sum`` of a column that
            is not numeric, ``min``/``max`` of an unorderable column, a ``group_by`` that
            names a column (or an expression) twice, a malformed expression, or
            ``columns``/``limit`` given with ``aggregates``.
        UnknownColumnError: a column the table does not have.
    """
    raw_aggs = meta.get("aggregates")
    raw_group = meta.get("group_by")
    if raw_aggs is None and raw_group is None:
        return None
    if raw_aggs is None:
        raw_aggs = []
    if not isinstance(raw_aggs, list):
        raise BadArgumentError(f"table {table!r}: 'aggregates' must be a list", table=table)
    if raw_group is None:
        raw_group = []
    if not isinstance(raw_group, list) or not all((isinstance(c, str) and c) or sx.is_expression(c)
                                                  for c in raw_group):
        raise BadArgumentError(
            f"table {table!r}: 'group_by' must be a list of column names and expressions", table=table)
    if not raw_aggs and not raw_group:
        raise BadArgumentError(f"table {table!r}: 'aggregates' is empty and there is no 'group_by'", table=table)
    for f in ("columns", "limit"):
        if meta.get(f) is not None:
            raise BadArgumentError(
                f"table {table!r}: {f!r} cannot be combined with 'aggregates'/'group_by' "
                "(the result columns are the group columns then one per aggregate)", table=table)

    def column(name: str, what: str) -> pa.DataType:
        if name not in column_names:
            raise UnknownColumnError(
                f"table {table!r} has no column {name!r} ({what}; columns: {', '.join(column_names)})",
                table=table, column=name)
        return schema.field(name).type

    seen: set[str] = set()
    group: list[Input] = []
    for i, c in enumerate(raw_group):
        if sx.is_expression(c):
            key = json.dumps(c, sort_keys=True)
            if key in seen:
                raise BadArgumentError(f"table {table!r}: 'group_by' holds expression {c!r} twice", table=table)
            group.append(sx.parse(table, schema, column_names, c, f"group_by entry {i}"))
        else:
            column(c, "in group_by")
            key = c
            if key in seen:
                raise BadArgumentError(f"table {table!r}: 'group_by' names column {c!r} twice", table=table, column=c)
            group.append(c)
        seen.add(key)

    aggs: list[tuple[str, Input | None]] = []
    for i, a in enumerate(raw_aggs):
        if isinstance(a, dict):
            fn, col, extra = a.get("fn"), a.get("column"), set(a) - {"fn", "column"}
            if extra:
                raise BadArgumentError(f"table {table!r}: aggregate {i} has unknown field(s) {sorted(extra)}", table=table)
        elif isinstance(a, list) and a and len(a) <= 2:
            fn, col = a[0], (a[1] if len(a) == 2 else None)
        else:
            raise BadArgumentError(
                f"table {table!r}: aggregate {i} must be [fn] / [fn, column] or {{fn, column}}, got {a!r}", table=table)
        if fn not in FUNCTIONS:
            raise BadArgumentError(
                f"table {table!r}: aggregate {i}: unknown function {fn!r} (supported: {', '.join(FUNCTIONS)})",
                table=table)
        if fn == "count_star":
            if col is not None:
                raise BadArgumentError(f"table {table!r}: aggregate {i}: count_star takes no column", table=table)
            aggs.append((fn, None))
            continue
        if sx.is_expression(col):
            e = sx.parse(table, schema, column_names, col, f"aggregate {i} ({fn})")
            aggs.append((fn, e))  # numeric: every function applies
            continue
        if not isinstance(col, str) or not col:
            raise BadArgumentError(
                f"table {table!r}: aggregate {i}: {fn} needs a column name or an expression", table=table)
        t = column(col, f"in aggregate {i}, {fn}")
        if fn == "sum" and not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
            raise BadArgumentError(
                f"table {table!r}: sum of column {col!r} is not defined: its type {t} is not numeric",
                table=table, column=col)
        if fn in ("min", "max") and not _orderable(t):
            raise BadArgumentError(
                f"table {table!r}: {fn} of column {col!r} is not defined for its type {t}", table=table, column=col)
        aggs.append((fn, col))
    return AggregateRequest(tuple(group), tuple(aggs))


def _orderable(t: pa.DataType) -> bool:
    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)
            or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or pa.types.is_date(t) or pa.types.is_timestamp(t))


def compute(table: str, req: AggregateRequest, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> pa.Table:
    """The partial aggregates of ``batches`` (the scan of ``req.input_columns()``). O(rows).

    Returns a table with the group columns (named as in the table, ``group<i>`` for an
    expression) and then ``agg0``, ``agg1``, ... in request order (names made distinct by
    :meth:`AggregateRequest.reply_names`): one row per group (a
    NULL group value is a group), or exactly one row without ``group_by`` (count 0,
    sum/min/max NULL over no rows).

    Raises:
        ValueOutOfRangeError: an integer sum leaves int64, or a decimal sum its result type;
            an expression overflows or divides by zero.
    """
    data = pa.Table.from_batches(list(batches), schema=schema)
    # Expressions first (once each), so that both passes below group the same columns.
    data = _with_inputs(table, req, data)
    named = _by_name(req)
    try:
        result = _aggregate(table, named, data, exact=False)
    except _Inexact:
        # Some integer sum may have wrapped around int64: redo them in decimal, exactly.
        result = _aggregate(table, named, data, exact=True)
    return result.rename_columns(req.reply_names())


class _Inexact(Exception):
    pass


def _with_inputs(table: str, req: AggregateRequest, data: pa.Table) -> pa.Table:
    """``data`` plus one column per expression, its values (named by _slot). O(rows * nodes)."""
    for i, e in enumerate(list(req.group_by) + [c for _, c in req.aggregates]):
        if isinstance(e, Expr):
            data = data.append_column(_slot(i), sx.evaluate(table, e, data))
    return data


def _slot(i: int) -> str:
    # A NUL byte: no clash with a table's column names (Spark identifiers never hold one).
    return f"\0expr{i}"


def _by_name(req: AggregateRequest) -> AggregateRequest:
    """The request with each expression replaced by the name of its column in _with_inputs."""
    ng = len(req.group_by)
    group = tuple(g if isinstance(g, str) else _slot(i) for i, g in enumerate(req.group_by))
    aggs = tuple((fn, c if not isinstance(c, Expr) else _slot(ng + j)) for j, (fn, c) in enumerate(req.aggregates))
    return AggregateRequest(group, aggs)


_SKIP_NULLS = pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)
_SKIP_NULLS_0 = pc.ScalarAggregateOptions(skip_nulls=True, min_count=0)
_ONLY_VALID = pc.CountOptions(mode="only_valid")


def _aggregate(table: str, req: AggregateRequest, data: pa.Table, exact: bool) -> pa.Table:
    # A working table with unique names: group keys k0.., aggregate inputs a0.. (and helpers).
    work: dict[str, Any] = {f"k{i}": data.column(c) for i, c in enumerate(req.group_by)}
    specs: list[tuple[Any, ...]] = []
    finish: list[Any] = []  # per aggregate: a function of the grouped table -> its result column
    count_all = False
    for j, (fn, col) in enumerate(req.aggregates):
        name = f"a{j}"
        if fn == "count_star":
            count_all = True
            finish.append(lambda g: g.column("count_all"))
            continue
        assert col is not None
        arr = data.column(col)
        typ = arr.type
        if fn == "count":
            work[name] = arr
            specs.append((name, "count", _ONLY_VALID))
            finish.append(lambda g, n=f"{name}_count": g.column(n))
        elif fn == "sum" and pa.types.is_floating(typ):
            work[name] = arr.cast(pa.float64())
            specs.append((name, "sum", _SKIP_NULLS))
            finish.append(lambda g, n=f"{name}_sum": g.column(n))
        elif fn == "sum" and pa.types.is_decimal(typ):
            out_t = pa.decimal128(min(38, typ.precision + 10), typ.scale)
            work[name] = arr
            work[name + "f"] = pc.cast(arr, pa.float64(), safe=False)
            specs.append((name, "sum", _SKIP_NULLS))
            specs.append((name + "f", "sum", _SKIP_NULLS))
            finish.append(lambda g, n=name, t=out_t, c=col: _decimal_sum(table, g, n, t, c))
        elif fn == "sum":  # integers
            if exact:
                work[name] = arr.cast(pa.decimal128(19, 0))
                specs.append((name, "sum", _SKIP_NULLS))
                finish.append(lambda g, n=name, c=col: _exact_int_sum(table, g, n, c))
            else:
                # Arrow's int64 sums wrap silently: a float64 estimate beside each tells
                # when a group may have left int64 (then everything is redone exactly).
                work[name] = arr.cast(pa.int64())
                work[name + "f"] = pc.cast(arr, pa.float64(), safe=False)
                specs.append((name, "sum", _SKIP_NULLS))
                specs.append((name + "f", "sum", _SKIP_NULLS))
                finish.append(lambda g, n=name: _checked_int_sum(g, n))
        else:  # min / max
            work[name] = arr
            specs.append((name, fn, _SKIP_NULLS))
            if pa.types.is_floating(typ) and _has_nan(arr):
                # Arrow skips NaN; Spark orders it above every number.
                work[name + "n"] = pc.is_nan(arr).cast(pa.int64())
                specs.append((name + "n", "sum", _SKIP_NULLS_0))
                specs.append((name, "count", _ONLY_VALID))
                finish.append(lambda g, n=name, f=fn: _nan_min_max(g, n, f))
            else:
                finish.append(lambda g, n=f"{name}_{fn}": g.column(n))
    if count_all:
        specs.append(([], "count_all"))
    if not work:  # count_star alone, without group_by: only the row count matters
        work["_"] = pa.nulls(data.num_rows, pa.int8())
    keys = [f"k{i}" for i in range(len(req.group_by))]
    grouped = pa.table(work).group_by(keys, use_threads=False).aggregate(specs)
    names = list(req.group_by) + [f"agg{j}" for j in range(len(req.aggregates))]
    cols = [grouped.column(k) for k in keys] + [f(grouped) for f in finish]
    return pa.Table.from_arrays([c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in cols],
                                names=names)


def _has_nan(arr: pa.ChunkedArray) -> bool:
    return len(arr) > 0 and bool(pc.any(pc.is_nan(arr)).as_py())


def _max_abs(arr: pa.ChunkedArray) -> float:
    m = pc.max(pc.abs(arr)).as_py()
    return 0.0 if m is None else float(m)


def _checked_int_sum(g: pa.Table, name: str) -> pa.ChunkedArray:
    if _max_abs(g.column(f"{name}f_sum")) >= _INT_SUM_SAFE:
        raise _Inexact()
    return g.column(f"{name}_sum")


def _exact_int_sum(table: str, g: pa.Table, name: str, col: str) -> pa.ChunkedArray:
    # 38 decimal digits hold the sum of up to 10^19 int64 values exactly.
    try:
        return g.column(f"{name}_sum").cast(pa.int64())
    except pa.ArrowInvalid:
        raise ValueOutOfRangeError(
            f"table {table!r}: the sum of column {col!r} overflows bigint (int64)", table=table, column=col) from None


def _decimal_sum(table: str, g: pa.Table, name: str, out_t: pa.Decimal128Type, col: str) -> pa.ChunkedArray:
    # Arrow sums decimals in decimal128(38, s) and wraps beyond it: the float64 estimate
    # catches sums at or near the bound of the result type (10^(precision - scale)).
    bound = 10.0 ** (out_t.precision - out_t.scale)
    if _max_abs(g.column(f"{name}f_sum")) >= bound * (1 - 1e-9):
        raise ValueOutOfRangeError(
            f"table {table!r}: the sum of column {col!r} does not fit {out_t}", table=table, column=col)
    try:
        return g.column(f"{name}_sum").cast(out_t)
    except pa.ArrowInvalid:
        raise ValueOutOfRangeError(
            f"table {table!r}: the sum of column {col!r} does not fit {out_t}", table=table, column=col) from None


def _nan_min_max(g: pa.Table, name: str, fn: str) -> pa.ChunkedArray:
    arr = g.column(f"{name}_{fn}")
    nans = g.column(f"{name}n_sum")
    if fn == "max":
        cond = pc.greater(nans, 0)
    else:
        valid = g.column(f"{name}_count")
        cond = pc.and_(pc.greater(valid, 0), pc.equal(nans, valid))
    return pc.if_else(cond, pa.scalar(float("nan"), arr.type), arr)
