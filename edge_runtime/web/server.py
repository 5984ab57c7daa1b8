"""The web setup view's HTTP server: GET only, one thread, strict limits.

Built like service/metrics.py and for the same reasons: one thread multiplexes every
connection (selectors), so idle or half-sent requests cost a descriptor, not a thread, and
the server can be stopped within 0.2 s. On top of that, replies are written without blocking
(a JPEG may not fit the socket buffer, and a viewer that stops reading must not stall the
others), and a viewer cap: at most `max_viewers` client addresses at a time.

Limits: a request must arrive whole (headers, <= MAX_REQUEST_BYTES) within REQUEST_TIMEOUT_S
of the accept and its reply be taken within REQUEST_TIMEOUT_S more, else the connection is
closed; at most CONNS_PER_VIEWER x max_viewers connections are open (past that the oldest is
closed, as in metrics.py); an address not seen in VIEWER_IDLE_S stops counting as a viewer.

Auth: with a token, every endpoint that shows anything of the line answers 401 without it
(`Authorization: Bearer <token>` or `?token=<token>`). `/` then still sends the page's HTML
(with status 401) so that the page can ask for the token once; the static script and style
are the same for everyone and are served without it.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from edge_runtime.web.state import WebState

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 16384
CONNS_PER_VIEWER = 4  # a page fetches its JSON, image and gallery side by side
VIEWER_IDLE_S = 10.0

SECURITY_HEADERS = (
    # No inline script or style at all: a payload that reached the DOM as HTML could not run.
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "X-Frame-Options: DENY\r\n"
    "Referrer-Policy: no-referrer\r\n"
    "Cross-Origin-Resource-Policy: same-origin\r\n"
    "Cache-Control: no-store\r\n"
)
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
           "/index.html": ("index.html", "text/html; charset=utf-8"),
           "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
           "/static/app.css": ("app.css", "text/css; charset=utf-8")}
_PUBLIC = ("/static/app.js", "/static/app.css")
_NOREAD_PATH = re.compile(r"/noreads/(\d{1,12})\.png")


def _static(name: str) -> bytes:
    return resources.files("edge_runtime.web").joinpath("static", name).read_bytes()


@dataclass
class _Conn:
    deadline: float
    peer: str
    inbuf: bytes = b""
    out: bytearray = field(default_factory=bytearray)
    writing: bool = False


@dataclass
class Reply:
    status: str
    ctype: str
    body: bytes
    headers: str = ""


class WebServer:
    def __init__(self, host: str, port: int, state: WebState, status: Callable[[], dict], *,
                 token: str | None = None, max_viewers: int = 8) -> None:
        self.state = state
        self.status = status
        self.token = token.encode() if token else None
        self.max_viewers = int(max_viewers)
        self.max_conns = CONNS_PER_VIEWER * self.max_viewers
        self._files = {name: _static(name) for name, _ in _STATIC.values()}
        family, stype, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self._listener = socket.socket(family, stype, proto)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(addr)
            self._listener.listen(64)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.host = host
        self.port = self._listener.getsockname()[1]
        self._conns: dict[socket.socket, _Conn] = {}  # accept order: the first is the oldest
        self._viewers: dict[str, float] = {}  # address -> last request (monotonic)
        self.refused_viewers = 0
        self.thread_cpu_s = 0.0  # CPU of the serving thread (JPEG encoding, aids, JSON)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="web-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        for conn in list(self._conns):
            self._drop(conn)
        self._selector.close()
        self._listener.close()

    def viewers(self) -> int:
        now = time.monotonic()
        return sum(1 for t in self._viewers.values() if now - t < VIEWER_IDLE_S)

    # -- the serving thread -----------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, events in self._selector.select(timeout=0.2):
                sock = key.fileobj
                try:
                    if sock is self._listener:
                        self._accept()
                    elif events & selectors.EVENT_WRITE:
                        self._write(sock)
                    else:
                        self._read(sock)
                except Exception:  # one bad connection must not end the view
                    log.exception("web view: error on a connection")
                    if sock is not self._listener:
                        self._drop(sock)
            now = time.monotonic()
            for conn in [c for c, st in self._conns.items() if st.deadline <= now]:
                self._drop(conn)
            self.thread_cpu_s = time.thread_time()

    def _accept(self) -> None:
        while True:
            try:
                conn, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again on the next select
                log.warning("web view: accept failed: %s", exc)
                return
            while len(self._conns) >= self.max_conns:
                self._drop(next(iter(self._conns)))
            conn.setblocking(False)
            self._conns[conn] = _Conn(time.monotonic() + REQUEST_TIMEOUT_S, str(addr[0]))
            self._selector.register(conn, selectors.EVENT_READ)

    def _read(self, conn: socket.socket) -> None:
        st = self._conns.get(conn)
        if st is None or st.writing:
            return
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        st.inbuf += data
        if not data or len(st.inbuf) > MAX_REQUEST_BYTES:
            self._drop(conn)
            return
        if b"\r\n\r\n" not in st.inbuf and b"\n\n" not in st.inbuf:
            return
        head_only = st.inbuf.startswith(b"HEAD ")
        reply = self._handle(st.inbuf, st.peer)
        head = (f"HTTP/1.1 {reply.status}\r\nContent-Type: {reply.ctype}\r\nContent-Length: {len(reply.body)}\r\n"
                f"{SECURITY_HEADERS}{reply.headers}Connection: close\r\n\r\n").encode("latin-1")
        st.out = bytearray(head if head_only else head + reply.body)
        st.writing = True
        st.deadline = time.monotonic() + REQUEST_TIMEOUT_S  # to take the reply
        self._selector.modify(conn, selectors.EVENT_WRITE)
        self._write(conn)

    def _write(self, conn: socket.socket) -> None:
        st = self._conns.get(conn)
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
        self._conns.pop(conn, None)
        try:
            self._selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    # -- requests ---------------------------------------------------------------------------

    def _handle(self, request: bytes, peer: str) -> Reply:
        lines = request.split(b"\n")
        parts = lines[0].split()
        if len(parts) < 2:
            return _text("400 Bad Request", "bad request\n")
        method, target = parts[0], parts[1].decode("latin-1")
        if method not in (b"GET", b"HEAD"):
            # Read-only: nothing on the view changes the service.
            return _text("405 Method Not Allowed", "only GET\n", "Allow: GET, HEAD\r\n")
        url = urlsplit(target)
        path, query = url.path, parse_qs(url.query)
        if not self._admit(peer):
            return _text("503 Service Unavailable", f"too many viewers (max {self.max_viewers})\n", "Retry-After: 10\r\n")
        if path in _PUBLIC:
            name, ctype = _STATIC[path]
            return Reply("200 OK", ctype, self._files[name])
        if not self._authorized(request, query):
            if path in ("/", "/index.html"):
                return Reply("401 Unauthorized", _STATIC["/"][1], self._files["index.html"], "WWW-Authenticate: Bearer\r\n")
            return _text("401 Unauthorized", "token required\n", "WWW-Authenticate: Bearer\r\n")
        try:
            return self._route(path, query)
        except Exception:  # noqa: BLE001 - a bug behind one endpoint is a 500, not a dead view
            log.exception("web view: %s failed", path)
            return _text("500 Internal Server Error", "error\n")

    def _admit(self, peer: str) -> bool:
        now = time.monotonic()
        for addr in [a for a, t in self._viewers.items() if now - t >= VIEWER_IDLE_S]:
            del self._viewers[addr]
        if peer not in self._viewers and len(self._viewers) >= self.max_viewers:
            self.refused_viewers += 1
            return False
        self._viewers[peer] = now
        return True

    def _authorized(self, request: bytes, query: dict) -> bool:
        if self.token is None:
            return True
        given = query.get("token", [""])[-1].encode("utf-8", "replace")
        for line in request.split(b"\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"authorization":
                scheme, _, cred = value.strip().partition(b" ")
                if scheme.lower() == b"bearer":
                    given = cred.strip()
        return hmac.compare_digest(given, self.token)

    def _route(self, path: str, query: dict) -> Reply:
        if path in _STATIC:
            name, ctype = _STATIC[path]
            return Reply("200 OK", ctype, self._files[name])
        if path == "/api/status":
            return _json(self._status())
        if path == "/api/results":
            return _json(self.state.results_after(_int(query, "after", 0)))
        if path == "/api/frame":
            return _json(self.state.frame_json())
        if path == "/api/noreads":
            return _json(self.state.noread_ids())
        if path == "/frame.jpg":
            got = self.state.jpeg(_int(query, "frame", None))
            if got is None or not got[1]:
                return _text("503 Service Unavailable", "no frame yet\n", "Retry-After: 1\r\n")
            return Reply("200 OK", "image/jpeg", got[1], f"X-Frame-Index: {got[0]}\r\n")
        m = _NOREAD_PATH.fullmatch(path)
        if m:
            png = self.state.noread_png(int(m.group(1)))
            return Reply("200 OK", "image/png", png) if png is not None else _text("404 Not Found", "no such noread image\n")
        return _text("404 Not Found", "not found\n")

    def _status(self) -> dict:
        st = self.status()
        sinks = st.get("sinks", {})
        return {
            "service": st.get("service"), "uptime_s": st.get("uptime_s"), "device_id": st.get("device_id"),
            "counters": {k: st.get(k) for k in ("frames", "reads", "codes", "noreads", "source_timeouts",
                                                 "source_errors", "frame_errors", "deferred", "last_id")},
            "read_rate_10min": self.state.read_rate(10),
            "per_minute": self.state.series(),
            "sinks": {name: {k: s.get(k) for k in ("kind", "connected", "queued", "last_error", "error") if k in s}
                      for name, s in sinks.items()},
            "model": st.get("model"), "detector": st.get("detector_backend"),
            "model_fallback": st.get("model_fallback"),
            "source": st.get("source"), "stage_ms_p50": st.get("stage_ms_p50"),
            "noread_images": bool(self.state.noread_dir),
            "viewers": self.viewers(), "max_viewers": self.max_viewers,
            # What the view itself has cost: its thread plus its snapshots on the loop thread.
            "web_cpu_s": round(self.thread_cpu_s + self.state.cpu_s, 3),
        }


def _int(query: dict, key: str, default: int | None) -> int | None:
    try:
        return int(query[key][-1])
    except (KeyError, ValueError, IndexError):
        return default


def _json(obj: object) -> Reply:
    # ensure_ascii: bidi and control characters travel as \\u escapes, never raw.
    return Reply("200 OK", "application/json", json.dumps(obj, ensure_ascii=True, default=str).encode("ascii"))


def _text(status: str, body: str, headers: str = "") -> Reply:
    return Reply(status, "text/plain; charset=utf-8", body.encode(), headers)
