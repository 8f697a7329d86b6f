"""Generate ``tests/data/keyhash_vectors.json``: the shared bucket-of-a-key test vectors.

Run from the repository root: ``.venv/bin/python tests/data/make_keyhash_vectors.py``.

The hashes are computed by a *separate* implementation written from the spec
(``docs/protocol.md``, "Bucket of a key"): its own MurmurHash3 finalizer and its own
table-driven CRC-32, not ``spark_ext.store.keyhash``. So the vectors check the engine
(``tests/store/test_keyhash.py``) and the JVM side against the text of the spec rather
than against themselves.

Each vector: ``types`` (canonical type strings of the key columns), ``values`` (JSON
literal forms, see the spec), ``num_buckets``, ``components`` and ``hash`` (unsigned
64-bit integers as decimal strings: JSON numbers lose precision above 2**53 in many
parsers), and ``bucket``.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

MASK64 = (1 << 64) - 1
SEED = 0x9E3779B97F4A7C15
OUT = Path(__file__).with_name("keyhash_vectors.json")


def fmix64(k: int) -> int:
    """MurmurHash3 fmix64, from the reference C code."""
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & MASK64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & MASK64
    k ^= k >> 33
    return k


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC = _crc_table()


def crc32(data: bytes) -> int:
    """CRC-32 (IEEE 802.3, reflected, init and final xor 0xFFFFFFFF)."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32(b"123456789") == 0xCBF43926  # the standard CRC-32 check value

_DEC = re.compile(r"^decimal\((\d+),(\d+)\)$")


def component(type_: str, value: Any) -> int:
    """The 64-bit component of one key value given in its JSON literal form."""
    if type_ in ("int8", "int16", "int32", "int64", "timestamp_tz", "timestamp_ntz"):
        return fmix64(value & MASK64)
    if type_ == "bool":
        return fmix64(1 if value else 0)
    if type_ == "date":
        days = (dt.date.fromisoformat(value) - dt.date(1970, 1, 1)).days
        return fmix64(days & MASK64)
    if type_ == "string":
        b = value.encode("utf-8")
    elif type_ == "binary":
        b = base64.b64decode(value, validate=True)
    else:
        m = _DEC.match(type_)
        assert m, type_
        scale = int(m.group(2))
        with decimal.localcontext(decimal.Context(prec=100)):
            unscaled = decimal.Decimal(value).scaleb(scale)
        assert unscaled == unscaled.to_integral_value(), (type_, value)
        b = int(unscaled).to_bytes(16, "little", signed=True)
    return fmix64(crc32(b) | (len(b) << 32))


def vector(types: list[str], values: list[Any], num_buckets: int) -> dict[str, Any]:
    comps = [component(t, v) for t, v in zip(types, values)]
    h = SEED
    for c in comps:
        h = fmix64(h ^ c)
    return {
        "types": types,
        "values": values,
        "num_buckets": num_buckets,
        "components": [str(c) for c in comps],
        "hash": str(h),
        "bucket": h % num_buckets,
    }


def cases() -> list[tuple[list[str], list[Any], int]]:
    rnd = random.Random(20240601)
    out: list[tuple[list[str], list[Any], int]] = []

    def one(t: str, vals: list[Any], nb: int = 16) -> None:
        for v in vals:
            out.append(([t], [v], nb))

    one("int8", [-128, -1, 0, 1, 127])
    one("int16", [-32768, -1, 32767])
    one("int32", [-(2**31), -1, 0, 42, 2**31 - 1])
    one("int64", [-(2**63), -1, 0, 1, 1234567890123, 2**63 - 1])
    for nb in (1, 2, 7, 8, 64, 1000, 4096):
        one("int64", [7, -7, 1 << 40], nb)
    one("bool", [False, True])
    one("date", ["1970-01-01", "1969-12-31", "2024-02-29", "0001-01-01", "9999-12-31"])
    one("timestamp_tz", [0, -1, 1700000000123456, -62135596800000000, 253402300799999999])
    one("timestamp_ntz", [0, 1700000000123456, -86400000000])
    one("string", ["", "a", "hello world", "h\u00e9llo", "\u65e5\u672c\u8a9e", "\U0001f600 emoji", "x" * 1000])
    one("binary", ["", "AAEC/w==", base64.b64encode(bytes(rnd.randrange(256) for _ in range(64))).decode("ascii")])
    one("decimal(10,2)", ["0.00", "123.45", "-123.45", "1.5", "-0.01"])
    one("decimal(38,0)", ["99999999999999999999999999999999999999", "-99999999999999999999999999999999999999"])
    one("decimal(38,10)", ["1234567890123456789012345678.0123456789", "-0.0000000001"])
    one("decimal(5,5)", ["0.00001"])
    out += [
        (["int64", "string"], [1, "a"], 8),
        (["int64", "string"], [1, ""], 8),
        (["string", "int64"], ["a", 1], 8),
        (["int32", "int32"], [1, 2], 32),
        (["int32", "int32"], [2, 1], 32),
        (["string", "int32", "date"], ["tenant-7", -5, "2023-12-31"], 128),
        (["decimal(12,2)", "timestamp_tz"], ["-9999.99", 1700000000000000], 64),
        (["bool", "binary", "int64"], [True, "3q2+7w==", -(2**63)], 4096),
        (["int8", "int16", "int64"], [-1, -1, -1], 10),
        (["timestamp_ntz", "string"], [0, "\u00fc"], 3),
    ]
    for i in range(20):
        out.append((["int64"], [rnd.randrange(-(2**63), 2**63)], rnd.choice([8, 16, 100, 4096])))
        out.append((["int32", "string"], [rnd.randrange(-(2**31), 2**31), f"k{rnd.randrange(10**6)}"], 16))
    return out


def main() -> int:
    vectors = [vector(t, v, nb) for t, v, nb in cases()]
    # One vector per line: readable, and diffs show exactly which vectors changed.
    text = "[\n" + ",\n".join(json.dumps(v, ensure_ascii=True) for v in vectors) + "\n]\n"
    OUT.write_text(text, encoding="utf-8")
    sys.stderr.write(f"wrote {len(vectors)} vectors to {OUT}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
