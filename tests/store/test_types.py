"""Every column type: values round-trip through point reads and scans, before and after
compaction; every keyable type works as a key; bad values and bad definitions are
refused with the specific error, naming the table, column and value, changing nothing."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from spark_ext.exceptions import (
    BadArgumentError,
    DuplicateKeyError,
    NoSuchTableError,
    NotNullViolationError,
    NullKeyError,
    SchemaError,
    TableExistsError,
    TypeMismatchError,
    UnknownColumnError,
    ValueOutOfRangeError,
)
from spark_ext.store import Store, col
from spark_ext.store.types import arrow_type, type_name
from tests.store.unit_helpers import assert_refused, contents, rows

D = decimal.Decimal
UTC = dt.timezone.utc
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))

ALL_COLUMNS = [
    ("id", "int64"),
    ("i8", "int8"),
    ("i16", "int16"),
    ("i32", "int32"),
    ("i64", "int64"),
    ("f32", "float32"),
    ("f64", "float64"),
    ("d38", "decimal(38,10)"),
    ("d5", "decimal(5,2)"),
    ("s", "string"),
    ("b", "binary"),
    ("ok", "bool"),
    ("dt", "date"),
    ("tz", "timestamp_tz"),
    ("ntz", "timestamp_ntz"),
]
NAMES = [n for n, _ in ALL_COLUMNS]
F32_MAX = 3.4028234663852886e38
D38_MAX = D("9" * 28 + "." + "9" * 10)
D38_MIN = D("-" + "9" * 28 + "." + "9" * 10)  # (unary minus would round to 28 digits)

# Values as given, and the engine value expected back (differences noted).
ROWS_IN: list[tuple[Any, ...]] = [
    (1, -128, -32768, -(2**31), -(2**63), -F32_MAX, -1.7976931348623157e308, D38_MIN, D("-999.99"),
     "", b"", False, dt.date(1, 1, 1), dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(1, 1, 1)),
    (2, 127, 32767, 2**31 - 1, 2**63 - 1, F32_MAX, 1.7976931348623157e308, D38_MAX, D("999.99"),
     "héllo wörld ✓ 日本語 😀", bytes(range(256)), True, dt.date(9999, 12, 31),
     dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), dt.datetime(9999, 12, 31, 23, 59, 59, 999999)),
    (3, 0, -1, 1, 0, 0.5, -0.0, D("0.0000000001"), D("-0.01"), "a", b"\x00",
     True, dt.date(1970, 1, 1), dt.datetime(2024, 2, 29, 12, 0, 0, 123456, tzinfo=IST),
     dt.datetime(2024, 2, 29, 12, 0, 0, 123456)),
    (4, None, None, None, None, None, None, None, None, None, None, None, None, None, None),
    # Values that change form: float32 rounding, decimal quantization, plain int decimal.
    (5, 5, 5, 5, 5, 0.1, 0.1, 7, D("1.5"), "x" * 1000, b"\xff" * 3, False, dt.date(2000, 2, 29),
     dt.datetime(2000, 1, 1), dt.datetime(1969, 12, 31, 23, 59, 59, 999999)),
]
EXPECTED: list[tuple[Any, ...]] = [
    ROWS_IN[0], ROWS_IN[1],
    ROWS_IN[2][:13] + (dt.datetime(2024, 2, 29, 6, 30, 0, 123456, tzinfo=UTC),) + ROWS_IN[2][14:],
    ROWS_IN[3],
    (5, 5, 5, 5, 5, float(np.float32(0.1)), 0.1, D("7.0000000000"), D("1.50"), "x" * 1000, b"\xff" * 3, False,
     dt.date(2000, 2, 29), dt.datetime(2000, 1, 1, tzinfo=UTC), dt.datetime(1969, 12, 31, 23, 59, 59, 999999)),
]


def _all_types_table(store: Store, name: str = "ty", buckets: int = 4):
    return store.create_table(name, ALL_COLUMNS, primary_key="id", num_buckets=buckets)


def _same_value(a: Any, b: Any) -> bool:
    if type(a) is not type(b) and not (isinstance(a, dt.datetime) and isinstance(b, dt.datetime)):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, float) and a == 0.0:
        return b == 0.0 and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dt.datetime):
        # Same instant and same kind (aware with offset 0 / naive).
        return a == b and (a.utcoffset() == b.utcoffset())
    if isinstance(a, D):
        return a == b and a.as_tuple().exponent == b.as_tuple().exponent
    return a == b


def _assert_rows_equal(got: tuple[Any, ...] | None, want: tuple[Any, ...]) -> None:
    assert got is not None
    assert len(got) == len(want)
    for name, g, w in zip(NAMES, got, want):
        assert _same_value(g, w), f"column {name}: got {g!r}, want {w!r}"


def _scan_as_py(t, key: int) -> tuple[Any, ...]:
    tbl = t.scan(where=col("id") == key).to_table()
    assert tbl.num_rows == 1
    return tuple(tbl.column(i)[0].as_py() for i in range(tbl.num_columns))


def _scan_full_as_py(t) -> dict[int, tuple[Any, ...]]:
    tbl = t.scan().to_table()
    out = {}
    for r in zip(*[c.to_pylist() for c in tbl.columns]):
        out[r[0]] = r
    return out


def _check_reads(t) -> None:
    full = _scan_full_as_py(t)
    assert sorted(full) == [r[0] for r in EXPECTED]
    for want in EXPECTED:
        got = t.get(want[0])
        _assert_rows_equal(got, want)
        # get() gives exactly what Arrow's as_py gives for the stored row.
        _assert_rows_equal(_scan_as_py(t, want[0]), got)
        _assert_rows_equal(full[want[0]], got)
    many = t.get_many([r[0] for r in EXPECTED] + [999])
    assert many[-1] is None
    for got, want in zip(many, EXPECTED):
        _assert_rows_equal(got, want)


def test_every_type_round_trips_in_delta_and_base(store: Store) -> None:
    t = _all_types_table(store)
    assert t.insert(ROWS_IN) == len(ROWS_IN)
    _check_reads(t)  # delta rows
    assert t.compact() > 0
    assert all(not b.delta for b in t.buckets)
    _check_reads(t)  # base rows
    t._check()


def test_arrow_schema_of_scans_is_the_declared_one(store: Store) -> None:
    t = _all_types_table(store)
    t.insert(ROWS_IN)
    sch = t.scan().schema
    assert sch.names == NAMES
    assert [type_name(f.type) for f in sch] == [tn for _, tn in ALL_COLUMNS]
    assert sch.field("id").nullable is False
    assert all(sch.field(n).nullable for n in NAMES[1:])
    assert t.scan().to_table().schema == sch


@pytest.mark.parametrize("n", [3, 300], ids=["small", "bulk"])
def test_every_type_from_arrow(store: Store, n: int) -> None:
    """Arrow input of every type, on the point path (few rows) and the bulk path."""
    t = _all_types_table(store)
    src = pa.table(
        {name: pa.array([r[i] for r in ROWS_IN[:4]], type=t.schema.arrow_schema.field(name).type)
         for i, name in enumerate(NAMES)}
    )
    # Repeat the 4 rows with new keys to reach n rows.
    reps = [src.set_column(0, "id", pa.array(src.column("id").to_numpy() + 10 * j, pa.int64())) for j in range(-(-n // 4))]
    data = pa.concat_tables(reps).slice(0, n)
    assert t.insert(data) == n
    assert t.count() == n
    loaded = set(data.column("id").to_pylist())
    checked = 0
    for j in range(-(-n // 4)):
        for want in EXPECTED[:4]:
            k = want[0] + 10 * j
            if k in loaded:
                _assert_rows_equal(t.get(k), (k,) + want[1:])
                checked += 1
    assert checked == n
    before = contents(t)
    t.compact()
    assert contents(t) == before
    _assert_rows_equal(t.get(2), EXPECTED[1])


def test_pandas_input_of_every_type(store: Store) -> None:
    t = _all_types_table(store)
    df = pd.DataFrame({
        "id": [1, 2],
        "i8": pd.array([-128, None], dtype="Int8"),
        "i16": pd.array([32767, None], dtype="Int16"),
        "i32": pd.array([7, None], dtype="Int32"),
        "i64": pd.array([2**63 - 1, None], dtype="Int64"),
        "f32": np.array([0.25, np.nan], dtype=np.float32),
        "f64": [1.5, None],
        "d38": [D("1.5"), None],
        "d5": [D("-3.25"), None],
        "s": ["ü", None],
        "b": [b"\x01", None],
        "ok": pd.array([True, None], dtype="boolean"),
        "dt": [dt.date(2020, 5, 17), None],
        "tz": pd.to_datetime(["2020-05-17T10:00:00Z", None], utc=True),
        "ntz": pd.to_datetime(["2020-05-17T10:00:00", None]),
    })
    assert t.insert(df) == 2
    got = t.get(1)
    assert got == (1, -128, 32767, 7, 2**63 - 1, 0.25, 1.5, D("1.5"), D("-3.25"), "ü", b"\x01", True,
                   dt.date(2020, 5, 17), dt.datetime(2020, 5, 17, 10, tzinfo=UTC), dt.datetime(2020, 5, 17, 10))
    # pandas missing values (None, NaN, NaT, pd.NA) become SQL NULLs, as Arrow reads them.
    assert t.get(2) == (2,) + (None,) * 14


def test_nan_and_infinities_in_float_columns(store: Store) -> None:
    t = store.create_table("fl", [("id", "int32"), ("f", "float32"), ("g", "float64")], primary_key="id")
    t.insert([(1, float("nan"), float("-inf")), (2, float("inf"), float("nan"))])
    for phase in ("delta", "base"):
        r1, r2 = t.get(1), t.get(2)
        assert math.isnan(r1[1]) and r1[2] == float("-inf"), phase
        assert r2[1] == float("inf") and math.isnan(r2[2]), phase
        t.compact()


def test_nulls_in_every_non_key_column_via_each_input_form(store: Store) -> None:
    t = _all_types_table(store)
    t.insert({"id": 1})  # missing columns are NULL
    t.insert((2,) + (None,) * 14)
    t.insert([[3] + [None] * 14])
    t.insert(pa.table({"id": pa.array([4], pa.int64())}))
    t.insert(pa.table({"id": pa.array(range(100, 300), pa.int64())}))  # bulk, all NULL
    for k in (1, 2, 3, 4, 100, 299):
        assert t.get(k) == (k,) + (None,) * 14
    t.compact()
    for k in (1, 2, 3, 4, 100, 299):
        assert t.get(k) == (k,) + (None,) * 14
    assert rows(t, columns=["s"], where=col("s").is_null()) == [(None,)] * 204


# --- keys of every keyable type -------------------------------------------------------------

KEY_CASES: dict[str, tuple[list[tuple[str, str]], list[Any]]] = {
    "int8": ([("k", "int8")], [-128, -1, 0, 1, 127]),
    "int16": ([("k", "int16")], [-32768, 0, 32767, 5, -5]),
    "int32": ([("k", "int32")], [-(2**31), 0, 2**31 - 1, 42, -42]),
    "int64": ([("k", "int64")], [-(2**63), 0, 2**63 - 1, 10**12, -7]),
    "string": ([("k", "string")], ["", "a", "é", "日本", "a" * 300]),
    "binary": ([("k", "binary")], [b"", b"\x00", b"\xff\xfe", b"abc", b"\x00\x00"]),
    "decimal": ([("k", "decimal(10,2)")], [D("-12345678.90"), D("0.00"), D("0.01"), D("99999999.99"), D("5.50")]),
    "date": ([("k", "date")], [dt.date(1, 1, 1), dt.date(1970, 1, 1), dt.date(1969, 12, 31), dt.date(9999, 12, 31), dt.date(2024, 2, 29)]),
    "timestamp_tz": ([("k", "timestamp_tz")], [
        dt.datetime(1970, 1, 1, tzinfo=UTC), dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        dt.datetime(2024, 1, 1, 12, tzinfo=UTC), dt.datetime(2024, 1, 1, 12, 0, 0, 1, tzinfo=UTC),
        dt.datetime(3000, 6, 1, tzinfo=UTC)]),
    "timestamp_ntz": ([("k", "timestamp_ntz")], [
        dt.datetime(1970, 1, 1), dt.datetime(1, 1, 1), dt.datetime(2024, 1, 1, 12),
        dt.datetime(2024, 1, 1, 12, 0, 0, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999)]),
    "composite2": ([("a", "string"), ("k2", "int32")], [("x", 1), ("x", 2), ("y", 1), ("", 0), ("é", -1)]),
    "composite3": ([("d", "date"), ("n", "int64"), ("s", "string")], [
        (dt.date(2020, 1, 1), 1, "a"), (dt.date(2020, 1, 1), 1, "b"), (dt.date(2020, 1, 1), 2, "a"),
        (dt.date(2021, 1, 1), 1, "a"), (dt.date(1999, 1, 1), -1, "")]),
}


def _key_row(kcols: list[tuple[str, str]], key: Any, v: str) -> tuple[Any, ...]:
    return (tuple(key) if len(kcols) > 1 else (key,)) + (v,)


@pytest.mark.parametrize("case", list(KEY_CASES))
def test_keys_of_every_keyable_type(store: Store, case: str) -> None:
    kcols, keys = KEY_CASES[case]
    names = [n for n, _ in kcols]
    t = store.create_table("k_" + case, kcols + [("v", "string")], primary_key=names, num_buckets=3)
    assert t.insert([_key_row(kcols, k, f"v{i}") for i, k in enumerate(keys)]) == len(keys)
    for phase in ("delta", "base"):
        for i, k in enumerate(keys):
            assert t.get(k) == _key_row(kcols, k, f"v{i}"), (phase, k)
        assert t.get_many(list(reversed(keys))) == [_key_row(kcols, k, f"v{i}") for i, k in reversed(list(enumerate(keys)))]
        # Primary-key equality scan examines one key.
        kpred = None
        for n, v in zip(names, keys[2] if len(names) > 1 else (keys[2],)):
            kpred = (col(n) == v) if kpred is None else (kpred & (col(n) == v))
        s = t.scan(where=kpred)
        assert s.access_path == "primary_key"
        assert rows(t, where=kpred) == [_key_row(kcols, keys[2], "v2")]
        assert s.count() == 1 and s.rows_examined == 1
        # Duplicate key against existing rows, point path.
        assert_refused(t, lambda: t.insert(_key_row(kcols, keys[0], "dup")), DuplicateKeyError, repr(t.name))
        t.compact()
    # Update, delete, re-insert.
    assert t.update(keys[1], {"v": "changed"}) is True
    assert t.get(keys[1])[-1] == "changed"
    assert t.delete(keys[0]) == 1
    assert t.get(keys[0]) is None
    assert t.insert(_key_row(kcols, keys[0], "again")) == 1
    assert t.get(keys[0])[-1] == "again"
    # Every key lives in the bucket its hash names.
    for k in keys:
        b = t.schema.bucket_of_key(t.schema.coerce_key(k))
        assert t.scan(buckets=[b], where=None).count() >= 1
        assert t.buckets[b].get(t.schema.coerce_key(k)) is not None
    t._check()


@pytest.mark.parametrize("case", list(KEY_CASES))
def test_bulk_keys_of_every_keyable_type(store: Store, case: str) -> None:
    """A >=128-row Arrow insert with keys of each type, then point reads."""
    kcols, _ = KEY_CASES[case]
    names = [n for n, _ in kcols]
    t = store.create_table("kb_" + case, kcols + [("v", "int64")], primary_key=names, num_buckets=4)
    n = 200
    gen = {
        "int8": lambda i: i - 100, "int16": lambda i: i * 100 - 10000, "int32": lambda i: i * 7919,
        "int64": lambda i: i * 10**15, "string": lambda i: f"s{i:04d}é", "binary": lambda i: i.to_bytes(2, "big"),
        "date": lambda i: dt.date(2000, 1, 1) + dt.timedelta(days=i),
        "timestamp_tz": lambda i: dt.datetime(2000, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=i, microseconds=i),
        "timestamp_ntz": lambda i: dt.datetime(2000, 1, 1) + dt.timedelta(minutes=i),
        "decimal(10,2)": lambda i: D(i) / 4 - 10,
    }
    cols: dict[str, list[Any]] = {}
    for j, (cn, tn) in enumerate(kcols):
        # For composite keys only the last component is unique; the others repeat.
        last = j == len(kcols) - 1
        cols[cn] = [gen[tn](i if last else i % 3) for i in range(n)]
    cols["v"] = list(range(n))
    arrow_types = {cn: arrow_type(tn) for cn, tn in kcols}
    arrow_types["v"] = pa.int64()
    data = pa.table({c: pa.array(v, arrow_types[c]) for c, v in cols.items()})
    assert t.insert(data) == n
    assert t.count() == n
    for phase in ("delta", "base"):
        for i in (0, 1, 77, n - 1):
            key = tuple(cols[c][i] for c in names) if len(names) > 1 else cols[names[0]][i]
            got = t.get(key)
            assert got is not None and got[-1] == i, (phase, i)
        t.compact()
    # Duplicate against existing rows, bulk path: whole batch refused.
    again = data.slice(n - 150, 150).set_column(len(names), "v", pa.array([-1] * 150, pa.int64()))
    assert_refused(t, lambda: t.insert(again), DuplicateKeyError, repr(t.name))
    t._check()


# --- bad values -------------------------------------------------------------------------------

BAD_VALUES = [
    ("i8", 300, ValueOutOfRangeError),
    ("i8", -129, ValueOutOfRangeError),
    ("i16", 40000, ValueOutOfRangeError),
    ("i32", 2**31, ValueOutOfRangeError),
    ("i64", 2**63, ValueOutOfRangeError),
    ("i64", -(2**63) - 1, ValueOutOfRangeError),
    ("i32", "7", TypeMismatchError),
    ("i32", 7.0, TypeMismatchError),
    ("i8", True, TypeMismatchError),
    ("f32", 1e300, ValueOutOfRangeError),
    ("f64", "1.5", TypeMismatchError),
    ("f64", D("1.5"), TypeMismatchError),
    ("d5", D("123456789.01"), ValueOutOfRangeError),  # 11 digits into decimal(5,2)
    ("d5", D("1000.00"), ValueOutOfRangeError),
    ("d5", D("1.001"), ValueOutOfRangeError),  # too many fractional digits
    ("d5", D("NaN"), ValueOutOfRangeError),
    ("d5", 1.5, TypeMismatchError),
    ("d5", "abc", TypeMismatchError),
    ("d38", D("1E+30"), ValueOutOfRangeError),
    ("s", 5, TypeMismatchError),
    ("s", b"bytes", TypeMismatchError),
    ("b", "text", TypeMismatchError),
    ("ok", 1, TypeMismatchError),
    ("ok", "true", TypeMismatchError),
    ("dt", dt.datetime(2020, 1, 1), TypeMismatchError),
    ("dt", "2020-01-01", TypeMismatchError),
    ("tz", dt.date(2020, 1, 1), TypeMismatchError),
    ("tz", 1234567, TypeMismatchError),
    ("ntz", dt.datetime(2020, 1, 1, tzinfo=UTC), TypeMismatchError),
]


def _filled(store: Store):
    t = _all_types_table(store)
    t.insert(ROWS_IN)
    t.compact()
    t.insert({"id": 10, "s": "delta row"})
    return t


@pytest.mark.parametrize("column,value,exc", BAD_VALUES, ids=[f"{c}-{v!r}" for c, v, _ in BAD_VALUES])
def test_bad_values_are_refused_everywhere(store: Store, column: str, value: Any, exc: type) -> None:
    t = _filled(store)
    mention = [repr(t.name), repr(column), repr(value)]
    assert_refused(t, lambda: t.insert({"id": 11, column: value}), exc, *mention)
    # A good row before the bad one in the same call is not kept either.
    assert_refused(t, lambda: t.insert([{"id": 12}, {"id": 13, column: value}]), exc, *mention)
    assert_refused(t, lambda: t.upsert({"id": 1, column: value}), exc, *mention)
    assert_refused(t, lambda: t.update(2, {column: value}), exc, *mention)
    assert_refused(t, lambda: t.update_many([1, 2, 10], {column: value}), exc, *mention)
    assert_refused(t, lambda: t.update_where(col("id") >= 1, {column: value}), exc, *mention)
    tup = [None] * len(NAMES)
    tup[0], tup[NAMES.index(column)] = 14, value
    assert_refused(t, lambda: t.insert(tuple(tup)), exc, *mention)


ARROW_BAD = [
    # column, Arrow array builder (n rows, bad at the end), expected error, value mentioned
    ("i8", lambda n: pa.array([1] * (n - 1) + [300], pa.int64()), ValueOutOfRangeError, "300"),
    ("i16", lambda n: pa.array([1] * (n - 1) + [-40000], pa.int32()), ValueOutOfRangeError, "-40000"),
    ("i32", lambda n: pa.array([1.0] * n, pa.float64()), TypeMismatchError, None),
    ("d5", lambda n: pa.array([D("1.00")] * (n - 1) + [D("123456789.01")], pa.decimal128(12, 2)),
     ValueOutOfRangeError, "123456789.01"),
    ("d5", lambda n: pa.array([D("1.000")] * (n - 1) + [D("1.005")], pa.decimal128(5, 3)),
     ValueOutOfRangeError, "1.005"),
    ("f32", lambda n: pa.array([1.0] * (n - 1) + [1e300], pa.float64()), ValueOutOfRangeError, "1e+300"),
    ("s", lambda n: pa.array(list(range(n)), pa.int64()), TypeMismatchError, None),
    ("b", lambda n: pa.array(["x"] * n, pa.string()), TypeMismatchError, None),
    ("ok", lambda n: pa.array([1] * n, pa.int8()), TypeMismatchError, None),
    ("dt", lambda n: pa.array([dt.datetime(2020, 1, 1)] * n, pa.timestamp("us")), TypeMismatchError, None),
    ("tz", lambda n: pa.array([dt.datetime(2020, 1, 1)] * n, pa.timestamp("us")), TypeMismatchError, None),
    ("ntz", lambda n: pa.array([dt.datetime(2020, 1, 1)] * n, pa.timestamp("us", tz="UTC")), TypeMismatchError, None),
    ("ntz", lambda n: pa.array([1] * (n - 1) + [1001], pa.timestamp("ns")), ValueOutOfRangeError, None),
]


@pytest.mark.parametrize("n", [2, 200], ids=["small", "bulk"])
@pytest.mark.parametrize("column,make,exc,value", ARROW_BAD, ids=[f"{a[0]}-{i}" for i, a in enumerate(ARROW_BAD)])
def test_bad_arrow_input_is_refused(store: Store, n: int, column: str, make: Any, exc: type, value: str | None) -> None:
    t = _filled(store)
    data = pa.table({"id": pa.array(range(1000, 1000 + n), pa.int64()), column: make(n)})
    mention = [repr(t.name), repr(column)] + ([value] if value else [])
    assert_refused(t, lambda: t.insert(data), exc, *mention)
    assert_refused(t, lambda: t.upsert(pa.RecordBatch.from_pydict(data.to_pydict(), schema=data.schema)), exc, *mention)


def test_null_keys_are_refused(store: Store) -> None:
    t = _filled(store)
    for bad in ({"id": None, "s": "x"}, {"s": "no key"}, (None,) + (None,) * 14):
        assert_refused(t, lambda: t.insert(bad), NullKeyError, repr(t.name), "'id'")
        assert_refused(t, lambda: t.upsert(bad), NullKeyError, repr(t.name), "'id'")
    assert_refused(t, lambda: t.update(1, {"id": None}), NullKeyError, repr(t.name), "'id'")
    assert_refused(t, lambda: t.get(None), NullKeyError, "'id'")
    assert_refused(t, lambda: t.delete([1, None]), NullKeyError, "'id'")
    for n in (2, 200):
        ids = pa.array([5000 + i if i != n - 1 else None for i in range(n)], pa.int64())
        assert_refused(t, lambda: t.insert(pa.table({"id": ids})), NullKeyError, repr(t.name), "'id'")
        assert_refused(t, lambda: t.insert(pa.table({"s": pa.array(["x"] * n)})), NullKeyError, "'id'")
    c = store.create_table("comp", [("a", "string"), ("b", "int32"), ("v", "int32")], primary_key=["a", "b"])
    c.insert(("x", 1, 1))
    assert_refused(c, lambda: c.insert(("x", None, 2)), NullKeyError, "'comp'", "'b'")
    assert_refused(c, lambda: c.insert({"b": 1}), NullKeyError, "'comp'", "'a'")
    assert_refused(c, lambda: c.get(("x", None)), NullKeyError, "'b'")
    assert_refused(c, lambda: c.get("x"), TypeMismatchError, "'comp'")


def test_bad_key_values_on_reads(store: Store) -> None:
    t = _filled(store)
    assert_refused(t, lambda: t.get("1"), TypeMismatchError, "'id'", "'1'")
    assert_refused(t, lambda: t.get(2**64), ValueOutOfRangeError, "'id'")
    assert_refused(t, lambda: t.get_many([1, "x"]), TypeMismatchError, "'id'")


def test_not_null_columns(store: Store) -> None:
    schema = pa.schema([pa.field("id", pa.int32()), pa.field("req", pa.string(), nullable=False), pa.field("o", pa.int8())])
    t = store.create_table("nn", schema, primary_key="id")
    t.insert({"id": 1, "req": "x"})
    assert_refused(t, lambda: t.insert({"id": 2}), NotNullViolationError, "'nn'", "'req'")
    assert_refused(t, lambda: t.insert({"id": 2, "req": None}), NotNullViolationError, "'nn'", "'req'")
    assert_refused(t, lambda: t.update(1, {"req": None}), NotNullViolationError, "'req'")
    for n in (2, 200):
        data = pa.table({"id": pa.array(range(10, 10 + n), pa.int32()), "req": pa.array(["a"] * (n - 1) + [None])})
        assert_refused(t, lambda: t.insert(data), NotNullViolationError, "'nn'", "'req'")
        assert_refused(t, lambda: t.insert(pa.table({"id": pa.array(range(10, 10 + n), pa.int32())})),
                       NotNullViolationError, "'req'")
    assert t.get(1) == (1, "x", None)


def test_unknown_columns_are_refused(store: Store) -> None:
    t = _filled(store)
    assert_refused(t, lambda: t.insert({"id": 20, "nope": 1}), UnknownColumnError, "'ty'", "'nope'")
    assert_refused(t, lambda: t.upsert([{"id": 1}, {"id": 21, "nope": 1}]), UnknownColumnError, "'nope'")
    assert_refused(t, lambda: t.update(1, {"nope": 1}), UnknownColumnError, "'ty'", "'nope'")
    assert_refused(t, lambda: t.insert({"id": 20, "_rowid": 1}), UnknownColumnError, "'_rowid'")
    for n in (2, 200):
        data = pa.table({"id": pa.array(range(30, 30 + n), pa.int64()), "nope": pa.array([1] * n)})
        assert_refused(t, lambda: t.insert(data), UnknownColumnError, "'ty'", "'nope'")
    assert_refused(t, lambda: t.insert(pd.DataFrame({"id": [40], "zz": [1]})), UnknownColumnError, "'zz'")
    assert_refused(t, lambda: t.scan(columns=["id", "nope"]), UnknownColumnError, "'ty'", "'nope'")
    assert_refused(t, lambda: t.scan(where=col("nope") == 1), UnknownColumnError, "'nope'")
    # A tuple of the wrong width.
    assert_refused(t, lambda: t.insert((50, 1)), TypeMismatchError, "'ty'", "15 columns")
    assert_refused(t, lambda: t.insert(42), BadArgumentError, "'ty'")
    assert_refused(t, lambda: t.insert([42]), BadArgumentError, "'ty'")


# --- definitions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ftype", ["float32", "float64", "double", "real"])
def test_float_key_columns_are_refused(store: Store, ftype: str) -> None:
    with pytest.raises(SchemaError) as ei:
        store.create_table("fk", [("x", ftype), ("v", "int32")], primary_key="x")
    assert "'fk'" in str(ei.value) and "'x'" in str(ei.value)
    with pytest.raises(SchemaError):
        store.create_table("fk2", [("a", "int32"), ("x", ftype)], primary_key=["a", "x"])
    assert "fk" not in store.tables and "fk2" not in store.tables


@pytest.mark.parametrize(
    "nested",
    [pa.list_(pa.int32()), pa.struct([("a", pa.int32())]), pa.map_(pa.string(), pa.int32()),
     pa.large_list(pa.string()), pa.dictionary(pa.int32(), pa.string())],
    ids=["list", "struct", "map", "large_list", "dictionary"],
)
def test_nested_and_unsupported_types_are_refused_at_create(store: Store, nested: pa.DataType) -> None:
    with pytest.raises(SchemaError) as ei:
        store.create_table("nest", pa.schema([("id", pa.int32()), ("c", nested)]), primary_key="id")
    assert "'nest'" in str(ei.value) and "'c'" in str(ei.value)
    with pytest.raises(SchemaError):
        store.create_table("nest2", [("id", "int32"), ("c", nested)], primary_key="id")
    assert store.tables == {}


def test_other_bad_definitions(store: Store) -> None:
    bad: list[tuple[dict[str, Any], type, str]] = [
        (dict(schema=[("id", "int32"), ("c", "array<int>")]), BadArgumentError, "array<int>"),
        (dict(schema=[("id", "int32"), ("c", "decimal(39,2)")]), BadArgumentError, "decimal(39,2)"),
        (dict(schema=pa.schema([("id", pa.int32()), ("c", pa.decimal256(40, 2))])), SchemaError, "'c'"),
        (dict(schema=[("id", "int32"), ("ID", "int32")]), SchemaError, "ID"),
        (dict(schema=[("id", "int32"), ("_rowid", "int64")]), SchemaError, "_rowid"),
        (dict(schema=[("id", "int32")], primary_key="nope"), UnknownColumnError, "'nope'"),
        (dict(schema=[("id", "int32")], primary_key=["id", "id"]), SchemaError, "repeats"),
        (dict(schema=[("id", "int32")], num_buckets=0), SchemaError, "num_buckets"),
        (dict(schema=[("id", "int32")], num_buckets=5000), SchemaError, "num_buckets"),
        (dict(schema=[]), SchemaError, "no columns"),
        (dict(schema=[("id", "int32")], options={"memory_limit_bytes": "lots"}), SchemaError, "memory_limit_bytes"),
    ]
    for kwargs, exc, mention in bad:
        with pytest.raises(exc) as ei:
            store.create_table("bad", **{"primary_key": "id", **kwargs})
        assert mention in str(ei.value), (kwargs, str(ei.value))
        assert "bad" not in store.tables
    with pytest.raises(SchemaError):
        store.create_table("", [("id", "int32")])


def test_type_names_and_aliases(store: Store) -> None:
    aliases = {"bigint": pa.int64(), "int": pa.int32(), "smallint": pa.int16(), "tinyint": pa.int8(),
               "double": pa.float64(), "float": pa.float32(), "boolean": pa.bool_(), "varchar": pa.string(),
               "timestamp": pa.timestamp("us", tz="UTC"), "timestamp_ntz": pa.timestamp("us"),
               "Decimal( 7 , 3 )": pa.decimal128(7, 3), "date": pa.date32(), "bytes": pa.binary()}
    for name, want in aliases.items():
        assert arrow_type(name) == want
    # Arrow types are normalized: large types to plain ones, timestamps to microseconds.
    t = store.create_table("norm", pa.schema([("id", pa.int64()), ("s", pa.large_string()), ("b", pa.large_binary()),
                                              ("ts", pa.timestamp("ns", tz="Europe/Paris")), ("n", pa.timestamp("s"))]),
                           primary_key="id")
    assert t.schema.arrow_schema.types == [pa.int64(), pa.string(), pa.binary(), pa.timestamp("us", tz="UTC"),
                                           pa.timestamp("us")]
    t.insert(pa.table({"id": [1], "s": pa.array(["x"], pa.large_string()),
                       "n": pa.array([dt.datetime(2020, 1, 1, 0, 0, 1)], pa.timestamp("s"))}))
    assert t.get(1) == (1, "x", None, None, dt.datetime(2020, 1, 1, 0, 0, 1))


def test_table_catalog_operations(store: Store) -> None:
    t = store.create_table("a.t", [("id", "int32")], primary_key="id")
    assert store.table("a.t") is t
    with pytest.raises(TableExistsError) as ei:
        store.create_table("a.t", [("id", "int64")], primary_key="id")
    assert "'a.t'" in str(ei.value)
    assert store.create_table("a.t", [("id", "int64")], primary_key="id", if_not_exists=True) is t
    assert t.schema.arrow_schema.types == [pa.int32()]
    with pytest.raises(NoSuchTableError) as ei2:
        store.table("a.nope")
    assert "'a.nope'" in str(ei2.value)
    t.insert([(1,), (2,)])
    assert store.drop_table("a.t") is True
    with pytest.raises(NoSuchTableError):
        t.insert((3,))
    with pytest.raises(NoSuchTableError):
        t.scan()
    assert store.drop_table("a.t", if_exists=True) is False
    with pytest.raises(NoSuchTableError):
        store.drop_table("a.t")
    t2 = store.create_table("a.t", [("id", "int32")], primary_key="id")
    assert t2.count() == 0 and t2.get(1) is None


def test_key_columns_are_not_null_whatever_the_input_says(store: Store) -> None:
    schema = pa.schema([pa.field("id", pa.int32(), nullable=True), pa.field("v", pa.int32(), nullable=False)])
    t = store.create_table("kn", schema, primary_key="id")
    assert t.schema.arrow_schema.field("id").nullable is False
    assert t.schema.arrow_schema.field("v").nullable is False


def test_hidden_rowid_table_types_and_reads(store: Store) -> None:
    t = store.create_table("h", ALL_COLUMNS[1:], num_buckets=3)
    assert t.schema.hidden_rowid and t.schema.key_columns == ["_rowid"]
    t.insert([r[1:] for r in ROWS_IN])
    ids = rows(t, columns=["_rowid"])
    assert ids == [(i,) for i in range(1, 6)]
    for phase in ("delta", "base"):
        for i, want in enumerate(EXPECTED, start=1):
            got = t.get(i)
            assert got is not None and len(got) == 14, phase
            _assert_rows_equal((want[0],) + got, want)
        t.compact()
    # Scans do not show _rowid unless asked for.
    assert t.scan().schema.names == NAMES[1:]
    assert t.scan(columns=["_rowid", "s"]).schema.names == ["_rowid", "s"]


@pytest.mark.parametrize("buckets", [1, 3])
def test_sliced_arrow_input_reads_back_exactly(store: Store, buckets: int) -> None:
    """Arrow input that is a slice (non-zero offsets, validity bitmaps mid-byte) of a
    larger table: every value reads back as Arrow's as_py of the input."""
    t = _all_types_table(store, "sl", buckets)
    src_rows = [(i,) + ROWS_IN[i % 4][1:] for i in range(1000)]
    src = pa.Table.from_pylist([dict(zip(NAMES, r)) for r in src_rows], schema=t.schema.arrow_schema)
    part = src.slice(37, 300)
    assert t.insert(part) == 300
    want = {r[0]: r for r in zip(*[c.to_pylist() for c in part.columns])}
    for phase in ("base", "compacted"):
        for k in (37, 38, 39, 40, 41, 200, 336):
            _assert_rows_equal(t.get(k), want[k])
        assert t.get(36) is None and t.get(337) is None
        t.compact()


@pytest.mark.parametrize("typ", ["double", "float"])
def test_an_integer_beyond_any_double_is_refused_naming_the_column(typ: str) -> None:
    s = Store(background=False)
    t = s.create_table("t", [("id", "int64"), ("x", typ)], "id")
    t.upsert((1, 1.5))
    with pytest.raises(ValueOutOfRangeError, match="column 'x'"):
        t.upsert((2, 10**400))
    with pytest.raises(BadArgumentError, match="column 'x'"):
        t.scan(where=col("x") > 10**400).to_table()
    assert t.count() == 1 and t.get(1) == (1, 1.5)
