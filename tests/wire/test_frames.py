"""Frames: round trips, the cap, and every kind of malformed input."""

from __future__ import annotations

import io
import json
import random
import socket
import struct
import threading
from typing import Any

import pytest

from spark_ext.wire import frames
from spark_ext.wire.errors import FrameError, WireError
from spark_ext.wire.frames import (
    DEFAULT_MAX_FRAME,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    Flags,
    Frame,
    FrameReader,
    decode_metadata,
    encode_frame,
    encode_frame_parts,
    error_frame,
    field_of,
    read_frames,
    send_frame,
)
from spark_ext.wire.kinds import ErrorCode, Kind


def header(kind: int = Kind.PING, flags: int = 0, rid: int = 1, mlen: int = 0, blen: int = 0,
           magic: bytes = MAGIC, version: int = 1) -> bytes:
    return HEADER.pack(magic, version, kind, flags, rid, mlen, blen)


# --- round trips ----------------------------------------------------------------------


def test_header_layout_is_22_bytes_little_endian() -> None:
    data = encode_frame(0x0302, 0x0102030405060708, {"a": 1}, b"xyz", Flags.HAS_ARROW | Flags.MORE)
    assert HEADER_SIZE == 22
    assert data[:2] == b"SX"
    assert data[2] == 1
    assert data[3:5] == b"\x02\x03"  # kind 0x0302 little-endian
    assert data[5] == 0x05
    assert data[6:14] == bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert struct.unpack("<II", data[14:22]) == (7, 3)
    assert data[22:29] == b'{"a":1}'
    assert data[29:] == b"xyz"


@pytest.mark.parametrize(
    "frame",
    [
        Frame(Kind.PING, 0),
        Frame(Kind.HELLO, 1, {"versions": [1], "client": "t\u00e9st \U0001f600"}),
        Frame(Kind.SCAN, (1 << 64) - 1, {"where": ["and", ["=", "a", 1]]}, b"\x00" * 1000, int(Flags.HAS_ARROW | Flags.MORE)),
        Frame(Kind.GET, 7, {}, b"\x01\x02", int(Flags.COMPACT_ROWS)),
        Frame(0xFFFF, 3, {"x": None, "y": [1.5, True, "s"]}),
    ],
)
def test_round_trip(frame: Frame) -> None:
    data = frame.encode()
    (back,) = read_frames(data)
    assert back.kind == frame.kind
    assert back.request_id == frame.request_id
    assert back.metadata == frame.metadata
    assert bytes(back.body) == bytes(frame.body)
    assert back.flags == frame.flags
    assert back.version == 1


def test_empty_metadata_is_zero_bytes() -> None:
    data = encode_frame(Kind.PING, 5)
    assert len(data) == HEADER_SIZE
    assert read_frames(data)[0].metadata == {}


def test_many_frames_in_one_stream_and_clean_eof() -> None:
    data = b"".join(encode_frame(Kind.PING, i, {"i": i}, bytes([i % 256]) * i) for i in range(300))
    out = read_frames(data)
    assert [f.request_id for f in out] == list(range(300))
    assert all(f.metadata == {"i": f.request_id} for f in out)
    assert all(len(f.body) == f.request_id for f in out)


def test_frames_larger_than_the_buffer() -> None:
    big = bytes(range(256)) * 4000  # ~1 MB
    data = encode_frame(Kind.PUT, 9, {"m": "x" * 70000}, big, Flags.HAS_ARROW) + encode_frame(Kind.PING, 10)
    r = FrameReader(io.BytesIO(data), buffer_size=4096)
    f = r.read_frame()
    assert f is not None and f.metadata == {"m": "x" * 70000} and bytes(f.body) == big
    g = r.read_frame()
    assert g is not None and g.request_id == 10
    assert r.read_frame() is None


class Trickle(io.RawIOBase):
    """Delivers a byte string a few bytes at a time (like a slow socket)."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(self.step, len(b), len(self.data) - self.pos)
        b[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


@pytest.mark.parametrize("step", [1, 3, 22, 1000])
def test_partial_reads(step: int) -> None:
    frames_in = [encode_frame(Kind.GET, i, {"k": i}, b"b" * (i * 37)) for i in range(20)]
    r = FrameReader(Trickle(b"".join(frames_in), step), buffer_size=64)
    got = list(r)
    assert [f.metadata["k"] for f in got] == list(range(20))
    assert [len(f.body) for f in got] == [i * 37 for i in range(20)]


def test_error_frames() -> None:
    err = WireError(ErrorCode.DUPLICATE_KEY, "key 5 exists", {"table": "t", "value": "5"})
    f = error_frame(Kind.INSERT, 42, err)
    (back,) = read_frames(f.encode())
    assert back.is_error and not back.more
    e = back.error()
    assert e is not None and e.code == ErrorCode.DUPLICATE_KEY and e.name == "DUPLICATE_KEY"
    assert e.details == {"table": "t", "value": "5"}
    with pytest.raises(WireError) as ei:
        back.raise_for_error()
    assert ei.value.message == "key 5 exists"
    assert Frame(Kind.PING, 1).raise_for_error().kind == Kind.PING


def test_repr_does_not_dump_body() -> None:
    r = repr(Frame(Kind.SCAN, 1, {}, b"x" * 10_000, int(Flags.HAS_ARROW)))
    assert "10000 bytes" in r and "xxxx" not in r and "SCAN" in r


# --- encoding refusals -------------------------------------------------------------------


def test_encode_refuses_bad_header_values() -> None:
    with pytest.raises(ValueError):
        encode_frame(0x10000, 1)
    with pytest.raises(ValueError):
        encode_frame(1, -1)
    with pytest.raises(ValueError):
        encode_frame(1, 1 << 64)
    with pytest.raises(ValueError):
        encode_frame(1, 1, flags=0x10)
    with pytest.raises(ValueError):
        encode_frame(1, 1, flags=Flags.HAS_ARROW | Flags.COMPACT_ROWS)


def test_encode_refuses_nan_and_non_json() -> None:
    with pytest.raises(ValueError):
        encode_frame(1, 1, {"x": float("nan")})
    with pytest.raises(TypeError):
        encode_frame(1, 1, {"x": object()})


def test_encode_refuses_oversized_frame() -> None:
    with pytest.raises(WireError) as ei:
        encode_frame(Kind.PUT, 1, None, b"x" * 1000, max_frame=500)
    assert ei.value.code == ErrorCode.FRAME_TOO_LARGE
    assert len(encode_frame(Kind.PUT, 1, None, b"x" * 1000, max_frame=None)) == 1022


# --- malformed input ---------------------------------------------------------------------


def read_one(data: bytes, **kw: Any) -> Frame | None:
    return FrameReader(io.BytesIO(data), **kw).read_frame()


def test_truncated_header() -> None:
    data = encode_frame(Kind.PING, 1)
    for n in range(1, HEADER_SIZE):
        with pytest.raises(FrameError) as ei:
            read_one(data[:n])
        assert ei.value.code == ErrorCode.MALFORMED and ei.value.fatal


def test_truncated_body_small_and_big() -> None:
    for body in (b"x" * 10, b"y" * 200_000):
        data = encode_frame(Kind.PUT, 77, {"a": 1}, body)
        with pytest.raises(FrameError) as ei:
            read_one(data[:-1])
        assert ei.value.code == ErrorCode.MALFORMED
        assert ei.value.request_id == 77 and ei.value.kind == Kind.PUT


def test_huge_declared_length_rejected_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    allocations: list[int] = []
    real = bytearray

    class Spy(real):  # type: ignore[misc, valid-type]
        def __new__(cls, *a: Any) -> Any:
            if a and isinstance(a[0], int):
                allocations.append(a[0])
            return real.__new__(cls, *a)

    monkeypatch.setattr(frames, "bytearray", Spy, raising=False)
    r = FrameReader(io.BytesIO(header(Kind.PUT, rid=5, mlen=10, blen=0xFFFFFFFF)), max_frame=1 << 20)
    with pytest.raises(FrameError) as ei:
        r.read_frame()
    assert ei.value.code == ErrorCode.FRAME_TOO_LARGE
    assert ei.value.request_id == 5 and ei.value.kind == Kind.PUT
    assert ei.value.details["max_frame"] == 1 << 20
    # Only the fixed read buffer was ever allocated; nothing sized from the header.
    assert all(n <= 64 * 1024 for n in allocations)


def test_cap_counts_the_whole_frame() -> None:
    data = encode_frame(Kind.PUT, 1, {"a": 1}, b"x" * 100, max_frame=None)
    assert read_one(data, max_frame=len(data)) is not None
    with pytest.raises(FrameError) as ei:
        read_one(data, max_frame=len(data) - 1)
    assert ei.value.code == ErrorCode.FRAME_TOO_LARGE


def test_default_cap_is_64_mib() -> None:
    assert DEFAULT_MAX_FRAME == 64 * 1024 * 1024
    with pytest.raises(FrameError) as ei:
        read_one(header(blen=DEFAULT_MAX_FRAME))
    assert ei.value.code == ErrorCode.FRAME_TOO_LARGE


@pytest.mark.parametrize("magic", [b"XS", b"\x00\x00", b"GE", b"\x16\x03"])
def test_bad_magic(magic: bytes) -> None:
    with pytest.raises(FrameError) as ei:
        read_one(header(magic=magic) + b"\x00" * 100)
    assert ei.value.code == ErrorCode.MALFORMED
    assert ei.value.request_id == 0  # nothing in the header is trusted


def test_http_request_is_malformed() -> None:
    with pytest.raises(FrameError) as ei:
        read_one(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ei.value.code == ErrorCode.MALFORMED


@pytest.mark.parametrize("version", [0, 2, 255])
def test_bad_version(version: int) -> None:
    with pytest.raises(FrameError) as ei:
        read_one(header(version=version, rid=9))
    assert ei.value.code == ErrorCode.UNSUPPORTED_VERSION
    assert ei.value.request_id == 9 and ei.value.fatal


@pytest.mark.parametrize("flags", [0x10, 0x80, 0xFF, int(Flags.HAS_ARROW | Flags.COMPACT_ROWS)])
def test_bad_flags(flags: int) -> None:
    with pytest.raises(FrameError) as ei:
        read_one(header(flags=flags))
    assert ei.value.code == ErrorCode.MALFORMED


@pytest.mark.parametrize(
    "meta",
    [
        b"{",
        b"[1,2]",
        b'"str"',
        b"null",
        b"\xff\xfe{}",
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":1} trailing',
        "\ufeff{}".encode("utf-8"),
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"n":' + b"9" * 10_000 + b"}",
        b'{"a":"\xc3\x28"}',
    ],
)
def test_bad_metadata_json(meta: bytes) -> None:
    data = header(Kind.GET, rid=31, mlen=len(meta)) + meta
    with pytest.raises(FrameError) as ei:
        read_one(data)
    assert ei.value.code == ErrorCode.MALFORMED
    assert ei.value.request_id == 31 and ei.value.kind == Kind.GET


def test_unknown_kind_is_read_normally() -> None:
    # UNKNOWN_KIND is the dispatcher's answer; the reader must keep the stream in sync.
    data = encode_frame(0x7777, 1, {"x": 1}, b"abc") + encode_frame(Kind.PING, 2)
    a, b = read_frames(data)
    assert a.kind == 0x7777 and bytes(a.body) == b"abc" and b.kind == Kind.PING


@pytest.mark.parametrize("seed", range(40))
def test_random_bytes_never_crash(seed: int) -> None:
    rnd = random.Random(seed)
    n = rnd.choice([1, 10, 22, 23, 100, 5000])
    data = bytes(rnd.randrange(256) for _ in range(n))
    if seed % 2:
        data = MAGIC + bytes([1]) + data  # get past the magic and version checks
    r = FrameReader(io.BytesIO(data), max_frame=1 << 16)
    try:
        while r.read_frame() is not None:
            pass
    except FrameError as e:
        assert e.fatal
        assert e.code in (ErrorCode.MALFORMED, ErrorCode.FRAME_TOO_LARGE, ErrorCode.UNSUPPORTED_VERSION)


@pytest.mark.parametrize("seed", range(30))
def test_mutated_valid_frames_never_crash(seed: int) -> None:
    rnd = random.Random(1000 + seed)
    data = bytearray(encode_frame(Kind.SCAN, 3, {"where": ["=", "a", 1], "cols": ["a", "b"]}, b"body" * 10))
    for _ in range(rnd.randrange(1, 6)):
        data[rnd.randrange(len(data))] = rnd.randrange(256)
    try:
        for f in FrameReader(io.BytesIO(bytes(data)), max_frame=1 << 16):
            assert isinstance(f.metadata, dict)
    except FrameError as e:
        assert e.fatal


def test_decode_metadata_direct() -> None:
    assert decode_metadata(b"") == {}
    assert decode_metadata(memoryview(b'{"a":[1,{"b":null}]}')) == {"a": [1, {"b": None}]}
    with pytest.raises(WireError) as ei:
        decode_metadata(b"[]")
    assert ei.value.code == ErrorCode.MALFORMED


# --- sockets ---------------------------------------------------------------------------


def test_socket_round_trip_with_send_frame() -> None:
    a, b = socket.socketpair()
    try:
        big = bytes(range(256)) * 2000
        sent = [
            Frame(Kind.PING, 1),
            Frame(Kind.PUT, 2, {"table_id": 3}, big, int(Flags.HAS_ARROW)),
            Frame(Kind.GET, 3, {"k": [1]}, b"\x01\x00\x00\x00", int(Flags.COMPACT_ROWS)),
        ]

        def writer() -> None:
            for f in sent:
                send_frame(a, f)
            a.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=writer)
        t.start()
        got = list(FrameReader(b))
        t.join()
        assert [(f.kind, f.request_id, f.metadata, bytes(f.body), f.flags) for f in got] == [
            (f.kind, f.request_id, f.metadata, bytes(f.body), f.flags) for f in sent
        ]
    finally:
        a.close()
        b.close()


def test_timeout_mid_frame_is_resumable() -> None:
    a, b = socket.socketpair()
    try:
        b.settimeout(0.05)
        r = FrameReader(b, buffer_size=64)
        data = encode_frame(Kind.PUT, 8, {"x": "y"}, b"z" * 500)  # bigger than the buffer
        a.sendall(data[:5])
        with pytest.raises(TimeoutError):
            r.read_frame()
        a.sendall(data[5:40])
        with pytest.raises(TimeoutError):
            r.read_frame()
        a.sendall(data[40:300])
        with pytest.raises(TimeoutError):
            r.read_frame()
        a.sendall(data[300:] + encode_frame(Kind.PING, 9))
        f = r.read_frame()
        assert f is not None and f.request_id == 8 and bytes(f.body) == b"z" * 500
        g = r.read_frame()
        assert g is not None and g.request_id == 9
    finally:
        a.close()
        b.close()


def test_send_frame_to_file_and_parts() -> None:
    buf = io.BytesIO()
    n = send_frame(buf, Frame(Kind.PUT, 1, {"a": 1}, b"x" * 100_000))
    assert n == len(buf.getvalue())
    head, body = encode_frame_parts(Kind.PUT, 1, {"a": 1}, memoryview(b"x" * 100_000))
    assert head + bytes(body) == buf.getvalue()


# --- metadata fields -------------------------------------------------------------------


def test_field_of() -> None:
    md = {"n": 3, "s": "x", "b": True, "l": [1], "z": None}
    assert field_of(md, "n", int) == 3
    assert field_of(md, "missing", int, 7) == 7
    assert field_of(md, "z", str, "d") == "d"
    assert field_of(md, "b", bool) is True
    with pytest.raises(WireError) as ei:
        field_of(md, "b", int)  # JSON true is not a number
    assert ei.value.code == ErrorCode.BAD_ARGUMENT and ei.value.details == {"field": "b"}
    with pytest.raises(WireError):
        field_of(md, "missing", int)
    with pytest.raises(WireError):
        field_of(md, "s", (int, list))


def test_metadata_is_compact_utf8_json() -> None:
    data = encode_frame(Kind.PING, 1, {"s": "\u00e9", "l": [1, 2]})
    meta = data[HEADER_SIZE:]
    assert meta == '{"s":"\u00e9","l":[1,2]}'.encode("utf-8")
    assert json.loads(meta) == {"s": "\u00e9", "l": [1, 2]}


@pytest.mark.parametrize("raw", [b'{"table":"t","key":[7]}', b' {"a":1}', b'{"a":1} ', b'\n{"a" : [1, 2]}\t', b"{}"])
def test_metadata_with_or_without_blanks_decodes_as_json_does(raw: bytes) -> None:
    # The scanner-only fast path and decode()'s path must agree on every accepted input.
    assert decode_metadata(raw) == json.loads(raw)


@pytest.mark.parametrize("meta", [{"count": 1}, {"count": -3}, {"n": 2**70}, {"count": True}, {"é": 1}, {"a b": 1}, {"x": 1.5}])
def test_one_field_metadata_encodes_as_the_json_encoder_does(meta: dict[str, Any]) -> None:
    assert frames.encode_metadata(meta) == json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize("count", [0, 1, 2, 255, 10**12])
@pytest.mark.parametrize("kind,request_id", [(0x0201, 1), (0x0202, 2**64 - 1), (0x0204, 0)])
def test_encode_count_reply_is_the_frame_encoding(kind: int, request_id: int, count: int) -> None:
    # The pre-encoded reply of a write must be byte for byte what Frame.encode gives.
    want = frames.Frame(kind, request_id, {"count": count}).encode()
    assert frames.encode_count_reply(kind, request_id, count) == want
    (back,) = frames.read_frames(want)
    assert back.metadata == {"count": count} and back.request_id == request_id and back.kind == kind


def test_repeated_write_metadata_is_parsed_once_and_never_shared() -> None:
    # A reader reuses the parse of the last small write's metadata when the next one's
    # bytes are the same; each frame must still get its own dict, equal to a fresh parse.
    m1 = {"table": "db.t", "ncols": 2}
    m2 = {"table": "db.t", "ncols": 3}
    m3 = {"table": "db.t", "keys": [[1]]}  # a list value: never reused
    data = b"".join([
        frames.encode_frame(0x0201, 1, m1, b"body"),
        frames.encode_frame(0x0201, 2, m1, b"body"),
        frames.encode_frame(0x0201, 2, m1, b"body"),
        frames.encode_frame(0x0201, 3, m2, b"body"),
        frames.encode_frame(0x0201, 4, m1, b"body"),
        frames.encode_frame(0x0203, 5, m3, b"x"),
        frames.encode_frame(0x0203, 6, m3, b"x"),
        frames.encode_frame(0x0201, 7, m1, b""),
    ])
    reader = frames.FrameReader(io.BytesIO(data))
    got = []
    for _ in range(8):
        f = reader.read_frame()
        assert f is not None
        got.append(json.loads(json.dumps(f.metadata)))  # as read, before the changes below
        f.metadata["ncols"] = 99  # a handler changing its request's metadata
        if "keys" in f.metadata:
            f.metadata["keys"].append([2])
    assert got == [m1, m1, m1, m2, m1, m3, m3, m1]
    assert reader.read_frame() is None
