"""Service counters, exposed two ways: Prometheus (when [metrics] port is set) and the
status dict the MQTT sink publishes retained.

The counters live in a plain object the loop updates without locks (ints, updated by
one thread); Prometheus reads them at scrape time through a custom collector, so the
hot path never touches prometheus-client. Stage timings keep the last few hundred
samples per stage: a p50 over a short window shows what the line is doing now.
"""

from __future__ import annotations

import logging
import selectors
import socket
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from edge_runtime.service.counters import ReadCounters

log = logging.getLogger(__name__)

STAGES = ("capture", "read", "track", "sinks", "total")
_SAMPLES = 300


class Stats:
    def __init__(self) -> None:
        self.frames = 0
        self.reads = 0  # results of kind "read" emitted (one per label, after dedup)
        self.codes = 0  # codes decoded in frames, before dedup
        self.noreads = 0
        self.source_timeouts = 0
        self.source_errors = 0
        self.frame_errors = 0  # unexpected exceptions while processing a frame (logged)
        self.deferred = 0  # reads not accepted while ids were unavailable (label reported when seen again)
        self.sink_errors: dict[str, int] = {}
        self.sink_emitted: dict[str, int] = {}
        self.reloads = 0
        self.reload_failures = 0
        # good reads, mismatches, read rate, quality grades: fed by the loop with every result
        # as it is numbered and sent (service/counters.py)
        self.items = ReadCounters()
        self._ms: dict[str, deque[float]] = {s: deque(maxlen=_SAMPLES) for s in STAGES}

    def observe(self, stage: str, ms: float) -> None:
        self._ms[stage].append(ms)

    def p50(self) -> dict[str, float]:
        out = {}
        for stage, samples in self._ms.items():
            snap = samples.copy()  # atomic under the GIL; other threads read while the loop appends
            out[stage] = round(statistics.median(snap), 3) if snap else 0.0
        return out

    def counters(self) -> dict:
        return {
            "frames": self.frames,
            "reads": self.reads,
            "codes": self.codes,
            "noreads": self.noreads,
            "source_timeouts": self.source_timeouts,
            "source_errors": self.source_errors,
            "frame_errors": self.frame_errors,
            "deferred": self.deferred,
            "sink_errors": dict(self.sink_errors),
            "sink_emitted": dict(self.sink_emitted),
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
            **self.items.summary(),
        }


class _Collector:
    """Reads Stats and sink states at scrape time (prometheus-client custom collector)."""

    def __init__(self, stats: Stats, sink_states: Callable[[], dict[str, dict]]) -> None:
        self.stats = stats
        self.sink_states = sink_states

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        s = self.stats
        for name, value, doc in (
            ("frames", s.frames, "Frames captured and processed"),
            ("reads", s.reads, "Results of kind read emitted (one per label)"),
            ("codes", s.codes, "Codes decoded in frames before de-duplication"),
            ("noreads", s.noreads, "Trigger windows closed with nothing read"),
            ("source_timeouts", s.source_timeouts, "Source reads that timed out"),
            ("source_errors", s.source_errors, "Source errors (reopened with backoff)"),
            ("frame_errors", s.frame_errors, "Unexpected errors while processing a frame"),
            ("reloads", s.reloads, "Configuration reloads applied"),
            ("reload_failures", s.reload_failures, "Configuration reloads refused"),
            ("good_reads", s.items.good_reads, "Reads that passed the match-code check (every read without [match])"),
            ("mismatches", s.items.mismatches, "Reads that failed the match-code check ([match])"),
        ):
            yield CounterMetricFamily(f"edge_runtime_{name}", doc, value=value)
        items = s.items
        rate = GaugeMetricFamily("edge_runtime_read_rate", "reads / (reads + noreads) over the last "
                                 f"{items.window} items and since start", labels=["window"])
        for key, v in items.read_rate().items():
            if v is not None:
                rate.add_metric(["start" if key == "since_start" else key.removeprefix("last_")], v)
        yield rate
        q = items.quality()
        for what in ("mean", "worst"):
            g = GaugeMetricFamily(f"edge_runtime_quality_{what}_score",
                                  f"{what.capitalize()} print quality score (0..4) over the last {items.window} reads "
                                  "that carry one", labels=["window"])
            if q[f"{what}_score"] is not None:
                g.add_metric([str(items.window)], q[f"{what}_score"])
            yield g
        buckets, total = items.histogram()
        yield HistogramMetricFamily("edge_runtime_quality_score", "Print quality score (0..4, A >= 3.5) of reads "
                                    "since start", buckets=buckets, sum_value=total)
        errs = CounterMetricFamily("edge_runtime_sink_errors", "Exceptions raised by a sink's emit", labels=["sink"])
        for sink, n in s.sink_errors.items():
            errs.add_metric([sink], n)
        yield errs
        emitted = CounterMetricFamily("edge_runtime_sink_emitted", "Results handed to a sink", labels=["sink"])
        for sink, n in s.sink_emitted.items():
            emitted.add_metric([sink], n)
        yield emitted
        stage = GaugeMetricFamily("edge_runtime_stage_ms_p50", "Median ms per stage over recent frames", labels=["stage"])
        for name, v in s.p50().items():
            stage.add_metric([name], v)
        yield stage
        gauges: dict[str, GaugeMetricFamily] = {}
        try:
            states = self.sink_states()
        except Exception:  # a sink's state() must not break the scrape
            log.exception("reading sink state for metrics failed")
            states = {}
        for sink, st in states.items():
            for key, v in st.items():
                if isinstance(v, bool):
                    v = int(v)
                if not isinstance(v, (int, float)):
                    continue
                g = gauges.get(key)
                if g is None:
                    g = gauges[key] = GaugeMetricFamily(
                        f"edge_runtime_sink_{_metric_name(key)}", f"Sink state field {key}", labels=["sink"]
                    )
                g.add_metric([sink], v)
        yield from gauges.values()


def _metric_name(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key.lower())


# Connection limits of the /metrics endpoint (issue 15 item 4: 500 idle connections once held
# 507 threads and the service ran out of file descriptors).
MAX_CONNECTIONS = 32
REQUEST_TIMEOUT_S = 5.0  # for the whole request, from accept to the blank line ending its headers
_MAX_REQUEST_BYTES = 16384  # a scrape's request is a few hundred bytes


class MetricsServer:
    """The /metrics endpoint on its own registry (tests run several services in one process).

    Why not prometheus_client.start_http_server: it is a ThreadingHTTPServer, one thread per
    connection with no timeout, so idle or half-sent requests pile up threads and descriptors.
    A thread pool capped by a semaphore would not do either: 32 idle connections would hold
    every slot and the real scrape would be refused. So one thread multiplexes all connections
    (selectors): an idle connection costs a descriptor, not a thread, and only a complete
    request gets an answer.

    Limits: a request must arrive whole within REQUEST_TIMEOUT_S of the accept, else the
    connection is closed; at most MAX_CONNECTIONS are open. Past the cap the *oldest*
    connection is closed to make room (not the new one, and no 503): a scraper sends its
    request at once, so it is never the oldest for long, while a flood of idle connections
    only pushes out its own members. Descriptors stay bounded and the scrape is still served.
    """

    def __init__(self, port: int, host: str, stats: Stats, sink_states: Callable[[], dict[str, dict]]) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry()
        self.registry.register(_Collector(stats, sink_states))
        family, stype, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self._listener = socket.socket(family, stype, proto)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(addr)
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        # Open connections in accept order (oldest first): socket -> (deadline, bytes so far).
        self._conns: dict[socket.socket, tuple[float, bytes]] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="metrics-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=REQUEST_TIMEOUT_S + 2)  # a reply's sendall may take its timeout
        for conn in list(self._conns):
            self._drop(conn)
        self._selector.close()
        self._listener.close()

    # -- the serving thread -------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            # Short waits: close() is noticed within 0.2 s and deadlines are checked as often.
            for key, _ in self._selector.select(timeout=0.2):
                try:
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._read(key.fileobj)
                except Exception:  # one bad connection must not end the endpoint
                    log.exception("metrics endpoint: error on a connection")
                    if key.fileobj is not self._listener:
                        self._drop(key.fileobj)
            now = time.monotonic()
            for conn in [c for c, (deadline, _) in self._conns.items() if deadline <= now]:
                self._drop(conn)

    def _accept(self) -> None:
        while True:  # take the whole backlog: a flood must not delay the scrape behind it
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again on the next select
                log.warning("metrics endpoint: accept failed: %s", exc)
                return
            while len(self._conns) >= MAX_CONNECTIONS:
                self._drop(next(iter(self._conns)))  # the oldest (dicts keep insertion order)
            conn.setblocking(False)
            self._conns[conn] = (time.monotonic() + REQUEST_TIMEOUT_S, b"")
            self._selector.register(conn, selectors.EVENT_READ)

    def _read(self, conn: socket.socket) -> None:
        if conn not in self._conns:  # evicted or timed out earlier in this same select round
            return
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        deadline, buf = self._conns[conn]
        buf += data
        if not data or len(buf) > _MAX_REQUEST_BYTES:
            self._drop(conn)
            return
        if b"\r\n\r\n" not in buf and b"\n\n" not in buf:
            self._conns[conn] = (deadline, buf)
            return
        self._selector.unregister(conn)
        del self._conns[conn]
        try:
            self._respond(conn, buf)
        finally:
            conn.close()

    def _respond(self, conn: socket.socket, request: bytes) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        parts = request.split(b"\n", 1)[0].split()
        method, path = (parts[0], parts[1].split(b"?", 1)[0]) if len(parts) >= 2 else (b"", b"")
        if method not in (b"GET", b"HEAD"):
            status, ctype, body = "405 Method Not Allowed", "text/plain", b"only GET\n"
        elif path not in (b"/metrics", b"/"):
            status, ctype, body = "404 Not Found", "text/plain", b"see /metrics\n"
        else:
            status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
        head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode("ascii")
        # The reply (a few KB) fits the socket's send buffer, so this does not wait on the
        # client; the timeout bounds the rare client that never reads.
        conn.settimeout(REQUEST_TIMEOUT_S)
        conn.sendall(head if method == b"HEAD" else head + body)

    def _drop(self, conn: socket.socket) -> None:
        self._conns.pop(conn, None)
        try:
            self._selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()
