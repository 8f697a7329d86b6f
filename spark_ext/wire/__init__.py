"""The spark-ext wire protocol (spec: ``docs/protocol.md``).

Framing, message kinds, error codes, the authentication handshake, compact rows, Arrow
IPC payloads and table schemas. No sockets of its own, and never Spark: the server,
the locator and the client build on it; ``jvm_bridge`` implements the same spec.

The wire builds on the engine (``spark_ext.store``), never the other way round: type
names, value forms, the key hash and the table definition are the engine's, and the
modules here add what only the protocol needs (encodings, strict JSON, ``WireError``).

Modules:
    kinds: ``Kind`` and ``ErrorCode`` numbers.
    errors: ``WireError`` (and ``FrameError``, raised by the reader).
    frames: ``Frame``, ``encode_frame``, ``FrameReader``, ``send_frame``.
    auth: the HELLO/AUTH handshake as pure functions.
    types / values: type strings (the engine's, with protocol errors), JSON literals.
    rowcodec: compact rows.
    arrowio: Arrow IPC bodies, ``TableSpec`` (the CREATE_TABLE schema JSON).
    predicates: structural checks of predicate and aggregate JSON.
    keys: ``KeyHasher``, the bucket of a key from typed Python values.
"""

from spark_ext.wire import frames as _frames
from spark_ext.wire.errors import FrameError, WireError
from spark_ext.wire.frames import *  # noqa: F403  (the framing API, see frames.__all__)
from spark_ext.wire.kinds import ErrorCode, Kind, is_known_kind, kind_name

__all__ = [*_frames.__all__, "ErrorCode", "FrameError", "Kind", "WireError", "is_known_kind", "kind_name"]
