"""Safe, fast encoding of the engine's change records.

The engine logs plain Python structures (tuples, lists and dicts of ``None``, ``bool``,
``int``, ``float``, ``str``, ``bytes``, :class:`decimal.Decimal`, :class:`datetime.date`
and :class:`datetime.datetime`) and Arrow record batches for bulk changes.

Encoding is pickle protocol 5, because CPython's C pickler is far faster than anything
written in Python for small nested structures. Pickle is only safe to *decode* when the
decoder refuses to import arbitrary globals, so :func:`decode_record` uses a restricted
unpickler whose ``find_class`` knows exactly five classes (``datetime.date``,
``datetime.datetime``, ``datetime.timezone``, ``datetime.timedelta``,
``decimal.Decimal``); any other global raises :class:`CodecError` naming it, before
anything is imported or called.

Arrow batches never go through ``find_class``: the pickler hands them out as a pickle
*persistent id* ``("arrow-ipc-stream", <IPC stream bytes>)`` and the unpickler's
``persistent_load`` turns that back into a batch (or an :class:`IpcBatch` when asked to
stay lazy). So the refusal list stays at five classes even though batches round-trip.

:func:`encode_record` also checks the type of every object it writes and refuses
anything outside the supported set. That is deliberate: a record that encodes but can
never be decoded would only fail at recovery time, when the change it carries is
already acknowledged.
"""

from __future__ import annotations

import datetime
import decimal
import io
import logging
import pickle
import struct
from typing import Any, Callable, Final

import pyarrow as pa

from spark_ext.exceptions import StorageError

logger = logging.getLogger(__name__)

__all__ = [
    "CodecError",
    "IpcBatch",
    "batch_to_ipc",
    "decode_record",
    "encode_point_commit",
    "encode_record",
    "ipc_to_batch",
]

PROTOCOL: Final = 5
"""Pickle protocol used by :func:`encode_record`."""

_IPC_TAG: Final = "arrow-ipc-stream"

# The complete list of globals a record may reference. Anything else in a pickle is
# refused by name: it is either a bug in the writer or an attack on the reader.
_ALLOWED_GLOBALS: Final[dict[tuple[str, str], type]] = {
    ("datetime", "date"): datetime.date,
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "timezone"): datetime.timezone,
    ("datetime", "timedelta"): datetime.timedelta,
    ("decimal", "Decimal"): decimal.Decimal,
}

_ALLOWED_CLASSES: Final[frozenset[type]] = frozenset(_ALLOWED_GLOBALS.values())

# Exact types (not subclasses: an ``IntEnum`` or a numpy scalar pickles as a reference
# to its own class, which the decoder would refuse) that the encoder lets through.
# PickleBuffer appears because the persistent id of a batch carries its IPC bytes in one,
# which saves a copy of the bulk data.
_ALLOWED_TYPES: Final[frozenset[type]] = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        str,
        bytes,
        tuple,
        list,
        dict,
        set,
        frozenset,
        bytearray,
        decimal.Decimal,
        datetime.date,
        datetime.datetime,
        datetime.timezone,
        datetime.timedelta,
        pickle.PickleBuffer,
    }
)


class CodecError(StorageError):
    """A record cannot be encoded, or bytes cannot be decoded into a record.

    Raised for unsupported value types on encode, and on decode for references to
    globals outside the allow-list, malformed batch markers and corrupt pickle data.
    """


class IpcBatch:
    """An Arrow record batch kept as Arrow IPC stream bytes until it is needed.

    Args:
        data: one Arrow IPC stream holding exactly one record batch, as produced by
            :func:`batch_to_ipc`.

    Passing an ``IpcBatch`` to :func:`encode_record` writes its bytes as they are
    (no re-encoding), and ``decode_record(..., lazy_batches=True)`` returns batches as
    ``IpcBatch`` so that a reader that skips a record never parses its Arrow data.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def to_batch(self) -> pa.RecordBatch:
        """Decode the IPC bytes into a record batch.

        Complexity: O(columns) metadata work; buffers are zero-copy views of ``data``.

        Returns:
            The record batch.

        Raises:
            CodecError: ``data`` is not an IPC stream with exactly one batch.
        """
        return ipc_to_batch(self.data)

    def __repr__(self) -> str:
        return f"IpcBatch({len(self.data)} bytes)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IpcBatch):
            return NotImplemented
        return self.data == other.data

    def __hash__(self) -> int:
        return hash(self.data)


def batch_to_ipc(batch: pa.RecordBatch) -> bytes:
    """Serialize one record batch as an Arrow IPC stream (schema + batch + end marker).

    Complexity: O(n) in the batch's byte size (one copy into the stream).

    Args:
        batch: the record batch.

    Returns:
        The IPC stream bytes.
    """
    return bytes(_batch_to_ipc_buffer(batch))


def _batch_to_ipc_buffer(batch: pa.RecordBatch) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def ipc_to_batch(data: bytes | memoryview | pa.Buffer) -> pa.RecordBatch:
    """Read the single record batch of an Arrow IPC stream.

    Complexity: O(columns) metadata work; the batch's buffers are zero-copy views of
    ``data``, which therefore stays alive as long as the batch does.

    Args:
        data: IPC stream bytes as produced by :func:`batch_to_ipc`.

    Returns:
        The record batch.

    Raises:
        CodecError: ``data`` is not a valid IPC stream, or it holds other than exactly
            one batch.
    """
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
        batches = list(reader)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise CodecError(f"invalid Arrow IPC stream: {exc}") from exc
    if len(batches) != 1:
        raise CodecError(f"Arrow IPC stream holds {len(batches)} batches, expected 1")
    return batches[0]


class _HasBatches(Exception):
    """Internal signal: the record holds Arrow batches, use the slower pickler."""


def _unsupported(cls: type) -> CodecError:
    return CodecError(
        f"cannot encode value of type {cls.__module__}.{cls.__qualname__}: "
        "records may only hold None, bool, int, float, str, bytes, Decimal, date, "
        "datetime, tuples, lists, dicts and Arrow record batches"
    )


class _PlainPickler(pickle.Pickler):
    """Pickler for records without Arrow batches: validates, externalizes nothing.

    The C pickler consults ``reducer_override`` only for objects it has no built-in
    opcode for (not for None, bool, int, float, str, bytes, tuple, list, dict, set,
    frozenset, bytearray), so validation costs one Python call per Decimal, date or
    datetime rather than one per object; a ``persistent_id`` hook is called for every
    object and made a list of 10,000 ints eight times slower to encode. The built-in
    types it skips all decode without globals, so nothing unsafe slips through: the
    decoder is the safety boundary, this check only makes bad records fail early.
    """

    def reducer_override(self, obj: Any) -> Any:  # noqa: D102 - pickle hook
        cls = type(obj)
        if cls in _ALLOWED_TYPES or (cls is type and obj in _ALLOWED_CLASSES):
            return NotImplemented
        if cls is pa.RecordBatch or cls is IpcBatch:
            raise _HasBatches
        raise _unsupported(cls)


class _BatchPickler(pickle.Pickler):
    """Pickler for records holding Arrow batches: they become persistent ids."""

    def persistent_id(self, obj: Any) -> Any:  # noqa: D102 - pickle hook
        # Called for every object written, so the common case is one set lookup.
        cls = type(obj)
        if cls in _ALLOWED_TYPES:
            return None
        if cls is type and obj in _ALLOWED_CLASSES:
            # The reduce value of a Decimal/date/... names its class; let it through.
            return None
        if cls is pa.RecordBatch:
            # Read-only so pickle writes it as bytes (a writable buffer would come back
            # as bytearray); PickleBuffer avoids copying the IPC data into a bytes first.
            view = memoryview(_batch_to_ipc_buffer(obj)).toreadonly()
            return (_IPC_TAG, pickle.PickleBuffer(view))
        if cls is IpcBatch:
            return (_IPC_TAG, obj.data)
        raise _unsupported(cls)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals and batch markers."""

    def __init__(self, file: io.BytesIO, lazy_batches: bool) -> None:
        super().__init__(file)
        self._lazy_batches = lazy_batches

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - pickle hook
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CodecError(f"refusing to load global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102 - pickle hook
        if (
            type(pid) is not tuple
            or len(pid) != 2
            or pid[0] != _IPC_TAG
            or type(pid[1]) is not bytes
        ):
            raise CodecError(f"unknown persistent reference {_describe(pid)}")
        ipc = IpcBatch(pid[1])
        return ipc if self._lazy_batches else ipc.to_batch()


def _describe(pid: Any) -> str:
    # The pid comes from untrusted bytes: show its shape, not a possibly huge repr.
    text = repr(pid)
    return text if len(text) <= 80 else text[:77] + "..."


def encode_record(obj: Any) -> bytes:
    """Encode a change record.

    Complexity: O(n) in the number of objects in ``obj`` plus the byte size of any
    Arrow batches (each batch is serialized once as an IPC stream).

    Args:
        obj: a nest of tuples, lists and dicts (sets, frozensets and bytearrays are
            accepted too) whose leaves are ``None``, ``bool``, ``int``, ``float``,
            ``str``, ``bytes``, ``Decimal``, ``date``, ``datetime`` (naive or with a
            ``datetime.timezone``), ``timedelta``, ``pa.RecordBatch`` or
            :class:`IpcBatch`.

    Returns:
        The encoded bytes (pickle protocol 5).

    Raises:
        CodecError: ``obj`` contains a value of an unsupported type (subclasses such as
            enums or numpy scalars included), or cannot be pickled.
    """
    buf = io.BytesIO()
    try:
        try:
            _PlainPickler(buf, protocol=PROTOCOL).dump(obj)
        except _HasBatches:
            # Bulk records only: the IPC encoding dominates, the second pass is noise.
            buf = io.BytesIO()
            _BatchPickler(buf, protocol=PROTOCOL).dump(obj)
    except CodecError:
        raise
    except (pickle.PicklingError, TypeError, ValueError, RecursionError) as exc:
        raise CodecError(f"cannot encode record: {exc}") from exc
    return buf.getvalue()


# --- the one-row commit record, written directly --------------------------------------
# A point write's record is small, but pickling an aware datetime alone costs several
# microseconds (three globals looked up, timezone's Python-level reduce, the validation
# hook). For the record of one statement, ``("commit1", txn_id, [(table, False, items,
# [])])``, the pickle opcodes are written here directly: the same opcodes the pickler
# uses, minus its optional FRAME and MEMOIZE, so :func:`decode_record` (unchanged)
# returns an equal record of the same types. Values of exact types None, bool, int,
# float, str, bytes, Decimal, date and datetime (naive or in ``timezone.utc``) and
# tuples of them are written here; anything else falls back to :func:`encode_record`.

_F64 = struct.Struct(">d")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U16 = struct.Struct("<H")
_G_DATETIME: Final = b"\x8c\x08datetime\x8c\x08datetime\x93"
_G_DATE: Final = b"\x8c\x08datetime\x8c\x04date\x93"
_G_DECIMAL: Final = b"\x8c\x07decimal\x8c\x07Decimal\x93"
# timezone(timedelta(0, 0, 0)), which unpickles to the timezone.utc singleton.
_UTC_OPS: Final = (
    b"\x8c\x08datetime\x8c\x08timezone\x93"
    b"\x8c\x08datetime\x8c\x09timedelta\x93K\x00K\x00K\x00\x87R\x85R"
)
_UTC = datetime.timezone.utc
# A global, then SHORT_BINBYTES of the fixed-size state (datetime 10 bytes, date 4).
_G_DATETIME_STATE: Final = _G_DATETIME + b"C\x0a"
_G_DATE_STATE: Final = _G_DATE + b"C\x04"
_TUPLE_N: Final = (b")", b"\x85", b"\x86", b"\x87")


class _Fallback(Exception):
    """Internal signal: a value the direct writer does not handle."""


_BYTE: Final = tuple(bytes((i,)) for i in range(256))
_OP_COMMIT1: Final = b"\x80\x05\x8c\x07commit1"


def _op_str(v: str) -> bytes:
    b = v.encode()  # a lone surrogate raises UnicodeEncodeError: the fallback handles it
    n = len(b)
    return b"\x8c" + _BYTE[n] + b if n < 256 else b"X" + _U32.pack(n) + b


def _op_int(v: int) -> bytes:
    if 0 <= v < 0x100:
        return b"K" + _BYTE[v]
    if -0x80000000 <= v < 0x80000000:
        return b"M" + _U16.pack(v) if 0 <= v < 0x10000 else b"J" + _I32.pack(v)
    n = (v.bit_length() + 8) >> 3
    if n > 255:
        raise _Fallback
    return b"\x8a" + _BYTE[n] + v.to_bytes(n, "little", signed=True)


def _op_float(v: float) -> bytes:
    return b"G" + _F64.pack(v)


def _op_bytes(v: bytes) -> bytes:
    n = len(v)
    return b"C" + _BYTE[n] + v if n < 256 else b"B" + _U32.pack(n) + v


def _op_datetime(v: datetime.datetime) -> bytes:
    reduced: Any = v.__reduce_ex__(PROTOCOL)
    args = reduced[1]  # (state,) or (state, tzinfo); fold is in state
    if len(args) == 1:
        return _G_DATETIME_STATE + args[0] + b"\x85R"
    if args[1] is not _UTC:
        raise _Fallback
    return _G_DATETIME_STATE + args[0] + _UTC_OPS + b"\x86R"


def _op_date(v: datetime.date) -> bytes:
    reduced: Any = v.__reduce_ex__(PROTOCOL)
    return _G_DATE_STATE + reduced[1][0] + b"\x85R"


def _op_decimal(v: decimal.Decimal) -> bytes:
    return _G_DECIMAL + _op_str(str(v)) + b"\x85R"


def _op_tuple(v: tuple[Any, ...]) -> bytes:
    ops = _OPS
    try:
        parts = b"".join([ops[type(x)](x) for x in v])
    except KeyError:
        raise _Fallback from None
    n = len(v)
    return parts + _TUPLE_N[n] if n < 4 else b"(" + parts + b"t"


_OPS: Final[dict[type, Callable[[Any], bytes]]] = {
    type(None): lambda v: b"N",
    bool: lambda v: b"\x88" if v else b"\x89",
    int: _op_int,
    float: _op_float,
    str: _op_str,
    bytes: _op_bytes,
    datetime.datetime: _op_datetime,
    datetime.date: _op_date,
    decimal.Decimal: _op_decimal,
    tuple: _op_tuple,
}


_OP_STAGE: Final = b"\x80\x05(\x8c\x05stage"
_U64 = struct.Struct("<Q")


def encode_stage_record(txn_id: str, table: str, rows: IpcBatch) -> bytes:
    """Encode ``("stage", txn_id, table, rows)``: a bulk's rows logged when staged.

    The same opcodes the batch pickler writes (PROTO 5, MARK, three strings, the batch's
    persistent id ``(tag, bytes)`` and BINPERSID, TUPLE, STOP), written directly so that
    the IPC bytes are copied once (pickling copies them into its buffer, then out of
    it). Decodes (:func:`decode_record`) to the record :func:`encode_record` writes for
    the same value. O(bytes).
    """
    data = rows.data
    n = len(data)
    try:
        head = b"".join([_OP_STAGE, _op_str(txn_id), _op_str(table), _op_str(_IPC_TAG),
                         b"B" + _U32.pack(n) if n < 1 << 32 else b"\x8e" + _U64.pack(n)])
    except UnicodeEncodeError:
        return encode_record(("stage", txn_id, table, rows))
    return b"".join([head, data, b"\x86Qt."])


def encode_point_commit(txn_id: str, table: str, items: list[tuple[Any, Any]], plain: bool = False) -> bytes:
    """Encode ``("commit1", txn_id, [(table, False, items, [])])``: one statement's
    point changes (``items``: ``(key, row or None)``).

    Decodes (:func:`decode_record`) to a record equal to the one :func:`encode_record`
    writes for the same value, with the same types. Complexity: O(values).

    ``plain``: the caller guarantees that every key and value is of an exact type among
    None, bool, int, float, str and bytes, or a tuple of them (rows the engine has
    coerced for a table of such columns): the record is then written by the C pickler
    in one call, several times faster than the checks and opcodes below, which are for
    anything else (dates, decimals and types to refuse).

    Raises:
        CodecError: as :func:`encode_record`, for a value it cannot encode.
    """
    if plain:
        return pickle.dumps(("commit1", txn_id, [(table, False, items, [])]), PROTOCOL)
    try:
        # PROTO 5, "commit1", txn_id, EMPTY_LIST MARK(appends) MARK(4-tuple) table
        # NEWFALSE EMPTY_LIST [MARK (key row TUPLE2)... APPENDS] EMPTY_LIST TUPLE
        # APPENDS TUPLE3 STOP
        ops = _OPS
        parts = [_OP_COMMIT1, _op_str(txn_id), b"]((", _op_str(table), b"\x89]"]
        if items:
            parts.append(b"(")
            for k, row in items:
                parts.append(ops[type(k)](k))
                parts.append(ops[type(row)](row))
                parts.append(b"\x86")
            parts.append(b"e")
        parts.append(b"]te\x87.")
        return b"".join(parts)
    except (KeyError, _Fallback, UnicodeEncodeError):
        return encode_record(("commit1", txn_id, [(table, False, items, [])]))


def decode_record(data: bytes | bytearray | memoryview, *, lazy_batches: bool = False) -> Any:
    """Decode bytes produced by :func:`encode_record`, importing nothing.

    Complexity: O(n) in the size of ``data``; Arrow batches are zero-copy views of the
    decoded bytes.

    Args:
        data: the encoded record.
        lazy_batches: if true, Arrow batches come back as :class:`IpcBatch` (call
            ``to_batch()`` when needed); by default they come back as
            ``pa.RecordBatch``.

    Returns:
        The record.

    Raises:
        CodecError: ``data`` references a global outside the allow-list (the message
            names it), holds an unknown persistent reference, or is corrupt.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), lazy_batches).load()
    except CodecError:
        raise
    except Exception as exc:  # pickle raises many types on malformed input
        raise CodecError(f"corrupt record: {type(exc).__name__}: {exc}") from exc
