"""The bucket of a key, from Python values (spec: "Bucket of a key").

Everything here is the engine's: the hash is :mod:`spark_ext.store.keyhash`, and the
checks and conversions of key values are those of a
:class:`~spark_ext.store.schema.TableSchema` whose primary key is the given columns.
:class:`KeyHasher` only wraps them for callers that have key column types but no table
(the shared test vectors), and reports problems as :class:`WireError`.

Tables without a primary key do not hash: the bucket of a row is ``_rowid mod
num_buckets`` (``TableSchema.bucket_of_key``), so use the table's schema for them.
"""

from __future__ import annotations

from typing import Any, Sequence

import pyarrow as pa

from spark_ext.exceptions import SparkExtError
from spark_ext.store import keyhash
from spark_ext.store.schema import TableSchema
from spark_ext.store.types import key_component_value
from spark_ext.wire.errors import WireError
from spark_ext.wire.kinds import ErrorCode
from spark_ext.wire.types import canonical, parse_type


class KeyHasher:
    """Hashes keys of a fixed list of key column types.

    Build once per table (O(#key columns)); each :meth:`hash` is O(key size).
    """

    def __init__(self, types: Sequence[str | pa.DataType], names: Sequence[str] | None = None, *,
                 table: str = "key") -> None:
        """Args:
            types: key column types in primary-key order (type strings or Arrow types).
            names: key column names, for error messages (default ``key0``, ``key1``...).
            table: table name for error messages.

        Raises:
            WireError: BAD_ARGUMENT for no columns, names not matching the types, or a
                floating-point key column.
        """
        if not types:
            raise WireError(ErrorCode.BAD_ARGUMENT, "a key has at least one column")
        names = list(names) if names is not None else [f"key{i}" for i in range(len(types))]
        if len(names) != len(types):
            raise WireError(ErrorCode.BAD_ARGUMENT, f"{len(types)} key column types but {len(names)} names")
        fields = [pa.field(n, parse_type(canonical(t)), nullable=False) for n, t in zip(names, types)]
        try:
            self._schema = TableSchema(table, pa.schema(fields), names, 1)
        except SparkExtError as e:
            raise WireError.from_exception(e) from None
        self.names = names
        self.types = list(self._schema.key_type_names)

    def components(self, values: Sequence[Any]) -> list[int]:
        """Per-column 64-bit components of a key. O(key size).

        Raises:
            WireError: NULL_KEY, TYPE_MISMATCH or VALUE_OUT_OF_RANGE naming the column;
                BAD_ARGUMENT for the wrong number of values.
        """
        if len(values) != len(self.types):
            raise WireError(
                ErrorCode.BAD_ARGUMENT,
                f"a key has {len(self.types)} values ({', '.join(self.names)}), got {len(values)}",
            )
        try:
            key = self._schema.coerce_key(tuple(values))
        except SparkExtError as e:
            raise WireError.from_exception(e) from None
        out = []
        for n, t, v in zip(self.names, self.types, key if len(self.types) > 1 else (key,)):
            try:
                out.append(keyhash.component_of(key_component_value(t, v)))
            except UnicodeEncodeError:
                raise WireError(
                    ErrorCode.VALUE_OUT_OF_RANGE, f"key column {n!r}: string is not encodable as UTF-8",
                    {"column": n},
                ) from None
        return out

    def hash(self, values: Sequence[Any]) -> int:
        """The unsigned 64-bit key hash. O(key size)."""
        return keyhash.combine(self.components(values))

    def bucket(self, values: Sequence[Any], num_buckets: int) -> int:
        """The bucket of a key: ``hash mod num_buckets``. O(key size)."""
        return keyhash.bucket_of_hash(self.hash(values), num_buckets)
