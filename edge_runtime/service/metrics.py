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
import threading
from collections import deque
from collections.abc import Callable, Iterator

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
        self.sink_errors: dict[str, int] = {}
        self.sink_emitted: dict[str, int] = {}
        self.reloads = 0
        self.reload_failures = 0
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
            "sink_errors": dict(self.sink_errors),
            "sink_emitted": dict(self.sink_emitted),
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
        }


class _Collector:
    """Reads Stats and sink states at scrape time (prometheus-client custom collector)."""

    def __init__(self, stats: Stats, sink_states: Callable[[], dict[str, dict]]) -> None:
        self.stats = stats
        self.sink_states = sink_states

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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
        ):
            yield CounterMetricFamily(f"edge_runtime_{name}", doc, value=value)
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


class MetricsServer:
    """The /metrics endpoint on its own registry (tests run several services in one process)."""

    def __init__(self, port: int, host: str, stats: Stats, sink_states: Callable[[], dict[str, dict]]) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        self.registry = CollectorRegistry()
        self.registry.register(_Collector(stats, sink_states))
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if isinstance(self._thread, threading.Thread):
            self._thread.join(timeout=5)
