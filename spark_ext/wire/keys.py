"""The bucket of a key, from Python values (spec: "Bucket of a key").

The hash itself lives in :mod:`spark_ext.store.keyhash` (one definition for the engine
and the wire); this module turns Python key values of typed columns into the values
that hash takes, so a client can route a point request without an engine schema.
"""

from __future__ import annotations

from typing import Any, Sequence

import pyarrow as pa

from spark_ext.store import keyhash
from spark_ext.wire.errors import WireError
from spark_ext.wire.kinds import ErrorCode
from spark_ext.wire.types import FLOAT_TYPES, canonical
from spark_ext.wire.values import INT_RANGES, key_int


class KeyHasher:
    """Hashes keys of a fixed list of key column types.

    Build once per table (O(#key columns)); each :meth:`hash` is O(key size).
    """

    def __init__(self, types: Sequence[str | pa.DataType], names: Sequence[str] | None = None) -> None:
        """Args:
            types: key column types in primary-key order (type strings or Arrow types).
            names: key column names, for error messages (default ``key0``, ``key1``...).

        Raises:
            WireError: BAD_ARGUMENT for no columns or a floating-point key column.
        """
        if not types:
            raise WireError(ErrorCode.BAD_ARGUMENT, "a key has at least one column")
        self.types = [canonical(t) for t in types]
        self.names = list(names) if names is not None else [f"key{i}" for i in range(len(self.types))]
        for n, t in zip(self.names, self.types):
            if t in FLOAT_TYPES:
                raise WireError(
                    ErrorCode.BAD_ARGUMENT, f"key column {n!r} has type {t}: floating-point keys are not allowed",
                    {"column": n},
                )
        # One integer column: skip the generic path (the common case for point ops).
        self._single_int = len(self.types) == 1 and self.types[0] in INT_RANGES
        self._lo, self._hi = INT_RANGES.get(self.types[0], (0, -1))

    def components(self, values: Sequence[Any]) -> list[int]:
        """Per-column 64-bit components of a key. O(key size).

        Raises:
            WireError: NULL_KEY, TYPE_MISMATCH or VALUE_OUT_OF_RANGE naming the column.
        """
        if len(values) != len(self.types):
            raise WireError(
                ErrorCode.BAD_ARGUMENT,
                f"a key has {len(self.types)} values ({', '.join(self.names)}), got {len(values)}",
            )
        out = []
        for n, t, v in zip(self.names, self.types, values):
            if v is None:
                raise WireError(ErrorCode.NULL_KEY, f"key column {n!r} cannot be NULL", {"column": n})
            try:
                out.append(keyhash.component_of(key_int(t, v)))
            except WireError as e:
                raise WireError(e.code, f"key column {n!r}: {e.message}", {**e.details, "column": n}) from None
            except UnicodeEncodeError:
                raise WireError(
                    ErrorCode.VALUE_OUT_OF_RANGE, f"key column {n!r}: string is not encodable as UTF-8",
                    {"column": n},
                ) from None
        return out

    def hash(self, values: Sequence[Any]) -> int:
        """The unsigned 64-bit key hash. O(key size)."""
        if self._single_int and len(values) == 1 and type(values[0]) is int:
            v = values[0]
            if self._lo <= v <= self._hi:
                return keyhash.fmix64(keyhash.SEED ^ keyhash.fmix64(v & keyhash.MASK64))
        return keyhash.combine(self.components(values))

    def bucket(self, values: Sequence[Any], num_buckets: int) -> int:
        """The bucket of a key: ``hash mod num_buckets``. O(key size)."""
        return keyhash.bucket_of_hash(self.hash(values), num_buckets)
