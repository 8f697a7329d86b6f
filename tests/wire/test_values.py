"""JSON literal forms and value conversions."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any

import pytest

from spark_ext.wire.errors import WireError
from spark_ext.wire.kinds import ErrorCode
from spark_ext.wire.values import (
    date_to_days,
    datetime_to_micros,
    days_to_date,
    decimal_to_unscaled,
    from_json,
    micros_to_datetime,
    to_json,
    unscaled_to_decimal,
)

UTC = dt.timezone.utc
D = decimal.Decimal

ROUND_TRIPS: list[tuple[str, Any, Any]] = [
    ("int8", -128, -128),
    ("int64", 2**63 - 1, 2**63 - 1),
    ("float64", 1.5, 1.5),
    ("float32", float("inf"), "Infinity"),
    ("float64", float("-inf"), "-Infinity"),
    ("bool", True, True),
    ("string", "h\u00e9", "h\u00e9"),
    ("binary", b"\x00\x01\x02\xff", "AAEC/w=="),
    ("date", dt.date(2024, 2, 29), "2024-02-29"),
    ("date", dt.date(1, 1, 1), "0001-01-01"),
    ("timestamp_tz", dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC), 1_000_000),
    ("timestamp_tz", dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), -1),
    ("timestamp_ntz", dt.datetime(2000, 1, 1), 946684800000000),
    ("decimal(10,2)", D("-12.50"), "-12.50"),
    ("decimal(38,0)", D("99999999999999999999999999999999999999"), "99999999999999999999999999999999999999"),
    ("decimal(38,38)", D("0.00000000000000000000000000000000000001"), "1E-38"),
]


@pytest.mark.parametrize("type_,value,literal", ROUND_TRIPS)
def test_json_literal_round_trip(type_: str, value: Any, literal: Any) -> None:
    assert to_json(type_, value) == literal
    back = from_json(type_, literal)
    assert back == value and type(back) is type(value)
    assert to_json(type_, None) is None and from_json(type_, None) is None


def test_nan_literal() -> None:
    assert to_json("float64", math.nan) == "NaN"
    assert math.isnan(from_json("float64", "NaN"))


def test_decimal_literal_forms() -> None:
    assert from_json("decimal(10,2)", "1.5") == D("1.50")
    assert str(from_json("decimal(10,2)", 7)) == "7.00"
    assert str(from_json("decimal(10,2)", "1E+2")) == "100.00"


@pytest.mark.parametrize(
    "type_,literal,code",
    [
        ("int8", 128, ErrorCode.VALUE_OUT_OF_RANGE),
        ("int8", 1.0, ErrorCode.BAD_ARGUMENT),
        ("int64", True, ErrorCode.BAD_ARGUMENT),
        ("int64", "1", ErrorCode.BAD_ARGUMENT),
        ("float64", "nan", ErrorCode.BAD_ARGUMENT),
        ("float64", True, ErrorCode.BAD_ARGUMENT),
        ("bool", 1, ErrorCode.BAD_ARGUMENT),
        ("string", 1, ErrorCode.BAD_ARGUMENT),
        ("binary", "not base64!", ErrorCode.BAD_ARGUMENT),
        ("binary", "AAE", ErrorCode.BAD_ARGUMENT),
        ("date", "2024-2-29", ErrorCode.BAD_ARGUMENT),
        ("date", "2023-02-29", ErrorCode.BAD_ARGUMENT),
        ("date", 19000, ErrorCode.BAD_ARGUMENT),
        ("timestamp_tz", "2024-01-01T00:00:00Z", ErrorCode.BAD_ARGUMENT),
        ("timestamp_tz", 2**62, ErrorCode.VALUE_OUT_OF_RANGE),
        ("decimal(5,2)", 1.5, ErrorCode.BAD_ARGUMENT),
        ("decimal(5,2)", "1.234", ErrorCode.VALUE_OUT_OF_RANGE),
        ("decimal(5,2)", "1234", ErrorCode.VALUE_OUT_OF_RANGE),
        ("decimal(5,2)", "x", ErrorCode.BAD_ARGUMENT),
        ("decimal(5,2)", "NaN", ErrorCode.VALUE_OUT_OF_RANGE),
    ],
)
def test_bad_literals(type_: str, literal: Any, code: ErrorCode) -> None:
    with pytest.raises(WireError) as ei:
        from_json(type_, literal)
    assert ei.value.code == code


def test_to_json_type_errors() -> None:
    for t, v in [("int8", 1.0), ("int8", 300), ("date", dt.datetime(2020, 1, 1)), ("string", b"x"), ("binary", "x"),
                 ("timestamp_ntz", dt.datetime(2020, 1, 1, tzinfo=UTC)), ("bool", 0), ("float64", "1")]:
        with pytest.raises(WireError):
            to_json(t, v)


def test_days_and_micros() -> None:
    assert date_to_days(dt.date(1970, 1, 2)) == 1
    assert date_to_days(dt.date(1969, 12, 31)) == -1
    assert days_to_date(-719162) == dt.date(1, 1, 1)
    with pytest.raises(WireError):
        days_to_date(-719163)
    plus1 = dt.timezone(dt.timedelta(hours=1))
    assert datetime_to_micros(dt.datetime(1970, 1, 1, 1, tzinfo=plus1), True) == 0
    assert datetime_to_micros(dt.datetime(1970, 1, 1), True) == 0  # naive read as UTC
    assert datetime_to_micros(dt.datetime(1970, 1, 1, 0, 0, 0, 1), False) == 1
    with pytest.raises(WireError):
        datetime_to_micros(dt.datetime(1970, 1, 1, tzinfo=UTC), False)
    assert micros_to_datetime(-1, False) == dt.datetime(1969, 12, 31, 23, 59, 59, 999999)
    with pytest.raises(WireError):
        micros_to_datetime(2**63 - 1, True)


def test_decimal_unscaled() -> None:
    assert decimal_to_unscaled(D("1.5"), 10, 2) == 150
    assert decimal_to_unscaled(D("-0.01"), 10, 2) == -1
    assert decimal_to_unscaled(D("1.230"), 10, 2) == 123
    assert decimal_to_unscaled(D("1E+3"), 10, 2) == 100000
    assert decimal_to_unscaled(-3, 10, 2) == -300
    big = D("12345678901234567890123456789.012345678")
    assert decimal_to_unscaled(big, 38, 9) == 12345678901234567890123456789012345678
    assert unscaled_to_decimal(12345678901234567890123456789012345678, 9) == big
    assert str(unscaled_to_decimal(0, 3)) == "0.000"
    with pytest.raises(WireError):
        decimal_to_unscaled(True, 10, 2)
