"""A threaded TCP server speaking spark-ext frames: handshake, dispatch, error replies.

One thread accepts; each connection gets a thread that reads frames and answers them in
order. A handler maps a request frame to one reply, or to an iterator of replies for
streamed results (the last one without the MORE flag). Errors never kill the server:

* a handler's :class:`~spark_ext.exceptions.SparkExtError` or ``WireError`` becomes an
  error reply and the connection stays open;
* malformed or oversized frames, failed authentication and unknown protocol versions
  get an error reply, then the connection is closed (the stream cannot be trusted);
* any other exception is logged with its traceback and answered with INTERNAL.

Nothing here knows what the requests mean: the store server and the locator register
their handlers by message kind.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Callable, Iterable, Iterator, Union

from spark_ext.wire import auth
from spark_ext.wire.errors import FrameError, WireError
from spark_ext.wire.frames import DEFAULT_MAX_FRAME, Flags, Frame, FrameReader, error_frame, send_frame
from spark_ext.wire.kinds import ErrorCode, Kind, is_known_kind, kind_name

logger = logging.getLogger(__name__)

Reply = Union[Frame, Iterable[Frame], None]
Handler = Callable[[Frame, "Session"], Reply]

SERVER_NAME = "spark-ext/0.1"

#: Frame cap before a peer has authenticated (HELLO and AUTH are tiny): a header alone
#: must not make the server set aside the full cap for a peer it does not know yet.
HANDSHAKE_MAX_FRAME = 64 * 1024


def to_wire_error(e: BaseException) -> WireError:
    """The protocol error for an exception raised while serving a request."""
    return WireError.from_exception(e)


class Session:
    """Per-connection state handed to handlers (peer address, authenticated or not)."""

    def __init__(self, sock: socket.socket, peer: Any) -> None:
        self.sock = sock
        self.peer = peer
        self.authenticated = False
        self.state: dict[str, Any] = {}


class FrameServer:
    """Serve frames on ``host:port`` with a handler per message kind.

    Args:
        host: address to bind; 127.0.0.1 unless told otherwise.
        port: 0 picks a free port (see :attr:`port` after :meth:`start`).
        secret: shared secret; when set, every connection must pass the HMAC
            challenge before any other request.
        role: ``server``, ``locator`` or ``embedded`` (told to clients in HELLO).
        max_frame: frame size cap.
        handshake_timeout_s: with a secret, a connection that has not authenticated
            within this many seconds is closed (it cannot hold a thread forever).
        extra_hello: fields added to the HELLO reply (e.g. the server id).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        secret: bytes | None = None,
        role: str = "server",
        max_frame: int = DEFAULT_MAX_FRAME,
        extra_hello: dict[str, Any] | None = None,
        handshake_timeout_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.secret = secret
        self.role = role
        self.max_frame = max_frame
        self.extra_hello = dict(extra_hello or {})
        self.handshake_timeout_s = handshake_timeout_s
        self.handlers: dict[int, Handler] = {int(Kind.PING): self._ping}
        self._sock: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._stopping = threading.Event()
        self.on_disconnect: list[Callable[[Session], None]] = []

    def register(self, kind: Kind, handler: Handler) -> None:
        """Serve ``kind`` with ``handler`` (replacing any earlier one). O(1)."""
        self.handlers[int(kind)] = handler

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> "FrameServer":
        """Bind, listen and start accepting in a background thread."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(128)
        self.port = s.getsockname()[1]
        self._sock = s
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"{self.role}-accept", daemon=True)
        self._accept_thread.start()
        logger.info("%s listening on %s:%d%s", self.role, self.host, self.port, " (secret required)" if self.secret else "")
        return self

    def stop(self) -> None:
        """Stop accepting and close every connection. Idempotent."""
        self._stopping.set()
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, peer = self._sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._conns_lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn, peer), name=f"{self.role}-conn", daemon=True).start()

    # --- one connection -----------------------------------------------------------------

    def _serve(self, conn: socket.socket, peer: Any) -> None:
        session = Session(conn, peer)
        reader = FrameReader(conn, max_frame=self.max_frame if self.secret is None
                             else min(self.max_frame, HANDSHAKE_MAX_FRAME))
        server_nonce: bytes | None = None
        if self.secret is not None:
            conn.settimeout(self.handshake_timeout_s)  # lifted once authenticated
        try:
            while not self._stopping.is_set():
                try:
                    frame = reader.read_frame()
                except FrameError as e:
                    # Addressed to the offending request when its header could be parsed.
                    self._send_error(conn, e.kind, e.request_id, e)
                    return
                if frame is None:
                    return
                kind = frame.kind
                if kind == Kind.HELLO:
                    try:
                        reply, server_nonce = auth.server_hello(
                            frame.metadata, self.secret, server=SERVER_NAME, role=self.role,
                            max_frame=self.max_frame, extra=self.extra_hello,
                        )
                    except WireError as e:
                        self._send_error(conn, kind, frame.request_id, e)
                        if e.fatal:
                            return
                        continue
                    if self.secret is None:
                        session.authenticated = True
                    send_frame(conn, Frame(kind, frame.request_id, reply))
                    continue
                if kind == Kind.AUTH and self.secret is not None:
                    if server_nonce is None:
                        self._send_error(conn, kind, frame.request_id, WireError(ErrorCode.AUTH_REQUIRED, "send HELLO before AUTH"))
                        return
                    try:
                        reply = auth.server_check(frame.metadata, self.secret, server_nonce)
                    except WireError as e:
                        self._send_error(conn, kind, frame.request_id, e)
                        return
                    server_nonce = None
                    session.authenticated = True
                    conn.settimeout(None)
                    reader.max_frame = self.max_frame
                    send_frame(conn, Frame(kind, frame.request_id, reply))
                    continue
                if self.secret is not None and not session.authenticated:
                    self._send_error(conn, kind, frame.request_id, WireError(
                        ErrorCode.AUTH_REQUIRED, "this server requires authentication: send HELLO and AUTH first"))
                    return
                self._dispatch(conn, frame, session)
        except (ConnectionError, OSError) as e:
            logger.debug("connection from %s ended: %s", peer, e)
        finally:
            for cb in self.on_disconnect:
                try:
                    cb(session)
                except Exception:
                    logger.exception("disconnect callback failed")
            with self._conns_lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def _dispatch(self, conn: socket.socket, frame: Frame, session: Session) -> None:
        handler = self.handlers.get(frame.kind)
        if handler is None:
            msg = (
                f"{kind_name(frame.kind)} is not served by this {self.role}"
                if is_known_kind(frame.kind) else f"unknown message kind {frame.kind:#06x}"
            )
            self._send_error(conn, frame.kind, frame.request_id, WireError(ErrorCode.UNKNOWN_KIND, msg, {"kind": frame.kind}))
            return
        try:
            reply = handler(frame, session)
            if reply is None:
                send_frame(conn, Frame(frame.kind, frame.request_id, {}), self.max_frame)
            elif isinstance(reply, Frame):
                send_frame(conn, reply, self.max_frame)
            else:
                self._stream(conn, frame, reply)
        except (ConnectionError, BrokenPipeError):
            raise
        except Exception as e:  # every failure becomes an error reply; the server goes on
            err = to_wire_error(e)
            if err.code == ErrorCode.INTERNAL:
                logger.exception("%s failed", kind_name(frame.kind))
            self._send_error(conn, frame.kind, frame.request_id, err)

    def _stream(self, conn: socket.socket, request: Frame, frames: Iterable[Frame]) -> None:
        it: Iterator[Frame] = iter(frames)
        prev = next(it, None)
        if prev is None:
            send_frame(conn, Frame(request.kind, request.request_id, {}), self.max_frame)
            return
        for f in it:
            prev.flags |= int(Flags.MORE)
            send_frame(conn, prev, self.max_frame)
            prev = f
        prev.flags &= ~int(Flags.MORE)
        send_frame(conn, prev, self.max_frame)

    def _send_error(self, conn: socket.socket, kind: int, request_id: int, e: WireError) -> None:
        try:
            send_frame(conn, error_frame(kind, request_id, e), self.max_frame)
        except OSError:
            pass

    def _ping(self, frame: Frame, session: Session) -> Frame:
        return Frame(frame.kind, frame.request_id, {"pong": True, "role": self.role, **self.extra_hello})
