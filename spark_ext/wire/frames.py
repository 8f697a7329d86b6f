"""Frames: the unit of the wire protocol (``docs/protocol.md``, "Frames").

A frame is a fixed 22-byte little-endian header, then ``metadata_length`` bytes of UTF-8
JSON (an object), then ``body_length`` bytes of body::

    offset size field
    0      2    magic  b"SX"
    2      1    protocol version (1)
    3      2    kind (u16)
    5      1    flags (u8)
    6      8    request id (u64)
    14     4    metadata length (u32)
    18     4    body length (u32)

:class:`FrameReader` reads exact frames from a socket, a file-like object or bytes,
checks the declared size against the cap *before* allocating anything, and raises
:class:`~spark_ext.wire.errors.FrameError` for anything malformed. This module does no
networking of its own: it is handed an already connected object.
"""

from __future__ import annotations

import io
import json
import logging
import struct
from dataclasses import dataclass, field
from enum import IntFlag
from typing import Any, Callable, Iterator, Mapping, Union

from spark_ext.wire.errors import FrameError, WireError
from spark_ext.wire.kinds import ErrorCode, kind_name

logger = logging.getLogger(__name__)

MAGIC = b"SX"
VERSION = 1
SUPPORTED_VERSIONS: frozenset[int] = frozenset({1})
HEADER = struct.Struct("<2sBHBQII")
HEADER_SIZE = HEADER.size  # 22
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
MAX_REQUEST_ID = (1 << 64) - 1

#: A frame body: whatever was read or is to be sent, without forcing a copy.
Body = Union[bytes, bytearray, memoryview]


class Flags(IntFlag):
    """Header flag bits. Bits 4-7 are reserved and must be zero."""

    NONE = 0
    HAS_ARROW = 0x01
    COMPACT_ROWS = 0x02
    MORE = 0x04
    IS_ERROR = 0x08


_HAS_ARROW, _COMPACT_ROWS, _MORE, _IS_ERROR = 0x01, 0x02, 0x04, 0x08  # plain ints: IntFlag ops are slow
KNOWN_FLAGS = int(Flags.HAS_ARROW | Flags.COMPACT_ROWS | Flags.MORE | Flags.IS_ERROR)
_FORMAT_FLAGS = int(Flags.HAS_ARROW | Flags.COMPACT_ROWS)


@dataclass(slots=True)
class Frame:
    """One decoded (or to-be-encoded) frame.

    ``kind`` is a plain int so that frames of kinds this build does not know can still
    be read (and answered with UNKNOWN_KIND) without losing the stream's framing.
    """

    kind: int
    request_id: int
    metadata: dict[str, Any] = field(default_factory=dict)
    body: Body = b""
    flags: int = 0
    version: int = VERSION

    @property
    def is_error(self) -> bool:
        """Whether this is an error frame. O(1)."""
        return bool(self.flags & _IS_ERROR)

    @property
    def more(self) -> bool:
        """Whether more frames of the same response follow. O(1)."""
        return bool(self.flags & _MORE)

    @property
    def has_arrow(self) -> bool:
        """Whether the body is an Arrow IPC stream. O(1)."""
        return bool(self.flags & _HAS_ARROW)

    @property
    def compact_rows(self) -> bool:
        """Whether the body is compact rows. O(1)."""
        return bool(self.flags & _COMPACT_ROWS)

    def error(self) -> WireError | None:
        """The error an error frame carries, else None. O(1)."""
        return WireError.from_metadata(self.metadata) if self.is_error else None

    def raise_for_error(self) -> "Frame":
        """Raise the carried :class:`WireError` if this is an error frame; else self."""
        if self.flags & _IS_ERROR:
            raise WireError.from_metadata(self.metadata)
        return self

    def encode(self, max_frame: int | None = DEFAULT_MAX_FRAME) -> bytes:
        """This frame as bytes. O(size). See :func:`encode_frame`."""
        return encode_frame(
            self.kind, self.request_id, self.metadata, self.body, self.flags,
            version=self.version, max_frame=max_frame,
        )

    def __repr__(self) -> str:  # bodies can be 64 MiB: never print them
        return (
            f"Frame({kind_name(self.kind)}, id={self.request_id}, flags={Flags(self.flags & KNOWN_FLAGS)!r}, "
            f"metadata={self.metadata!r}, body={len(self.body)} bytes)"
        )


def error_frame(kind: int, request_id: int, err: WireError) -> Frame:
    """The error reply to a request. O(size of details)."""
    return Frame(kind, request_id, err.to_metadata(), b"", int(Flags.IS_ERROR))


# --- metadata JSON ------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity; strict JSON (and Java parsers) do not.
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# The C scanner (with _reject_constant) behind decode(); set by JSONDecoder.__init__.
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def encode_metadata(metadata: Mapping[str, Any] | None) -> bytes:
    """Metadata as compact UTF-8 JSON; ``{}`` / None encode as zero bytes. O(size).

    Raises:
        TypeError: a value is not JSON-serializable.
        ValueError: a float is NaN or infinite (not representable in strict JSON).
    """
    if not metadata:
        return b""
    if len(metadata) == 1:
        # Replies to writes are {"count": n}: formatted directly, a third of the
        # encoder's cost. Exactly the encoder's output for a plain-ASCII name and an int.
        ((name, v),) = metadata.items()
        if type(v) is int and type(name) is str and name.isidentifier() and name.isascii():
            return b'{"%s":%d}' % (name.encode(), v)
    return _ENCODE(metadata).encode("utf-8")


_COUNT_ONE = b'{"count":1}'


def encode_count_reply(kind: int, request_id: int, count: int) -> bytes:
    """The reply ``{"count": count}`` to a write, encoded: exactly the bytes of
    ``Frame(kind, request_id, {"count": count}).encode()``, for a kind and request id
    read off a valid frame, without the checks and the Frame object. The reply to a
    one-row write (``count`` 1) reuses one metadata object. O(1).
    """
    meta = _COUNT_ONE if count == 1 else b'{"count":%d}' % count
    return HEADER.pack(MAGIC, VERSION, kind, 0, request_id, len(meta), 0) + meta


def decode_metadata(raw: Body) -> dict[str, Any]:
    """Parse metadata bytes (zero bytes mean ``{}``). O(size).

    Raises:
        WireError: MALFORMED if the bytes are not UTF-8, not strict JSON, nested too
            deeply for the parser, or not a JSON object.
    """
    if len(raw) == 0:
        return {}
    try:
        text = str(raw, "utf-8")
        # Fast path for what every sender writes (an object, no surrounding blanks): the
        # C scanner alone, without decode()'s two whitespace regex passes. Anything else,
        # errors included, goes through decode() below for the same result or message.
        if text[0] == "{":
            obj, end = _SCAN(text, 0)
            if end == len(text) and type(obj) is dict:
                return obj
    except (ValueError, RecursionError, StopIteration):
        pass
    try:
        obj = _DECODER.decode(str(raw, "utf-8"))
    except (ValueError, RecursionError) as e:
        # ValueError covers UnicodeDecodeError, JSONDecodeError, NaN and huge ints.
        raise WireError(ErrorCode.MALFORMED, f"metadata is not valid UTF-8 JSON: {_short(e)}") from None
    if not isinstance(obj, dict):
        raise WireError(ErrorCode.MALFORMED, f"metadata must be a JSON object, got {type(obj).__name__}")
    return obj


def _short(e: BaseException, limit: int = 200) -> str:
    s = str(e)
    return s if len(s) <= limit else s[:limit] + "..."


# --- encoding -----------------------------------------------------------------------


def encode_frame_parts(
    kind: int,
    request_id: int,
    metadata: Mapping[str, Any] | None = None,
    body: Body = b"",
    flags: int = 0,
    *,
    version: int = VERSION,
    max_frame: int | None = DEFAULT_MAX_FRAME,
) -> tuple[bytes, Body]:
    """Header plus metadata as one bytes object, and the body untouched. O(metadata).

    Sending the two parts separately (or with ``sendmsg``) avoids copying large bodies.

    Raises:
        ValueError: kind, request id, flags or version out of range.
        WireError: FRAME_TOO_LARGE when the frame would exceed ``max_frame``.
    """
    if not 0 <= kind <= 0xFFFF:
        raise ValueError(f"kind {kind} is not a u16")
    if not 0 <= request_id <= MAX_REQUEST_ID:
        raise ValueError(f"request id {request_id} is not a u64")
    if flags & ~KNOWN_FLAGS or not 0 <= flags <= 0xFF:
        raise ValueError(f"flags 0x{flags:x} set reserved bits")
    if flags & _FORMAT_FLAGS == _FORMAT_FLAGS:
        raise ValueError("HAS_ARROW and COMPACT_ROWS are mutually exclusive")
    if not 0 <= version <= 0xFF:
        raise ValueError(f"version {version} is not a u8")
    meta = encode_metadata(metadata)
    total = HEADER_SIZE + len(meta) + len(body)
    if max_frame is not None and total > max_frame:
        raise WireError(
            ErrorCode.FRAME_TOO_LARGE,
            f"{kind_name(kind)} frame of {total} bytes exceeds the cap of {max_frame} bytes",
            {"size": total, "max_frame": max_frame},
        )
    if total > 0xFFFFFFFF + HEADER_SIZE:
        raise WireError(ErrorCode.FRAME_TOO_LARGE, f"frame of {total} bytes cannot be framed")
    head = HEADER.pack(MAGIC, version, kind, flags, request_id, len(meta), len(body))
    return head + meta, body


def encode_frame(
    kind: int,
    request_id: int,
    metadata: Mapping[str, Any] | None = None,
    body: Body = b"",
    flags: int = 0,
    *,
    version: int = VERSION,
    max_frame: int | None = DEFAULT_MAX_FRAME,
) -> bytes:
    """One frame as bytes. O(size).

    Args:
        kind: the message kind (u16); responses use the request's kind.
        request_id: the request id (u64); responses echo the request's.
        metadata: a JSON-able mapping (strict JSON: no NaN/Infinity).
        body: raw body bytes (Arrow IPC stream, compact rows, or empty).
        flags: :class:`Flags` bits.
        version: protocol version byte.
        max_frame: refuse to build frames larger than this (None: no cap).

    Raises:
        ValueError, TypeError, WireError: see :func:`encode_frame_parts`.
    """
    head, b = encode_frame_parts(
        kind, request_id, metadata, body, flags, version=version, max_frame=max_frame
    )
    return head + bytes(b) if len(b) else head


def send_frame(sink: Any, frame: Frame, max_frame: int | None = DEFAULT_MAX_FRAME) -> int:
    """Write one frame to a socket (``sendall``) or a binary file (``write``).

    Small frames go out in one call (one TCP segment for point requests); large bodies
    are written separately so they are never copied. O(size).

    Returns:
        The number of bytes written.
    """
    head, body = encode_frame_parts(
        frame.kind, frame.request_id, frame.metadata, frame.body, frame.flags,
        version=frame.version, max_frame=max_frame,
    )
    write: Callable[[Any], Any] = sink.sendall if hasattr(sink, "sendall") else sink.write
    if len(body) <= 65536:
        write(head + bytes(body) if len(body) else head)
    else:
        write(head)
        write(body)
    return len(head) + len(body)


# --- reading ------------------------------------------------------------------------

_ReadInto = Callable[[memoryview], "int | None"]
_SCALARS = frozenset((str, int, bool, float, type(None)))  # JSON values a shallow copy may share


def _reader_of(source: Any) -> _ReadInto:
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    fn: _ReadInto
    if hasattr(source, "recv_into"):
        fn = source.recv_into
        return fn
    if hasattr(source, "readinto"):
        fn = source.readinto
        return fn
    raise TypeError(f"cannot read frames from {type(source).__name__}: need recv_into or readinto")


class FrameReader:
    """Reads whole frames from a connected stream, enforcing the frame cap.

    Small frames are parsed out of one reusable buffer (one ``recv`` usually brings a
    whole request); frames larger than the buffer get their own allocation, sized from
    the header only after the cap has been checked. Reading is resumable after a
    timeout (``socket.timeout`` / ``TimeoutError`` propagate): everything read so far
    is kept and the next :meth:`read_frame` continues where it stopped; so is
    ``BlockingIOError`` from a non-blocking socket with nothing to read. Any other
    exception leaves the stream at an unknown position: close the connection.

    Not thread-safe: one reader per connection, used by one thread at a time.
    """

    def __init__(
        self,
        source: Any,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        buffer_size: int = 64 * 1024,
    ) -> None:
        """Wrap a socket, a binary file or a bytes-like object.

        Args:
            source: anything with ``recv_into`` (sockets) or ``readinto`` (files,
                ``io.BytesIO``), or bytes.
            max_frame: largest accepted frame, header included.
            buffer_size: size of the reusable read buffer (at least the header).
        """
        if max_frame < HEADER_SIZE:
            raise ValueError(f"max_frame {max_frame} is smaller than a header")
        self._read_into = _reader_of(source)
        self.max_frame = max_frame
        self._buf = bytearray(max(buffer_size, HEADER_SIZE))
        self._view = memoryview(self._buf)
        self._start = 0  # first unconsumed byte
        self._end = 0  # one past the last buffered byte
        # A frame too big for the buffer, being read: (header fields, array, bytes filled).
        self._big: tuple[tuple[Any, ...], bytearray, int] | None = None
        self.frames_read = 0
        # The metadata of the last small frame with a body whose values are all scalars,
        # raw and parsed: a client sending one-row writes repeats the same {table, ncols}
        # on every request, and a copy of the parsed dict costs a tenth of parsing it.
        self._last_raw = b""
        self._last_meta: dict[str, Any] = {}

    def buffered(self) -> int:
        """Bytes received and not yet returned as frames (0 while a big frame is being read).

        An event loop asks this before reading again: with fewer bytes than a header
        buffered, :meth:`read_frame` would have to wait for the socket. O(1).
        """
        return 0 if self._big is not None else self._end - self._start

    def __iter__(self) -> Iterator[Frame]:
        """Frames until a clean end of stream."""
        while True:
            f = self.read_frame()
            if f is None:
                return
            yield f

    def read_frame(self) -> Frame | None:
        """Read the next frame. O(frame size).

        Returns:
            The frame, or None at a clean end of stream (between frames).

        Raises:
            FrameError: MALFORMED (bad magic, reserved flags, truncated frame, bad
                metadata), UNSUPPORTED_VERSION, or FRAME_TOO_LARGE. The connection must
                be answered (when possible) and closed.
        """
        if self._big is not None:
            return self._continue_big()
        start = self._start
        if self._end - start < HEADER_SIZE:
            if not self._fill(HEADER_SIZE):
                if self._end == self._start:
                    return None
                raise FrameError(
                    ErrorCode.MALFORMED,
                    f"connection ended inside a frame header ({self._end - self._start} of {HEADER_SIZE} bytes)",
                )
            start = self._start
        hdr = HEADER.unpack_from(self._buf, start)
        magic, version, kind, flags, rid, mlen, blen = hdr
        need = HEADER_SIZE + mlen + blen
        # One test for a well-formed header; _parse_header raises the precise error.
        if (magic != MAGIC or version not in SUPPORTED_VERSIONS or need > self.max_frame
                or flags & ~KNOWN_FLAGS or flags & _FORMAT_FLAGS == _FORMAT_FLAGS):
            self._parse_header()
        if need <= len(self._buf):
            # The small-frame path (every point request): parsed in place, no helper
            # calls beyond the metadata's JSON; a frame is usually buffered whole already.
            if self._end - start < need:
                if not self._fill(need):
                    raise FrameError(
                        ErrorCode.MALFORMED,
                        f"connection ended inside a {kind_name(kind)} frame "
                        f"({self._end - self._start} of {need} bytes)",
                        request_id=rid, kind=kind,
                    )
                start = self._start
            s = start + HEADER_SIZE
            view = self._view
            body = bytes(view[s + mlen:start + need]) if blen else b""
            self._start = start + need
            if not mlen:
                metadata: dict[str, Any] = {}
            elif blen and mlen == len(self._last_raw) and view[s:s + mlen] == self._last_raw:
                metadata = self._last_meta.copy()  # shallow is enough: scalar values only
            else:
                try:
                    metadata = decode_metadata(view[s:s + mlen])
                except WireError as e:
                    raise FrameError(e.code, f"{kind_name(kind)} frame: {e.message}", request_id=rid, kind=kind) from None
                if blen and mlen <= 256 and all(type(v) in _SCALARS for v in metadata.values()):
                    self._last_raw = bytes(view[s:s + mlen])
                    self._last_meta = metadata.copy()
            self.frames_read += 1
            return Frame(kind, rid, metadata, body, flags, version)
        # Big frame: move what is already buffered into its own array, read the rest.
        arr = bytearray(mlen + blen)
        have = min(self._end - self._start - HEADER_SIZE, len(arr))
        s = self._start + HEADER_SIZE
        arr[:have] = self._view[s:s + have]
        self._start = s + have
        self._big = (hdr, arr, have)
        return self._continue_big()

    # -- internals ---------------------------------------------------------------

    def _parse_header(self) -> tuple[Any, ...]:
        hdr = HEADER.unpack_from(self._buf, self._start)
        magic, version, kind, flags, rid, mlen, blen = hdr
        if magic != MAGIC:
            # Nothing else in the header can be trusted: no id to answer to.
            raise FrameError(ErrorCode.MALFORMED, f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
        if version not in SUPPORTED_VERSIONS:
            raise FrameError(
                ErrorCode.UNSUPPORTED_VERSION,
                f"protocol version {version} is not supported (supported: {sorted(SUPPORTED_VERSIONS)})",
                {"version": version, "supported": sorted(SUPPORTED_VERSIONS)},
                request_id=rid, kind=kind,
            )
        total = HEADER_SIZE + mlen + blen
        if total > self.max_frame:
            raise FrameError(
                ErrorCode.FRAME_TOO_LARGE,
                f"{kind_name(kind)} frame declares {total} bytes, over the cap of {self.max_frame}",
                {"size": total, "max_frame": self.max_frame},
                request_id=rid, kind=kind,
            )
        if flags & ~KNOWN_FLAGS:
            raise FrameError(
                ErrorCode.MALFORMED, f"reserved flag bits set (0x{flags:02x})", request_id=rid, kind=kind
            )
        if flags & _FORMAT_FLAGS == _FORMAT_FLAGS:
            raise FrameError(
                ErrorCode.MALFORMED, "HAS_ARROW and COMPACT_ROWS are mutually exclusive",
                request_id=rid, kind=kind,
            )
        return hdr

    def _continue_big(self) -> Frame:
        assert self._big is not None
        hdr, arr, have = self._big
        _, _, kind, _, rid, mlen, _ = hdr
        view = memoryview(arr)
        # Leftover buffered bytes were consumed when the big frame started, so the
        # buffer is empty here: read straight into the frame's own array.
        while have < len(arr):
            n = self._read_into(view[have:])
            if n is None:
                raise BlockingIOError("non-blocking source has no data")
            if n == 0:
                self._big = None
                raise FrameError(
                    ErrorCode.MALFORMED,
                    f"connection ended inside a {kind_name(kind)} frame "
                    f"({HEADER_SIZE + have} of {HEADER_SIZE + len(arr)} bytes)",
                    request_id=rid, kind=kind,
                )
            have += n
            self._big = (hdr, arr, have)
        self._big = None
        return self._finish(hdr, view[:mlen], view[mlen:])

    def _finish(self, hdr: tuple[Any, ...], meta: memoryview, body: Body) -> Frame:
        _, version, kind, flags, rid, _, _ = hdr
        try:
            metadata = decode_metadata(meta)
        except WireError as e:
            raise FrameError(e.code, f"{kind_name(kind)} frame: {e.message}", request_id=rid, kind=kind) from None
        self.frames_read += 1
        return Frame(kind, rid, metadata, body, flags, version)

    def _fill(self, n: int) -> bool:
        """Make ``n`` bytes available from ``_start``; False on end of stream."""
        if self._end - self._start >= n:
            return True
        if self._start == self._end:
            self._start = self._end = 0  # empty: restart at the front, nothing to move
        elif self._start + n > len(self._buf):
            # Slide the unconsumed tail to the front so the frame fits in the buffer.
            rest = self._end - self._start
            self._buf[:rest] = bytes(self._view[self._start:self._end])
            self._start, self._end = 0, rest
        while self._end - self._start < n:
            got = self._read_into(self._view[self._end:])
            if got is None:
                raise BlockingIOError("non-blocking source has no data")
            if got == 0:
                return False
            self._end += got
        return True


def read_frames(data: Body, *, max_frame: int = DEFAULT_MAX_FRAME) -> list[Frame]:
    """All frames in a byte string (tests, logs). O(len(data)).

    Raises:
        FrameError: as :meth:`FrameReader.read_frame`.
    """
    return list(FrameReader(data, max_frame=max_frame))


# --- metadata access ----------------------------------------------------------------

_MISSING: Any = object()


def field_of(metadata: Mapping[str, Any], name: str, typ: type | tuple[type, ...], default: Any = _MISSING) -> Any:
    """One metadata field, type-checked; the error names the field. O(1).

    ``bool`` is never accepted where ``int`` is asked (JSON ``true`` is not a number).

    Raises:
        WireError: BAD_ARGUMENT when the field is missing (and no default is given) or
            has the wrong JSON type.
    """
    if name not in metadata or metadata[name] is None:
        if default is _MISSING:
            raise WireError(ErrorCode.BAD_ARGUMENT, f"metadata field {name!r} is required", {"field": name})
        return default
    v = metadata[name]
    types = typ if isinstance(typ, tuple) else (typ,)
    if isinstance(v, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(v, types)
    if not ok:
        want = " or ".join(t.__name__ for t in types)
        raise WireError(
            ErrorCode.BAD_ARGUMENT,
            f"metadata field {name!r} must be {want}, got {type(v).__name__}",
            {"field": name},
        )
    return v


__all__ = [
    "Body",
    "DEFAULT_MAX_FRAME",
    "Flags",
    "Frame",
    "FrameReader",
    "HEADER",
    "HEADER_SIZE",
    "KNOWN_FLAGS",
    "MAGIC",
    "SUPPORTED_VERSIONS",
    "VERSION",
    "decode_metadata",
    "encode_frame",
    "encode_frame_parts",
    "encode_metadata",
    "error_frame",
    "field_of",
    "read_frames",
    "send_frame",
]
