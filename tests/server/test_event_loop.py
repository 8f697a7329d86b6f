"""The frame server's event loop (spark_ext/server/tcp.py): point reads answered on the
loop, everything else on per-connection workers, over real sockets and a real store.

What must hold: replies come in request order on a connection even when inline and
worker-handled requests are pipelined; an inline read that would wait for a table lock
goes to the worker while the loop keeps serving other connections; replies larger than
the socket buffer get through whole; unauthenticated connections are closed after the
handshake timeout; replies queued in one loop pass all go out, in order, before an
error closes the connection; the one-row PUT fast path answers exactly as the general
PUT handler (replies, errors and rows).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pytest

from spark_ext.client.connection import Connection
from spark_ext.server.store_service import StoreService
from spark_ext.server.tcp import PUSH_EARLY_BYTES, FrameServer
from spark_ext.store import Store
from spark_ext.store.codec import decode_record
from spark_ext.store.wal import _HEADER as wal_header
from spark_ext.store.wal import HEADER_SIZE
from spark_ext.store.wal import WalError as WalError_
from spark_ext.wire.errors import WireError
from spark_ext.wire.frames import Flags, Frame, FrameReader, encode_frame
from spark_ext.wire.kinds import Kind
from spark_ext.wire.rowcodec import RowCodec

T, U = "db.t", "db.u"


@pytest.fixture(params=["commit", "group"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Store, FrameServer]]:
    # flush "commit": writes go to the connections' workers; "group": small writes are
    # answered on the event loop (tcp.py), PUTs of one row by the fast path.
    store = Store(None, background=False, flush=request.param)
    t = store.create_table(T, [("id", "int64"), ("v", "string")], ["id"], 4)
    t.insert([(i, f"v{i}") for i in range(100)])
    store.create_table(U, [("id", "int64"), ("v", "string")], ["id"], 2).insert([(1, "u1")])
    store.create_table("db.big", [("id", "int64"), ("v", "string")], ["id"], 2)
    service = StoreService(store)
    fs = FrameServer(role="server")
    service.register(fs)
    fs.start()
    try:
        yield store, fs
    finally:
        fs.stop()
        service.close()


def _connect(port: int) -> tuple[socket.socket, FrameReader]:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    return s, FrameReader(s)


def test_pipelined_inline_and_worker_requests_reply_in_order(served: tuple[Store, FrameServer]) -> None:
    store, fs = served
    codec = RowCodec(store.table(T).schema.arrow_schema)
    sock, reader = _connect(fs.port)
    # GET (inline), COUNT (worker), GET, PUT (worker; inline with flush group), GET of the row just put, unknown
    # kind (worker: error reply), GET: all sent in one write before reading anything.
    put_body = codec.encode([(500, "new")])
    reqs = [
        encode_frame(int(Kind.GET), 1, {"table": T, "key": [7]}),
        encode_frame(int(Kind.COUNT), 2, {"table": T}),
        encode_frame(int(Kind.GET), 3, {"table": T, "key": [1000]}),
        encode_frame(int(Kind.PUT), 4, {"table": T}, put_body, int(Flags.COMPACT_ROWS)),
        encode_frame(int(Kind.GET), 5, {"table": T, "key": [500]}),
        encode_frame(0x7FFE, 6, {}),
        encode_frame(int(Kind.GET_MANY), 7, {"table": T, "keys": [[1], [2], [999]]}),
    ]
    for _ in range(20):  # repeated, so that frames straddle reads and hand-overs
        sock.sendall(b"".join(reqs))
        replies = [reader.read_frame() for _ in reqs]
        assert [r.request_id for r in replies if r is not None] == [1, 2, 3, 4, 5, 6, 7]
        r1, r2, r3, r4, r5, r6, r7 = replies
        assert codec.decode(r1.body, presence=True) == [(7, "v7")]
        assert r2.metadata["count"] in (100, 101)
        assert codec.decode(r3.body, presence=True) == [None]
        assert r4.metadata == {"count": 1}
        assert codec.decode(r5.body, presence=True) == [(500, "new")]
        assert r6.is_error and r6.metadata["name"] == "UNKNOWN_KIND"
        assert codec.decode(r7.body, presence=True) == [(1, "v1"), (2, "v2"), None]
    sock.close()


def test_read_behind_a_held_table_lock_does_not_stall_other_connections(served: tuple[Store, FrameServer]) -> None:
    store, fs = served
    t = store.table(T)
    blocked = Connection("127.0.0.1", fs.port)
    other = Connection("127.0.0.1", fs.port)
    answered = threading.Event()
    result: list[object] = []

    def read_blocked() -> None:
        result.append(blocked.request(Kind.GET, {"table": T, "key": [3]}).body)
        answered.set()

    t.lock.acquire()  # as a long commit would
    try:
        th = threading.Thread(target=read_blocked)
        th.start()
        # The loop must keep answering reads of another table meanwhile.
        for _ in range(50):
            r = other.request(Kind.GET, {"table": U, "key": [1]})
            assert r.body
        assert not answered.is_set(), "the read of the locked table was answered while its lock was held"
    finally:
        t.lock.release()
    th.join(30)
    assert answered.is_set()
    codec = RowCodec(t.schema.arrow_schema)
    assert codec.decode(result[0], presence=True) == [(3, "v3")]  # type: ignore[arg-type]
    # The connection is back on the loop afterwards and works as before.
    assert codec.decode(blocked.request(Kind.GET, {"table": T, "key": [4]}).body, presence=True) == [(4, "v4")]
    blocked.close()
    other.close()


def test_inline_reply_larger_than_the_socket_buffer(served: tuple[Store, FrameServer]) -> None:
    store, fs = served
    big = store.table("db.big")
    value = "x" * 250_000
    big.insert([(i, value) for i in range(250)])  # a GET_MANY reply of 62.5 MB
    sock, reader = _connect(fs.port)
    # 62.5 MB is more than the kernel's socket buffers on both sides take (tcp_wmem and
    # tcp_rmem top out at a few MB): the loop must send the rest as the client reads.
    keys = [[i] for i in range(250)]
    sock.sendall(encode_frame(int(Kind.GET_MANY), 1, {"table": "db.big", "keys": keys})
                 + encode_frame(int(Kind.GET), 2, {"table": "db.big", "key": [5]}))
    time.sleep(0.2)  # let the server fill the socket and wait for it to drain
    r1, r2 = reader.read_frame(), reader.read_frame()
    codec = RowCodec(big.schema.arrow_schema)
    assert r1 is not None and r2 is not None and (r1.request_id, r2.request_id) == (1, 2)
    assert not r1.is_error, r1.metadata
    rows = codec.decode(r1.body, presence=True)
    assert len(rows) == 250 and all(r == (i, value) for i, r in enumerate(rows))
    assert codec.decode(r2.body, presence=True) == [(5, value)]
    sock.close()


def test_unauthenticated_connection_is_closed_after_the_handshake_timeout() -> None:
    fs = FrameServer(role="server", secret=b"s3cret", handshake_timeout_s=0.3)
    fs.start()
    try:
        sock, reader = _connect(fs.port)
        assert reader.read_frame() is None  # closed by the server, no frame
        sock.close()
        # A client that authenticates in time is served, and stays connected past it.
        c = Connection("127.0.0.1", fs.port, secret=b"s3cret")
        time.sleep(0.8)
        assert c.request(Kind.PING, {}).metadata["pong"] is True
        c.close()
    finally:
        fs.stop()


def test_pipelined_puts_of_many_connections_reply_in_order(served: tuple[Store, FrameServer]) -> None:
    # Replies of one loop pass are queued and sent at its end: with 8 connections each
    # pipelining 60 one-row PUTs (the inline fast path: {table, ncols}) and a GET of its
    # last key, every connection must get all its replies, in order, each counting 1.
    store, fs = served
    codec = RowCodec(store.table(T).schema.arrow_schema)
    conns = [_connect(fs.port) for _ in range(8)]
    n = 60
    for c, (sock, _) in enumerate(conns):
        reqs = [encode_frame(int(Kind.PUT), i + 1, {"table": T, "ncols": 2},
                             codec.encode([(1000 + c * n + i, f"c{c}-{i}")]), int(Flags.COMPACT_ROWS))
                for i in range(n)]
        reqs.append(encode_frame(int(Kind.GET), n + 1, {"table": T, "key": [1000 + c * n + n - 1]}))
        sock.sendall(b"".join(reqs))
    for c, (sock, reader) in enumerate(conns):
        replies = [reader.read_frame() for _ in range(n + 1)]
        assert [r.request_id for r in replies if r is not None] == list(range(1, n + 2))
        assert all(r.metadata == {"count": 1} and not r.is_error for r in replies[:n])  # type: ignore[union-attr]
        assert codec.decode(replies[n].body, presence=True) == [(1000 + c * n + n - 1, f"c{c}-{n - 1}")]  # type: ignore[union-attr]
        sock.close()
    t = store.table(T)
    assert t.count() == 100 + 8 * n
    assert all(t.get(1000 + c * n + i) == (1000 + c * n + i, f"c{c}-{i}") for c in range(8) for i in range(n))


def test_replies_queued_before_a_malformed_frame_are_sent_before_the_close(served: tuple[Store, FrameServer]) -> None:
    # Two GETs and a PUT answered inline (queued in the pass), then garbage: the client
    # must read the three replies, then the error reply, then the end of the stream.
    store, fs = served
    codec = RowCodec(store.table(T).schema.arrow_schema)
    sock, reader = _connect(fs.port)
    sock.sendall(encode_frame(int(Kind.GET), 1, {"table": T, "key": [7]})
                 + encode_frame(int(Kind.GET), 2, {"table": T, "key": [8]})
                 + encode_frame(int(Kind.PUT), 3, {"table": T, "ncols": 2}, codec.encode([(9, "nine")]),
                                int(Flags.COMPACT_ROWS))
                 + b"XX" + bytes(40))
    r1, r2, r3, err = (reader.read_frame() for _ in range(4))
    assert r1 is not None and codec.decode(r1.body, presence=True) == [(7, "v7")]
    assert r2 is not None and codec.decode(r2.body, presence=True) == [(8, "v8")]
    assert r3 is not None and r3.metadata == {"count": 1}
    assert err is not None and err.is_error and err.metadata["name"] == "MALFORMED"
    assert reader.read_frame() is None
    sock.close()
    assert store.table(T).get(9) == (9, "nine")


def _put_store() -> Store:
    store = Store(None, background=False, flush="group")  # "commit" would not write inline
    store.create_table(T, [("id", "int64"), ("v", "string")], ["id"], 4).insert([(i, f"v{i}") for i in range(10)])
    store.create_table(U, pa.schema([pa.field("id", pa.int64()), pa.field("v", pa.string(), nullable=False)]), ["id"], 2)
    cs = store.begin("holder")
    cs.upsert(T, [(5, "staged")])  # key 5 locked by an open transaction
    return store


def test_inline_put_fast_path_answers_as_the_general_path() -> None:
    # The same PUT requests answered by the event loop's fast path (one compact row,
    # {table, ncols}) and by the general handler on a twin store: same replies (errors
    # included: unknown table, a definition out of date, a NULL key or value, a locked
    # key, several rows, a bucket the server does not own) and the same rows after.
    fast_store, general_store = _put_store(), _put_store()
    fast_service, general_service = StoreService(fast_store), StoreService(general_store)
    for svc in (fast_service, general_service):
        svc.owned[U] = frozenset({0})  # U's bucket 1 is hosted elsewhere
    fs = FrameServer(role="server")
    fast_service.register(fs)
    general_fs = FrameServer(role="server")
    general_service.register(general_fs)
    general = general_fs.handlers[int(Kind.PUT)]
    assert int(Kind.PUT) in fs._inline
    fs.start()
    codec = RowCodec(fast_store.table(T).schema.arrow_schema)
    u_schema = fast_store.table(U).schema
    u_owned = next(k for k in range(100) if u_schema.bucket_of_key(k) == 0)
    u_other = next(k for k in range(100) if u_schema.bucket_of_key(k) == 1)
    cases = [
        ({"table": T, "ncols": 2}, [(3, "three")]),  # replace
        ({"table": T, "ncols": 2}, [(77, "new")]),  # insert
        ({"table": T, "ncols": 2}, [(5, "x")]),  # locked by "holder"
        ({"table": T, "ncols": 2}, [(None, "x")]),  # NULL key
        ({"table": T, "ncols": 2}, [(11, "a"), (12, "b")]),  # two rows: the general path
        ({"table": T, "ncols": 3}, [(13, "c", 1)]),  # a definition the server has not got
        ({"table": T, "ncols": 1}, [(14,)]),  # an older definition: padded with NULL
        ({"table": "db.nope", "ncols": 2}, [(1, "x")]),
        ({"table": U, "ncols": 2}, [(u_owned, "mine")]),
        ({"table": U, "ncols": 2}, [(u_other, "theirs")]),  # NOT_OWNER
        ({"table": U, "ncols": 2}, [(u_owned, None)]),  # NULL in a NOT NULL column
        ({"table": T, "ncols": 2.0}, [(15, "float width")]),  # 2.0 == 2, but not a count
        ({"table": T, "ncols": True}, [(16,)]),  # true == 1, but not a count
    ]
    sock, reader = _connect(fs.port)
    try:
        for rid, (meta, rows) in enumerate(cases, 1):
            width = int(meta["ncols"])
            wcodec = RowCodec(pa.schema([("id", pa.int64()), ("v", pa.string()), ("w", pa.int64())][:width]))
            body = wcodec.encode(rows)
            sock.sendall(encode_frame(int(Kind.PUT), rid, meta, body, int(Flags.COMPACT_ROWS)))
            got = reader.read_frame()
            try:
                want = general(Frame(int(Kind.PUT), rid, dict(meta), body, int(Flags.COMPACT_ROWS)), None).metadata  # type: ignore[arg-type, union-attr]
            except Exception as e:
                want = WireError.from_exception(e).to_metadata()
            assert got is not None and got.request_id == rid
            assert got.metadata == want, (meta, rows)
            assert got.is_error == ("code" in want)
    finally:
        sock.close()
        fs.stop()
    for name in (T, U):
        assert _rows_of(fast_store, name) == _rows_of(general_store, name)
    assert _rows_of(fast_store, T)[3] == (3, "three") and (77, "new") in _rows_of(fast_store, T)


def _rows_of(store: Store, name: str) -> list[tuple[object, ...]]:
    t = store.table(name)
    out: list[tuple[object, ...]] = []
    for b in t.scan():
        out.extend(zip(*(c.to_pylist() for c in b.columns)))
    return sorted(out, key=lambda r: r[0])  # type: ignore[arg-type, return-value]


def test_replies_reach_a_client_that_closed_its_sending_side(served: tuple[Store, FrameServer]) -> None:
    # A client may send its requests, shut down its write side and then read: the
    # replies queued by the loop must all arrive before the server closes.
    store, fs = served
    codec = RowCodec(store.table(T).schema.arrow_schema)
    for _ in range(10):
        sock, reader = _connect(fs.port)
        sock.sendall(b"".join(encode_frame(int(Kind.GET), i, {"table": T, "key": [i]}) for i in range(1, 6))
                     + encode_frame(int(Kind.PUT), 6, {"table": T, "ncols": 2}, codec.encode([(6, "six")]),
                                    int(Flags.COMPACT_ROWS)))
        sock.shutdown(socket.SHUT_WR)
        replies = [reader.read_frame() for _ in range(6)]
        assert [codec.decode(r.body, presence=True) for r in replies[:5]] == [[(i, f"v{i}")] for i in range(1, 6)]  # type: ignore[union-attr]
        assert replies[5] is not None and replies[5].metadata == {"count": 1}
        assert reader.read_frame() is None
        sock.close()


def test_a_client_that_sends_without_reading_neither_stalls_others_nor_grows_server_memory(
        served: tuple[Store, FrameServer]) -> None:
    """A client pipelines inline reads (each reply larger than its request) and never
    reads a reply: the loop stops reading from it once its socket is full, the replies
    the server holds for it stay bounded, and another client is served meanwhile."""
    store, fs = served
    flooder, _ = _connect(fs.port)
    flooder.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    keys = [[i] for i in range(100)]
    frame = encode_frame(int(Kind.GET_MANY), 1, {"table": T, "keys": keys})
    chunk = frame * 50
    sent = 0
    flooder.settimeout(0.2)
    while True:  # until the server stops reading (its socket and ours are full)
        try:
            flooder.sendall(chunk)
        except (socket.timeout, BlockingIOError):
            break
        sent += 50
        assert sent < 1_000_000, "the server never stopped reading from a client that does not read"
    # Another client is answered meanwhile.
    codec = RowCodec(store.table(T).schema.arrow_schema)
    other = Connection("127.0.0.1", fs.port)
    try:
        for i in range(20):
            reply = other.request(Kind.GET, {"table": T, "key": [i]})
            assert codec.decode(reply.body, presence=True) == [(i, f"v{i}")]
    finally:
        other.close()
    with fs._conns_lock:
        held = [sum(map(len, c.pending)) + len(c.out) for c in fs._conns.values()]
    reply_size = len(codec.encode([(i, f"v{i}") for i in range(100)], presence=True)) + 64
    # What the server holds for the flooder: its pending list (bounded by PUSH_EARLY_BYTES plus
    # one reply) and the unsent rest of one joined send.
    assert max(held) <= 2 * (PUSH_EARLY_BYTES + reply_size), held
    flooder.close()


def _logged_keys(wal_dir: Path) -> list[int]:
    """Keys of the one-row commit records in a log directory, read straight from the
    segment files (what a crash right now would leave)."""
    keys: list[int] = []
    for seg in sorted(wal_dir.glob("wal-*.log")):
        data = seg.read_bytes()
        pos = 0
        while pos + HEADER_SIZE <= len(data):
            _, size, _, _ = wal_header.unpack_from(data, pos)
            rec = decode_record(data[pos + HEADER_SIZE:pos + HEADER_SIZE + size])
            if rec[0] == "commit1":
                keys.extend(k for _, _, items, _ in rec[2] for k, _ in items)
            pos += HEADER_SIZE + size
    return keys


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[tuple[Store, FrameServer, RowCodec]]:
    """A served store with a log (flush "group"): one-row PUTs are grouped by the loop."""
    store = Store(tmp_path / "data", background=False, flush="group")
    t = store.create_table(T, [("id", "int64"), ("v", "string")], ["id"], 4)
    service = StoreService(store)
    fs = FrameServer(role="server")
    service.register(fs)
    fs.start()
    try:
        yield store, fs, RowCodec(t.schema.arrow_schema)
    finally:
        fs.stop()
        service.close()
        store.close()


def test_an_acknowledged_inline_put_is_in_the_log_files_when_its_reply_arrives(
        tmp_path: Path, durable: tuple[Store, FrameServer, RowCodec]) -> None:
    """One-row PUTs answered on the loop defer their log records to the end of the pass:
    every PUT whose reply a client holds is already in the segment files (written to the
    OS), whatever the pass held: 6 connections pipeline PUTs, and after each reply the
    files are read."""
    store, fs, codec = durable
    conns = [_connect(fs.port) for _ in range(6)]
    try:
        for rnd in range(5):
            for c, (sock, _) in enumerate(conns):
                sock.sendall(b"".join(
                    encode_frame(int(Kind.PUT), i, {"table": T, "ncols": 2},
                                 codec.encode([(rnd * 1000 + c * 100 + i, "x")]), int(Flags.COMPACT_ROWS))
                    for i in range(10)))
            for c, (sock, reader) in enumerate(conns):
                for i in range(10):
                    r = reader.read_frame()
                    assert r is not None and r.metadata == {"count": 1}
                    assert rnd * 1000 + c * 100 + i in set(_logged_keys(tmp_path / "data" / "wal"))
    finally:
        for sock, _ in conns:
            sock.close()
    fs.stop()
    store.close()  # (the fixture's stop and close are then no-ops)
    assert sorted(_logged_keys(tmp_path / "data" / "wal")) == sorted(
        r * 1000 + c * 100 + i for r in range(5) for c in range(6) for i in range(10))


def test_grouped_puts_whose_log_write_fails_are_not_acknowledged(
        tmp_path: Path, durable: tuple[Store, FrameServer, RowCodec]) -> None:
    """PUTs grouped by the loop are logged at the end of the pass: when that log write
    fails, none of their replies goes out (the connections close), nothing is applied,
    and the server keeps serving."""
    store, fs, codec = durable
    wal = store._wal
    assert wal is not None
    real_append = wal.append

    def failing_append(payload: bytes, *, wait: bool = True, defer: bool = False) -> int:
        raise WalError_("injected: no space left on device")

    conns = [_connect(fs.port) for _ in range(3)]
    try:
        wal.append = failing_append  # type: ignore[method-assign]
        for c, (sock, _) in enumerate(conns):
            sock.sendall(encode_frame(int(Kind.PUT), 1, {"table": T, "ncols": 2}, codec.encode([(c, "lost")]),
                                      int(Flags.COMPACT_ROWS)))
        for sock, reader in conns:
            try:
                got = reader.read_frame()
            except OSError:
                got = None
            assert got is None, "a PUT whose log write failed was acknowledged"
        wal.append = real_append  # type: ignore[method-assign]
        other = Connection("127.0.0.1", fs.port)
        try:
            for c in range(3):
                r = other.request(Kind.GET, {"table": T, "key": [c]})
                assert codec.decode(r.body, presence=True) == [None]  # nothing applied
            put = other.request(Kind.PUT, {"table": T, "ncols": 2}, codec.encode([(9, "ok")]), int(Flags.COMPACT_ROWS))
            assert put.metadata == {"count": 1}
        finally:
            other.close()
    finally:
        wal.append = real_append  # type: ignore[method-assign]
        for sock, _ in conns:
            sock.close()
    fs.stop()
    store.close()
    assert _logged_keys(tmp_path / "data" / "wal") == [9]
