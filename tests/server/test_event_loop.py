"""The frame server's event loop (spark_ext/server/tcp.py): point reads answered on the
loop, everything else on per-connection workers, over real sockets and a real store.

What must hold: replies come in request order on a connection even when inline and
worker-handled requests are pipelined; an inline read that would wait for a table lock
goes to the worker while the loop keeps serving other connections; replies larger than
the socket buffer get through whole; unauthenticated connections are closed after the
handshake timeout.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Iterator

import pytest

from spark_ext.client.connection import Connection
from spark_ext.server.store_service import StoreService
from spark_ext.server.tcp import FrameServer
from spark_ext.store import Store
from spark_ext.wire.frames import Flags, FrameReader, encode_frame
from spark_ext.wire.kinds import Kind
from spark_ext.wire.rowcodec import RowCodec

T, U = "db.t", "db.u"


@pytest.fixture()
def served() -> Iterator[tuple[Store, FrameServer]]:
    store = Store(None, background=False)
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
    # GET (inline), COUNT (worker), GET, PUT (worker), GET of the row just put, unknown
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
