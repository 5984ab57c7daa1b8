"""A small HTTP/1.1 server for the service's own endpoints (/metrics, the web view):
one thread, GET-sized requests, strict limits. What it serves is a `handle` callable.

Why not http.server / prometheus_client.start_http_server: a ThreadingHTTPServer takes one
thread per connection with no timeout, so idle or half-sent requests pile up threads and
descriptors (issue 15 item 4: 500 idle connections once held 507 threads and the service ran
out of file descriptors). A thread pool capped by a semaphore would not do either: a few
idle connections would hold every slot and the real request would be refused. So one thread
multiplexes every connection (selectors): an idle connection costs a descriptor, not a
thread, only a complete request gets an answer, and the server stops within 0.2 s.

Replies are written without blocking: a reply (a JPEG, say) may not fit the socket's send
buffer, and a client that stops reading must not stall the others.

Limits: a request must arrive whole (up to the blank line ending its headers, at most
`max_request_bytes`) within `request_timeout_s` of the accept, and its reply be taken within
`reply_timeout_s` more, else the connection is closed. At most `max_conns` connections are
open. Past the cap the *oldest* is closed to make room (not the new one, and no 503): a real
client sends its request at once, so it is never the oldest for long, while a flood of idle
connections only pushes out its own members. Descriptors stay bounded and real requests are
still served. Request bodies are never read: the endpoints are GET only.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

TICK_S = 0.2  # select timeout: close() is noticed and deadlines are checked this often


@dataclass
class Reply:
    status: str  # "200 OK"
    ctype: str
    body: bytes
    headers: str = ""  # extra header lines, each ending in \r\n


@dataclass
class _Conn:
    deadline: float
    peer: str
    inbuf: bytes = b""
    out: bytearray = field(default_factory=bytearray)
    writing: bool = False


class HTTPServer:
    """Serves `handle(request_bytes, peer_address) -> Reply` on (host, port) from one thread.

    `headers` (lines ending in \\r\\n) go into every reply; HEAD gets the head only. An
    exception from `handle` is logged and closes that connection without a reply.
    """

    def __init__(self, host: str, port: int, handle: Callable[[bytes, str], Reply], *,
                 max_conns: int, request_timeout_s: float, max_request_bytes: int,
                 reply_timeout_s: float | None = None, headers: str = "", backlog: int = 128,
                 thread_name: str = "http", label: str = "http endpoint") -> None:
        self.handle = handle
        self.max_conns = int(max_conns)
        self.request_timeout_s = request_timeout_s
        self.reply_timeout_s = request_timeout_s if reply_timeout_s is None else reply_timeout_s
        self.max_request_bytes = max_request_bytes
        self.headers = headers
        self.label = label
        family, stype, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self._listener = socket.socket(family, stype, proto)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(addr)
            self._listener.listen(backlog)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.host = host
        self.port = self._listener.getsockname()[1]
        self.conns: dict[socket.socket, _Conn] = {}  # accept order: the first is the oldest
        self.thread_cpu_s = 0.0  # CPU of the serving thread, updated every tick
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=thread_name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=TICK_S + 1.8)  # nothing in the loop blocks
        for conn in list(self.conns):
            self._drop(conn)
        self._selector.close()
        self._listener.close()

    # -- the serving thread -----------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, events in self._selector.select(timeout=TICK_S):
                sock = key.fileobj
                try:
                    if sock is self._listener:
                        self._accept()
                    elif events & selectors.EVENT_WRITE:
                        self._write(sock)
                    else:
                        self._read(sock)
                except Exception:  # one bad connection must not end the endpoint
                    log.exception("%s: error on a connection", self.label)
                    if sock is not self._listener:
                        self._drop(sock)
            now = time.monotonic()
            for conn in [c for c, st in self.conns.items() if st.deadline <= now]:
                self._drop(conn)
            self.thread_cpu_s = time.thread_time()

    def _accept(self) -> None:
        while True:  # take the whole backlog: a flood must not delay the real request behind it
            try:
                conn, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again on the next select
                log.warning("%s: accept failed: %s", self.label, exc)
                return
            while len(self.conns) >= self.max_conns:
                self._drop(next(iter(self.conns)))  # the oldest (dicts keep insertion order)
            conn.setblocking(False)
            self.conns[conn] = _Conn(time.monotonic() + self.request_timeout_s, str(addr[0]))
            self._selector.register(conn, selectors.EVENT_READ)

    def _read(self, conn: socket.socket) -> None:
        st = self.conns.get(conn)
        if st is None or st.writing:  # evicted or timed out earlier in this same select round
            return
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        st.inbuf += data
        if not data or len(st.inbuf) > self.max_request_bytes:
            self._drop(conn)
            return
        if b"\r\n\r\n" not in st.inbuf and b"\n\n" not in st.inbuf:
            return
        head_only = st.inbuf.startswith(b"HEAD ")
        reply = self.handle(st.inbuf, st.peer)
        head = (f"HTTP/1.1 {reply.status}\r\nContent-Type: {reply.ctype}\r\nContent-Length: {len(reply.body)}\r\n"
                f"{self.headers}{reply.headers}Connection: close\r\n\r\n").encode("latin-1")
        st.out = bytearray(head if head_only else head + reply.body)
        st.writing = True
        st.deadline = time.monotonic() + self.reply_timeout_s  # to take the reply
        self._selector.modify(conn, selectors.EVENT_WRITE)
        self._write(conn)

    def _write(self, conn: socket.socket) -> None:
        st = self.conns.get(conn)
        if st is None:
            return
        try:
            n = conn.send(st.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        del st.out[:n]
        if not st.out:
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        self.conns.pop(conn, None)
        try:
            self._selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()
