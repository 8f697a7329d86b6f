"""Hostile input on raw sockets against a store server and a locator, with and without a secret.

Every case must get an error reply or a closed connection (never a hang, never an
INTERNAL error, which would mean an unhandled exception), and afterwards the process
must still serve a bystander connection opened before the attack, and no table or
catalog content may have changed.
"""

from __future__ import annotations

import json
import random
import socket
import struct
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
import pytest

from integration.cluster import Cluster, wait_until
from spark_ext.client.client import StoreClient
from spark_ext.client.connection import Connection
from spark_ext.exceptions import AuthenticationError, SparkExtError
from spark_ext.wire import auth
from spark_ext.wire.frames import HEADER, MAGIC, Flags, Frame, FrameReader, encode_frame
from spark_ext.wire.kinds import FATAL_ERRORS, Kind
from spark_ext.wire.rowcodec import encode_rows

T = "default.h"
COLUMNS = [("id", "int64"), ("v", "string"), ("n", "int32")]
FATAL = {e.name for e in FATAL_ERRORS}


# --- the two clusters and what must not change ------------------------------------------


@dataclass
class Target:
    """One process under attack: the store server s0 or the locator of a cluster."""

    name: str
    cluster: Cluster
    sid: str | None  # None: the locator
    baseline: Any = None
    bystander: Connection | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.cluster.locator_address if self.sid is None else self.cluster.servers[self.sid].address

    @property
    def secret(self) -> bytes | None:
        return self.cluster.secret

    @property
    def is_locator(self) -> bool:
        return self.sid is None


def snapshot(c: StoreClient) -> Any:
    rows = sorted(tuple(r.values()) for r in c.scan(T).to_pylist())
    info = c.table(T, refresh=True)
    return (rows, c.list_namespaces(), c.list_tables(), info.version, info.indexes, info.schema.to_json(),
            [(s["server_id"], s["up"]) for s in c.servers()])


def _setup(cluster: Cluster) -> None:
    c = cluster.admin()
    c.create_table(T, COLUMNS, primary_key="id", num_buckets=4)
    c.put(T, [(i, f"v{i}", i) for i in range(200)])


@pytest.fixture(scope="module")
def secured(make_cluster: Any) -> Cluster:
    cl = make_cluster("secured", n_servers=1, secret=b"hostile-test-secret")
    _setup(cl)
    return cl


@pytest.fixture(scope="module")
def unsecured(make_cluster: Any) -> Cluster:
    cl = make_cluster("unsecured", n_servers=1, secret=None)
    _setup(cl)
    return cl


def _target(name: str, secured: Cluster, unsecured: Cluster) -> Iterator[Target]:
    cl = secured if name.startswith("secured") else unsecured
    t = Target(name, cl, "s0" if name.endswith("server") else None)
    t.baseline = snapshot(cl.admin())
    host, port = t.address
    t.bystander = Connection(host, port, cl.secret, timeout=30.0)
    yield t
    t.bystander.close()


# Each test gets exactly the targets it is meaningful for (no skipped combinations).
@pytest.fixture(scope="module", params=["secured-server", "secured-locator", "open-server", "open-locator"])
def target(request: pytest.FixtureRequest, secured: Cluster, unsecured: Cluster) -> Iterator[Target]:
    yield from _target(request.param, secured, unsecured)


@pytest.fixture(scope="module", params=["secured-server", "secured-locator"])
def secured_target(request: pytest.FixtureRequest, secured: Cluster, unsecured: Cluster) -> Iterator[Target]:
    yield from _target(request.param, secured, unsecured)


@pytest.fixture(scope="module", params=["secured-server", "open-server"])
def server_target(request: pytest.FixtureRequest, secured: Cluster, unsecured: Cluster) -> Iterator[Target]:
    yield from _target(request.param, secured, unsecured)


@pytest.fixture(scope="module", params=["secured-locator", "open-locator"])
def locator_target(request: pytest.FixtureRequest, secured: Cluster, unsecured: Cluster) -> Iterator[Target]:
    yield from _target(request.param, secured, unsecured)


def assert_intact(t: Target) -> None:
    """The process still serves a connection opened before the attack, and nothing changed."""
    assert t.bystander is not None
    assert t.bystander.request(Kind.PING, {}).metadata["pong"] is True
    if t.is_locator:
        assert t.bystander.request(Kind.LIST_TABLES, {"namespace": ["default"]}).metadata["tables"] == t.baseline[2]
    else:
        assert t.bystander.request(Kind.COUNT, {"table": T}).metadata["count"] == len(t.baseline[0])
    assert snapshot(t.cluster.admin()) == t.baseline


# --- raw connections ---------------------------------------------------------------------


class Raw:
    """A raw TCP connection speaking (or not) the frame protocol."""

    def __init__(self, address: tuple[str, int], timeout: float = 20.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.reader = FrameReader(self.sock)
        self.rid = 100

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, kind: int, meta: dict[str, Any] | None = None, body: bytes = b"", flags: int = 0) -> int:
        self.rid += 1
        self.send(encode_frame(kind, self.rid, meta or {}, body, flags, max_frame=None))
        return self.rid

    def recv(self) -> Frame | None:
        """The next frame, or None once the server closed (FIN or reset)."""
        try:
            return self.reader.read_frame()
        except (ConnectionResetError, BrokenPipeError):
            return None

    def request(self, kind: int, meta: dict[str, Any] | None = None, body: bytes = b"", flags: int = 0) -> Frame:
        rid = self.frame(kind, meta, body, flags)
        f = self.recv()
        assert f is not None, f"server closed the connection instead of answering {kind:#06x}"
        assert f.request_id == rid and f.kind == kind, (f, rid)
        return f

    def handshake(self, secret: bytes | None) -> None:
        hello = self.request(Kind.HELLO, auth.client_hello("hostile-test"))
        assert not hello.is_error, hello
        if hello.metadata["auth_required"]:
            assert secret is not None
            meta, sn, cn = auth.client_auth(hello.metadata, secret)
            reply = self.request(Kind.AUTH, meta)
            assert not reply.is_error, reply
            auth.client_check(reply.metadata, secret, sn, cn)

    def end_writes(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def until_closed(self) -> list[Frame]:
        """Every frame the server still sends, until it closes (fails on a hang)."""
        frames: list[Frame] = []
        while True:
            try:
                f = self.recv()
            except TimeoutError:
                raise AssertionError(f"server neither answered nor closed; got {frames}") from None
            if f is None:
                return frames
            frames.append(f)
            assert len(frames) < 1000

    def close(self) -> None:
        self.sock.close()


def error_name(f: Frame) -> str:
    assert f.is_error, f"expected an error reply, got {f}"
    err = f.error()
    assert err is not None
    return err.name


def assert_error_then_closed(raw: Raw, codes: set[str]) -> None:
    """An error with one of ``codes`` (or nothing), then the connection is closed."""
    frames = raw.until_closed()
    for f in frames:
        assert error_name(f) in codes, f
    raw.close()


def authed(t: Target) -> Raw:
    raw = Raw(t.address)
    raw.handshake(t.secret)
    return raw


def header(kind: int, rid: int, mlen: int, blen: int, flags: int = 0, version: int = 1, magic: bytes = MAGIC) -> bytes:
    return HEADER.pack(magic, version, kind, flags, rid, mlen, blen)


# --- garbage on the wire -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_random_bytes(target: Target, seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 4096)
    junk = rng.randbytes(n)
    if seed % 3 == 0:
        junk = MAGIC + b"\x01" + junk  # gets past the magic and version checks
    elif seed % 3 == 1:
        # A well-formed header with a random kind and small lengths, then random bytes.
        mlen, blen = rng.randint(0, 64), rng.randint(0, 64)
        junk = header(rng.randint(0, 0xFFFF), rng.getrandbits(64), mlen, blen) + rng.randbytes(mlen + blen)
    for authenticate in (False, True):
        raw = Raw(target.address)
        if authenticate:
            raw.handshake(target.secret)
        raw.send(junk)
        raw.end_writes()
        for f in raw.until_closed():
            assert not f.is_error or error_name(f) != "INTERNAL", f
        raw.close()
    assert_intact(target)


def test_truncated_frames(target: Target) -> None:
    rows = encode_rows(target.cluster.admin().table(T).schema.arrow_schema, [(10_000, "x", 1)])
    frames = [
        encode_frame(Kind.HELLO, 1, auth.client_hello("x")),
        encode_frame(Kind.PUT, 2, {"table": T}, rows, int(Flags.COMPACT_ROWS)),
        encode_frame(Kind.CREATE_NAMESPACE, 3, {"namespace": ["trunc"]}),
    ]
    for data in frames:
        for cut in sorted({1, 2, 5, 21, 22, 23, len(data) // 2, len(data) - 1}):
            for authenticate in (False, True):
                raw = Raw(target.address)
                if authenticate:
                    raw.handshake(target.secret)
                raw.send(data[:cut])
                raw.end_writes()
                assert_error_then_closed(raw, {"MALFORMED"})
    assert_intact(target)


@pytest.mark.parametrize("declared", [(0xFFFFFFFF, 0xFFFFFFFF), (0, 0xFFFFFFFF), (64 << 20, 0), (0, (64 << 20) - 21)])
def test_huge_declared_length_is_refused_before_reading(target: Target, declared: tuple[int, int]) -> None:
    """Only the header is sent: the answer must come without the server waiting for (or
    allocating) the body, then the connection is closed."""
    mlen, blen = declared
    for authenticate in (False, True):
        raw = Raw(target.address)
        if authenticate:
            raw.handshake(target.secret)
        raw.send(header(Kind.PUT, 77, mlen, blen))
        f = raw.recv()  # no end_writes: the server must not wait for the declared bytes
        assert f is not None, "the server closed without answering"
        assert error_name(f) == "FRAME_TOO_LARGE" and f.request_id == 77
        assert raw.until_closed() == []
        raw.close()
    assert_intact(target)


def test_frames_bigger_than_a_handshake_before_auth(secured: Cluster) -> None:
    """With a secret, an unauthenticated peer cannot declare a big frame (under the cap)."""
    for sid in ("s0", None):
        address = secured.locator_address if sid is None else secured.servers[sid].address
        raw = Raw(address)
        raw.send(header(Kind.HELLO, 5, 1 << 20, 0))
        f = raw.recv()
        assert f is not None and error_name(f) == "FRAME_TOO_LARGE"
        assert raw.until_closed() == []
        raw.close()
        # The same size is fine once authenticated (a large write is legitimate).
        raw = Raw(address)
        raw.handshake(secured.secret)
        r = raw.request(Kind.PING, {"pad": "x" * (1 << 20)})
        assert not r.is_error
        raw.close()


def test_bad_header_fields(target: Target) -> None:
    cases = [
        (header(Kind.PING, 1, 0, 0, magic=b"XS"), {"MALFORMED"}),
        (header(Kind.PING, 1, 0, 0, version=9), {"UNSUPPORTED_VERSION"}),
        (header(Kind.PING, 1, 0, 0, flags=0x80), {"MALFORMED", "AUTH_REQUIRED"}),
        (header(Kind.PING, 1, 0, 0, flags=0x03), {"MALFORMED", "AUTH_REQUIRED"}),
    ]
    for data, codes in cases:
        for authenticate in (False, True):
            raw = Raw(target.address)
            if authenticate:
                raw.handshake(target.secret)
            raw.send(data)
            f = raw.recv()
            assert f is not None and error_name(f) in codes, f
            assert raw.until_closed() == []
            raw.close()
    assert_intact(target)


@pytest.mark.parametrize("meta", [b"[1, 2]", b"\xff\xfe{}", b'{"a": NaN}', b"{", b'"text"', b"{" * 5000 + b"}" * 5000])
def test_malformed_metadata_closes(target: Target, meta: bytes) -> None:
    raw = authed(target)
    raw.send(header(Kind.PING, 9, len(meta), 0) + meta)
    f = raw.recv()
    assert f is not None and error_name(f) == "MALFORMED" and f.request_id == 9
    assert raw.until_closed() == []
    raw.close()
    assert_intact(target)


# --- authentication ------------------------------------------------------------------------


SECURED = ["secured-server", "secured-locator"]


def test_wrong_secret(target: Target) -> None:
    if target.secret is None:
        # No secret configured: a client that has one still gets in (nothing to prove).
        Connection(*target.address, b"any", timeout=10).close()
        return
    with pytest.raises(AuthenticationError):
        Connection(*target.address, b"not-the-secret", timeout=10)
    with pytest.raises(SparkExtError, match="requires a secret"):
        Connection(*target.address, None, timeout=10)
    with pytest.raises(AuthenticationError):
        StoreClient(target.cluster.locator_address, b"not-the-secret").list_tables()

    def auth_case(make: Any) -> None:
        raw = Raw(target.address)
        hello = raw.request(Kind.HELLO, auth.client_hello("x"))
        assert hello.metadata["auth_required"] is True
        raw.frame(Kind.AUTH, make(bytes.fromhex(hello.metadata["nonce"])))
        assert_error_then_closed(raw, {"AUTH_FAILED"})

    cn = bytes(range(32))
    auth_case(lambda sn: {"client_nonce": cn.hex(), "proof": auth.client_proof(b"wrong", sn, cn).hex()})
    auth_case(lambda sn: {"client_nonce": cn.hex(), "proof": "zz" * 32})
    auth_case(lambda sn: {"client_nonce": cn.hex()[:10], "proof": auth.client_proof(target.secret, sn, cn).hex()})
    auth_case(lambda sn: {"client_nonce": cn.hex()})
    auth_case(lambda sn: {"proof": 5, "client_nonce": ["x"]})
    # Reflection: echoing the server's nonce as the client's is refused even with a right proof.
    auth_case(lambda sn: {"client_nonce": sn.hex(), "proof": auth.client_proof(target.secret, sn, sn).hex()})
    # A proof for another connection's nonce does not open this one.
    other = Raw(target.address)
    old = other.request(Kind.HELLO, auth.client_hello("x")).metadata["nonce"]
    other.close()
    auth_case(lambda sn: {"client_nonce": cn.hex(), "proof": auth.client_proof(target.secret, bytes.fromhex(old), cn).hex()})
    assert_intact(target)


def test_auth_without_hello_and_requests_before_auth(secured_target: Target) -> None:
    target = secured_target
    sn = bytes(32)
    good_rows = encode_rows(target.cluster.admin().table(T).schema.arrow_schema, [(9999, "intruder", 1)])
    # AUTH before any HELLO (there is no nonce to answer yet).
    raw = Raw(target.address)
    raw.frame(Kind.AUTH, {"client_nonce": bytes(range(32)).hex(),
                          "proof": auth.client_proof(target.secret, sn, bytes(range(32))).hex()})
    assert_error_then_closed(raw, {"AUTH_REQUIRED"})
    before_auth: list[tuple[int, dict[str, Any], bytes, int]] = [
        (Kind.PUT, {"table": T}, good_rows, int(Flags.COMPACT_ROWS)),
        (Kind.TRUNCATE, {"table": T}, b"", 0),
        (Kind.GET, {"table": T, "key": [1]}, b"", 0),
        (Kind.DROP_TABLE, {"namespace": ["default"], "name": "h"}, b"", 0),
        (Kind.CREATE_NAMESPACE, {"namespace": ["intruder"]}, b"", 0),
        (Kind.PING, {}, b"", 0),
        (0x0F00, {}, b"", 0),
    ]
    for kind, meta, body, flags in before_auth:
        # As the very first frame ...
        raw = Raw(target.address)
        raw.frame(kind, meta, body, flags)
        assert_error_then_closed(raw, {"AUTH_REQUIRED"})
        # ... and after HELLO, without AUTH.
        raw = Raw(target.address)
        assert not raw.request(Kind.HELLO, auth.client_hello("x")).is_error
        raw.frame(kind, meta, body, flags)
        assert_error_then_closed(raw, {"AUTH_REQUIRED"})
    # Requests queued behind a failed AUTH are never served.
    raw = Raw(target.address)
    raw.request(Kind.HELLO, auth.client_hello("x"))
    raw.frame(Kind.AUTH, {"client_nonce": bytes(range(32)).hex(), "proof": "00" * 32})
    raw.frame(Kind.TRUNCATE, {"table": T})
    assert_error_then_closed(raw, {"AUTH_FAILED"})
    assert_intact(target)


def test_silent_peers_are_closed_after_the_handshake_timeout(secured: Cluster) -> None:
    """A connection that never authenticates does not hold the server forever (default 10 s)."""
    raws = []
    for sid in ("s0", None):
        address = secured.locator_address if sid is None else secured.servers[sid].address
        silent = Raw(address, timeout=60)
        hello_only = Raw(address, timeout=60)
        assert not hello_only.request(Kind.HELLO, auth.client_hello("x")).is_error
        raws += [silent, hello_only]
    for raw in raws:
        assert raw.until_closed() == []  # closed by the server, within the 60 s read timeout
        raw.close()


# --- valid frames, wrong requests --------------------------------------------------------


def test_unknown_and_unserved_kinds_keep_the_connection(target: Target) -> None:
    raw = authed(target)
    unserved = Kind.CREATE_TABLE if not target.is_locator else Kind.GET
    for kind in (0x0F00, 0x7FFF, 0xF0F0, 0xFFFF, 0x0000, int(Kind.CANCEL) + 0x60, int(unserved)):
        r = raw.request(kind, {"table": T, "anything": [1, 2]})
        assert error_name(r) == "UNKNOWN_KIND", r
        assert r.error().details.get("kind") == kind  # type: ignore[union-attr]
        assert raw.request(Kind.PING, {}).metadata["pong"] is True  # still open
    if not target.is_locator:
        r = raw.request(Kind.GET, {"table": T, "key": [5]})
        assert not r.is_error
    raw.close()
    assert_intact(target)


def _arrow(tbl: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, tbl.schema) as w:
        w.write_table(tbl)
    return bytes(sink.getvalue().to_pybytes())


def _deep(depth: int) -> list[Any]:
    p: list[Any] = ["=", "id", 1]
    for _ in range(depth):
        p = ["not", p]
    return p


def store_server_cases(c: StoreClient) -> list[tuple[str, int, dict[str, Any], bytes, int, set[str]]]:
    schema = c.table(T).schema.arrow_schema
    rows = encode_rows(schema, [(5000, "a", 1), (5001, "b", 2)])
    good_arrow = _arrow(pa.table({"id": pa.array([6000], pa.int64()), "v": ["x"], "n": pa.array([1], pa.int32())}))
    BA, TM = {"BAD_ARGUMENT"}, {"TYPE_MISMATCH", "BAD_ARGUMENT"}
    ARROW, COMPACT = int(Flags.HAS_ARROW), int(Flags.COMPACT_ROWS)
    return [
        # name, kind, metadata, body, flags, acceptable error codes
        ("missing table", Kind.GET, {"key": [1]}, b"", 0, BA),
        ("table of wrong type", Kind.GET, {"table": 123, "key": [1]}, b"", 0, BA),
        ("no such table", Kind.GET, {"table": "default.nope", "key": [1]}, b"", 0, {"NO_SUCH_TABLE"}),
        ("key of wrong type", Kind.GET, {"table": T, "key": ["abc"]}, b"", 0, TM),
        ("key of wrong arity", Kind.GET, {"table": T, "key": [1, 2]}, b"", 0, BA),
        ("empty key", Kind.GET, {"table": T, "key": []}, b"", 0, BA),
        ("key not a list", Kind.GET, {"table": T, "key": 5}, b"", 0, BA),
        ("null key", Kind.GET, {"table": T, "key": [None]}, b"", 0, {"NULL_KEY"}),
        ("key out of range", Kind.GET, {"table": T, "key": [2 ** 70]}, b"", 0, {"VALUE_OUT_OF_RANGE"}),
        ("bool key", Kind.GET, {"table": T, "key": [True]}, b"", 0, TM),
        ("float key", Kind.GET, {"table": T, "key": [1.5]}, b"", 0, TM),
        ("object key", Kind.GET, {"table": T, "key": [{"a": 1}]}, b"", 0, TM),
        ("keys not a list", Kind.GET_MANY, {"table": T, "keys": 5}, b"", 0, BA),
        ("one key of wrong arity", Kind.GET_MANY, {"table": T, "keys": [[1], [1, 2]]}, b"", 0, BA),
        ("predicate not a list", Kind.SCAN, {"table": T, "where": "id = 1"}, b"", 0, BA),
        ("unknown operator", Kind.SCAN, {"table": T, "where": ["bogus", "v", 1]}, b"", 0, BA),
        ("unknown column", Kind.SCAN, {"table": T, "where": ["=", "nope", 1]}, b"", 0, {"UNKNOWN_COLUMN"}),
        ("missing operand", Kind.SCAN, {"table": T, "where": ["=", "v"]}, b"", 0, BA),
        ("in without list", Kind.SCAN, {"table": T, "where": ["in", "id", 5]}, b"", 0, BA),
        ("literal of wrong type", Kind.SCAN, {"table": T, "where": ["<", "v", 5]}, b"", 0, TM),
        ("object literal", Kind.SCAN, {"table": T, "where": ["=", "id", {"a": 1}]}, b"", 0, TM),
        ("starts_with on ints", Kind.SCAN, {"table": T, "where": ["starts_with", "id", "x"]}, b"", 0, TM),
        ("empty and", Kind.SCAN, {"table": T, "where": ["and"]}, b"", 0, BA),
        ("operator of wrong type", Kind.SCAN, {"table": T, "where": [5, "id", 1]}, b"", 0, BA),
        ("columns not a list", Kind.SCAN, {"table": T, "columns": "v"}, b"", 0, BA),
        ("unknown projected column", Kind.SCAN, {"table": T, "columns": ["nope"]}, b"", 0, {"UNKNOWN_COLUMN"}),
        ("column name of wrong type", Kind.SCAN, {"table": T, "columns": [5]}, b"", 0, {"UNKNOWN_COLUMN", "BAD_ARGUMENT"}),
        ("negative limit", Kind.SCAN, {"table": T, "limit": -1}, b"", 0, BA),
        ("limit of wrong type", Kind.SCAN, {"table": T, "limit": "x"}, b"", 0, BA),
        ("bucket of wrong type", Kind.SCAN, {"table": T, "buckets": ["a"]}, b"", 0, BA),
        ("bucket out of range", Kind.SCAN, {"table": T, "buckets": [999]}, b"", 0, BA | {"NOT_OWNER"}),
        ("negative bucket", Kind.COUNT, {"table": T, "buckets": [-1]}, b"", 0, BA | {"NOT_OWNER"}),
        ("fractional bucket", Kind.COUNT, {"table": T, "buckets": [1.5]}, b"", 0, BA),
        ("bad count predicate", Kind.COUNT, {"table": T, "where": 7}, b"", 0, BA),
        ("garbage Arrow body", Kind.PUT, {"table": T}, b"garbage" * 10, ARROW, BA),
        ("empty Arrow body", Kind.PUT, {"table": T}, b"", ARROW, BA),
        ("truncated Arrow body", Kind.PUT, {"table": T}, good_arrow[: len(good_arrow) // 2], ARROW, BA),
        ("Arrow key of wrong type", Kind.PUT, {"table": T}, _arrow(pa.table({"id": ["a"], "v": ["x"]})), ARROW, TM),
        ("Arrow without the key", Kind.PUT, {"table": T}, _arrow(pa.table({"v": ["x"]})), ARROW, {"NULL_KEY", "BAD_ARGUMENT"}),
        ("Arrow unknown column", Kind.PUT, {"table": T}, _arrow(pa.table({"id": [7000], "zz": [1]})), ARROW, {"UNKNOWN_COLUMN", "BAD_ARGUMENT"}),
        ("compact rows truncated", Kind.PUT, {"table": T}, rows[:-3], COMPACT, BA),
        ("compact rows cut in the count", Kind.PUT, {"table": T}, rows[:3], COMPACT, BA),
        ("compact rows count huge", Kind.PUT, {"table": T}, struct.pack("<I", 0xFFFFFFFF), COMPACT, BA),
        ("compact rows trailing bytes", Kind.PUT, {"table": T}, rows + b"extra", COMPACT, BA),
        ("compact insert truncated", Kind.INSERT, {"table": T}, rows[:-1], COMPACT, BA),
        ("write without rows", Kind.PUT, {"table": T}, b"", 0, BA),
        ("insert of existing keys", Kind.INSERT, {"table": T}, encode_rows(schema, [(8000, "n", 1), (3, "dup", 3)]), COMPACT, {"DUPLICATE_KEY"}),
        ("values not an object", Kind.UPDATE, {"table": T, "keys": [[1]], "values": "x"}, b"", 0, BA),
        ("no values", Kind.UPDATE, {"table": T, "keys": [[1]], "values": {}}, b"", 0, BA),
        ("unknown set column", Kind.UPDATE, {"table": T, "keys": [[1], [2]], "values": {"nope": 1}}, b"", 0, {"UNKNOWN_COLUMN"}),
        ("set value of wrong type", Kind.UPDATE, {"table": T, "keys": [[1], [2]], "values": {"n": "x"}}, b"", 0, TM),
        ("set key to null", Kind.UPDATE, {"table": T, "keys": [[1]], "values": {"id": None}}, b"", 0, {"NULL_KEY", "BAD_ARGUMENT"}),
        ("update keys wrong arity", Kind.UPDATE, {"table": T, "keys": [[1, 2]], "values": {"n": 1}}, b"", 0, BA),
        ("delete keys missing", Kind.DELETE, {"table": T}, b"", 0, BA),
        ("delete key of wrong type", Kind.DELETE, {"table": T, "keys": [[1], ["x"]]}, b"", 0, TM),
        ("update_where bad predicate", Kind.UPDATE_WHERE, {"table": T, "where": ["?"], "values": {"v": "z"}}, b"", 0, BA),
        ("update_where duplicates keys", Kind.UPDATE_WHERE, {"table": T, "where": ["<", "id", 3], "values": {"id": 5}}, b"", 0, {"DUPLICATE_KEY", "BAD_ARGUMENT"}),
        ("delete_where predicate a number", Kind.DELETE_WHERE, {"table": T, "where": 3}, b"", 0, BA),
        ("delete_where deep nonsense", Kind.DELETE_WHERE, {"table": T, "where": ["and", ["or"], ["=", "id", 1]]}, b"", 0, BA),
        ("truncate without table", Kind.TRUNCATE, {}, b"", 0, BA),
        ("staged op unknown", Kind.TXN_STAGE, {"txn": "h1", "table": T, "op": "bogus"}, b"", 0, BA),
        ("empty txn id", Kind.TXN_STAGE, {"txn": "", "table": T, "op": "delete", "keys": [[1]]}, b"", 0, BA),
        ("txn id of wrong type", Kind.TXN_STAGE, {"txn": 5, "table": T, "op": "delete", "keys": [[1]]}, b"", 0, BA),
        ("txn id too long", Kind.TXN_STAGE, {"txn": "x" * 300, "table": T, "op": "delete", "keys": [[1]]}, b"", 0, BA),
        ("staged update unknown column", Kind.TXN_STAGE, {"txn": "h2", "table": T, "op": "update", "keys": [[1]], "values": {"nope": 1}}, b"", 0, {"UNKNOWN_COLUMN"}),
        ("staged rows truncated", Kind.TXN_STAGE, {"txn": "h3", "table": T, "op": "upsert"}, rows[:-2], COMPACT, BA),
        ("parts not a list", Kind.TXN_PREPARE, {"txn": "h4", "parts": "x"}, b"", 0, BA),
        ("part of wrong type", Kind.TXN_PREPARE, {"txn": "h4", "part": 5}, b"", 0, BA),
        ("commit of unknown txn", Kind.TXN_COMMIT, {"txn": "never-seen"}, b"", 0, {"TXN_UNKNOWN"}),
        ("abort txn of wrong type", Kind.TXN_ABORT, {"txn": ["x"]}, b"", 0, BA),
        ("status without txn", Kind.TXN_STATUS, {}, b"", 0, BA),
        ("open buckets spec a string", Kind.OPEN_BUCKETS, {"table": "x"}, b"", 0, BA),
        ("open buckets spec nonsense", Kind.OPEN_BUCKETS, {"table": {"name": 5}}, b"", 0, BA),
        ("open buckets index nonsense", Kind.OPEN_BUCKETS, {"table": {"name": "default.zz", "fields": [{"name": "id", "type": "int64"}], "primary_key": ["id"]}, "indexes": [5]}, b"", 0, BA),
        ("update table of no table", Kind.UPDATE_TABLE, {"table": "default.nope"}, b"", 0, {"NO_SUCH_TABLE"}),
        ("update table index a number", Kind.UPDATE_TABLE, {"table": T, "indexes": [5]}, b"", 0, BA),
        ("update table index without columns", Kind.UPDATE_TABLE, {"table": T, "indexes": [{"name": "i"}]}, b"", 0, BA),
        ("update table index list a dict", Kind.UPDATE_TABLE, {"table": T, "indexes": {"name": "i"}}, b"", 0, BA),
        ("close buckets table a number", Kind.CLOSE_BUCKETS, {"table": 5}, b"", 0, BA),
        ("fence a string", Kind.PING, {"fence": "x"}, b"", 0, BA),
        ("fence of wrong types", Kind.PUT, {"table": T, "fence": {"group": 5, "token": "a"}}, rows, COMPACT, BA),
    ]


def test_nonsense_arguments_to_a_store_server(server_target: Target) -> None:
    target = server_target
    raw = authed(target)
    for name, kind, meta, body, flags, codes in store_server_cases(target.cluster.admin()):
        r = raw.request(kind, meta, body, flags)
        assert r.is_error and error_name(r) in codes, f"{name}: {r}"
        assert raw.request(Kind.PING, {}).metadata["pong"] is True, name  # the connection stays open
    raw.close()
    assert_intact(target)
    # The staged-but-failed transactions above left no lock behind.
    c = target.cluster.admin()
    c.put(T, [(1, "v1", 1), (5000, "tmp", 0)])
    c.delete(T, [5000])
    assert_intact(target)


def locator_cases() -> list[tuple[str, int, dict[str, Any], set[str]]]:
    BA = {"BAD_ARGUMENT"}
    ns = ["default"]
    fields = [{"name": "id", "type": "int64", "nullable": False}]
    return [
        ("namespace a number", Kind.CREATE_NAMESPACE, {"namespace": 5}, BA),
        ("namespace with a dot", Kind.CREATE_NAMESPACE, {"namespace": ["a.b"]}, BA),
        ("namespace with a control character", Kind.CREATE_NAMESPACE, {"namespace": ["\x00"]}, BA),
        ("empty namespace", Kind.CREATE_NAMESPACE, {"namespace": [], "if_not_exists": True}, BA),
        ("namespace list of numbers", Kind.CREATE_NAMESPACE, {"namespace": [1, 2]}, BA),
        ("existing namespace", Kind.CREATE_NAMESPACE, {"namespace": ns}, {"NAMESPACE_EXISTS"}),
        ("drop the root namespace", Kind.DROP_NAMESPACE, {"namespace": [], "cascade": True}, BA),
        ("drop a non-empty namespace", Kind.DROP_NAMESPACE, {"namespace": ns}, {"NAMESPACE_NOT_EMPTY"}),
        ("drop unknown namespace", Kind.DROP_NAMESPACE, {"namespace": ["nope"]}, {"NO_SUCH_NAMESPACE"}),
        ("list namespaces parent a number", Kind.LIST_NAMESPACES, {"parent": 5}, BA),
        ("table definition a string", Kind.CREATE_TABLE, {"namespace": ns, "name": "zz", "table": "x"}, BA),
        ("empty table definition", Kind.CREATE_TABLE, {"namespace": ns, "name": "zz", "table": {}}, BA),
        ("fields a number", Kind.CREATE_TABLE, {"namespace": ns, "name": "zz", "table": {"fields": 5}}, BA),
        ("num_buckets a string", Kind.CREATE_TABLE, {"namespace": ns, "name": "zz", "table": {"fields": fields, "num_buckets": "abc"}}, BA),
        ("num_buckets a list", Kind.CREATE_TABLE, {"namespace": ns, "name": "zz", "table": {"fields": fields, "num_buckets": [1]}}, BA),
        ("zero buckets", Kind.CREATE_TABLE, {"namespace": ns, "name": "zz", "table": {"fields": fields, "num_buckets": 0}}, BA),
        ("a billion buckets", Kind.CREATE_TABLE, {"namespace": ns, "name": "zz", "table": {"fields": fields, "num_buckets": 10 ** 9}}, BA),
        ("10^30 buckets", Kind.CREATE_TABLE, {"namespace": ns, "name": "zz", "table": {"fields": fields, "num_buckets": 10 ** 30}}, BA),
        ("key of unknown column", Kind.CREATE_TABLE, {"namespace": ns, "name": "zz", "table": {"fields": fields, "primary_key": ["nope"]}}, BA | {"UNKNOWN_COLUMN"}),
        ("table in unknown namespace", Kind.CREATE_TABLE, {"namespace": ["nope"], "name": "zz", "table": {"fields": fields}}, {"NO_SUCH_NAMESPACE"}),
        ("existing table", Kind.CREATE_TABLE, {"namespace": ns, "name": "h", "table": {"fields": fields}}, {"TABLE_EXISTS"}),
        ("table name with a dot", Kind.CREATE_TABLE, {"namespace": ns, "name": "a.b", "table": {"fields": fields}}, BA),
        ("get table namespace a number", Kind.GET_TABLE, {"namespace": 5, "name": "h"}, BA),
        ("get table without name", Kind.GET_TABLE, {"namespace": ns}, BA),
        ("get unknown table", Kind.GET_TABLE, {"namespace": ns, "name": "nope"}, {"NO_SUCH_TABLE"}),
        ("drop unknown table", Kind.DROP_TABLE, {"namespace": ns, "name": "nope"}, {"NO_SUCH_TABLE"}),
        ("drop with a stale version", Kind.DROP_TABLE, {"namespace": ns, "name": "h", "expected_version": 999}, {"CONFLICT"}),
        ("index columns a string", Kind.CREATE_INDEX, {"namespace": ns, "name": "h", "index": {"name": "i", "columns": "v"}}, BA),
        ("index kind unknown", Kind.CREATE_INDEX, {"namespace": ns, "name": "h", "index": {"name": "i", "columns": ["v"], "kind": "btree"}}, BA),
        ("index column a number", Kind.CREATE_INDEX, {"namespace": ns, "name": "h", "index": {"name": "i", "columns": [5]}}, BA | {"UNKNOWN_COLUMN"}),
        ("index unknown column", Kind.CREATE_INDEX, {"namespace": ns, "name": "h", "index": {"name": "i", "columns": ["nope"]}}, {"UNKNOWN_COLUMN"}),
        ("index a string", Kind.CREATE_INDEX, {"namespace": ns, "name": "h", "index": "x"}, BA),
        ("index name with a dot", Kind.CREATE_INDEX, {"namespace": ns, "name": "h", "index": {"name": "a.b", "columns": ["v"]}}, BA),
        ("drop index a list", Kind.DROP_INDEX, {"namespace": ns, "name": "h", "index": ["x"]}, {"NO_SUCH_INDEX", "BAD_ARGUMENT"}),
        ("list tables namespace an object", Kind.LIST_TABLES, {"namespace": {}}, BA),
        ("options a list", Kind.ALTER_TABLE, {"namespace": ns, "name": "h", "set_options": [1]}, BA),
        ("alter with a stale version", Kind.ALTER_TABLE, {"namespace": ns, "name": "h", "set_options": {"a": "b"}, "expected_version": 999}, {"CONFLICT"}),
        ("register without an id", Kind.REGISTER_SERVER, {"server_id": 5, "host": "x", "port": 1}, BA),
        ("register with a bad port", Kind.REGISTER_SERVER, {"server_id": "evil", "host": "127.0.0.1", "port": "x"}, BA),
    ]


def test_nonsense_arguments_to_the_locator(locator_target: Target) -> None:
    target = locator_target
    raw = authed(target)
    for name, kind, meta, codes in locator_cases():
        r = raw.request(kind, meta)
        assert r.is_error and error_name(r) in codes, f"{name}: {r}"
        assert raw.request(Kind.PING, {}).metadata["pong"] is True, name
    raw.close()
    assert_intact(target)


# --- random valid frames -----------------------------------------------------------------------

_VOCAB = ["table", "key", "keys", "values", "where", "columns", "limit", "buckets", "txn", "op", "part", "parts",
          "namespace", "name", "index", "indexes", "num_buckets", "if_exists", "cascade", "expected_version", "parent",
          "fence", "server_id", "host", "port", "holder", "ttl_ms", "target"]
# Requests that may legitimately change something are sent with tables that do not exist.
_READS = [Kind.GET, Kind.GET_MANY, Kind.SCAN, Kind.COUNT, Kind.LOOKUP, Kind.RANGE, Kind.STATUS, Kind.PING,
          Kind.GET_TABLE, Kind.GET_PLACEMENT, Kind.LIST_TABLES, Kind.LIST_NAMESPACES, Kind.GET_NAMESPACE,
          Kind.LIST_SERVERS, Kind.TXN_STATUS, Kind.LEASE_STATUS, Kind.CANCEL]
_WRITES = [Kind.PUT, Kind.INSERT, Kind.UPDATE, Kind.DELETE, Kind.UPDATE_WHERE, Kind.DELETE_WHERE, Kind.TRUNCATE,
           Kind.TXN_STAGE, Kind.TXN_COMMIT, Kind.TXN_ABORT, Kind.UPDATE_TABLE, Kind.CLOSE_BUCKETS,
           Kind.DROP_TABLE, Kind.DROP_INDEX, Kind.DROP_NAMESPACE]


def _value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 2 or r < 0.55:
        return rng.choice([None, True, False, 0, -1, 1, 3, 2 ** 63, -2 ** 70, 1.5, -0.0, 1e308, "", "x", "id", "v",
                           "n", "=", "<", "and", "not", "in", "hash", "default", "\u00e9\x01", "a" * 300])
    if r < 0.85:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(_VOCAB): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


@pytest.mark.parametrize("seed", range(3))
def test_fuzzed_requests(target: Target, seed: int) -> None:
    """Random but well-framed requests after authentication: replies only, no INTERNAL."""
    rng = random.Random(seed)
    raw = authed(target)
    for _ in range(300):
        meta = {f: _value(rng) for f in rng.sample(_VOCAB, rng.randint(0, 6))}
        roll = rng.random()
        if roll < 0.45:
            kind = int(rng.choice(_READS))
            if rng.random() < 0.7:
                meta["table"] = T
                meta["namespace"], meta["name"] = ["default"], "h"
        elif roll < 0.9:
            kind = int(rng.choice(_WRITES))
            meta["table"] = rng.choice(["default.nope", "nope.t", 5, None])
            meta["namespace"], meta["name"] = rng.choice([["nope"], 5, []]), rng.choice(["zz", None, 7])
        else:
            kind = rng.randint(0x0800, 0xEFFF)
        flags, body = 0, b""
        if rng.random() < 0.3:
            flags = rng.choice([int(Flags.HAS_ARROW), int(Flags.COMPACT_ROWS)])
            body = rng.randbytes(rng.randint(0, 200))
        try:
            json.dumps(meta, allow_nan=False)
        except ValueError:
            continue
        r = raw.request(kind, meta, body, flags)
        if r.is_error:
            name = error_name(r)
            assert name != "INTERNAL", (kind, meta, r)
            if name in FATAL:
                raw.until_closed()
                raw = authed(target)
    assert raw.request(Kind.PING, {}).metadata["pong"] is True
    raw.close()
    assert_intact(target)


@pytest.mark.parametrize("spec", [
    {"fields": [{"name": "id", "type": "int64"}], "options": "ab"},
    {"fields": [{"name": "id", "type": 5}]},
])
def test_table_definitions_with_nonsense_values(secured: Cluster, spec: dict[str, Any]) -> None:
    raw = Raw(secured.locator_address)
    raw.handshake(secured.secret)
    r = raw.request(Kind.CREATE_TABLE, {"namespace": ["default"], "name": "zz", "table": spec})
    assert error_name(r) == "BAD_ARGUMENT", r
    raw = Raw(secured.servers["s0"].address)
    raw.handshake(secured.secret)
    r = raw.request(Kind.OPEN_BUCKETS, {"table": {"name": "default.zz", **spec}, "buckets": [0]})
    assert error_name(r) == "BAD_ARGUMENT", r


def test_many_bad_connections_at_once_do_not_starve_others(target: Target) -> None:
    """Fifty half-open connections (header sent, body withheld; or nothing at all): a normal
    client is still served meanwhile, and all of them are answered or closed."""
    idle = []
    for i in range(50):
        raw = Raw(target.address, timeout=60)
        if i % 2:
            raw.send(header(Kind.PING, 1, 10, 0))  # declares 10 bytes, sends none
        idle.append(raw)
    assert_intact(target)
    c = Connection(*target.address, target.secret, timeout=30)
    assert c.request(Kind.PING, {}).metadata["pong"] is True
    c.close()
    for raw in idle:
        raw.end_writes()
        assert_error_then_closed(raw, {"MALFORMED", "AUTH_REQUIRED"})
    wait_until(lambda: snapshot(target.cluster.admin()) == target.baseline, 10, "the cluster to be unchanged")
