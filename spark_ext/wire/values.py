"""Value forms: Python values, their integer wire forms, and their JSON literal forms.

Python value forms (what the codecs accept and return; they match the engine's):
``int`` (integer types), ``float``, ``bool``, ``str``, ``bytes``, ``decimal.Decimal``,
``datetime.date``, ``datetime.datetime`` (aware, UTC, for ``timestamp_tz``; naive for
``timestamp_ntz``).

Integer wire forms (compact rows; the key hash takes the same): dates are days since
1970-01-01, timestamps microseconds since 1970-01-01T00:00:00 (UTC for
``timestamp_tz``, the wall clock for ``timestamp_ntz``), decimals their unscaled integer
at the column's scale. The epochs and integer ranges are the engine's
(``spark_ext.store.types``).

JSON literal forms (spec: "JSON literals"): integers and floats as JSON numbers (floats
may also be ``"NaN"``, ``"Infinity"``, ``"-Infinity"``), booleans as ``true``/``false``,
strings as strings, binary as standard base64, decimals as strings (``"-12.50"``;
integers allowed), dates as ``"YYYY-MM-DD"``, timestamps as integer microseconds.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import decimal
import math
from typing import Any, Final

import numpy as np
import pyarrow as pa

from spark_ext.store.types import _INT_RANGES as INT_RANGES
from spark_ext.store.types import EPOCH_NAIVE, EPOCH_ORDINAL, EPOCH_UTC, ONE_MICRO
from spark_ext.wire.errors import WireError
from spark_ext.wire.kinds import ErrorCode
from spark_ext.wire.types import FLOAT_TYPES, canonical, decimal_params

#: Enough digits for any decimal(38, s) arithmetic to be exact (the default context
#: rounds at 28 digits, which would silently corrupt wide decimals).
DECIMAL_CONTEXT: Final = decimal.Context(prec=80, Emax=999999, Emin=-999999)


def _mismatch(value: Any, expected: str) -> WireError:
    return WireError(
        ErrorCode.TYPE_MISMATCH,
        f"value {value!r} of type {type(value).__name__} is not a {expected}",
        {"value": _show(value)},
    )


def _range(value: Any, expected: str) -> WireError:
    return WireError(
        ErrorCode.VALUE_OUT_OF_RANGE, f"value {value!r} is out of range for {expected}", {"value": _show(value)}
    )


def _show(value: Any, limit: int = 100) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[:limit] + "..."


# --- dates and timestamps -------------------------------------------------------------


def date_to_days(d: _dt.date) -> int:
    """Days since 1970-01-01. O(1)."""
    return d.toordinal() - EPOCH_ORDINAL


def days_to_date(days: int) -> _dt.date:
    """Inverse of :func:`date_to_days`. O(1).

    Raises:
        WireError: VALUE_OUT_OF_RANGE outside years 1..9999 (Python's date range).
    """
    try:
        return _dt.date.fromordinal(days + EPOCH_ORDINAL)
    except (ValueError, OverflowError):
        raise _range(days, "date (days since 1970-01-01, years 1..9999)") from None


def datetime_to_micros(v: _dt.datetime, with_tz: bool) -> int:
    """Microseconds since the epoch of a timestamp value. O(1).

    For ``timestamp_tz`` (``with_tz``) an aware datetime is converted to UTC and a naive
    one is read as UTC (as Arrow and the engine do); for ``timestamp_ntz`` only naive
    datetimes are accepted (an aware one has no single wall-clock reading).

    Raises:
        WireError: TYPE_MISMATCH.
    """
    if with_tz:
        if v.tzinfo is None:
            return (v - EPOCH_NAIVE) // ONE_MICRO
        return (v - EPOCH_UTC) // ONE_MICRO
    if v.tzinfo is not None:
        raise _mismatch(v, "timestamp_ntz (got an aware datetime; timestamp_ntz takes a naive one)")
    return (v - EPOCH_NAIVE) // ONE_MICRO


def micros_to_datetime(micros: int, with_tz: bool) -> _dt.datetime:
    """Inverse of :func:`datetime_to_micros` (aware UTC or naive). O(1).

    Raises:
        WireError: VALUE_OUT_OF_RANGE outside years 1..9999.
    """
    try:
        return (EPOCH_UTC if with_tz else EPOCH_NAIVE) + _dt.timedelta(microseconds=micros)
    except OverflowError:
        raise _range(micros, "timestamp (microseconds since the epoch, years 1..9999)") from None


# --- decimals -------------------------------------------------------------------------


def decimal_to_unscaled(v: Any, precision: int, scale: int) -> int:
    """The unscaled integer of a decimal value at a column's precision and scale. O(p).

    Accepts ``Decimal``, ``int`` (not bool) and ``str``. The value must be exact at the
    scale: ``1.5`` fits ``decimal(10,2)`` (as 150), ``1.234`` does not. Rounding is the
    sender's business, so a store never changes a value silently.

    Raises:
        WireError: TYPE_MISMATCH for other types or unparsable strings;
            VALUE_OUT_OF_RANGE for too many digits, NaN or infinities.
    """
    expected = f"decimal({precision},{scale})"
    if isinstance(v, decimal.Decimal):
        d = v
    elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        u: int = int(v) * 10**scale
        if -(10**precision) < u < 10**precision:
            return u
        raise _range(v, expected)
    elif isinstance(v, str):
        try:
            d = decimal.Decimal(v)
        except decimal.InvalidOperation:
            raise _mismatch(v, expected) from None
    else:
        raise _mismatch(v, expected)
    if not d.is_finite():
        raise _range(v, expected)
    # Exact at 80 digits, so comparing with its integer part detects extra digits.
    q = d.scaleb(scale, DECIMAL_CONTEXT)
    u = int(q)
    if q != u:
        raise WireError(
            ErrorCode.VALUE_OUT_OF_RANGE,
            f"value {v!r} has more than {scale} fractional digits for {expected}",
            {"value": _show(v)},
        )
    if not -(10**precision) < u < 10**precision:
        raise _range(v, expected)
    return u


def unscaled_to_decimal(unscaled: int, scale: int) -> decimal.Decimal:
    """The Decimal of an unscaled integer, with exactly ``scale`` fractional digits. O(p)."""
    return decimal.Decimal(unscaled).scaleb(-scale, DECIMAL_CONTEXT)


# --- JSON literals --------------------------------------------------------------------


def _fail(v: Any, expected: str) -> WireError:
    return WireError(
        ErrorCode.BAD_ARGUMENT, f"JSON literal {v!r} is not a valid {expected} literal", {"value": _show(v)}
    )


def from_json(type_: str | pa.DataType, v: Any) -> Any:
    """The Python value of a JSON literal for a column type (strict). O(len(v)).

    Used for values that will be *stored* (``values`` of UPDATE, UPDATE_WHERE and
    staged updates) and for ``key``/``keys``;
    predicate literals are compared, not stored, and may be looser (spec: "Predicates").

    Raises:
        WireError: BAD_ARGUMENT for the wrong JSON type, TYPE_MISMATCH or
            VALUE_OUT_OF_RANGE from the value checks.
    """
    name = canonical(type_)
    if v is None:
        return None
    if name in INT_RANGES:
        if not isinstance(v, int) or isinstance(v, bool):
            raise _fail(v, name)
        lo, hi = INT_RANGES[name]
        if not lo <= v <= hi:
            raise _range(v, name)
        return v
    if name in FLOAT_TYPES:
        if isinstance(v, str):
            special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
            if v in special:
                return special[v]
            raise _fail(v, name)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        raise _fail(v, name)
    if name == "bool":
        if isinstance(v, bool):
            return v
        raise _fail(v, name)
    if name == "string":
        if isinstance(v, str):
            return v
        raise _fail(v, name)
    if name == "binary":
        if not isinstance(v, str):
            raise _fail(v, name)
        try:
            return base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise _fail(v, "base64 binary") from None
    if name == "date":
        if not isinstance(v, str) or len(v) != 10:
            raise _fail(v, "date (YYYY-MM-DD)")
        try:
            return _dt.date.fromisoformat(v)
        except ValueError:
            raise _fail(v, "date (YYYY-MM-DD)") from None
    if name in ("timestamp_tz", "timestamp_ntz"):
        if not isinstance(v, int) or isinstance(v, bool):
            raise _fail(v, f"{name} (integer microseconds since the epoch)")
        return micros_to_datetime(v, name == "timestamp_tz")
    # decimal(p,s)
    p, s = decimal_params(name)
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise _fail(v, f"{name} (a string such as \"12.50\")")
    try:
        return unscaled_to_decimal(decimal_to_unscaled(v, p, s), s)
    except WireError as e:
        if e.code == ErrorCode.TYPE_MISMATCH:  # unparsable text: a bad literal, not a bad value
            raise _fail(v, name) from None
        raise


def to_json(type_: str | pa.DataType, v: Any) -> Any:
    """The JSON literal of a Python value of a column type. O(len(v)).

    Raises:
        WireError: TYPE_MISMATCH / VALUE_OUT_OF_RANGE when the value does not fit.
    """
    name = canonical(type_)
    if v is None:
        return None
    if name in INT_RANGES:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise _mismatch(v, name)
        lo, hi = INT_RANGES[name]
        if not lo <= int(v) <= hi:
            raise _range(v, name)
        return int(v)
    if name in FLOAT_TYPES:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise _mismatch(v, name)
        f = float(v)
        if math.isnan(f):
            return "NaN"
        if math.isinf(f):
            return "Infinity" if f > 0 else "-Infinity"
        return f
    if name == "bool":
        if not isinstance(v, (bool, np.bool_)):
            raise _mismatch(v, name)
        return bool(v)
    if name == "string":
        if not isinstance(v, str):
            raise _mismatch(v, name)
        return v
    if name == "binary":
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise _mismatch(v, name)
        return base64.b64encode(bytes(v)).decode("ascii")
    if name == "date":
        if not isinstance(v, _dt.date) or isinstance(v, _dt.datetime):
            raise _mismatch(v, name)
        return v.isoformat()
    if name in ("timestamp_tz", "timestamp_ntz"):
        if not isinstance(v, _dt.datetime):
            raise _mismatch(v, name)
        return datetime_to_micros(v, name == "timestamp_tz")
    p, s = decimal_params(name)
    u = decimal_to_unscaled(v, p, s)
    return str(unscaled_to_decimal(u, s))
