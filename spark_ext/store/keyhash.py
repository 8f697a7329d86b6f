"""The bucket of a key: one definition, shared by the engine, the wire spec and the JVM.

The function is specified in ``docs/protocol.md`` ("Bucket of a key") and mirrored in
``jvm_bridge``; ``tests/data/keyhash_vectors.json`` holds vectors both sides check.

Per key column a 64-bit component ``c`` is computed:

* integer-like values (all integer widths, boolean as 0/1, date as days since the
  epoch, timestamp as microseconds since the epoch): ``c = fmix64(v mod 2**64)``;
* byte-like values (string as UTF-8, binary as is, decimal as its unscaled value in
  16 bytes little-endian two's complement):
  ``c = fmix64(crc32(b) | (len(b) << 32))`` where crc32 is zlib's (IEEE 802.3).

The key hash folds the components in key-column order, starting from ``SEED``:
``h = fmix64(h ^ c)``; the bucket is ``h mod num_buckets`` (unsigned).

``fmix64`` is MurmurHash3's 64-bit finalizer. zlib's crc32 is C code, so a point key
costs well under a microsecond, and integer key columns hash vectorized in numpy.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Sequence

import numpy as np

MASK64 = (1 << 64) - 1
SEED = 0x9E3779B97F4A7C15
_C1 = 0xFF51AFD7ED558CCD
_C2 = 0xC4CEB9FE1A85EC53


def fmix64(k: int) -> int:
    """MurmurHash3's 64-bit finalizer on an unsigned 64-bit int. O(1)."""
    k ^= k >> 33
    k = (k * _C1) & MASK64
    k ^= k >> 33
    k = (k * _C2) & MASK64
    k ^= k >> 33
    return k


def int_component(v: int) -> int:
    """Component of an integer-like value (already reduced to an int). O(1)."""
    return fmix64(v & MASK64)


def bytes_component(b: bytes) -> int:
    """Component of a byte-like value. O(len(b))."""
    return fmix64(zlib.crc32(b) | (len(b) << 32))


def decimal_bytes(unscaled: int) -> bytes:
    """The 16 bytes hashed for a decimal: its unscaled value, little-endian. O(1)."""
    return unscaled.to_bytes(16, "little", signed=True)


def combine(components: Sequence[int]) -> int:
    """Fold per-column components into the key hash. O(len(components))."""
    h = SEED
    for c in components:
        h = fmix64(h ^ c)
    return h


def int_key_bucket_function(num_buckets: int) -> "Callable[[int], int]":
    """``key -> fmix64(SEED ^ fmix64(key mod 2**64)) mod num_buckets``: the bucket of a
    one-column integer key, both fmix64 rounds inlined (a point read runs it). O(1)."""
    m, c1, c2, seed, nb = MASK64, _C1, _C2, SEED, num_buckets

    def bucket(key: int) -> int:
        k = key & m
        k ^= k >> 33
        k = k * c1 & m
        k ^= k >> 33
        k = k * c2 & m
        k ^= k >> 33
        k ^= seed
        k ^= k >> 33
        k = k * c1 & m
        k ^= k >> 33
        k = k * c2 & m
        k ^= k >> 33
        return k % nb

    return bucket


def bucket_of_hash(h: int, num_buckets: int) -> int:
    """Bucket number of a key hash. O(1)."""
    return h % num_buckets


# --- vectorized forms (numpy uint64 arithmetic wraps modulo 2**64) -----------------

_NC1 = np.uint64(_C1)
_NC2 = np.uint64(_C2)
_S33 = np.uint64(33)


def fmix64_array(k: np.ndarray) -> np.ndarray:
    """fmix64 over a uint64 array. O(n), vectorized."""
    k = k.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        k ^= k >> _S33
        k *= _NC1
        k ^= k >> _S33
        k *= _NC2
        k ^= k >> _S33
    return k


def int_component_array(values: np.ndarray) -> np.ndarray:
    """Components of an integer-like column given as a signed or unsigned int array."""
    return fmix64_array(values.astype(np.int64, copy=False).view(np.uint64))


def combine_arrays(components: Sequence[np.ndarray]) -> np.ndarray:
    """Vectorized :func:`combine` over columns of components (all the same length)."""
    h = np.full(len(components[0]), SEED, dtype=np.uint64)
    for c in components:
        h = fmix64_array(h ^ c)
    return h


def buckets_of_hashes(h: np.ndarray, num_buckets: int) -> np.ndarray:
    """Bucket numbers of an array of key hashes, as int64."""
    return (h % np.uint64(num_buckets)).astype(np.int64)


def component_of(value: Any) -> int:
    """Component of one Python key value already in engine form.

    Engine form: ``int`` for integer-like types (bool, date and timestamp are reduced to
    ints by the schema layer before hashing), ``str``, ``bytes``, or a ``decimal``
    already reduced to its unscaled ``int`` wrapped as ``bytes`` by the caller.
    """
    if isinstance(value, int):
        return fmix64(value & MASK64)
    if isinstance(value, str):
        return bytes_component(value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes_component(bytes(value))
    raise TypeError(f"cannot hash key value of type {type(value).__name__}")
