"""Compact rows: a schema-driven row encoding cheaper than an Arrow stream for few rows.

Spec: ``docs/protocol.md``, "Compact rows". A body is a u32 row count followed by the
rows; in the *presence* form (point-read results) each row is preceded by one byte, 1
for a row and 0 for a missing one (no row bytes follow a 0). A row is a null bitmap of
``ceil(ncols / 8)`` bytes (bit ``i % 8`` of byte ``i // 8`` set = column ``i`` is NULL)
followed by the non-null values in column order:

=================================  ===========================================
type                               bytes
=================================  ===========================================
int8 / int16 / int32 / int64       1 / 2 / 4 / 8, little-endian two's complement
float32 / float64                  4 / 8, IEEE 754 little-endian
bool                               1 (0 or 1)
date                               4, int32 days since 1970-01-01
timestamp_tz / timestamp_ntz       8, int64 microseconds since the epoch
decimal(p,s)                       16, unscaled value, little-endian two's complement
string / binary                    u32 length + bytes (strings UTF-8)
=================================  ===========================================

Speed: a :class:`RowCodec` is compiled once per schema (cached by
:func:`codec_for`). A row without NULLs is packed or unpacked with one precompiled
``struct`` format per run of fixed-width columns; only rows with NULLs, and errors,
take the per-column path.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import functools
import logging
import struct
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np
import pyarrow as pa

from spark_ext.store.types import EPOCH_NAIVE, EPOCH_ORDINAL, EPOCH_UTC, ONE_MICRO
from spark_ext.wire.errors import WireError
from spark_ext.wire.kinds import ErrorCode
from spark_ext.wire.types import FLOAT_TYPES, INTEGER_TYPES, canonical, decimal_params
from spark_ext.wire.values import decimal_to_unscaled, unscaled_to_decimal

logger = logging.getLogger(__name__)

#: A schema for the codec: an Arrow schema, or (name, type) pairs with type strings
#: or Arrow types.
CodecSchema = Union[pa.Schema, Sequence[tuple[str, Union[str, pa.DataType]]]]
Buffer = Union[bytes, bytearray, memoryview]

_U32 = struct.Struct("<I")
_U8 = struct.Struct("<B")
_MAX_U32 = 0xFFFFFFFF
# Presence-form bodies of one row: count 1, then the flag byte (and the row, if present).
_ONE_ABSENT = _U32.pack(1) + b"\x00"
_ONE_PRESENT = _U32.pack(1) + b"\x01"

# struct code per fixed-width type; decimals travel as 16 raw bytes.
_CODES = {
    "int8": "b", "int16": "h", "int32": "i", "int64": "q",
    "float32": "f", "float64": "d", "bool": "B",
    "date": "i", "timestamp_tz": "q", "timestamp_ntz": "q",
}
_VAR = ("string", "binary")

Raw = Callable[[Any], Any]  # Python value -> value struct packs (type-checked)
Post = Callable[[Any], Any]  # unpacked value -> Python value (validated)


class _Bad(Exception):
    """A value problem found by a converter; the codec adds the column and row."""

    def __init__(self, code: ErrorCode, what: str) -> None:
        super().__init__(what)
        self.code = code
        self.what = what


def _raw_converter(name: str) -> Raw:
    """Checks a Python value and returns what the column's struct code packs."""
    if name in INTEGER_TYPES:

        def raw_int(v: Any) -> Any:
            if type(v) is int:
                return v  # range is checked by struct itself
            if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
                return int(v)
            raise _Bad(ErrorCode.TYPE_MISMATCH, f"is not a {name}")

        return raw_int
    if name in FLOAT_TYPES:

        def raw_float(v: Any) -> Any:
            if type(v) is float:
                return v
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
                return float(v)
            raise _Bad(ErrorCode.TYPE_MISMATCH, f"is not a {name}")

        return raw_float
    if name == "bool":

        def raw_bool(v: Any) -> Any:
            if v is True or v is False or isinstance(v, np.bool_):
                return 1 if v else 0
            raise _Bad(ErrorCode.TYPE_MISMATCH, "is not a bool")

        return raw_bool
    if name == "date":

        def raw_date(v: Any) -> Any:
            if isinstance(v, _dt.date) and not isinstance(v, _dt.datetime):
                return v.toordinal() - EPOCH_ORDINAL
            raise _Bad(ErrorCode.TYPE_MISMATCH, "is not a date (datetime.date, not datetime)")

        return raw_date
    if name == "timestamp_tz":

        def raw_ts(v: Any) -> Any:
            if isinstance(v, _dt.datetime):
                # Naive input is read as UTC, as Arrow and the engine do.
                return (v - (EPOCH_NAIVE if v.tzinfo is None else EPOCH_UTC)) // ONE_MICRO
            raise _Bad(ErrorCode.TYPE_MISMATCH, "is not a timestamp (datetime.datetime)")

        return raw_ts
    if name == "timestamp_ntz":

        def raw_ntz(v: Any) -> Any:
            if isinstance(v, _dt.datetime):
                if v.tzinfo is not None:
                    raise _Bad(ErrorCode.TYPE_MISMATCH, "is an aware datetime; timestamp_ntz takes a naive one")
                return (v - EPOCH_NAIVE) // ONE_MICRO
            raise _Bad(ErrorCode.TYPE_MISMATCH, "is not a timestamp_ntz (naive datetime.datetime)")

        return raw_ntz
    if name == "string":

        def raw_str(v: Any) -> Any:
            if isinstance(v, str):
                try:
                    return v.encode("utf-8")
                except UnicodeEncodeError:
                    raise _Bad(ErrorCode.VALUE_OUT_OF_RANGE, "is not encodable as UTF-8 (lone surrogate)") from None
            raise _Bad(ErrorCode.TYPE_MISMATCH, "is not a string")

        return raw_str
    if name == "binary":

        def raw_bin(v: Any) -> Any:
            if type(v) is bytes:
                return v
            if isinstance(v, (bytes, bytearray, memoryview)):
                return bytes(v)
            raise _Bad(ErrorCode.TYPE_MISMATCH, "is not binary (bytes)")

        return raw_bin
    p, s = decimal_params(name)

    def raw_dec(v: Any) -> Any:
        try:
            u = decimal_to_unscaled(v, p, s)
        except WireError as e:
            # The message starts "value <v> ..."; the codec re-adds the value with context.
            prefix = f"value {v!r} "
            what = e.message[len(prefix):] if e.message.startswith(prefix) else e.message
            raise _Bad(ErrorCode(e.code), what) from None
        return u.to_bytes(16, "little", signed=True)

    return raw_dec


def _post_converter(name: str) -> Post | None:
    """Turns an unpacked value into the Python value; None when it already is one."""
    if name in INTEGER_TYPES or name in FLOAT_TYPES:
        return None
    if name == "bool":

        def post_bool(v: int) -> bool:
            if v == 1:
                return True
            if v == 0:
                return False
            raise _Bad(ErrorCode.BAD_ARGUMENT, f"bool byte {v} is neither 0 nor 1")

        return post_bool
    if name == "date":
        fromordinal = _dt.date.fromordinal

        def post_date(v: int) -> _dt.date:
            try:
                return fromordinal(v + EPOCH_ORDINAL)
            except (ValueError, OverflowError):
                raise _Bad(ErrorCode.VALUE_OUT_OF_RANGE, f"date {v} days since 1970-01-01 is outside years 1..9999") from None

        return post_date
    if name in ("timestamp_tz", "timestamp_ntz"):
        epoch = EPOCH_UTC if name == "timestamp_tz" else EPOCH_NAIVE
        td = _dt.timedelta

        def post_ts(v: int) -> _dt.datetime:
            try:
                return epoch + td(microseconds=v)
            except OverflowError:
                raise _Bad(ErrorCode.VALUE_OUT_OF_RANGE, f"timestamp {v} us is outside years 1..9999") from None

        return post_ts
    if name == "string":

        def post_str(v: Any) -> str:
            try:
                return str(v, "utf-8")
            except UnicodeDecodeError:
                raise _Bad(ErrorCode.BAD_ARGUMENT, "string is not valid UTF-8") from None

        return post_str
    if name == "binary":
        return bytes
    p, s = decimal_params(name)
    limit = 10**p
    from_bytes = int.from_bytes

    def post_dec(v: bytes) -> decimal.Decimal:
        u = from_bytes(v, "little", signed=True)
        if not -limit < u < limit:
            raise _Bad(ErrorCode.VALUE_OUT_OF_RANGE, f"unscaled decimal {u} exceeds precision {p}")
        return unscaled_to_decimal(u, s)

    return post_dec


def _fields_of(schema: CodecSchema) -> list[tuple[str, str]]:
    if isinstance(schema, pa.Schema):
        return [(f.name, canonical(f.type)) for f in schema]
    return [(str(n), canonical(t)) for n, t in schema]


class RowCodec:
    """Encoder and decoder of compact rows for one schema.

    Thread-safe (immutable after construction). Nullability is not enforced here: a
    NULL in a key or NOT NULL column is the engine's error to raise (NULL_KEY,
    NULL_VALUE), with the table's context.
    """

    def __init__(self, schema: CodecSchema) -> None:
        """Compile the codec. O(#columns).

        Raises:
            WireError: BAD_ARGUMENT / TYPE_MISMATCH for an unsupported type.
        """
        fields = _fields_of(schema)
        if not fields:
            raise WireError(ErrorCode.BAD_ARGUMENT, "a compact row schema needs at least one column")
        self.names = [n for n, _ in fields]
        self.types = [t for _, t in fields]
        self.ncols = len(fields)
        self.bitmap_size = (self.ncols + 7) // 8
        self._zero_bitmap = bytes(self.bitmap_size)
        self._raw = [_raw_converter(t) for t in self.types]
        self._post = [_post_converter(t) for t in self.types]
        self._is_var = [t in _VAR for t in self.types]
        self._col_struct: list[struct.Struct | None] = [
            None if v else struct.Struct("<" + ("16s" if t.startswith("decimal") else _CODES[t]))
            for t, v in zip(self.types, self._is_var)
        ]
        # Runs of consecutive fixed-width columns, for rows without NULLs:
        # ("fixed", Struct, first, last+1) or ("var", None, i, i+1).
        self._segments: list[tuple[bool, struct.Struct | None, int, int]] = []
        i = 0
        while i < self.ncols:
            if self._is_var[i]:
                self._segments.append((True, None, i, i + 1))
                i += 1
                continue
            j = i
            fmt = "<"
            while j < self.ncols and not self._is_var[j]:
                fmt += "16s" if self.types[j].startswith("decimal") else _CODES[self.types[j]]
                j += 1
            self._segments.append((False, struct.Struct(fmt), i, j))
            i = j
        self._all_fixed = not any(self._is_var)
        self._has_post = any(p is not None for p in self._post)

    def __repr__(self) -> str:
        return f"RowCodec({', '.join(f'{n} {t}' for n, t in zip(self.names, self.types))})"

    # --- encoding ---------------------------------------------------------------

    def encode(self, rows: Iterable[Sequence[Any] | None], *, presence: bool = False) -> bytes:
        """Encode rows as a compact rows body. O(total size).

        Args:
            rows: tuples (or lists) of Python values in schema order; ``None`` stands
                for a missing row and is allowed only with ``presence``.
            presence: write the presence form (a flag byte before each row).

        Raises:
            WireError: TYPE_MISMATCH or VALUE_OUT_OF_RANGE naming the column, the row
                and the value; BAD_ARGUMENT for a row of the wrong length.
        """
        parts: list[bytes] = [b""]
        append = parts.append
        count = 0
        for count, row in enumerate(rows, 1):
            if row is None:
                if not presence:
                    raise WireError(ErrorCode.BAD_ARGUMENT, f"row {count - 1} is missing (None) outside a presence body")
                append(b"\x00")
                continue
            if presence:
                append(b"\x01")
            append(self._encode_row(row, count - 1))
        if count > _MAX_U32:
            raise WireError(ErrorCode.BAD_ARGUMENT, f"{count} rows do not fit one body")
        parts[0] = _U32.pack(count)
        return b"".join(parts)

    def encode_one(self, row: Sequence[Any] | None) -> bytes:
        """``encode([row], presence=True)`` without the loop: a GET reply body. O(row size)."""
        if row is None:
            return _ONE_ABSENT
        return _ONE_PRESENT + self._encode_row(row, 0)

    def encode_row(self, row: Sequence[Any]) -> bytes:
        """One row without count or presence byte. O(row size)."""
        return self._encode_row(row, 0)

    def _encode_row(self, row: Sequence[Any], index: int) -> bytes:
        if len(row) != self.ncols:
            raise WireError(
                ErrorCode.BAD_ARGUMENT,
                f"row {index} has {len(row)} values, the schema has {self.ncols} columns ({', '.join(self.names)})",
                {"row": index},
            )
        if None in row:
            return self._encode_slow(row, index)
        raw = self._raw
        try:
            vals = [f(v) for f, v in zip(raw, row)]
            if self._all_fixed:
                seg = self._segments[0][1]
                assert seg is not None
                return self._zero_bitmap + seg.pack(*vals)
            out = [self._zero_bitmap]
            for is_var, st, a, b in self._segments:
                if is_var:
                    v = vals[a]
                    out.append(_U32.pack(len(v)))
                    out.append(v)
                else:
                    assert st is not None
                    out.append(st.pack(*vals[a:b]))
            return b"".join(out)
        except (_Bad, struct.error, OverflowError):
            # Slow path again, column by column, to name the culprit.
            return self._encode_slow(row, index)

    def _encode_slow(self, row: Sequence[Any], index: int) -> bytes:
        bitmap = bytearray(self.bitmap_size)
        out: list[bytes] = [b""]
        for i, v in enumerate(row):
            if v is None:
                bitmap[i >> 3] |= 1 << (i & 7)
                continue
            try:
                r = self._raw[i](v)
                st = self._col_struct[i]
                if st is None:
                    if len(r) > _MAX_U32:
                        raise _Bad(ErrorCode.VALUE_OUT_OF_RANGE, "is longer than 4 GiB")
                    out.append(_U32.pack(len(r)))
                    out.append(r)
                else:
                    out.append(st.pack(r))
            except _Bad as e:
                raise self._error(e.code, i, index, v, e.what) from None
            except (struct.error, OverflowError):
                raise self._error(ErrorCode.VALUE_OUT_OF_RANGE, i, index, v, f"is out of range for {self.types[i]}") from None
        out[0] = bytes(bitmap)
        return b"".join(out)

    def _error(self, code: ErrorCode, col: int, row: int, value: Any, what: str) -> WireError:
        shown = repr(value)
        if len(shown) > 100:
            shown = shown[:100] + "..."
        name = self.names[col]
        return WireError(
            code,
            f"column {name!r} ({self.types[col]}), row {row}: value {shown} {what}",
            {"column": name, "row": row, "value": shown},
        )

    # --- decoding ---------------------------------------------------------------

    def decode(self, data: Buffer, *, presence: bool = False) -> list[tuple[Any, ...] | None]:
        """Decode a compact rows body. O(total size).

        Returns:
            One tuple per row in schema order; ``None`` for missing rows (presence form).

        Raises:
            WireError: BAD_ARGUMENT for truncated data, trailing bytes, a bad presence
                byte, set padding bits, invalid UTF-8 or bool bytes (the frame itself
                was sound, so this is not the fatal MALFORMED);
                VALUE_OUT_OF_RANGE for dates, timestamps or decimals outside their range.
        """
        mv = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        end = len(mv)
        if end < 4:
            raise WireError(ErrorCode.BAD_ARGUMENT, f"compact rows body of {end} bytes has no row count")
        (count,) = _U32.unpack_from(mv, 0)
        off = 4
        out: list[tuple[Any, ...] | None] = []
        append = out.append
        for index in range(count):
            if presence:
                if off >= end:
                    raise self._truncated(index)
                flag = mv[off]
                off += 1
                if flag == 0:
                    append(None)
                    continue
                if flag != 1:
                    raise WireError(ErrorCode.BAD_ARGUMENT, f"row {index}: presence byte {flag} is neither 0 nor 1")
            row, off = self._decode_row(mv, off, end, index)
            append(row)
        if off != end:
            raise WireError(ErrorCode.BAD_ARGUMENT, f"{end - off} trailing bytes after {count} compact rows")
        return out

    def _truncated(self, index: int) -> WireError:
        return WireError(ErrorCode.BAD_ARGUMENT, f"compact rows truncated in row {index}", {"row": index})

    def _decode_row(self, mv: memoryview, off: int, end: int, index: int) -> tuple[tuple[Any, ...], int]:
        nb = self.bitmap_size
        if off + nb > end:
            raise self._truncated(index)
        bitmap = mv[off:off + nb]
        off += nb
        try:
            if bitmap == self._zero_bitmap:
                vals, off = self._decode_dense(mv, off, end, index)
            else:
                vals, off = self._decode_sparse(mv, off, end, index, bytes(bitmap))
            if self._has_post:
                post = self._post
                for i, p in enumerate(post):
                    if p is not None and vals[i] is not None:
                        try:
                            vals[i] = p(vals[i])
                        except _Bad as e:
                            raise WireError(
                                e.code, f"column {self.names[i]!r}, row {index}: {e.what}",
                                {"column": self.names[i], "row": index},
                            ) from None
        except struct.error:
            raise self._truncated(index) from None
        return tuple(vals), off

    def _decode_dense(self, mv: memoryview, off: int, end: int, index: int) -> tuple[list[Any], int]:
        if self._all_fixed:
            st = self._segments[0][1]
            assert st is not None
            return list(st.unpack_from(mv, off)), off + st.size
        vals: list[Any] = []
        for is_var, st, _, _ in self._segments:
            if is_var:
                (n,) = _U32.unpack_from(mv, off)
                off += 4
                if off + n > end:
                    raise self._truncated(index)
                vals.append(mv[off:off + n])
                off += n
            else:
                assert st is not None
                vals.extend(st.unpack_from(mv, off))
                off += st.size
        return vals, off

    def _decode_sparse(
        self, mv: memoryview, off: int, end: int, index: int, bitmap: bytes
    ) -> tuple[list[Any], int]:
        n = self.ncols
        if n & 7 and bitmap[-1] >> (n & 7):
            raise WireError(ErrorCode.BAD_ARGUMENT, f"row {index}: null bitmap padding bits are set")
        vals: list[Any] = []
        for i in range(n):
            if bitmap[i >> 3] >> (i & 7) & 1:
                vals.append(None)
                continue
            st = self._col_struct[i]
            if st is None:
                (ln,) = _U32.unpack_from(mv, off)
                off += 4
                if off + ln > end:
                    raise self._truncated(index)
                vals.append(mv[off:off + ln])
                off += ln
            else:
                vals.append(st.unpack_from(mv, off)[0])
                off += st.size
        return vals, off


@functools.lru_cache(maxsize=512)
def _cached(fields: tuple[tuple[str, str], ...]) -> RowCodec:
    return RowCodec(list(fields))


def codec_for(schema: CodecSchema) -> RowCodec:
    """The (cached) codec of a schema. O(#columns) to normalize the key."""
    return _cached(tuple(_fields_of(schema)))


def encode_rows(schema: CodecSchema, rows: Iterable[Sequence[Any] | None], *, presence: bool = False) -> bytes:
    """Encode rows for a schema; see :meth:`RowCodec.encode`. O(total size)."""
    return codec_for(schema).encode(rows, presence=presence)


def decode_rows(schema: CodecSchema, data: Buffer, *, presence: bool = False) -> list[tuple[Any, ...] | None]:
    """Decode a compact rows body; see :meth:`RowCodec.decode`. O(total size)."""
    return codec_for(schema).decode(data, presence=presence)
