"""Every error spark-ext raises, in one flat module.

Each error carries a stable ``code`` (the name used on the wire, see
``docs/protocol.md``) and a ``details`` dict naming what went wrong (table, column,
value...), so a client in another process can rebuild the same error.
"""

from __future__ import annotations

from typing import Any


class SparkExtError(Exception):
    """Base of all spark-ext errors."""

    code = "INTERNAL"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}


class StorageError(SparkExtError):
    """A failure of the storage engine (files, recovery)."""

    code = "INTERNAL"


class CorruptionError(StorageError):
    """A file on disk failed its checksum or could not be parsed."""

    code = "INTERNAL"


class BadArgumentError(SparkExtError, ValueError):
    """An argument has the wrong shape or value (not a data error)."""

    code = "BAD_ARGUMENT"


class SchemaError(BadArgumentError):
    """A table definition is invalid (unsupported type, bad key...)."""

    code = "BAD_ARGUMENT"


class NoSuchTableError(SparkExtError, KeyError):
    code = "NO_SUCH_TABLE"

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class TableExistsError(SparkExtError):
    code = "TABLE_EXISTS"


class NoSuchNamespaceError(SparkExtError):
    code = "NO_SUCH_NAMESPACE"


class NamespaceExistsError(SparkExtError):
    code = "NAMESPACE_EXISTS"


class NamespaceNotEmptyError(SparkExtError):
    code = "NAMESPACE_NOT_EMPTY"


class UnknownColumnError(BadArgumentError):
    code = "UNKNOWN_COLUMN"


class NoSuchIndexError(SparkExtError):
    code = "NO_SUCH_INDEX"


class IndexExistsError(SparkExtError):
    code = "INDEX_EXISTS"


class ConstraintError(SparkExtError):
    """Base of data errors: the statement is refused and nothing is changed."""

    code = "BAD_ARGUMENT"


class DuplicateKeyError(ConstraintError):
    code = "DUPLICATE_KEY"


class NullKeyError(ConstraintError):
    code = "NULL_KEY"


class TypeMismatchError(ConstraintError, TypeError):
    code = "TYPE_MISMATCH"


class ValueOutOfRangeError(ConstraintError, ValueError):
    code = "VALUE_OUT_OF_RANGE"


class NotNullViolationError(ConstraintError):
    code = "NULL_VALUE"


class ConflictError(SparkExtError):
    """Another open transaction holds a lock on the same key or table."""

    code = "CONFLICT"


class TransactionStateError(SparkExtError):
    """An operation is not allowed in the transaction's current state."""

    code = "TXN_STATE"


class NoSuchTransactionError(SparkExtError):
    code = "TXN_UNKNOWN"


class MemoryLimitError(SparkExtError):
    """Applying the change would exceed a configured memory limit."""

    code = "MEMORY_LIMIT"


class FencedError(SparkExtError):
    """A write carried a fencing token older than one already seen."""

    code = "FENCED"


class LeaseNotHeldError(SparkExtError):
    code = "LEASE_NOT_HELD"


class BucketOfflineError(SparkExtError):
    code = "BUCKET_OFFLINE"


class AuthenticationError(SparkExtError):
    """The peer failed the shared-secret challenge (or none was configured)."""

    code = "AUTH_FAILED"


class ShuttingDownError(SparkExtError):
    code = "SHUTTING_DOWN"
