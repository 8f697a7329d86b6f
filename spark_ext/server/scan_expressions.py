"""Arithmetic expressions in a SCAN's ``group_by`` and ``aggregates`` (docs/protocol.md section 10.3).

Spark hands a data source the group keys and aggregate arguments it pushes down as V2
expressions; the Java bridge translates the arithmetic ones into the JSON form parsed here
(``["%", ["col", "k"], ["lit", 100, "int32"]]``), and the server evaluates them on the
scanned Arrow columns with numpy, vectorized, before grouping.

Spark translates ``+ - * / %`` for push-down only when they run in ANSI mode (its
``V2ExpressionBuilder``), so the semantics implemented are Spark's ANSI ones, exactly:

- both operands of a binary operator have the same type (Spark inserts the casts), and so
  has the result: ``int % int`` is int, ``tinyint + tinyint`` is tinyint;
- integer ``+ - *``, unary minus, ``abs`` and narrowing casts that leave their type fail
  (ARITHMETIC_OVERFLOW / CAST_OVERFLOW); floating-point arithmetic is IEEE 754;
- ``%`` truncates like Java (the result has the sign of the dividend: ``-7 % 3 = -1``;
  numpy's ``%`` floors, so ``fmod`` is used), and ``x % -1 = 0`` even for the smallest
  integer; ``/`` is only defined for floating-point operands here (Spark's ``/`` is double
  or decimal division);
- a zero divisor fails (DIVIDE_BY_ZERO / REMAINDER_BY_ZERO), also for doubles;
- NULL in, NULL out; and, as in Spark's generated code, an operand that is not needed is
  not evaluated, so it cannot fail: for ``a + b`` (``-``, ``*``) ``b`` is evaluated only
  where ``a`` is not NULL; for ``a / b`` (``%``) ``a`` only where ``b`` is not NULL, and a
  zero ``b`` fails only where ``a`` is not NULL (``NULL % 0`` is NULL).

Failures raise :class:`ValueOutOfRangeError` (wire code VALUE_OUT_OF_RANGE) whose message
names the table, the expression, the operand values and Spark's error class, and whose
details carry ``spark_error``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from spark_ext.exceptions import BadArgumentError, UnknownColumnError, ValueOutOfRangeError

#: Numeric store types an expression can compute in, with their Arrow types.
NUMERIC: dict[str, pa.DataType] = {
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "float32": pa.float32(), "float64": pa.float64(),
}
_STORE_NAME = {v: k for k, v in NUMERIC.items()}
BINARY = ("+", "-", "*", "/", "%")
UNARY = ("neg", "abs")
#: Senders keep expressions at most this deep and this large (nodes).
MAX_DEPTH = 64
MAX_NODES = 1000


@dataclass(frozen=True)
class Expr:
    """A checked expression node.

    Attributes:
        op: ``col``, ``lit``, one of :data:`BINARY`, ``neg``, ``abs`` or ``cast``.
        type: the Arrow type of the result (one of :data:`NUMERIC`'s values).
        args: the operands.
        value: the column name (``col``) or the Python value (``lit``).
    """

    op: str
    type: pa.DataType
    args: tuple["Expr", ...] = ()
    value: Any = None

    def columns(self) -> list[str]:
        """The columns read, each once, in first-use order. O(nodes)."""
        out: list[str] = []
        stack = [self]
        while stack:
            e = stack.pop()
            if e.op == "col" and e.value not in out:
                out.append(e.value)
            stack.extend(reversed(e.args))
        return out

    def sql(self) -> str:
        """A readable form for messages, e.g. ``(k % 100)``. O(nodes)."""
        if self.op == "col":
            return str(self.value)
        if self.op == "lit":
            return repr(self.value)
        if self.op == "cast":
            return f"CAST({self.args[0].sql()} AS {_STORE_NAME[self.type]})"
        if self.op == "neg":
            return f"(- {self.args[0].sql()})"
        if self.op == "abs":
            return f"abs({self.args[0].sql()})"
        return f"({self.args[0].sql()} {self.op} {self.args[1].sql()})"


def is_expression(raw: Any) -> bool:
    """Whether a ``group_by`` entry or aggregate argument is an expression (a JSON array)."""
    return isinstance(raw, list)


def parse(table: str, schema: pa.Schema, column_names: Any, raw: Any, where: str) -> Expr:
    """Check an expression's JSON against the table's columns. O(nodes).

    Args:
        table: the table name, for messages.
        schema: the storage types of the table's columns.
        column_names: the columns an expression may read.
        raw: the JSON form.
        where: what holds the expression, for messages (``"group_by entry 0"``).

    Raises:
        BadArgumentError: a malformed node, an unknown operator, operand types that differ,
            a non-numeric column, ``/`` of integers, an unsupported cast, a literal that
            does not fit its type, or an expression beyond the size limits.
        UnknownColumnError: a column the table does not have.
    """
    nodes = [0]

    def bad(msg: str) -> BadArgumentError:
        return BadArgumentError(f"table {table!r}: {where}: {msg}", table=table)

    def node(r: Any, depth: int) -> Expr:
        nodes[0] += 1
        if depth > MAX_DEPTH or nodes[0] > MAX_NODES:
            raise bad(f"expression deeper than {MAX_DEPTH} or larger than {MAX_NODES} nodes")
        if not isinstance(r, list) or not r or not isinstance(r[0], str):
            raise bad(f"an expression node must be [op, ...], got {_show(r)}")
        op, args = r[0], r[1:]
        if op == "col":
            if len(args) != 1 or not isinstance(args[0], str):
                raise bad(f"expected [\"col\", name], got {_show(r)}")
            name = args[0]
            if name not in column_names:
                raise UnknownColumnError(
                    f"table {table!r} has no column {name!r} ({where}; columns: {', '.join(column_names)})",
                    table=table, column=name)
            t = schema.field(name).type
            if t not in _STORE_NAME:
                raise bad(f"column {name!r} has type {t}: arithmetic needs an integer or floating-point column")
            return Expr("col", t, value=name)
        if op == "lit":
            if len(args) != 2 or args[1] not in NUMERIC:
                raise bad(f"expected [\"lit\", value, type] with type in {', '.join(NUMERIC)}, got {_show(r)}")
            return Expr("lit", NUMERIC[args[1]], value=_literal(args[0], args[1], bad))
        if op in BINARY:
            if len(args) != 2:
                raise bad(f"{op!r} takes two operands, got {_show(r)}")
            a, b = node(args[0], depth + 1), node(args[1], depth + 1)
            if a.type != b.type:
                raise bad(f"the operands of {op!r} have different types ({_STORE_NAME[a.type]} and "
                          f"{_STORE_NAME[b.type]}): cast one of them")
            if op == "/" and not pa.types.is_floating(a.type):
                raise bad(f"'/' is floating-point division: cast its {_STORE_NAME[a.type]} operands to float64")
            return Expr(op, a.type, (a, b))
        if op in UNARY:
            if len(args) != 1:
                raise bad(f"{op!r} takes one operand, got {_show(r)}")
            a = node(args[0], depth + 1)
            return Expr(op, a.type, (a,))
        if op == "cast":
            if len(args) != 2 or args[1] not in NUMERIC:
                raise bad(f"expected [\"cast\", expr, type] with type in {', '.join(NUMERIC)}, got {_show(r)}")
            a = node(args[0], depth + 1)
            to = NUMERIC[args[1]]
            if not _castable(a.type, to):
                raise bad(f"cast from {_STORE_NAME[a.type]} to {args[1]} is not supported "
                          "(integer to integer or floating point, float32 to float64)")
            return Expr("cast", to, (a,))
        raise bad(f"unknown operator {op!r} (supported: col, lit, {', '.join(BINARY)}, neg, abs, cast)")

    return node(raw, 1)


def _show(v: Any, limit: int = 80) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + "..."


def _castable(src: pa.DataType, to: pa.DataType) -> bool:
    if pa.types.is_integer(src):
        # int64 -> float32 could round twice through numpy; Spark hands it rarely: refused.
        return not (src == pa.int64() and to == pa.float32())
    return to == src or (src == pa.float32() and to == pa.float64())


def _literal(v: Any, type_name: str, bad: Callable[[str], BadArgumentError]) -> Any:
    if type_name.startswith("int"):
        if not isinstance(v, int) or isinstance(v, bool):
            raise bad(f"literal {_show(v)} is not an integer ({type_name})")
        info = np.iinfo(type_name)
        if not info.min <= v <= info.max:
            raise bad(f"literal {v} does not fit {type_name}")
        return v
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise bad(f"literal {_show(v)} is not a finite number ({type_name})")
    # JSON integers have no size limit: one past int64 makes numpy's isfinite raise
    # TypeError, one past the double range makes float() raise OverflowError.
    try:
        d = float(v)
    except (OverflowError, TypeError):
        raise bad(f"literal {_show(v)} does not fit {type_name}") from None
    if not math.isfinite(d):
        raise bad(f"literal {_show(v)} is not a finite number ({type_name})")
    if type_name == "float32":
        with np.errstate(all="ignore"):
            f = np.float32(d)
        if not np.isfinite(f):
            raise bad(f"literal {_show(v)} does not fit float32")
        return float(f)
    return d


# --- evaluation ------------------------------------------------------------------------

#: Values and validity of a node: validity None means every row is valid.
_Vals = tuple[np.ndarray, "np.ndarray | None"]


def evaluate(table: str, expr: Expr, data: pa.Table) -> pa.Array:
    """The values of ``expr`` over the rows of ``data`` (which holds its columns). O(rows * nodes).

    Raises:
        ValueOutOfRangeError: an overflow or a zero divisor in a row Spark would evaluate.
    """
    ev = _Evaluator(table, data)
    values, valid = ev.eval(expr, None)
    values = np.ascontiguousarray(values, dtype=expr.type.to_pandas_dtype())
    if valid is None:
        return pa.array(values, type=expr.type)  # zero-copy
    # An Arrow validity bitmap straight from the booleans: far cheaper than pa.array(mask=).
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(expr.type, len(values), [bitmap, pa.py_buffer(values)])


def _and(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


class _Evaluator:
    """Evaluates nodes over one table; ``live`` marks the rows where Spark evaluates a node."""

    def __init__(self, table: str, data: pa.Table) -> None:
        self.table = table
        self.data = data
        self.n = data.num_rows
        self._cols: dict[str, _Vals] = {}

    def eval(self, e: Expr, live: np.ndarray | None) -> _Vals:
        if e.op == "col":
            return self._column(e.value)
        if e.op == "lit":
            return np.full(self.n, e.value, dtype=e.type.to_pandas_dtype()), None
        if e.op in ("+", "-", "*"):
            lv, lval = self.eval(e.args[0], live)
            rv, rval = self.eval(e.args[1], _and(live, lval))  # Spark skips b where a is NULL
            valid = _and(lval, rval)
            return self._arith(e, lv, rv, _and(live, valid)), valid
        if e.op in ("/", "%"):
            rv, rval = self.eval(e.args[1], live)  # Spark evaluates the divisor first
            lv, lval = self.eval(e.args[0], _and(live, rval))
            valid = _and(lval, rval)
            return self._divide(e, lv, rv, _and(live, valid)), valid
        v, valid = self.eval(e.args[0], live)
        checked = _and(live, valid)
        if e.op == "cast":
            return self._cast(e, v, checked), valid
        return self._unary(e, v, checked), valid

    def _column(self, name: str) -> _Vals:
        got = self._cols.get(name)
        if got is None:
            arr = self.data.column(name).combine_chunks()
            if arr.null_count:
                # The data buffer as is (zero-copy; fill_null would copy, 15x slower): its
                # values under NULLs are arbitrary, and harmless, since every check and
                # result is masked by the validity.
                valid = arr.is_valid().to_numpy(zero_copy_only=False)
                dtype = np.dtype(arr.type.to_pandas_dtype())
                values = np.frombuffer(arr.buffers()[1], dtype=dtype, count=arr.offset + len(arr))[arr.offset:]
            else:
                valid = None
                values = arr.to_numpy(zero_copy_only=False)
            got = (values, valid)
            self._cols[name] = got
        return got

    def _fail(self, e: Expr, bad: np.ndarray, checked: np.ndarray | None, spark_error: str, what: str,
              operands: tuple[np.ndarray, ...]) -> None:
        """Raise when a row Spark evaluates is bad; ``bad`` may be True in rows it skips."""
        hit = bad if checked is None else bad & checked
        if not hit.any():
            return
        i = int(np.argmax(hit))
        vals = ", ".join(f"{a.sql()} = {_py(o[i])}" for a, o in zip(e.args, operands))
        raise ValueOutOfRangeError(
            f"table {self.table!r}: {e.sql()} {what} ({vals}) [{spark_error}]",
            table=self.table, spark_error=spark_error)

    def _arith(self, e: Expr, lv: np.ndarray, rv: np.ndarray, checked: np.ndarray | None) -> np.ndarray:
        t = e.type
        with np.errstate(all="ignore"):
            if pa.types.is_floating(t):
                return {"+": np.add, "-": np.subtract, "*": np.multiply}[e.op](lv, rv)
            if t != pa.int64():
                # Exact in int64 for every narrower type; then a range check.
                wide = {"+": np.add, "-": np.subtract, "*": np.multiply}[e.op](lv.astype(np.int64), rv.astype(np.int64))
                info = np.iinfo(lv.dtype)
                self._fail(e, (wide < info.min) | (wide > info.max), checked, "ARITHMETIC_OVERFLOW",
                           f"overflows {_STORE_NAME[t]}", (lv, rv))
                return wide.astype(lv.dtype)
            # int64 wraps in numpy: detect the wrap from the signs (+, -) or by dividing back (*).
            if e.op == "+":
                out = lv + rv
                bad = ((lv ^ out) & (rv ^ out)) < 0
            elif e.op == "-":
                out = lv - rv
                bad = ((lv ^ rv) & (lv ^ out)) < 0
            else:
                out = lv * rv
                safe = np.where(lv == 0, 1, lv)
                bad = (lv != 0) & ((out // safe != rv) | ((lv == -1) & (rv == np.iinfo(np.int64).min)))
            self._fail(e, bad, checked, "ARITHMETIC_OVERFLOW", "overflows int64", (lv, rv))
            return out

    def _divide(self, e: Expr, lv: np.ndarray, rv: np.ndarray, checked: np.ndarray | None) -> np.ndarray:
        zero = rv == 0  # -0.0 too, as in Spark
        error = "DIVIDE_BY_ZERO" if e.op == "/" else "REMAINDER_BY_ZERO"
        self._fail(e, zero, checked, error, "divides by zero", (lv, rv))
        with np.errstate(all="ignore"):
            if e.op == "/":
                return lv / rv
            if pa.types.is_floating(e.type):
                return np.fmod(lv, rv)  # C fmod = Java's floating-point %
            # Java's integer % truncates (fmod's sign rule); x % -1 is 0 (also for the
            # smallest value, where C's % may trap), as is x % 1: divide those by 1.
            safe = np.where(zero | (rv == -1), 1, rv).astype(rv.dtype)
            return np.fmod(lv, safe)

    def _unary(self, e: Expr, v: np.ndarray, checked: np.ndarray | None) -> np.ndarray:
        with np.errstate(all="ignore"):
            if pa.types.is_integer(e.type):
                self._fail(e, v == np.iinfo(v.dtype).min, checked, "ARITHMETIC_OVERFLOW",
                           f"overflows {_STORE_NAME[e.type]}", (v,))
            return np.negative(v) if e.op == "neg" else np.abs(v)

    def _cast(self, e: Expr, v: np.ndarray, checked: np.ndarray | None) -> np.ndarray:
        to = e.type.to_pandas_dtype()
        if pa.types.is_integer(e.type):
            info = np.iinfo(to)
            src = np.iinfo(v.dtype)
            if src.min < info.min or src.max > info.max:
                self._fail(e, (v < info.min) | (v > info.max), checked, "CAST_OVERFLOW",
                           f"does not fit {_STORE_NAME[e.type]}", (v,))
        with np.errstate(all="ignore"):
            return v.astype(to)


def _py(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
