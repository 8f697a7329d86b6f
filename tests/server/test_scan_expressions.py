"""Arithmetic group keys and aggregate arguments of a SCAN (docs/protocol.md section 10.3).

The vectorized evaluation (numpy, spark_ext/server/scan_expressions.py) is checked against a
row-at-a-time model of Spark's ANSI arithmetic written here independently (Java's truncating
remainder, overflow checks per type, which operand Spark skips when the other is NULL), on
seeded random expressions and rows with NULLs, negatives and extreme values; then through a
real server: group keys computed per bucket, merged, against DuckDB; errors on the wire."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from spark_ext.exceptions import BadArgumentError, UnknownColumnError, ValueOutOfRangeError
from spark_ext.server import scan_expressions as sx
from tests.server.test_scan_aggregates import NB, T, bucket_rows, data, duck, rows_of, scan, server  # noqa: F401

COLS = {"b": "int8", "s": "int16", "i": "int32", "l": "int64", "f": "float32", "x": "float64"}
SCHEMA = pa.schema([(c, sx.NUMERIC[t]) for c, t in COLS.items()] + [("str", pa.string())])
RANGE = {t: (int(np.iinfo(t).min), int(np.iinfo(t).max)) for t in ("int8", "int16", "int32", "int64")}


def parse(raw: Any) -> sx.Expr:
    return sx.parse("t", SCHEMA, SCHEMA.names, raw, "test")


def col(c: str) -> list[Any]:
    return ["col", c]


def lit(v: Any, t: str) -> list[Any]:
    return ["lit", v, t]


def table(**cols: list[Any]) -> pa.Table:
    return pa.table({c: pa.array(v, SCHEMA.field(c).type) for c, v in cols.items()})


def ev(raw: Any, data: pa.Table) -> list[Any]:
    return sx.evaluate("t", parse(raw), data).to_pylist()


# --- the model: one row at a time, as Spark's generated code evaluates it ----------------


class SparkError(Exception):
    def __init__(self, cls: str) -> None:
        super().__init__(cls)
        self.cls = cls


def _fit(v: int, t: str, cls: str = "ARITHMETIC_OVERFLOW") -> int:
    lo, hi = RANGE[t]
    if not lo <= v <= hi:
        raise SparkError(cls)
    return v


def _round(v: float, t: str) -> float:
    return float(np.float32(v)) if t == "float32" else v


def _java_fmod(a: float, b: float) -> float:
    # Java's floating-point %: NaN for NaN operands or an infinite dividend, a for an infinite divisor.
    if math.isnan(a) or math.isnan(b) or math.isinf(a):
        return math.nan
    return a if math.isinf(b) else math.fmod(a, b)


def model(e: list[Any], row: dict[str, Any]) -> tuple[Any, str]:
    """(value, type) of an expression over one row; raises SparkError where Spark fails."""
    op = e[0]
    if op == "col":
        return row[e[1]], COLS[e[1]]
    if op == "lit":
        return _round(e[1], e[2]) if e[2].startswith("float") else e[1], e[2]
    if op in ("+", "-", "*"):
        a, t = model(e[1], row)
        if a is None:
            return None, t  # Spark does not evaluate the right operand
        b, _ = model(e[2], row)
        if b is None:
            return None, t
        if t.startswith("float"):
            with np.errstate(all="ignore"):
                fa, fb = (np.float32(a), np.float32(b)) if t == "float32" else (np.float64(a), np.float64(b))
                r = fa + fb if op == "+" else fa - fb if op == "-" else fa * fb
            return float(r), t
        return _fit(a + b if op == "+" else a - b if op == "-" else a * b, t), t
    if op in ("/", "%"):
        b, t = model(e[2], row)
        if b is None:
            return None, t  # the dividend is not evaluated
        a, _ = model(e[1], row)
        if a is None:
            return None, t
        if b == 0:
            raise SparkError("DIVIDE_BY_ZERO" if op == "/" else "REMAINDER_BY_ZERO")
        if op == "/":
            with np.errstate(all="ignore"):
                return float(np.float64(a) / np.float64(b)) if t == "float64" else float(np.float32(a) / np.float32(b)), t
        if t.startswith("float"):
            return _round(_java_fmod(a, b), t), t
        q = abs(a) // abs(b)  # Java: truncate toward zero, the sign of the dividend
        return a - b * (q if (a < 0) == (b < 0) else -q), t
    a, t = model(e[1], row)
    if op == "cast":
        if a is None:
            return None, e[2]
        if e[2].startswith("int"):
            return _fit(a, e[2], "CAST_OVERFLOW"), e[2]
        return _round(float(a), e[2]), e[2]
    if a is None:
        return None, t
    if t.startswith("float"):
        return (-a if op == "neg" else abs(a)), t
    return _fit(-a if op == "neg" else abs(a), t), t


def random_expr(r: random.Random, t: str, depth: int) -> list[Any]:
    """A well-typed random expression of type t."""
    if depth == 0 or r.random() < 0.25:
        cols = [c for c, ct in COLS.items() if ct == t]
        if cols and r.random() < 0.7:
            return col(r.choice(cols))
        if t.startswith("int"):
            lo, hi = RANGE[t]
            return lit(r.choice([0, 1, -1, 2, 3, -3, 7, 100, -100, lo, hi, r.randint(lo, hi)]), t)
        return lit(r.choice([0.0, 1.5, -2.0, 0.25, 3e38, -1e-30] if t == "float32" else [0.0, 1.5, -2.0, 1e300, -1e-300]), t)
    k = r.random()
    if k < 0.6:
        ops = ["+", "-", "*", "%"] + (["/"] if t.startswith("float") else [])
        return [r.choice(ops), random_expr(r, t, depth - 1), random_expr(r, t, depth - 1)]
    if k < 0.8:
        return [r.choice(["neg", "abs"]), random_expr(r, t, depth - 1)]
    src = r.choice([s for s in COLS.values() if sx._castable(sx.NUMERIC[s], sx.NUMERIC[t])])
    return ["cast", random_expr(r, src, depth - 1), t]


def random_rows(r: random.Random, n: int) -> pa.Table:
    def value(t: str) -> Any:
        if r.random() < 0.15:
            return None
        if t.startswith("int"):
            lo, hi = RANGE[t]
            return r.choice([0, 1, -1, 2, -7, 7, 100, lo, hi, lo + 1, hi - 1, r.randint(lo, hi), r.randint(max(lo, -1000), min(hi, 1000))])
        v = r.choice([0.0, -0.0, 1.5, -7.25, float("nan"), float("inf"), 3e38, r.uniform(-1e6, 1e6)])
        return float(np.float32(v)) if t == "float32" else v

    return table(**{c: [value(t) for _ in range(n)] for c, t in COLS.items()})


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("seed", range(12))
def test_random_expressions_match_the_row_model(seed: int) -> None:
    r = random.Random(seed)
    data = random_rows(r, 300)
    rows = data.to_pylist()
    for _ in range(40):
        t = r.choice(list(COLS.values()))
        e = random_expr(r, t, 3)
        want: list[Any] = []
        errors: set[str] = set()
        for row in rows:
            try:
                want.append(model(e, row)[0])
            except SparkError as err:
                errors.add(err.cls)
        if errors:
            with pytest.raises(ValueOutOfRangeError) as info:
                ev(e, data)
            assert info.value.details["spark_error"] in errors, (e, errors, info.value)
        else:
            got = ev(e, data)
            assert all(_same(g, w) for g, w in zip(got, want)), (e, [(g, w) for g, w in zip(got, want) if not _same(g, w)][:5])


def test_remainder_truncates_like_java() -> None:
    d = table(i=[-7, 7, -7, 7, -2**31, None, 0], l=[-7, 7, 2**63 - 1, -2**63, -2**63, 5, None])
    assert ev(["%", col("i"), lit(3, "int32")], d) == [-1, 1, -1, 1, -2, None, 0]
    assert ev(["%", col("i"), lit(-3, "int32")], d) == [-1, 1, -1, 1, -2, None, 0]
    assert ev(["%", col("i"), lit(-1, "int32")], d) == [0, 0, 0, 0, 0, None, 0]  # no trap on MIN % -1
    assert ev(["%", col("l"), lit(-1, "int64")], d) == [0, 0, 0, 0, 0, 0, None]
    assert ev(["%", col("l"), lit(100, "int64")], d) == [-7, 7, 7, -8, -8, 5, None]
    x = table(x=[-7.5, 7.5, float("inf"), 2.0, None, -0.0])
    got = ev(["%", col("x"), lit(2.0, "float64")], x)
    assert got[:2] == [-1.5, 1.5] and math.isnan(got[2]) and got[3:5] == [0.0, None]
    assert math.copysign(1, got[5]) == -1  # -0.0 % 2 = -0.0, as in Java


def test_results_keep_the_operand_type() -> None:
    d = table(b=[100, -100, None], i=[1, 2, 3], f=[1.5, 2.5, None])
    assert sx.evaluate("t", parse(["+", col("b"), lit(27, "int8")]), d).type == pa.int8()
    assert sx.evaluate("t", parse(["%", col("i"), lit(2, "int32")]), d).type == pa.int32()
    assert sx.evaluate("t", parse(["*", col("f"), lit(2.0, "float32")]), d).type == pa.float32()
    with pytest.raises(ValueOutOfRangeError, match=r"\(b \+ 28\) overflows int8 \(b = 100, 28 = 28\) "
                                                   r"\[ARITHMETIC_OVERFLOW\]"):
        ev(["+", col("b"), lit(28, "int8")], d)
    assert ev(["+", ["cast", col("b"), "int32"], lit(28, "int32")], d) == [128, -72, None]


@pytest.mark.parametrize("raw,error", [
    (["+", col("i"), lit(2**31 - 1, "int32")], "ARITHMETIC_OVERFLOW"),
    (["-", lit(-2**63, "int64"), col("l")], "ARITHMETIC_OVERFLOW"),
    (["*", col("l"), lit(2**40, "int64")], "ARITHMETIC_OVERFLOW"),
    (["*", lit(-1, "int64"), ["cast", col("i"), "int64"]], None),
    (["neg", col("s")], "ARITHMETIC_OVERFLOW"),
    (["abs", col("b")], "ARITHMETIC_OVERFLOW"),
    (["cast", col("l"), "int32"], "CAST_OVERFLOW"),
    (["%", col("i"), lit(0, "int32")], "REMAINDER_BY_ZERO"),
    (["/", col("x"), lit(-0.0, "float64")], "DIVIDE_BY_ZERO"),
    (["%", col("x"), lit(0.0, "float64")], "REMAINDER_BY_ZERO"),
])
def test_ansi_failures(raw, error) -> None:
    d = table(i=[5, 1], l=[2**40, -3], s=[-2**15, 1], b=[-128, 0], x=[1.0, float("nan")])
    if error is None:
        ev(raw, d)
        return
    with pytest.raises(ValueOutOfRangeError, match=error) as info:
        ev(raw, d)
    assert info.value.details == {"table": "t", "spark_error": error}
    assert "table 't'" in str(info.value)


def test_skipped_operands_do_not_fail() -> None:
    """Where Spark's code skips an operand (its sibling is NULL), an overflow there is no error."""
    d = table(i=[2**31 - 1, 3], s=[None, 1], x=[1.0, 2.0])
    over = ["+", col("i"), lit(1, "int32")]  # overflows in row 0 only
    n = ["cast", col("s"), "int32"]  # NULL in row 0
    assert ev(["+", n, over], d) == [None, 5]  # NULL + (overflow): the right side is not evaluated
    assert ev(["%", over, n], d) == [None, 0]  # (overflow) % NULL: the dividend is not evaluated
    with pytest.raises(ValueOutOfRangeError):
        ev(["+", over, n], d)  # the left side is always evaluated
    with pytest.raises(ValueOutOfRangeError):
        ev(["%", n, over], d)  # the divisor is always evaluated
    zero = table(i=[None, None], s=[0, 0])
    assert ev(["%", col("i"), ["cast", col("s"), "int32"]], zero) == [None, None]  # NULL % 0 is NULL


@pytest.mark.parametrize("raw,exc,msg", [
    (["^", col("i"), col("i")], BadArgumentError, "unknown operator '\\^'"),
    (["+", col("i"), col("l")], BadArgumentError, "different types \\(int32 and int64\\)"),
    (["/", col("i"), lit(2, "int32")], BadArgumentError, "floating-point division"),
    (["+", col("str"), col("str")], BadArgumentError, "column 'str' has type string"),
    (["+", col("nope"), col("i")], UnknownColumnError, "no column 'nope'"),
    (["+", col("b"), lit(300, "int8")], BadArgumentError, "literal 300 does not fit int8"),
    (["+", col("x"), lit("1", "float64")], BadArgumentError, "not a finite number"),
    (["+", col("f"), lit(1e300, "float32")], BadArgumentError, "does not fit float32"),
    # JSON integers of any size: past the double range, past float32's, and past int64 as int64
    (["+", col("x"), lit(10**400, "float64")], BadArgumentError, "literal 1000.* does not fit float64"),
    (["+", col("f"), lit(-(10**39), "float32")], BadArgumentError, "literal -1000.* does not fit float32"),
    (["+", col("l"), lit(2**63, "int64")], BadArgumentError, "literal 9223372036854775808 does not fit int64"),
    (["+", col("x"), lit(None, "float64")], BadArgumentError, "literal None is not a finite number"),
    (["cast", col("x"), "int32"], BadArgumentError, "cast from float64 to int32 is not supported"),
    (["cast", col("l"), "float32"], BadArgumentError, "cast from int64 to float32"),
    (["neg", col("i"), col("i")], BadArgumentError, "takes one operand"),
    ("i", BadArgumentError, "must be \\[op, ...\\]"),
])
def test_malformed_expressions_are_refused(raw, exc, msg) -> None:
    with pytest.raises(exc, match=msg):
        parse(raw)


def test_integer_literals_past_int64_typed_floating_point_are_their_values() -> None:
    """Spark types such a literal double; JSON carries it as an integer: it is converted, not
    handed to numpy as a Python int (whose isfinite raised TypeError past int64)."""
    d = table(x=[1.0, None], f=[0.5, 2.0])
    assert ev(["+", col("x"), lit(2**64, "float64")], d) == [float(2**64) + 1.0, None]
    assert ev(["*", col("x"), lit(-(2**63) - 1, "float64")], d) == [-(2.0**63), None]
    assert ev(["-", col("f"), lit(10**20, "float32")], d) == [float(np.float32(0.5) - np.float32(1e20))] * 2


def test_size_limits() -> None:
    deep: list[Any] = col("i")
    for _ in range(sx.MAX_DEPTH):
        deep = ["neg", deep]
    with pytest.raises(BadArgumentError, match="deeper than"):
        parse(deep)


# --- through a server ----------------------------------------------------------------------

K100 = ["%", ["col", "i"], ["lit", 100, "int32"]]
HALF = ["/", ["cast", ["col", "h"], "float64"], ["lit", 2.0, "float64"]]


def test_group_keys_per_bucket_merge_to_duckdb(server, data) -> None:  # noqa: F811
    _, conn = server
    aggs = [["count_star"], ["sum", ["*", ["col", "x"], ["lit", 2.0, "float64"]]], ["min", "l"],
            ["max", ["-", ["cast", ["col", "i8"], "int32"], ["col", "i"]]], ["count", K100]]
    parts = []
    for b in range(NB):
        got, meta = scan(conn, {"table": T, "buckets": [b], "group_by": [K100, "g", HALF], "aggregates": aggs})
        assert got.column_names == ["group0", "g", "group2", "agg0", "agg1", "agg2", "agg3", "agg4"]
        assert got.schema.field("group0").type == pa.int32() and got.schema.field("group2").type == pa.float64()
        assert meta["rows_examined"] == bucket_rows(conn, b).num_rows
        parts.append(got)
    import duckdb

    con = duckdb.connect()
    con.register("p", pa.concat_tables(parts))
    merged = rows_of(con.execute("SELECT group0, g, group2, sum(agg0), sum(agg1), min(agg2), max(agg3), sum(agg4) "
                                 "FROM p GROUP BY ALL").fetchall())
    # DuckDB's integer % truncates like Java's; h / 2.0 is double division in both.
    want = duck(data, "SELECT i % 100, g, h / 2.0, count(*), sum(x * 2.0), min(l), max(i8 - i), count(i % 100) "
                      "FROM t GROUP BY ALL")
    assert merged == want
    assert any(r[0] is not None and r[0] < 0 for r in merged)  # negative keys were there


def test_errors_reach_the_client(server) -> None:  # noqa: F811
    _, conn = server
    with pytest.raises(ValueOutOfRangeError, match=r"table 'db.facts': \(i % 0\) divides by zero .*REMAINDER_BY_ZERO"):
        scan(conn, {"table": T, "group_by": [["%", ["col", "i"], ["lit", 0, "int32"]]], "aggregates": [["count_star"]]})
    with pytest.raises(BadArgumentError, match="holds expression .* twice"):
        scan(conn, {"table": T, "group_by": [K100, K100], "aggregates": []})
    with pytest.raises(BadArgumentError, match="column 'g' has type string"):
        scan(conn, {"table": T, "aggregates": [["sum", ["+", ["col", "g"], ["col", "g"]]]]})
    # a literal of no type's range: BAD_ARGUMENT naming it (it was INTERNAL, with a traceback)
    with pytest.raises(BadArgumentError, match=r"table 'db.facts': .*literal 1000000000.* does not fit float64"):
        scan(conn, {"table": T, "aggregates": [["sum", ["+", ["col", "x"], ["lit", 10**400, "float64"]]]]})
    # an empty scan evaluates nothing, so nothing fails
    got, _ = scan(conn, {"table": "db.empty", "group_by": [["%", ["col", "i"], ["lit", 0, "int32"]]],
                         "aggregates": [["count_star"]]})
    assert got.num_rows == 0


def test_values_under_nulls_are_ignored() -> None:
    """Arrow leaves the data under a NULL arbitrary: an overflowing or zero value there must not fail."""
    values = np.array([2**31 - 1, 0, 5, -2**31], dtype=np.int32)
    valid = np.packbits(np.array([False, False, True, False]), bitorder="little")
    k = pa.Array.from_buffers(pa.int32(), 4, [pa.py_buffer(valid), pa.py_buffer(values)])
    d = pa.table({"i": k})
    assert ev(["+", col("i"), lit(1, "int32")], d) == [None, None, 6, None]
    assert ev(["%", lit(10, "int32"), col("i")], d) == [None, None, 0, None]
    assert ev(["neg", col("i")], d) == [None, None, -5, None]
    sliced = pa.table({"i": k.slice(1, 3)})  # an offset into the buffers
    assert ev(["*", col("i"), lit(3, "int32")], sliced) == [None, 15, None]
