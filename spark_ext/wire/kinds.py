"""Message kinds and error codes of the spark-ext wire protocol.

The numbers are normative: they are written down in ``docs/protocol.md`` and mirrored
in ``jvm_bridge``. Never renumber a member; add new ones inside the range reserved for
their area (see the spec, "Message kinds").
"""

from __future__ import annotations

from enum import IntEnum


class Kind(IntEnum):
    """Message kinds (u16 in the frame header). A response carries its request's kind."""

    # 0x0001-0x00FF connection
    HELLO = 0x0001
    AUTH = 0x0002
    PING = 0x0003
    CANCEL = 0x0004
    STATUS = 0x0005

    # 0x0100-0x01FF locator: membership and placement
    REGISTER_SERVER = 0x0100
    HEARTBEAT = 0x0101
    DEREGISTER_SERVER = 0x0102
    LIST_SERVERS = 0x0103
    GET_PLACEMENT = 0x0104
    # 0x0110-0x011F locator -> store server control
    OPEN_BUCKETS = 0x0110
    CLOSE_BUCKETS = 0x0111
    UPDATE_TABLE = 0x0112

    # 0x0200-0x02FF catalog
    CREATE_NAMESPACE = 0x0200
    DROP_NAMESPACE = 0x0201
    LIST_NAMESPACES = 0x0202
    GET_NAMESPACE = 0x0203
    ALTER_NAMESPACE = 0x0204
    CREATE_TABLE = 0x0210
    DROP_TABLE = 0x0211
    ALTER_TABLE = 0x0212
    RENAME_TABLE = 0x0213
    GET_TABLE = 0x0214
    LIST_TABLES = 0x0215
    CREATE_INDEX = 0x0216
    DROP_INDEX = 0x0217

    # 0x0300-0x03FF data reads
    GET = 0x0300
    GET_MANY = 0x0301
    SCAN = 0x0302
    LOOKUP = 0x0303
    RANGE = 0x0304
    COUNT = 0x0305

    # 0x0400-0x04FF data writes
    PUT = 0x0400
    INSERT = 0x0401
    UPDATE = 0x0402
    DELETE = 0x0403
    UPDATE_WHERE = 0x0404
    DELETE_WHERE = 0x0405
    TRUNCATE = 0x0406

    # 0x0500-0x05FF transactions
    TXN_STAGE = 0x0500
    TXN_PREPARE = 0x0501
    TXN_COMMIT = 0x0502
    TXN_ABORT = 0x0503
    TXN_STATUS = 0x0504

    # 0x0600-0x06FF leases and fencing
    LEASE_ACQUIRE = 0x0600
    LEASE_RENEW = 0x0601
    LEASE_RELEASE = 0x0602
    LEASE_STATUS = 0x0603

    # 0x0700-0x07FF replication (reserved for the replica issue)
    # 0x0800-0xEFFF reserved for future areas
    # 0xF000-0xFFFF private / experimental, never sent between different builds


class ErrorCode(IntEnum):
    """Error codes carried by error frames (``code`` in the error metadata)."""

    # 1-99 framing, connection, authentication
    MALFORMED = 1
    FRAME_TOO_LARGE = 2
    UNKNOWN_KIND = 3
    UNSUPPORTED_VERSION = 4
    AUTH_REQUIRED = 5
    AUTH_FAILED = 6
    CANCELLED = 7

    # 100-199 arguments and values
    BAD_ARGUMENT = 100
    UNKNOWN_COLUMN = 101
    TYPE_MISMATCH = 102
    VALUE_OUT_OF_RANGE = 103

    # 200-299 catalog
    NO_SUCH_NAMESPACE = 200
    NAMESPACE_EXISTS = 201
    NAMESPACE_NOT_EMPTY = 202
    NO_SUCH_TABLE = 203
    TABLE_EXISTS = 204
    NO_SUCH_INDEX = 205
    INDEX_EXISTS = 206
    CONFLICT = 207

    # 300-399 data constraints
    DUPLICATE_KEY = 300
    NULL_KEY = 301
    NULL_VALUE = 302

    # 400-499 transactions
    TXN_UNKNOWN = 400
    TXN_STATE = 401

    # 500-599 placement and resources
    BUCKET_OFFLINE = 500
    NOT_OWNER = 501
    MEMORY_LIMIT = 502
    SHUTTING_DOWN = 503

    # 600-699 leases and fencing
    FENCED = 600
    LEASE_NOT_HELD = 601

    # 900-999 server faults
    INTERNAL = 900


#: Errors after which the sender closes the connection (the byte stream can no longer
#: be trusted, or the peer is not who it should be).
FATAL_ERRORS: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.MALFORMED,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.AUTH_REQUIRED,
        ErrorCode.AUTH_FAILED,
    }
)

#: Errors where the same request may succeed if sent again (after refreshing placement
#: for NOT_OWNER / BUCKET_OFFLINE, or to another server for SHUTTING_DOWN). A client
#: retries these only for idempotent requests or when the error proves nothing changed.
RETRYABLE_ERRORS: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.BUCKET_OFFLINE,
        ErrorCode.NOT_OWNER,
        ErrorCode.SHUTTING_DOWN,
    }
)


def kind_name(kind: int) -> str:
    """Name of a kind number, or ``"KIND_0x...."`` for an unknown one. O(1)."""
    try:
        return Kind(kind).name
    except ValueError:
        return f"KIND_0x{kind:04x}"


def is_known_kind(kind: int) -> bool:
    """Whether ``kind`` is a kind of this protocol version. O(1)."""
    return kind in Kind._value2member_map_
