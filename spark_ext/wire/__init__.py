"""The spark-ext wire protocol (spec: ``docs/protocol.md``).

Framing, message kinds, error codes, the authentication handshake, compact rows, Arrow
IPC payloads and table schemas. No sockets of its own, and never Spark: the server,
the locator and the client build on it; ``jvm_bridge`` implements the same spec.

Modules:
    kinds: ``Kind`` and ``ErrorCode`` numbers.
    errors: ``WireError`` (and ``FrameError``, raised by the reader).
    frames: ``Frame``, ``encode_frame``, ``FrameReader``, ``send_frame``.
    auth: the HELLO/AUTH handshake as pure functions.
    types / values: type strings, Python value forms, JSON literals.
    rowcodec: compact rows.
    arrowio: Arrow IPC bodies, ``TableSpec`` (the schema JSON).
    predicates: structural checks of predicate and aggregate JSON.
    keys: ``KeyHasher``, the bucket of a key from Python values.
"""

from spark_ext.wire.errors import FrameError, WireError
from spark_ext.wire.frames import (
    DEFAULT_MAX_FRAME,
    HEADER_SIZE,
    MAGIC,
    VERSION,
    Flags,
    Frame,
    FrameReader,
    decode_metadata,
    encode_frame,
    encode_frame_parts,
    encode_metadata,
    error_frame,
    field_of,
    read_frames,
    send_frame,
)
from spark_ext.wire.kinds import ErrorCode, Kind, is_known_kind, kind_name

__all__ = [
    "DEFAULT_MAX_FRAME",
    "ErrorCode",
    "Flags",
    "Frame",
    "FrameError",
    "FrameReader",
    "HEADER_SIZE",
    "Kind",
    "MAGIC",
    "VERSION",
    "WireError",
    "decode_metadata",
    "encode_frame",
    "encode_frame_parts",
    "encode_metadata",
    "error_frame",
    "field_of",
    "is_known_kind",
    "kind_name",
    "read_frames",
    "send_frame",
]
