"""The web setup view's HTTP server: GET only, one thread, strict limits.

Served by edge_runtime.httpd, like service/metrics.py and for the same reasons (its
docstring): one thread multiplexes every connection, so idle or half-sent requests cost a
descriptor, not a thread, and the server can be stopped within 0.2 s; replies are written
without blocking (a JPEG may not fit the socket buffer, and a viewer that stops reading must
not stall the others). On top of that, a viewer cap: at most `max_viewers` client addresses
at a time.

Limits: a request must arrive whole (headers, <= MAX_REQUEST_BYTES) within REQUEST_TIMEOUT_S
of the accept and its reply be taken within REQUEST_TIMEOUT_S more, else the connection is
closed; at most CONNS_PER_VIEWER x max_viewers connections are open (past that the oldest is
closed, see httpd.py); an address not seen in VIEWER_IDLE_S stops counting as a viewer.

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
import time
from collections.abc import Callable
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from edge_runtime.httpd import HTTPServer, Reply
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


class WebServer:
    def __init__(self, host: str, port: int, state: WebState, status: Callable[[], dict], *,
                 token: str | None = None, max_viewers: int = 8) -> None:
        self.state = state
        self.status = status
        self.token = token.encode() if token else None
        self.max_viewers = int(max_viewers)
        self.max_conns = CONNS_PER_VIEWER * self.max_viewers
        self._files = {name: _static(name) for name, _ in _STATIC.values()}
        self._viewers: dict[str, float] = {}  # address -> last request (monotonic)
        self.refused_viewers = 0
        self._http = HTTPServer(host, port, self._handle, max_conns=self.max_conns,
                                request_timeout_s=REQUEST_TIMEOUT_S, reply_timeout_s=REQUEST_TIMEOUT_S,
                                max_request_bytes=MAX_REQUEST_BYTES, headers=SECURITY_HEADERS, backlog=64,
                                thread_name="web-http", label="web view")
        self.host = host
        self.port = self._http.port

    @property
    def thread_cpu_s(self) -> float:
        """CPU of the serving thread (JPEG encoding, aids, JSON)."""
        return self._http.thread_cpu_s

    @property
    def _conns(self) -> dict:  # the open connections, oldest first
        return self._http.conns

    def close(self) -> None:
        self._http.close()

    def viewers(self) -> int:
        now = time.monotonic()
        return sum(1 for t in self._viewers.values() if now - t < VIEWER_IDLE_S)

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
