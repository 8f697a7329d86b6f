"""Predicates: a small expression tree, its JSON form, binding, and vectorized evaluation.

JSON form (docs/protocol.md, "Predicates")::

    ["and", p, p, ...]  ["or", p, ...]  ["not", p]
    ["=", col, v]  ["<>", col, v]  ["<", col, v]  ["<=", col, v]  [">", col, v]  [">=", col, v]
    ["in", col, [v, ...]]  ["is_null", col]  ["is_not_null", col]  ["starts_with", col, prefix]

Evaluation follows SQL: a comparison with NULL is unknown, and unknown rows are not
selected (also under NOT). Everything is evaluated with ``pyarrow.compute`` over whole
batches: base data is never turned into Python objects to be filtered.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, Union

import pyarrow as pa
import pyarrow.compute as pc

from spark_ext.exceptions import BadArgumentError, ConstraintError, ValueOutOfRangeError
from spark_ext.store import types
from spark_ext.store.schema import TableSchema

COMPARISONS = ("=", "<>", "<", "<=", ">", ">=")
_PC = {"=": pc.equal, "<>": pc.not_equal, "<": pc.less, "<=": pc.less_equal, ">": pc.greater, ">=": pc.greater_equal}


class _Combinable:
    """Lets predicates combine with ``&``, ``|`` and ``~`` like PySpark columns."""

    def __and__(self, other: "Predicate") -> "And":
        return And((self, other))  # type: ignore[arg-type]

    def __or__(self, other: "Predicate") -> "Or":
        return Or((self, other))  # type: ignore[arg-type]

    def __invert__(self) -> "Not":
        return Not(self)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Compare(_Combinable):
    op: str
    column: str
    value: Any


@dataclass(frozen=True)
class In(_Combinable):
    column: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class IsNull(_Combinable):
    column: str
    negated: bool = False


@dataclass(frozen=True)
class StartsWith(_Combinable):
    column: str
    prefix: str


@dataclass(frozen=True)
class And(_Combinable):
    children: tuple["Predicate", ...]


@dataclass(frozen=True)
class Or(_Combinable):
    children: tuple["Predicate", ...]


@dataclass(frozen=True)
class Not(_Combinable):
    child: "Predicate"


Predicate = Union[Compare, In, IsNull, StartsWith, And, Or, Not]


# --- convenience builders --------------------------------------------------------------


class col:  # noqa: N801 - reads like SQL: col("x") > 5
    """Builder: ``col("x") >= 3``, ``col("s").startswith("a")``, ``col("k").isin([1, 2])``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, v: Any) -> Compare:  # type: ignore[override]
        return Compare("=", self.name, v)

    def __ne__(self, v: Any) -> Compare:  # type: ignore[override]
        return Compare("<>", self.name, v)

    def __lt__(self, v: Any) -> Compare:
        return Compare("<", self.name, v)

    def __le__(self, v: Any) -> Compare:
        return Compare("<=", self.name, v)

    def __gt__(self, v: Any) -> Compare:
        return Compare(">", self.name, v)

    def __ge__(self, v: Any) -> Compare:
        return Compare(">=", self.name, v)

    def isin(self, values: Sequence[Any]) -> In:
        return In(self.name, tuple(values))

    def is_null(self) -> IsNull:
        return IsNull(self.name)

    def is_not_null(self) -> IsNull:
        return IsNull(self.name, negated=True)

    def startswith(self, prefix: str) -> StartsWith:
        return StartsWith(self.name, prefix)

    __hash__ = None  # type: ignore[assignment]


# --- JSON form -----------------------------------------------------------------------


def from_obj(obj: Any) -> Predicate:
    """Parse the JSON form. O(size). Raises BadArgumentError naming the bad part."""
    if not isinstance(obj, (list, tuple)) or not obj or not isinstance(obj[0], str):
        raise BadArgumentError(f"a predicate is a list starting with an operator name, got {obj!r}")
    op, args = obj[0].lower(), list(obj[1:])
    try:
        if op in ("and", "or"):
            if not args:
                raise BadArgumentError(f"{op!r} needs at least one operand")
            kids = tuple(from_obj(a) for a in args)
            return And(kids) if op == "and" else Or(kids)
        if op == "not":
            (a,) = args
            return Not(from_obj(a))
        if op in COMPARISONS:
            c, v = args
            return Compare(op, _colname(c), v)
        if op == "in":
            c, vs = args
            if not isinstance(vs, (list, tuple)):
                raise BadArgumentError(f"'in' needs a list of values, got {vs!r}")
            return In(_colname(c), tuple(vs))
        if op in ("is_null", "is_not_null"):
            (c,) = args
            return IsNull(_colname(c), negated=op == "is_not_null")
        if op == "starts_with":
            c, p = args
            if not isinstance(p, str):
                raise BadArgumentError(f"'starts_with' needs a string prefix, got {p!r}")
            return StartsWith(_colname(c), p)
    except ValueError:
        raise BadArgumentError(f"wrong number of operands for {op!r}: {obj!r}") from None
    raise BadArgumentError(f"unknown predicate operator {obj[0]!r}")


def _colname(c: Any) -> str:
    if not isinstance(c, str):
        raise BadArgumentError(f"a column name must be a string, got {c!r}")
    return c


def to_obj(p: Predicate) -> list[Any]:
    """The JSON form (values as given; see :func:`literal_to_json` for typed values)."""
    if isinstance(p, And):
        return ["and", *[to_obj(c) for c in p.children]]
    if isinstance(p, Or):
        return ["or", *[to_obj(c) for c in p.children]]
    if isinstance(p, Not):
        return ["not", to_obj(p.child)]
    if isinstance(p, Compare):
        return [p.op, p.column, literal_to_json(p.value)]
    if isinstance(p, In):
        return ["in", p.column, [literal_to_json(v) for v in p.values]]
    if isinstance(p, IsNull):
        return ["is_not_null" if p.negated else "is_null", p.column]
    if isinstance(p, StartsWith):
        return ["starts_with", p.column, p.prefix]
    raise BadArgumentError(f"not a predicate: {p!r}")


def literal_to_json(v: Any) -> Any:
    """JSON form of a literal: dates ISO, timestamps as epoch micros, decimals as strings."""
    if isinstance(v, _dt.datetime):
        epoch = types.EPOCH_UTC if v.tzinfo else types.EPOCH_NAIVE
        return (v - epoch) // types.ONE_MICRO
    if isinstance(v, _dt.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return base64.b64encode(bytes(v)).decode("ascii")
    return v


def _literal(schema: TableSchema, column: str, v: Any) -> Any:
    """Coerce a literal (Python or JSON form) to the column's engine form."""
    i = schema.column_index(column)
    tn = schema.type_names[i]
    if v is None:
        return None
    try:
        if tn == "date" and isinstance(v, str):
            v = _dt.date.fromisoformat(v)
        elif tn in ("timestamp_tz", "timestamp_ntz") and isinstance(v, int) and not isinstance(v, bool):
            epoch = types.EPOCH_UTC if tn == "timestamp_tz" else types.EPOCH_NAIVE
            v = epoch + _dt.timedelta(microseconds=v)
        elif tn in ("timestamp_tz", "timestamp_ntz") and isinstance(v, str):
            v = _dt.datetime.fromisoformat(v)
        elif tn == "binary" and isinstance(v, str):
            v = base64.b64decode(v, validate=True)
        elif tn.startswith("decimal") and isinstance(v, float):
            v = decimal.Decimal(repr(v))
        elif tn in ("float32", "float64") and isinstance(v, decimal.Decimal):
            v = float(v)
    except ValueError as e:
        raise BadArgumentError(
            f"table {schema.name!r}, column {column!r}: literal {v!r} is not a {tn} ({e})",
            table=schema.name, column=column, value=repr(v),
        ) from None
    if tn.startswith("int") and isinstance(v, float):
        # Comparing an integer column with a fractional literal is legal SQL; keep the
        # float and let Arrow compare numerically.
        return v
    if tn.startswith("decimal") and isinstance(v, decimal.Decimal):
        return v  # comparisons need no quantization to the column scale
    try:
        return schema.coercers[i](v)
    except ConstraintError as e:
        if tn == "float32" and isinstance(e, ValueOutOfRangeError):
            try:
                return float(v)  # beyond float32 but a double: compares as an infinity, legal SQL
            except OverflowError:  # an int beyond any double
                pass
        raise BadArgumentError(str(e), table=schema.name, column=column, value=repr(v)) from None


def bind(p: Predicate, schema: TableSchema) -> Predicate:
    """Check column names and coerce literals to column types. O(size).

    Raises:
        UnknownColumnError: for a column the table does not have.
        BadArgumentError: for a literal that cannot be a value of its column.
    """
    if isinstance(p, And):
        return And(tuple(bind(c, schema) for c in p.children))
    if isinstance(p, Or):
        return Or(tuple(bind(c, schema) for c in p.children))
    if isinstance(p, Not):
        return Not(bind(p.child, schema))
    if isinstance(p, Compare):
        if p.op not in COMPARISONS:
            raise BadArgumentError(f"unknown comparison {p.op!r}")
        return Compare(p.op, p.column, _literal(schema, p.column, p.value))
    if isinstance(p, In):
        return In(p.column, tuple(_literal(schema, p.column, v) for v in p.values))
    if isinstance(p, IsNull):
        schema.column_index(p.column)
        return p
    if isinstance(p, StartsWith):
        i = schema.column_index(p.column)
        if schema.type_names[i] != "string":
            raise BadArgumentError(
                f"table {schema.name!r}, column {p.column!r}: starts_with needs a string column",
                table=schema.name, column=p.column,
            )
        return p
    raise BadArgumentError(f"not a predicate: {p!r}")


def columns_of(p: Predicate) -> set[str]:
    """Every column a predicate reads. O(size)."""
    if isinstance(p, (And, Or)):
        out: set[str] = set()
        for c in p.children:
            out |= columns_of(c)
        return out
    if isinstance(p, Not):
        return columns_of(p.child)
    return {p.column}


def conjuncts(p: Predicate | None) -> Iterator[Predicate]:
    """The top-level AND terms of a predicate. O(size)."""
    if p is None:
        return
    if isinstance(p, And):
        for c in p.children:
            yield from conjuncts(c)
    else:
        yield p


# --- evaluation ----------------------------------------------------------------------

_NULL_BOOL = pa.scalar(None, pa.bool_())


def evaluate(p: Predicate, batch: pa.RecordBatch | pa.Table) -> pa.Array:
    """A boolean mask (nulls mean unknown) of a bound predicate over a batch. O(rows)."""
    if isinstance(p, And):
        m = evaluate(p.children[0], batch)
        for c in p.children[1:]:
            m = pc.and_kleene(m, evaluate(c, batch))
        return m
    if isinstance(p, Or):
        m = evaluate(p.children[0], batch)
        for c in p.children[1:]:
            m = pc.or_kleene(m, evaluate(c, batch))
        return m
    if isinstance(p, Not):
        return pc.invert(evaluate(p.child, batch))
    column = batch.column(batch.schema.get_field_index(p.column))
    if isinstance(p, Compare):
        if p.value is None:
            return pa.nulls(len(column), pa.bool_())
        return _PC[p.op](column, _scalar(p.value, column.type))
    if isinstance(p, In):
        vals = [v for v in p.values if v is not None]
        if pa.types.is_floating(column.type):
            # is_in hashes bit patterns, but -0.0 = 0.0 (as for "="): add 0.0 to both
            # sides, which turns every negative zero into a positive one.
            column = pc.add(column, pa.scalar(0.0, column.type))
            vals = [v + 0.0 if isinstance(v, float) else v for v in vals]
        r = pc.is_in(column, value_set=pa.array(vals, type=_literal_type(vals, column.type)))
        if len(vals) != len(p.values):
            # x IN (..., NULL) is unknown, not false, when x is not found.
            r = pc.if_else(r, True, _NULL_BOOL)
        if column.null_count:
            r = pc.if_else(pc.is_valid(column), r, _NULL_BOOL)
        return r
    if isinstance(p, IsNull):
        return pc.is_valid(column) if p.negated else pc.is_null(column)
    if isinstance(p, StartsWith):
        return pc.starts_with(column, pattern=p.prefix)
    raise BadArgumentError(f"not a predicate: {p!r}")


def _decimal_places(v: decimal.Decimal) -> int:
    """Digits after the point of a finite decimal (0 for NaN and infinities)."""
    e = v.as_tuple().exponent
    return -e if isinstance(e, int) else 0


def _literal_type(vals: Sequence[Any], t: pa.DataType) -> pa.DataType:
    if pa.types.is_integer(t) and any(isinstance(v, float) for v in vals):
        return pa.float64()
    if pa.types.is_decimal(t):
        return pa.decimal128(38, max(t.scale, max((_decimal_places(v) for v in vals if isinstance(v, decimal.Decimal)), default=0)))
    return t


def _scalar(v: Any, t: pa.DataType) -> pa.Scalar:
    return pa.scalar(v, type=_literal_type([v], t))


def matches_row(p: Predicate, schema: pa.Schema, row: Sequence[Any]) -> bool:
    """Evaluate a bound predicate on one row (convenience; O(size))."""
    batch = pa.RecordBatch.from_arrays([pa.array([v], f.type) for v, f in zip(row, schema)], schema=schema)
    m = evaluate(p, batch)
    return bool(m[0].as_py())
