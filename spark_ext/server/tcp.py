"""A TCP server speaking spark-ext frames: handshake, dispatch, error replies.

One event-loop thread (``selectors``: epoll on Linux) accepts connections and reads
their frames. Requests of kinds registered ``inline`` (point reads: short, bounded,
never waiting for I/O) are answered on that thread: a busy server answers several
ready connections per wake-up, with no thread switch or GIL hand-off per request,
which is most of what a point request costs in Python; the replies of one wake-up are
queued and sent together once every ready connection has been served (see
``FrameServer._send``). Every other request is handed to the connection's own worker
thread (started on its first such request), which answers it with blocking sends
exactly as a thread-per-connection server would, and then gives the connection back
to the loop. While a worker holds a connection the
loop does not read from it, so each connection's requests are still handled one at a
time, in order, and its replies never interleave. An inline handler that would have to
wait (a busy table lock) raises :class:`WouldBlock` and the request goes to the worker.

A handler maps a request frame to one reply, or to an iterator of replies for streamed
results (the last one without the MORE flag). Errors never kill the server:

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
import queue
import selectors
import socket
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Union

from spark_ext.wire import auth
from spark_ext.wire.errors import FrameError, WireError
from spark_ext.wire.frames import DEFAULT_MAX_FRAME, HEADER_SIZE, Flags, Frame, FrameReader, error_frame, send_frame
from spark_ext.wire.kinds import ErrorCode, Kind, is_known_kind, kind_name

logger = logging.getLogger(__name__)

Reply = Union[Frame, Iterable[Frame], None]
Handler = Callable[[Frame, "Session"], Reply]
#: An inline handler may also return its reply already encoded (one whole frame).
InlineHandler = Callable[[Frame, "Session"], Union[Reply, bytes]]

SERVER_NAME = "spark-ext/0.1"

#: Replies queued for one connection beyond this many bytes are sent at once rather than
#: at the end of the loop pass: a client that sends without reading meets its full
#: socket (and the loop stops reading from it) instead of growing the server's memory.
PUSH_EARLY_BYTES = 64 * 1024

#: Frames handled from one connection per loop pass; the rest, already buffered, wait
#: for the next pass, so that one busy client cannot keep the loop from the others.
MAX_FRAMES_PER_READ = 64

#: Frame cap before a peer has authenticated (HELLO and AUTH are tiny): a header alone
#: must not make the server set aside the full cap for a peer it does not know yet.
HANDSHAKE_MAX_FRAME = 64 * 1024


def to_wire_error(e: BaseException) -> WireError:
    """The protocol error for an exception raised while serving a request."""
    return WireError.from_exception(e)


class WouldBlock(Exception):
    """Raised by an inline handler that cannot answer without waiting (e.g. a table lock
    is held by a long commit): the request is handed to the connection's worker thread,
    so that the event loop never waits. Raise it before changing anything."""


class Session:
    """Per-connection state handed to handlers (peer address, authenticated or not)."""

    def __init__(self, sock: socket.socket, peer: Any) -> None:
        self.sock = sock
        self.peer = peer
        self.authenticated = False
        self.state: dict[str, Any] = {}


_HELLO, _AUTH = int(Kind.HELLO), int(Kind.AUTH)  # plain ints: IntEnum comparisons are slower
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class _Conn:
    """One connection's state. The loop thread owns it, except while ``busy``: then its
    worker thread does, and the loop does not touch the socket until it is handed back."""

    __slots__ = ("sock", "reader", "session", "nonce", "pending", "pending_bytes", "out", "busy", "closed", "jobs",
                 "deadline", "events")

    def __init__(self, sock: socket.socket, peer: Any, reader: FrameReader, deadline: float | None) -> None:
        self.sock = sock
        self.reader = reader
        self.session = Session(sock, peer)
        self.nonce: bytes | None = None  # the server's HELLO nonce, until AUTH
        self.pending: list[bytes] = []  # replies of this loop pass, sent at its end
        self.pending_bytes = 0  # their size
        self.out: bytes | memoryview = b""  # reply bytes the socket has not taken yet
        self.busy = False  # a worker thread holds the connection
        self.closed = False
        self.jobs: "queue.SimpleQueue[Frame | None] | None" = None  # the worker's queue, once started
        self.deadline = deadline  # close if not authenticated by then (monotonic seconds)
        self.events = 0  # what the selector watches (0: not registered)


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
            within this many seconds is closed.
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
        self._inline: dict[int, InlineHandler] = {}
        self._sock: socket.socket | None = None
        self._loop_thread: threading.Thread | None = None
        self._sel: selectors.BaseSelector | None = None
        self._conns: dict[socket.socket, _Conn] = {}
        self._conns_lock = threading.Lock()
        self._stopping = threading.Event()
        # Connections handed back by workers: (conn, still usable), then a byte on _wake_w.
        self._handed_back: deque[tuple[_Conn, bool]] = deque()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._handshaking = 0  # connections not yet authenticated (loop thread only)
        self._dirty: list[_Conn] = []  # connections with replies queued in this pass (loop thread only)
        self._again: list[_Conn] = []  # connections with frames left buffered by _read (loop thread only)
        self.on_disconnect: list[Callable[[Session], None]] = []
        #: Run before replies are sent (the loop's replies of a pass, a worker's reply):
        #: a service that defers work its replies acknowledge (log writes) does it here.
        #: One that raises means those replies must not go out: their connections close.
        self.before_replies: list[Callable[[], None]] = []

    def register(self, kind: Kind, handler: Handler, inline: InlineHandler | None = None) -> None:
        """Serve ``kind`` with ``handler`` (replacing any earlier one). O(1).

        ``handler`` runs on the connection's worker thread and may take as long as it
        needs. ``inline``, if given, is tried first on the event-loop thread: it must be
        quick and never wait, raising :class:`WouldBlock` (before changing anything)
        when it would; the request then goes to ``handler``.
        """
        self.handlers[int(kind)] = handler
        if inline is not None:
            self._inline[int(kind)] = inline
        else:
            self._inline.pop(int(kind), None)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> "FrameServer":
        """Bind, listen and start the event loop in a background thread."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(128)
        s.setblocking(False)
        self.port = s.getsockname()[1]
        self._sock = s
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)  # a full pipe already means "wake up"
        self._sel = selectors.DefaultSelector()
        self._sel.register(s, _READ, None)
        self._sel.register(self._wake_r, _READ, self._wake_r)
        self._loop_thread = threading.Thread(target=self._loop, name=f"{self.role}-loop", daemon=True)
        self._loop_thread.start()
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
            socks = list(self._conns)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a worker blocked in a send
            except OSError:
                pass
        self._wake()
        t = self._loop_thread
        if t is not None and t is not threading.current_thread():
            t.join(5.0)

    def _wake(self) -> None:
        w = self._wake_w
        if w is not None:
            try:
                w.send(b"\0")
            except OSError:
                pass

    # --- the event loop -----------------------------------------------------------------

    def _loop(self) -> None:
        sel = self._sel
        assert sel is not None
        try:
            while not self._stopping.is_set():
                timeout = 0 if self._again else 0.5 if self._handshaking else None
                for key, mask in sel.select(timeout):
                    c = key.data
                    try:
                        if c is None:
                            self._accept()
                        elif c is self._wake_r:
                            self._take_back()
                        elif mask & _WRITE:
                            self._flush(c)
                        else:
                            self._read(c)
                    except Exception:
                        # A bug in this file (handlers' errors are answered, not raised):
                        # lose that one connection, never the loop and every other.
                        logger.exception("%s event loop: unexpected error", self.role)
                        if isinstance(c, _Conn):
                            self._close(c)
                if self._again:
                    self._read_again()
                self._push_all()  # also when nothing is queued: before_replies ends the pass
                if self._handshaking:
                    self._expire_handshakes()
        except Exception:  # the selector itself failed: nothing can be served any more
            logger.exception("%s event loop failed", self.role)
        finally:
            self._ready_to_reply()  # work a service deferred to the end of the pass
            with self._conns_lock:
                conns = list(self._conns.values())
            for c in conns:
                self._close(c)
            sel.close()
            for w in (self._wake_r, self._wake_w):
                if w is not None:
                    w.close()

    def _watch(self, c: _Conn, events: int) -> None:
        """Make the selector watch ``events`` of ``c`` (0: nothing)."""
        sel = self._sel
        assert sel is not None
        if events == c.events:
            return
        if c.events == 0:
            sel.register(c.sock, events, c)
        elif events == 0:
            sel.unregister(c.sock)
        else:
            sel.modify(c.sock, events, c)
        c.events = events

    def _accept(self) -> None:
        assert self._sock is not None
        while True:
            try:
                sock, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                if self._stopping.is_set():
                    return
                logger.warning("accept failed", exc_info=True)
                return
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
            except OSError:  # the peer is gone already
                sock.close()
                continue
            reader = FrameReader(sock, max_frame=self.max_frame if self.secret is None
                                 else min(self.max_frame, HANDSHAKE_MAX_FRAME))
            deadline = None
            if self.secret is not None:
                deadline = time.monotonic() + self.handshake_timeout_s
                self._handshaking += 1
            c = _Conn(sock, peer, reader, deadline)
            with self._conns_lock:
                self._conns[sock] = c
            self._watch(c, _READ)

    def _expire_handshakes(self) -> None:
        now = time.monotonic()
        with self._conns_lock:
            late = [c for c in self._conns.values() if c.deadline is not None and c.deadline < now and not c.busy]
        for c in late:
            logger.debug("closing %s: no authentication within %.0f s", c.session.peer, self.handshake_timeout_s)
            self._close(c)  # as a blocking server's read timeout would: no error frame

    def _read_again(self) -> None:
        """Go on with the connections :meth:`_read` left frames buffered for: the
        selector does not report them (their bytes have left the socket)."""
        again, self._again = self._again, []
        for c in again:
            try:
                self._read(c)
            except Exception:  # as in _loop: lose that one connection, not the loop
                logger.exception("%s event loop: unexpected error", self.role)
                self._close(c)

    def _read(self, c: _Conn) -> None:
        """Handle the complete frames ``c`` has sent, as long as it stays with the loop,
        at most :data:`MAX_FRAMES_PER_READ` of them in one pass."""
        reader = c.reader
        budget = MAX_FRAMES_PER_READ
        while not c.closed and not c.busy and not c.out:
            if budget == 0:  # the rest next pass, after the other connections
                self._again.append(c)
                return
            budget -= 1
            try:
                frame = reader.read_frame()
            except (BlockingIOError, InterruptedError):
                return
            except FrameError as e:
                # Addressed to the offending request when its header could be parsed.
                self._send(c, self._error_bytes(e.kind, e.request_id, e))
                self._close(c, flush=True)
                return
            except OSError as e:
                logger.debug("connection from %s ended: %s", c.session.peer, e)
                self._close(c)
                return
            if frame is None:  # the peer is done sending; it may still read replies
                if c.pending:
                    self._push_now(c)
                    if c.out:  # closed once they are out: EOF is read again after EVENT_WRITE
                        return
                self._close(c)
                return
            self._handle(c, frame)
            # Stop before a recv that would only say "nothing yet" (one system call per
            # request saved); the selector reports the socket again when more arrives.
            if reader.buffered() < HEADER_SIZE:
                return

    def _handle(self, c: _Conn, frame: Frame) -> None:
        kind = frame.kind
        session = c.session
        if kind == _HELLO:
            try:
                reply, c.nonce = auth.server_hello(
                    frame.metadata, self.secret, server=SERVER_NAME, role=self.role,
                    max_frame=self.max_frame, extra=self.extra_hello,
                )
            except WireError as e:
                self._send(c, self._error_bytes(kind, frame.request_id, e))
                if e.fatal:
                    self._close(c, flush=True)
                return
            if self.secret is None:
                session.authenticated = True
            self._send(c, Frame(kind, frame.request_id, reply).encode(None))
            return
        if kind == _AUTH and self.secret is not None:
            if c.nonce is None:
                self._send(c, self._error_bytes(kind, frame.request_id, WireError(ErrorCode.AUTH_REQUIRED, "send HELLO before AUTH")))
                self._close(c, flush=True)
                return
            try:
                reply = auth.server_check(frame.metadata, self.secret, c.nonce)
            except WireError as e:
                self._send(c, self._error_bytes(kind, frame.request_id, e))
                self._close(c, flush=True)
                return
            c.nonce = None
            session.authenticated = True
            if c.deadline is not None:
                c.deadline = None
                self._handshaking -= 1
            c.reader.max_frame = self.max_frame
            self._send(c, Frame(kind, frame.request_id, reply).encode(None))
            return
        if self.secret is not None and not session.authenticated:
            self._send(c, self._error_bytes(kind, frame.request_id, WireError(
                ErrorCode.AUTH_REQUIRED, "this server requires authentication: send HELLO and AUTH first")))
            self._close(c, flush=True)
            return
        inline = self._inline.get(kind)
        if inline is not None:
            try:
                data = self._answer(inline, frame, session)
            except WouldBlock:
                pass
            else:
                self._send(c, data)
                return
        self._hand_to_worker(c, frame)

    def _answer(self, handler: InlineHandler, frame: Frame, session: Session) -> bytes:
        """The encoded reply of an inline handler (an error reply if it fails). An inline
        handler may return its reply encoded already (``bytes``: one whole frame)."""
        try:
            reply = handler(frame, session)
            if isinstance(reply, bytes):
                return reply
            if reply is None:
                reply = Frame(frame.kind, frame.request_id, {})
            if isinstance(reply, Frame):
                return reply.encode(self.max_frame)
            return b"".join(f.encode(self.max_frame) for f in _with_more_flags(frame, reply))
        except WouldBlock:
            raise
        except Exception as e:  # every failure becomes an error reply; the server goes on
            err = to_wire_error(e)
            if err.code == ErrorCode.INTERNAL:
                logger.exception("%s failed", kind_name(frame.kind))
            return self._error_bytes(frame.kind, frame.request_id, err)

    def _send(self, c: _Conn, data: bytes) -> None:
        """Queue a reply; :meth:`_push_all` sends it at the end of this loop pass.

        Replies go out after every ready connection's requests of the pass have been
        handled, back to back (as Redis writes its replies before it sleeps): the
        clients woken by the first replies are still running when the next ones
        arrive, so fewer wake-ups land on an idle CPU (the costliest part of a loopback
        send on a VM), and the next requests tend to arrive together. A connection's
        replies keep their order: one list, joined into one send. Past
        :data:`PUSH_EARLY_BYTES` they are sent at once, so what waits per connection
        stays bounded even for a client that sends without reading. O(1).
        """
        if c.closed:
            return
        if not c.pending:
            self._dirty.append(c)
        c.pending.append(data)
        c.pending_bytes += len(data)
        if c.pending_bytes > PUSH_EARLY_BYTES:
            self._push_now(c)  # a full socket sets c.out, and _read stops reading from c

    def _ready_to_reply(self) -> bool:
        """Run :attr:`before_replies`; False (logged) if one failed."""
        try:
            for hook in self.before_replies:
                hook()
        except Exception:
            logger.exception("%s: work acknowledged by queued replies failed; their connections close", self.role)
            return False
        return True

    def _push_all(self) -> None:
        """Run :attr:`before_replies` and send the replies queued in this loop pass (see
        :meth:`_send`). O(connections)."""
        dirty, self._dirty = self._dirty, []
        if not self._ready_to_reply():
            for c in dirty:
                c.pending.clear()
                c.pending_bytes = 0
                self._close(c)
            return
        for c in dirty:
            if c.pending and not c.closed and not c.busy:
                try:
                    self._push(c)
                except Exception:  # as in _loop: lose that one connection, not the loop
                    logger.exception("%s event loop: unexpected error", self.role)
                    self._close(c)

    def _take_pending(self, c: _Conn) -> bytes | memoryview:
        """Everything ``c`` still has to send, in order, as one buffer; clears it. O(size)."""
        pend = c.pending
        data: bytes | memoryview = c.out
        if pend:
            joined = pend[0] if len(pend) == 1 else b"".join(pend)
            pend.clear()
            c.pending_bytes = 0
            data = bytes(data) + joined if data else joined
        c.out = b""
        return data

    def _push_now(self, c: _Conn) -> None:
        """:meth:`_push` outside :meth:`_push_all` (after :attr:`before_replies`)."""
        if self._ready_to_reply():
            self._push(c)
        else:
            c.pending.clear()
            c.pending_bytes = 0
            self._close(c)

    def _push(self, c: _Conn) -> None:
        """Send ``c``'s queued replies without blocking; what the socket does not take
        waits for EVENT_WRITE (and the loop reads nothing more from ``c`` until then).
        The caller has run :attr:`before_replies`."""
        blocked = bool(c.out)
        data = self._take_pending(c)
        if blocked:  # the socket is full already: keep the order, wait for EVENT_WRITE
            c.out = data
            return
        try:
            n = c.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:
            logger.debug("connection from %s ended: %s", c.session.peer, e)
            self._close(c)
            return
        if n < len(data):
            c.out = memoryview(data)[n:]  # a view: sending the rest copies nothing
            self._watch(c, _WRITE)  # and read nothing more until the reply is out

    def _flush(self, c: _Conn) -> None:
        try:
            n = c.sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(c)
            return
        c.out = c.out[n:]
        if not c.out:
            self._watch(c, _READ)
            self._read(c)  # frames that arrived meanwhile may be buffered already

    def _close(self, c: _Conn, flush: bool = False) -> None:
        """Close a connection (after a best-effort send of pending bytes if ``flush``)."""
        if c.closed:
            return
        c.closed = True
        if c.deadline is not None:
            c.deadline = None
            self._handshaking -= 1
        out = self._take_pending(c)
        if flush and out and self._ready_to_reply():
            try:
                c.sock.setblocking(True)
                c.sock.settimeout(1.0)
                c.sock.sendall(out)
            except OSError:
                pass
        try:
            self._watch(c, 0)
        except (KeyError, ValueError, OSError):
            pass
        with self._conns_lock:
            self._conns.pop(c.sock, None)
        if c.jobs is not None:
            c.jobs.put(None)
        for cb in self.on_disconnect:
            try:
                cb(c.session)
            except Exception:
                logger.exception("disconnect callback failed")
        try:
            c.sock.close()
        except OSError:
            pass

    # --- worker threads (requests that are not inline) ----------------------------------

    def _hand_to_worker(self, c: _Conn, frame: Frame) -> None:
        # Replies queued in this pass go first: the worker sends ``out`` before answering,
        # so what they acknowledge is done first (and the worker's request comes after
        # the requests before it).
        if not self._ready_to_reply():
            self._close(c)
            return
        c.out = self._take_pending(c)
        c.busy = True
        self._watch(c, 0)  # the worker owns the socket now
        if c.jobs is None:
            c.jobs = queue.SimpleQueue()
            threading.Thread(target=self._work, args=(c, c.jobs), name=f"{self.role}-conn", daemon=True).start()
        c.jobs.put(frame)

    def _work(self, c: _Conn, jobs: "queue.SimpleQueue[Frame | None]") -> None:
        """A connection's worker: answers the requests the loop hands it, one at a time."""
        while True:
            frame = jobs.get()
            if frame is None:
                return
            ok = True
            try:
                c.sock.setblocking(True)
                if c.out:  # (_hand_to_worker ran before_replies for them)
                    c.sock.sendall(c.out)
                    c.out = b""
                self._dispatch(c.sock, frame, c.session)
                c.sock.setblocking(False)
            except (ConnectionError, OSError) as e:
                logger.debug("connection from %s ended: %s", c.session.peer, e)
                ok = False
            self._handed_back.append((c, ok))
            self._wake()

    def _take_back(self) -> None:
        """Connections the workers have finished with: watch them again, or close them."""
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            return
        while self._handed_back:
            c, ok = self._handed_back.popleft()
            c.busy = False
            if not ok or self._stopping.is_set():
                self._close(c)
                continue
            self._watch(c, _READ)
            self._read(c)  # pipelined frames may be buffered already

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
                self._ready_or_raise()
                send_frame(conn, Frame(frame.kind, frame.request_id, {}), self.max_frame)
            elif isinstance(reply, Frame):
                self._ready_or_raise()
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
        for f in _with_more_flags(request, frames):
            self._ready_or_raise()
            send_frame(conn, f, self.max_frame)

    def _ready_or_raise(self) -> None:
        """:attr:`before_replies` on a worker thread: what a reply may show (rows the
        loop has applied) is written first; a failure becomes the request's error."""
        for hook in self.before_replies:
            hook()

    def _error_bytes(self, kind: int, request_id: int, e: WireError) -> bytes:
        return error_frame(kind, request_id, e).encode(self.max_frame)

    def _send_error(self, conn: socket.socket, kind: int, request_id: int, e: WireError) -> None:
        try:
            send_frame(conn, error_frame(kind, request_id, e), self.max_frame)
        except OSError:
            pass

    def _ping(self, frame: Frame, session: Session) -> Frame:
        return Frame(frame.kind, frame.request_id, {"pong": True, "role": self.role, **self.extra_hello})


def _with_more_flags(request: Frame, frames: Iterable[Frame]) -> Iterator[Frame]:
    """The frames of a streamed reply with MORE set on all but the last (at least one)."""
    it: Iterator[Frame] = iter(frames)
    prev = next(it, None)
    if prev is None:
        yield Frame(request.kind, request.request_id, {})
        return
    for f in it:
        prev.flags |= int(Flags.MORE)
        yield prev
        prev = f
    prev.flags &= ~int(Flags.MORE)
    yield prev
