"""Service counters, exposed two ways: Prometheus (when [metrics] port is set) and the
status dict the MQTT sink publishes retained.

The counters live in a plain object the loop updates without locks (ints, updated by
one thread); Prometheus reads them at scrape time through a custom collector, so the
hot path never touches prometheus-client. Stage timings keep the last few hundred
samples per stage: a p50 over a short window shows what the line is doing now.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from collections.abc import Callable, Iterator

from edge_runtime.httpd import HTTPServer, Reply
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

    Served by edge_runtime.httpd (one thread multiplexing every connection, whole-request
    timeout, the oldest connection evicted past the cap; its docstring says why), not by
    prometheus_client.start_http_server, whose thread per connection without a timeout let
    idle connections pile up threads and descriptors.

    Limits: a request must arrive whole within REQUEST_TIMEOUT_S of the accept, and its reply
    (a few KB) be taken within REQUEST_TIMEOUT_S more; at most MAX_CONNECTIONS are open. A
    scraper sends its request at once, so it is never the oldest for long, while a flood of
    idle connections only pushes out its own members.
    """

    def __init__(self, port: int, host: str, stats: Stats, sink_states: Callable[[], dict[str, dict]]) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry()
        self.registry.register(_Collector(stats, sink_states))
        self._http = HTTPServer(host, port, self._handle, max_conns=MAX_CONNECTIONS,
                                request_timeout_s=REQUEST_TIMEOUT_S, max_request_bytes=_MAX_REQUEST_BYTES,
                                thread_name="metrics-http", label="metrics endpoint")
        self.port = self._http.port

    def close(self) -> None:
        self._http.close()

    def _handle(self, request: bytes, peer: str) -> Reply:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        parts = request.split(b"\n", 1)[0].split()
        method, path = (parts[0], parts[1].split(b"?", 1)[0]) if len(parts) >= 2 else (b"", b"")
        if method not in (b"GET", b"HEAD"):
            return Reply("405 Method Not Allowed", "text/plain", b"only GET\n")
        if path not in (b"/metrics", b"/"):
            return Reply("404 Not Found", "text/plain", b"see /metrics\n")
        return Reply("200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry))
