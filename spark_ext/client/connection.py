"""One client connection to a spark-ext process, and a thread-safe pool of them.

A :class:`Connection` does the HELLO/AUTH handshake (mutual HMAC when a secret is set),
then sends requests and reads their replies in order. Error replies are raised as the
matching :mod:`spark_ext.exceptions` class, so a caller catches ``DuplicateKeyError``
whether the engine is in-process or behind a socket.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from spark_ext import exceptions as ex
from spark_ext.wire import auth
from spark_ext.wire.errors import WireError
from spark_ext.wire.frames import DEFAULT_MAX_FRAME, Frame, FrameReader, send_frame
from spark_ext.wire.kinds import Kind

logger = logging.getLogger(__name__)

_BY_CODE: dict[str, type[ex.SparkExtError]] = {}
for _cls in vars(ex).values():
    if isinstance(_cls, type) and issubclass(_cls, ex.SparkExtError) and _cls.code not in _BY_CODE:
        _BY_CODE[_cls.code] = _cls
_BY_CODE["BAD_ARGUMENT"] = ex.BadArgumentError
_BY_CODE["INTERNAL"] = ex.SparkExtError


class RemoteError(ex.SparkExtError):
    """An error code this client has no class for (kept with its name)."""


class NotOwnerError(ex.SparkExtError):
    """The server does not host that bucket (placement changed): refresh and retry."""

    code = "NOT_OWNER"


class ConnectionFailedError(ex.SparkExtError, ConnectionError):
    """The connection could not be made or broke during a request."""

    code = "CONNECTION"


def typed_error(e: WireError) -> ex.SparkExtError:
    """The spark_ext exception for a protocol error (same message and details)."""
    if e.name == "NOT_OWNER":
        cls: type[ex.SparkExtError] = NotOwnerError
    else:
        cls = _BY_CODE.get(e.name, RemoteError)
    err = cls.__new__(cls)
    ex.SparkExtError.__init__(err, e.message, **e.details)
    err.code = e.name
    return err


class Connection:
    """A connected, authenticated session with one server. Not thread-safe.

    Args:
        host, port: the server's address.
        secret: the shared secret, if the server requires one.
        timeout: seconds to wait for connect and each reply.
    """

    def __init__(self, host: str, port: int, secret: bytes | None = None, timeout: float = 30.0,
                 client_name: str = "spark-ext-python") -> None:
        self.address = (host, port)
        self._ids = itertools.count(1)
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise ConnectionFailedError(f"cannot connect to {host}:{port}: {e}", host=host, port=port) from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = FrameReader(self.sock, max_frame=DEFAULT_MAX_FRAME)
        self.broken = False
        try:
            hello = self._call(Frame(Kind.HELLO, next(self._ids), auth.client_hello(client_name)))
            self.server_info = hello.metadata
            if hello.metadata.get("auth_required"):
                if secret is None:
                    raise ex.SparkExtError(f"server {host}:{port} requires a secret and none was configured")
                meta, sn, cn = auth.client_auth(hello.metadata, secret)
                reply = self._call(Frame(Kind.AUTH, next(self._ids), meta))
                auth.client_check(reply.metadata, secret, sn, cn)
        except BaseException:
            self.close()
            raise

    def _call(self, frame: Frame) -> Frame:
        try:
            send_frame(self.sock, frame)
            reply = self.reader.read_frame()
        except WireError as e:
            self.broken = True
            raise typed_error(e) from None
        except OSError as e:
            self.broken = True
            raise ConnectionFailedError(f"connection to {self.address[0]}:{self.address[1]} failed: {e}") from None
        if reply is None:
            self.broken = True
            raise ConnectionFailedError(f"server {self.address[0]}:{self.address[1]} closed the connection")
        if reply.is_error:
            err = reply.error()
            assert err is not None
            if err.fatal:
                self.broken = True
            raise typed_error(err)
        return reply

    def request(self, kind: Kind, metadata: dict[str, Any] | None = None, body: Any = b"", flags: int = 0) -> Frame:
        """Send one request and return its (single) reply. Raises typed errors."""
        return self._call(Frame(kind, next(self._ids), metadata or {}, body, flags))

    def stream(self, kind: Kind, metadata: dict[str, Any] | None = None) -> Iterator[Frame]:
        """Send one request and yield every frame of its streamed reply.

        Stopping early leaves unread frames: the connection is then marked broken.
        """
        rid = next(self._ids)
        done = False
        try:
            first = self._call(Frame(kind, rid, metadata or {}))
            yield first
            more = first.more
            while more:
                f = self.reader.read_frame()
                if f is None:
                    self.broken = True
                    raise ConnectionFailedError("server closed the connection during a stream")
                if f.is_error:
                    err = f.error()
                    assert err is not None
                    raise typed_error(err)
                yield f
                more = f.more
            done = True
        finally:
            if not done:
                self.broken = True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self.broken = True


class ConnectionPool:
    """Connections to one server, handed to one thread at a time. Thread-safe.

    A connection that broke is dropped instead of being returned to the pool.
    """

    def __init__(self, host: str, port: int, secret: bytes | None = None, timeout: float = 30.0, max_idle: int = 16) -> None:
        self.host, self.port, self.secret, self.timeout = host, port, secret, timeout
        self.max_idle = max_idle
        self._idle: list[Connection] = []
        self._lock = threading.Lock()

    def _borrow(self) -> Connection:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = Connection(self.host, self.port, self.secret, self.timeout)
        return conn

    def _give_back(self, conn: Connection) -> None:
        if not conn.broken:
            with self._lock:
                if len(self._idle) < self.max_idle:
                    self._idle.append(conn)
                    return
        conn.close()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        conn = self._borrow()
        try:
            yield conn
        finally:
            self._give_back(conn)

    def request(self, kind: Kind, metadata: dict[str, Any] | None = None, body: Any = b"", flags: int = 0) -> Frame:
        """One request on a pooled connection."""
        conn = self._borrow()  # not "with self.connection()": a generator costs ~1 us a call
        try:
            return conn.request(kind, metadata, body, flags)
        finally:
            self._give_back(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()
