"""Compact rows: round trips for every type, NULLs, extremes, errors, hostile bytes."""

from __future__ import annotations

import datetime as dt
import decimal
import random
import struct
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from spark_ext.wire.errors import WireError
from spark_ext.wire.kinds import ErrorCode
from spark_ext.wire.rowcodec import RowCodec, codec_for, decode_rows, encode_rows

UTC = dt.timezone.utc
D = decimal.Decimal

EXTREMES: dict[str, list[Any]] = {
    "int8": [-128, -1, 0, 127],
    "int16": [-32768, 32767],
    "int32": [-(2**31), 2**31 - 1],
    "int64": [-(2**63), 0, 2**63 - 1],
    "float32": [0.0, -1.5, float("inf"), float("-inf"), 3.4028234663852886e38],
    "float64": [0.0, -0.0, 1e308, -5e-324, float("inf")],
    "bool": [True, False],
    "string": ["", "a", "h\u00e9llo \u65e5\u672c \U0001f600", "x" * 100_000],
    "binary": [b"", b"\x00\xff" * 10, bytes(range(256))],
    "date": [dt.date(1, 1, 1), dt.date(1969, 12, 31), dt.date(1970, 1, 1), dt.date(9999, 12, 31)],
    "timestamp_tz": [
        dt.datetime(1, 1, 1, tzinfo=UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        dt.datetime(2024, 2, 29, 12, 0, 0, 1, tzinfo=UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
    "timestamp_ntz": [dt.datetime(1, 1, 1), dt.datetime(1970, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999)],
    "decimal(38,0)": [D("99999999999999999999999999999999999999"), D("-99999999999999999999999999999999999999"), D("0")],
    "decimal(38,10)": [D("1234567890123456789012345678.0123456789"), D("-0.0000000001")],
    "decimal(10,2)": [D("0.00"), D("12.30"), D("-99999999.99")],
    "decimal(1,0)": [D("9"), D("-9")],
}


@pytest.mark.parametrize("type_", sorted(EXTREMES))
def test_round_trip_every_type_with_nulls(type_: str) -> None:
    schema = [("k", "int32"), ("v", type_), ("w", type_)]
    vals = EXTREMES[type_]
    rows: list[Any] = [(i, v, None if i % 2 else v) for i, v in enumerate(vals)]
    rows.append((None, None, None))
    back = decode_rows(schema, encode_rows(schema, rows))
    assert back == [tuple(r) for r in rows]
    for b, r in zip(back, rows):
        assert b is not None
        for x, y in zip(b, r):
            assert type(x) is type(y)
            if isinstance(x, D):
                assert x.as_tuple() == y.as_tuple()  # same digits and scale


def test_float32_rounds_like_ieee() -> None:
    (row,) = decode_rows([("f", "float32")], encode_rows([("f", "float32")], [(0.1,)]))
    assert row == (struct.unpack("<f", struct.pack("<f", 0.1))[0],)
    (nan,) = decode_rows([("f", "float64")], encode_rows([("f", "float64")], [(float("nan"),)]))
    assert nan is not None and nan[0] != nan[0]


def test_decimals_come_back_at_column_scale() -> None:
    s = [("d", "decimal(10,3)")]
    back = decode_rows(s, encode_rows(s, [(D("1.5"),), (7,), ("2.25",), (D("-0"),)]))
    assert [str(r[0]) for r in back if r] == ["1.500", "7.000", "2.250", "0.000"]


def test_timestamp_forms() -> None:
    s = [("t", "timestamp_tz"), ("n", "timestamp_ntz")]
    plus2 = dt.timezone(dt.timedelta(hours=2))
    rows = [(dt.datetime(2024, 1, 1, 2, 0, tzinfo=plus2), dt.datetime(2024, 1, 1, 2, 0))]
    ((t, n),) = [r for r in decode_rows(s, encode_rows(s, rows)) if r]
    assert t == dt.datetime(2024, 1, 1, 0, 0, tzinfo=UTC) and t.tzinfo is UTC
    assert n == dt.datetime(2024, 1, 1, 2, 0) and n.tzinfo is None
    # Naive into a zoned column reads as UTC (as Arrow and the engine do).
    ((t2,),) = [r for r in decode_rows(s[:1], encode_rows(s[:1], [(dt.datetime(2024, 1, 1),)])) if r]
    assert t2 == dt.datetime(2024, 1, 1, tzinfo=UTC)


def test_numpy_scalars_accepted() -> None:
    s = [("a", "int16"), ("b", "float32"), ("c", "bool")]
    back = decode_rows(s, encode_rows(s, [(np.int64(5), np.float64(1.5), np.bool_(True))]))
    assert back == [(5, 1.5, True)]


def test_exact_bytes_of_a_row() -> None:
    """The golden example printed in docs/protocol.md ("Compact rows")."""
    s = [("id", "int64"), ("name", "string"), ("price", "decimal(10,2)"), ("day", "date"), ("ok", "bool")]
    body = encode_rows(s, [(1, "ab", D("-1.50"), None, True)])
    assert body.hex(" ") == (
        "01 00 00 00"  # row count
        " 08"  # null bitmap: column 3 (day) is NULL
        " 01 00 00 00 00 00 00 00"  # id
        " 02 00 00 00 61 62"  # name
        " 6a ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff"  # price: unscaled -150
        " 01"  # ok
    )
    presence = encode_rows(s, [None, (2, None, None, dt.date(1970, 1, 2), False)], presence=True)
    assert presence.hex(" ") == (
        "02 00 00 00"
        " 00"  # missing row
        " 01 06"  # present; bitmap: name, price NULL
        " 02 00 00 00 00 00 00 00"
        " 01 00 00 00"  # day 1
        " 00"
    )


def test_presence_form() -> None:
    s = [("k", "int64"), ("v", "string")]
    rows = [(1, "a"), None, (3, None), None]
    body = encode_rows(s, rows, presence=True)
    assert decode_rows(s, body, presence=True) == rows
    with pytest.raises(WireError) as ei:
        encode_rows(s, rows)
    assert ei.value.code == ErrorCode.BAD_ARGUMENT


def test_many_columns_bitmap() -> None:
    s = [(f"c{i}", "int32") for i in range(17)]  # 3 bitmap bytes
    rnd = random.Random(3)
    rows = [tuple(None if rnd.random() < 0.3 else rnd.randrange(-1000, 1000) for _ in range(17)) for _ in range(200)]
    assert decode_rows(s, encode_rows(s, rows)) == rows


def test_empty_body() -> None:
    s = [("a", "int8")]
    assert encode_rows(s, []) == b"\x00\x00\x00\x00"
    assert decode_rows(s, b"\x00\x00\x00\x00") == []


def test_arrow_schema_and_cache() -> None:
    sch = pa.schema([("a", pa.int64()), ("b", pa.large_string()), ("c", pa.timestamp("us", tz="Europe/Paris"))])
    c = codec_for(sch)
    assert c.types == ["int64", "string", "timestamp_tz"]
    assert codec_for([("a", "bigint"), ("b", "string"), ("c", "timestamp")]) is c


# --- encode errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "type_,value,code",
    [
        ("int8", 300, ErrorCode.VALUE_OUT_OF_RANGE),
        ("int8", -129, ErrorCode.VALUE_OUT_OF_RANGE),
        ("int16", 40000, ErrorCode.VALUE_OUT_OF_RANGE),
        ("int32", 2**31, ErrorCode.VALUE_OUT_OF_RANGE),
        ("int64", 2**63, ErrorCode.VALUE_OUT_OF_RANGE),
        ("int64", 1.5, ErrorCode.TYPE_MISMATCH),
        ("int64", True, ErrorCode.TYPE_MISMATCH),
        ("int64", "1", ErrorCode.TYPE_MISMATCH),
        ("float32", 1e39, ErrorCode.VALUE_OUT_OF_RANGE),
        ("float64", "1.0", ErrorCode.TYPE_MISMATCH),
        ("float64", True, ErrorCode.TYPE_MISMATCH),
        ("bool", 1, ErrorCode.TYPE_MISMATCH),
        ("string", b"x", ErrorCode.TYPE_MISMATCH),
        ("string", "\ud800", ErrorCode.VALUE_OUT_OF_RANGE),
        ("binary", "x", ErrorCode.TYPE_MISMATCH),
        ("date", dt.datetime(2024, 1, 1), ErrorCode.TYPE_MISMATCH),
        ("date", 19000, ErrorCode.TYPE_MISMATCH),
        ("timestamp_tz", dt.date(2024, 1, 1), ErrorCode.TYPE_MISMATCH),
        ("timestamp_ntz", dt.datetime(2024, 1, 1, tzinfo=UTC), ErrorCode.TYPE_MISMATCH),
        ("decimal(5,2)", D("1234.5"), ErrorCode.VALUE_OUT_OF_RANGE),
        ("decimal(5,2)", D("1.234"), ErrorCode.VALUE_OUT_OF_RANGE),
        ("decimal(5,2)", D("NaN"), ErrorCode.VALUE_OUT_OF_RANGE),
        ("decimal(5,2)", D("Infinity"), ErrorCode.VALUE_OUT_OF_RANGE),
        ("decimal(5,2)", 1.5, ErrorCode.TYPE_MISMATCH),
        ("decimal(5,2)", "abc", ErrorCode.TYPE_MISMATCH),
        ("decimal(38,0)", D("1e38"), ErrorCode.VALUE_OUT_OF_RANGE),
    ],
)
def test_encode_errors_name_column_and_value(type_: str, value: Any, code: ErrorCode) -> None:
    s = [("id", "int64"), ("col_x", type_)]
    with pytest.raises(WireError) as ei:
        encode_rows(s, [(1, None), (2, value)])
    e = ei.value
    assert e.code == code
    assert e.details["column"] == "col_x" and e.details["row"] == 1
    assert e.details["value"] == repr(value)
    assert "col_x" in e.message and repr(value)[:50] in e.message


def test_int8_300_message() -> None:
    with pytest.raises(WireError) as ei:
        encode_rows([("tiny", "int8")], [(300,)])
    assert str(ei.value) == "VALUE_OUT_OF_RANGE: column 'tiny' (int8), row 0: value 300 is out of range for int8"


def test_wrong_row_length() -> None:
    with pytest.raises(WireError) as ei:
        encode_rows([("a", "int8"), ("b", "int8")], [(1,)])
    assert ei.value.code == ErrorCode.BAD_ARGUMENT


def test_unsupported_schema_types() -> None:
    with pytest.raises(WireError):
        RowCodec([("a", pa.list_(pa.int32()))])
    with pytest.raises(WireError):
        RowCodec([("a", pa.uint32())])
    with pytest.raises(WireError):
        RowCodec([("a", "decimal(39,0)")])
    with pytest.raises(WireError):
        RowCodec([])


# --- decode errors ------------------------------------------------------------------------

SCHEMA = [("id", "int64"), ("s", "string"), ("d", "decimal(5,2)"), ("b", "bool"), ("day", "date"), ("t", "timestamp_tz")]
GOOD = encode_rows(SCHEMA, [(1, "abc", D("1.00"), True, dt.date(2020, 1, 1), dt.datetime(2020, 1, 1, tzinfo=UTC)),
                            (2, None, None, None, None, None)])


def test_decode_truncated_everywhere() -> None:
    for n in range(len(GOOD)):
        with pytest.raises(WireError) as ei:
            decode_rows(SCHEMA, GOOD[:n])
        assert ei.value.code == ErrorCode.BAD_ARGUMENT


def test_decode_trailing_bytes() -> None:
    with pytest.raises(WireError) as ei:
        decode_rows(SCHEMA, GOOD + b"\x00")
    assert ei.value.code == ErrorCode.BAD_ARGUMENT


def test_decode_bad_values() -> None:
    s1 = [("b", "bool")]
    with pytest.raises(WireError) as ei:
        decode_rows(s1, b"\x01\x00\x00\x00\x00\x02")
    assert ei.value.code == ErrorCode.BAD_ARGUMENT and ei.value.details["column"] == "b"
    s2 = [("s", "string")]
    with pytest.raises(WireError) as ei:
        decode_rows(s2, b"\x01\x00\x00\x00\x00\x02\x00\x00\x00\xc3\x28")
    assert ei.value.code == ErrorCode.BAD_ARGUMENT
    s3 = [("d", "decimal(3,0)")]
    with pytest.raises(WireError) as ei:
        decode_rows(s3, b"\x01\x00\x00\x00\x00" + (1000).to_bytes(16, "little", signed=True))
    assert ei.value.code == ErrorCode.VALUE_OUT_OF_RANGE
    s4 = [("day", "date")]
    with pytest.raises(WireError) as ei:
        decode_rows(s4, b"\x01\x00\x00\x00\x00" + struct.pack("<i", 2**31 - 1))
    assert ei.value.code == ErrorCode.VALUE_OUT_OF_RANGE
    s5 = [("t", "timestamp_ntz")]
    with pytest.raises(WireError) as ei:
        decode_rows(s5, b"\x01\x00\x00\x00\x00" + struct.pack("<q", -(2**63)))
    assert ei.value.code == ErrorCode.VALUE_OUT_OF_RANGE


def test_decode_padding_bits_and_presence_byte() -> None:
    s = [("a", "int8")]
    with pytest.raises(WireError) as ei:
        decode_rows(s, b"\x01\x00\x00\x00\x03")  # bit 1 is padding
    assert ei.value.code == ErrorCode.BAD_ARGUMENT
    with pytest.raises(WireError) as ei:
        decode_rows(s, b"\x01\x00\x00\x00\x02\x00\x05", presence=True)
    assert ei.value.code == ErrorCode.BAD_ARGUMENT


def test_decode_huge_count_and_length_fail_fast() -> None:
    with pytest.raises(WireError):
        decode_rows([("s", "string")], b"\xff\xff\xff\xff\x00\xff\xff\xff\xff")
    with pytest.raises(WireError):
        decode_rows([("a", "int64")], b"\xff\xff\xff\xff" + bytes(9))


@pytest.mark.parametrize("seed", range(40))
def test_random_bytes_never_crash(seed: int) -> None:
    rnd = random.Random(seed)
    if seed % 2:
        data = bytearray(GOOD)
        for _ in range(rnd.randrange(1, 4)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
    else:
        data = bytearray(rnd.randrange(256) for _ in range(rnd.randrange(0, 200)))
    try:
        rows = decode_rows(SCHEMA, bytes(data), presence=bool(seed % 3 == 0))
        assert isinstance(rows, list)
    except WireError as e:
        assert e.code in (ErrorCode.BAD_ARGUMENT, ErrorCode.VALUE_OUT_OF_RANGE)


def test_decode_accepts_memoryview_and_bytearray() -> None:
    assert decode_rows(SCHEMA, memoryview(GOOD)) == decode_rows(SCHEMA, bytearray(GOOD)) == decode_rows(SCHEMA, GOOD)
