"""The capture loop: frames in, delivered results out, for months.

    source.read -> Reader.read -> trigger gate -> Tracker -> result dicts -> every sink

One thread runs the loop; sinks own their I/O threads and `emit` only queues (durable
sinks commit to their outbox first). What the loop must survive, and how:
- a source that times out (camera stall): counted, logged once per state change, retried;
- a source error at run time (device gone): logged, reopened with backoff;
- a sink raising: logged (rate limited), counted, the other sinks still get the result;
- SIGTERM/SIGINT: stop capture, close sinks with a flush timeout, exit 0;
- SIGHUP (or an MQTT "reload" command): `reload()` validates the file first and refuses an
  invalid one with one log line, the running config carrying on.
`Service(config)` is usable in-process (tests call run() in a thread and stop()) and from
`edge-runtime run`.
"""

from __future__ import annotations

import inspect
import logging
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from typing import Any, Callable, TextIO

from edge_runtime import __version__
from edge_runtime import config as config_mod
from edge_runtime.config import Config, ConfigError
from edge_runtime.detect import versions as model_versions
from edge_runtime.service import logs
from edge_runtime.service import id_floor
from edge_runtime.service.ids import IdAllocator, StateDirError
from edge_runtime.service.metrics import Stats
from edge_runtime.service.notify import Heartbeat, Notifier, StatusLine
from edge_runtime.noread_reason import reason_for
from edge_runtime.quality import attach_quality
from edge_runtime.service.results import noread_result, read_result
from edge_runtime.service.trigger import Trigger
from edge_runtime.track import Tracker
from edge_runtime.match import Matcher

log = logging.getLogger("edge_runtime.service")

READ_TIMEOUT_S = 0.5  # how long one source.read may block: bounds stop/reload latency
_SOURCE_BACKOFF = (0.5, 10.0)
_SINK_ERROR_LOG_S = 10.0
DURABLE_KINDS = ("mqtt", "serial")
# Results waiting for an id while ids cannot be reserved (service/ids.py): held in memory,
# in order. Past this many, a new *read* is not accepted: its label is forgotten by the
# tracker and reported when it is seen again. Noreads are always accepted (they cannot be
# seen again, and there are at most a few per second).
MAX_WAITING = 10_000


class ServiceError(Exception):
    """The service cannot start (state_dir, source, sink); one line naming what to fix."""


class Service:
    def __init__(self, config: Config, *, owns_logging: bool = False) -> None:
        self.config = config
        self.owns_logging = owns_logging  # True from the CLI: reload may change log level/format
        self.stats = Stats()
        self.started_at = time.time()
        self.state = "created"  # created | running | stopping | stopped
        self._stop = threading.Event()
        self._hup = False
        self._pending: list[tuple[Config, threading.Event, list[bool]]] = []
        self._pending_lock = threading.Lock()
        self._loop_thread: threading.Thread | None = None
        self.reader = None
        self._models_fp: tuple = ()
        self.source = None
        self.sinks: list[Any] = []
        self.ids: IdAllocator | None = None
        self.metrics = None
        self.web = None  # the web setup view (edge_runtime.web.WebView) when [web] port is set
        self.tracker = self._make_tracker(config)
        self.noread_tracker = self._make_noread_tracker(config)
        self.noread_store = self._make_noread_store(config)
        self.trigger = self._make_trigger(config)
        self.state_dir = config["state_dir"]
        self.device_id = config["device_id"]
        self._source_ok = True
        self._source_failing = False
        self._sink_errlog: dict[str, float] = {}
        self._frame_errlog = -1e9
        self._next_status = 0.0
        self.last_result_id = 0
        # Results accepted but not yet numbered (ids unavailable): makers called with the id.
        self._waiting: deque[tuple[str, Callable[[int], dict]]] = deque()
        self._ids_error: str | None = None
        self._housekeeping_errlog = -1e9
        # Read-only watchers of the line (the web view): `frame(frame, codes, unread)` after
        # each frame is read, `results(list)` after each batch went to the sinks. They must
        # return at once (copy what they need); an exception is logged, never propagated.
        self.observers: list[Any] = []
        self._observer_errlog = -1e9
        # systemd: READY/RELOADING/STOPPING and a watchdog fed only by processed frames.
        # No-ops without NOTIFY_SOCKET (tests, a terminal).
        self.notifier = Notifier.from_env()
        self.heartbeat: Heartbeat | None = None
        self.matcher: Matcher | None = None  # [match] (edge_runtime/match.py); None when off
        self.rollout = None  # [model] channel (edge_runtime/rollout/device.py); None when off

    # ------------------------------------------------------------------------- public API

    def run(self, install_signals: bool | None = None, restore_signals: bool = True) -> int:
        """Run until stopped or the source is finished; returns the exit code (0).

        `restore_signals=False` (the CLI) keeps our handlers after the service stopped: with
        the defaults back, a second SIGTERM arriving while the process winds down would
        kill it by the signal and systemd would count a clean stop as a failure.
        Raises ServiceError when something needed cannot start."""
        if install_signals is None:
            install_signals = threading.current_thread() is threading.main_thread()
        self._loop_thread = threading.current_thread()
        previous = self._install_signals() if install_signals else {}
        try:
            self._start()
            self.state = "running"
            log.info(
                "running: source %s, %d sink(s) (%s), trigger %s, state_dir %s",
                self.config["source"]["kind"], len(self.sinks), ", ".join(s.name for s in self.sinks),
                self.trigger.mode, self.state_dir,
                extra={"fields": {"event": "started", "version": __version__, "device_id": self.device_id}},
            )
            status = StatusLine(self.status)
            self.notifier.ready(status=status())
            self.heartbeat = Heartbeat(self.notifier, status=status,
                                       status_every=float(self.config["status_interval_s"]))
            self.heartbeat.start()
            self._loop()
            return 0
        finally:
            # systemd shows "deactivating" while the sinks flush.
            self.notifier.stopping()
            if self.heartbeat is not None:
                self.heartbeat.stop()
            self.state = "stopping"
            self._shutdown()
            if restore_signals:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            self.state = "stopped"

    def stop(self) -> None:
        """Ask the loop to stop (any thread, signal handlers included)."""
        self._stop.set()

    def reload(self, path: str | None = None) -> bool:
        """Re-read the config (default: the file we run from) and apply it.

        Validation comes first and has no side effects: an invalid file is refused with one
        log line and the running config is untouched. Called from another thread while the
        loop runs, the apply step is handed to the loop thread (it owns source and sinks).
        """
        target = path if path is not None else self.config.path
        if target is None and not self.config.demo:
            log.error("reload refused: this service was not started from a file")
            self.stats.reload_failures += 1
            return False
        try:
            new = config_mod.load(target)
        except ConfigError as exc:
            self.stats.reload_failures += 1
            log.error("reload refused, keeping the running config: %s", "; ".join(exc.problems),
                      extra={"fields": {"event": "reload_refused"}})
            return False
        if self.state != "running" or threading.current_thread() is self._loop_thread:
            return self._apply(new)
        done, result = threading.Event(), [False]
        with self._pending_lock:
            self._pending.append((new, done, result))
        done.wait(30.0)
        return result[0]

    def status(self) -> dict:
        """Counters and states for the MQTT retained status and logs (plain JSON types)."""
        sinks = {}
        for s in list(self.sinks):
            try:
                sinks[s.name] = {"kind": s.kind, **s.state()}
            except Exception as exc:  # noqa: BLE001 - status is best effort
                sinks[s.name] = {"kind": getattr(s, "kind", "?"), "error": f"{type(exc).__name__}: {exc}"}
        try:
            source = self.source.state() if self.source is not None else {"state": "closed"}
        except Exception as exc:  # noqa: BLE001
            source = {"state": "unknown", "error": str(exc)}
        return {
            "service": self.state,
            "uptime_s": round(time.time() - self.started_at, 1),
            **self.stats.counters(),
            "last_id": self.last_result_id,
            # accepted, waiting for an id (the id file cannot be written now): sent when it can
            "waiting_for_ids": len(self._waiting),
            "ids_error": self._ids_error,
            "stage_ms_p50": self.stats.p50(),
            "source": source,
            "sinks": sinks,
            "trigger": self.trigger.state(),
            "model": getattr(self.reader, "model_version", None),
            # which runtime runs it ("auto" takes the faster here): tflite | ncnn | None
            "detector_backend": getattr(getattr(self.reader, "detector", None), "fmt", None),
            "model_fallback": getattr(self.reader, "model_fallback", None),
            "model_rollout": self.rollout.state() if self.rollout is not None else None,
        }

    # ------------------------------------------------------------------------- start/stop

    def _start(self) -> None:
        # The source first: a camera that is not there must fail before any sink connects
        # or any state (ids, outboxes) is written.
        self._open_source()
        self.ids = self._open_ids()
        try:
            self.matcher = Matcher.build(self.config["match"], self.state_dir)
        except ValueError as exc:  # the list file went away since the config was checked
            raise ServiceError(str(exc)) from None
        for note in self.config.notes:
            log.warning(note)
        self._models_fp = model_versions.fingerprint()
        self.reader = self._make_reader(self.config)
        # Appended one by one: if sink 3 cannot start, _shutdown still closes sinks 0..2.
        for i, spec in enumerate(self.config.sinks):
            self.sinks.append(self._make_sink(i, spec))
        if self.config["model"]["channel"]:
            self._start_rollout()
        port = self.config["metrics"]["port"]
        if port is not None:
            self._start_metrics(port)
        if self.config["web"]["port"] is not None:
            self._start_web()

    def _start_rollout(self) -> None:
        from edge_runtime.rollout.device import Rollout

        r = self.config["reader"]
        self.rollout = Rollout(self.config["model"], self.state_dir, self._rollout_sink().options["topic_prefix"],
                               detector=r["detector"], threads=r["detector_threads"])
        self.rollout.apply(self.reader)
        self.rollout.start()
        self._listen_rollout()

    def _rollout_sink(self):  # noqa: ANN202 - an MqttSink
        """The mqtt sink that follows the channel: [model] sink, else the first (the config
        guarantees there is one)."""
        name = self.config["model"]["sink"]
        return next(s for s in self.sinks if s.kind == "mqtt" and (name is None or s.name == name))

    def _listen_rollout(self) -> None:
        """At start, and after a reload re-made the sinks: that sink follows the channel."""
        self._rollout_sink().listen(self.rollout.topic, self.rollout.offer)

    def _open_ids(self) -> IdAllocator:
        # Ids continue above any id still in the outboxes or the jsonl ledgers, even when
        # the id file is missing or older than them: a reused id is a result the plant drops.
        floor, where = id_floor.highest_id(self.state_dir, self.config.sinks)
        try:
            ids = IdAllocator(self.state_dir, floor=floor)
        except StateDirError as exc:
            if self.config.demo:
                # Two demos at once (or a test and a demo): the second gets a throwaway dir.
                self.state_dir = tempfile.mkdtemp(prefix="edge-runtime-demo-")
                log.warning("demo state_dir busy (%s); using %s", exc, self.state_dir)
                return IdAllocator(self.state_dir)
            raise ServiceError(f"state_dir: {exc}") from None
        except OSError as exc:
            raise ServiceError(f"state_dir {self.state_dir}: {exc.strerror or exc}") from None
        if floor > ids.file_reserved:
            said = "is missing" if ids.file_reserved == 0 else f"says {ids.file_reserved}"
            log.warning("state_dir %s: the id file %s but %s holds id %d; continuing above it",
                        self.state_dir, said, where, floor,
                        extra={"fields": {"event": "ids_floor", "floor": floor, "found_in": where}})
        return ids

    def _make_reader(self, cfg: Config):
        from edge_runtime.reader import Reader

        r = cfg["reader"]
        try:
            lengths = []
            if r["speed_px_s"] and r["exposure_ms"]:
                lengths.append(r["speed_px_s"] * r["exposure_ms"] / 1000.0)
            # keep: on reload a refused model version leaves the running detector in place.
            keep = self.reader.detector if self.reader is not None else None
            return Reader(r["decoders"], detector=r["detector"], deadline_ms=r["deadline_ms"],
                          blur_angle=r["blur_angle"], blur_lengths=lengths, noread_score=r["noread_score"],
                          model=r["model"], threads=r["detector_threads"], keep=keep)
        except Exception as exc:  # noqa: BLE001 - DetectorUnavailable, no decoder...
            raise ServiceError(f"reader: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None

    @staticmethod
    def _make_tracker(cfg: Config) -> Tracker:
        d = cfg["dedup"]
        return Tracker(window_s=d["window_s"], max_distance_px=d["max_distance_px"], direction=d["direction"])

    @staticmethod
    def _make_noread_tracker(cfg: Config):
        from edge_runtime.track import NoreadTracker

        d = cfg["dedup"]
        return NoreadTracker(window_s=d["window_s"], max_distance_px=d["max_distance_px"])

    @staticmethod
    def _make_noread_store(cfg: Config):
        from edge_runtime.service.noread_store import NoreadStore

        r = cfg["reader"]
        return NoreadStore(r["noread_dir"], r["noread_keep"], r["noread_max_mb"]) if r["noread_dir"] else None

    @staticmethod
    def _make_trigger(cfg: Config) -> Trigger:
        t = cfg["trigger"]
        return Trigger(t["mode"], t["source"], noread=t["noread"], start_open=t["start_open"])

    def _make_sink(self, index: int, spec: dict):
        from edge_runtime.sinks import sink_class

        options = {k: v for k, v in spec.items() if k not in config_mod.SINK_COMMON}
        where = f"sinks[{index}] ({spec['kind']} {spec['name']!r})"
        try:
            cls = sink_class(spec["kind"])
            params = inspect.signature(cls).parameters
            kind = spec["kind"]
            extra = {
                "status_provider": self.status,
                "command_handler": self._on_command,
                # a sink's trigger counts only when trigger.source names that sink's kind
                "trigger_handler": lambda what: self.trigger.on_peer(what, kind),
            }
            kw = {k: v for k, v in extra.items() if k in params}
            sink = cls(spec["name"], self.device_id, options, **kw)
            sink.start()
        except Exception as exc:  # noqa: BLE001 - any sink failing to start is a config problem
            raise ServiceError(f"{where}: {exc}") from None
        self.stats.sink_errors.setdefault(sink.name, 0)
        self.stats.sink_emitted.setdefault(sink.name, 0)
        return sink

    def _open_source(self) -> None:
        from edge_runtime.capture import SourceError, open_source

        try:
            self.source = open_source(dict(self.config["source"]))
        except SourceError as exc:
            raise ServiceError(f"source: {exc}") from None

    def _start_metrics(self, port: int) -> None:
        from edge_runtime.service.metrics import MetricsServer

        try:
            self.metrics = MetricsServer(port, self.config["metrics"]["host"], self.stats,
                                         lambda: {s.name: s.state() for s in list(self.sinks)})
            log.info("metrics on http://%s:%d/metrics", self.config["metrics"]["host"], self.metrics.port)
        except OSError as exc:
            raise ServiceError(f"metrics.port {port}: {exc.strerror or exc}") from None

    def _start_web(self) -> None:
        from edge_runtime.web import WebView

        port = self.config["web"]["port"]
        try:
            self.web = WebView(self.config, lambda: {**self.status(), "device_id": self.device_id})
        except OSError as exc:
            if self.config.demo:  # the demo must start anywhere, even with the port taken
                log.warning("web view: port %d: %s; the demo runs without it", port, exc.strerror or exc)
                return
            raise ServiceError(f"web.port {port}: {exc.strerror or exc}") from None
        self.observers.append(self.web.state)
        log.info("web view on %s", self.web.url)

    def _stop_web(self) -> None:
        if self.web is not None:
            if self.web.state in self.observers:
                self.observers.remove(self.web.state)
            self.web.close()
            self.web = None

    def _shutdown(self) -> None:
        timeout = float(self.config["shutdown_timeout_s"])
        if self.source is not None:
            try:
                self.source.close()
            except Exception:  # noqa: BLE001
                log.exception("closing the source failed")
        if self.ids is not None and self.sinks:
            self._number_waiting()  # a last try; what still cannot be numbered is said below
        # Sinks flush in parallel: N sinks take one timeout, not N.
        threads = [threading.Thread(target=_close_quietly, args=(s, timeout), daemon=True) for s in self.sinks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout + 2.0)
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        self._stop_web()
        if self.rollout is not None:
            self.rollout.close()
        if self.ids is not None:
            self.ids.close()
        logs.flush_suppressed()
        queued = self._queued_per_sink()
        if self._waiting:
            log.error("stopping with %d result(s) that could not be given an id (%s); they are lost",
                      len(self._waiting), self._ids_error, extra={"fields": {"event": "lost_unnumbered"}})
        log.info("stopped; results still queued: %s",
                 ", ".join(f"{k} {v}" for k, v in queued.items()) or "none",
                 extra={"fields": {"event": "stopped", **self.stats.counters(), "queued": queued,
                                   "waiting_for_ids": len(self._waiting)}})

    def _sink_states(self) -> dict[str, dict | None]:
        """Each sink's state() once (None when it raised: a sink must not break a log line);
        an outbox depth is a sqlite COUNT, so the status line asks each sink once, not twice."""
        out: dict[str, dict | None] = {}
        for s in list(self.sinks):
            try:
                out[s.name] = dict(s.state())
            except Exception:  # noqa: BLE001
                out[s.name] = None
        return out

    def _queued_per_sink(self, states: dict[str, dict | None] | None = None) -> dict[str, int]:
        """Results each sink still holds (outbox depth), for the status and stopped lines."""
        states = self._sink_states() if states is None else states
        return {name: -1 if st is None else int(st.get("queued", 0) or 0) for name, st in states.items()}

    @staticmethod
    def _sink_summary(states: dict[str, dict | None]) -> dict[str, str]:
        """One short state per sink for the status log line: "up, 0 queued"."""
        out = {}
        for name, st in states.items():
            if st is None:
                out[name] = "error: state() failed"
                continue
            conn = st.get("connected")
            out[name] = f"{'up' if conn or conn is None else 'down'}, {st.get('queued', 0)} queued"
            if st.get("last_error") and not conn:
                out[name] += f" ({str(st['last_error'])[:120]})"
        return out

    # ---------------------------------------------------------------------------- signals

    def _install_signals(self) -> dict:
        previous = {}

        def on_stop(signum, frame):  # noqa: ANN001
            log.info("%s: stopping", signal.Signals(signum).name)
            self.stop()

        def on_hup(signum, frame):  # noqa: ANN001
            self._hup = True

        def on_usr1(signum, frame):  # noqa: ANN001
            if self.trigger.source == "signal":
                self.trigger.on_signal()

        for sig, h in ((signal.SIGTERM, on_stop), (signal.SIGINT, on_stop), (signal.SIGHUP, on_hup), (signal.SIGUSR1, on_usr1)):
            previous[sig] = signal.signal(sig, h)
        return previous

    # -------------------------------------------------------------------- peer callbacks

    def _on_command(self, cmd: dict) -> Any:
        """MQTT command handler (paho's thread): queue work for the loop, never block."""
        name = str(cmd.get("cmd", "")).strip()
        if name.lower() == "trigger" or name.upper() in ("LON", "LOFF"):
            return self.trigger.on_mqtt(cmd)
        if name.lower() == "reload":
            self._hup = True
            return {"ok": True}
        if name.lower() == "status":
            return None  # the MQTT sink re-publishes its retained status itself, right away
        log.warning("mqtt command %r not understood (trigger, LON, LOFF, reload, status)", name[:40])
        return {"ok": False, "error": "unknown command"}

    # ------------------------------------------------------------------------------ loop

    def _loop(self) -> None:
        from edge_runtime.capture import SourceTimeout

        backoff = _SOURCE_BACKOFF[0]
        while not self._stop.is_set():
            try:
                self._housekeeping()
            except Exception:  # noqa: BLE001 - nothing between frames may end the process
                self.stats.frame_errors += 1
                now = time.monotonic()
                if now - self._housekeeping_errlog >= _SINK_ERROR_LOG_S:
                    self._housekeeping_errlog = now
                    log.exception("housekeeping failed (%d error(s) so far); carrying on",
                                  self.stats.frame_errors, extra={"fields": {"event": "housekeeping_error"}})
            t0 = time.perf_counter()
            try:
                frame = self.source.read(READ_TIMEOUT_S)
            except SourceTimeout as exc:
                self.stats.source_timeouts += 1
                if self._source_ok:
                    self._source_ok = False
                    log.warning("source: no frame: %s", exc, extra={"fields": {"event": "source_timeout"}})
                continue
            except Exception as exc:  # noqa: BLE001 - SourceError, a driver's cv2.error...: reopen
                self.stats.source_errors += 1
                # One line per outage, not one per retry: a camera gone for a night is one line.
                if not self._source_failing:
                    self._source_failing = True
                    log.error("source failed: %s; reopening with backoff (%.1f..%.0f s)", exc,
                              *_SOURCE_BACKOFF, extra={"fields": {"event": "source_error"}})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _SOURCE_BACKOFF[1])
                self._reopen_source()
                continue
            if frame is None:
                log.info("source finished after %d frames", self.stats.frames,
                         extra={"fields": {"event": "source_finished"}})
                self._emit_noreads(self.noread_tracker.flush())
                return
            backoff = _SOURCE_BACKOFF[0]
            if not self._source_ok:
                self._source_ok = True
                log.info("source: frames again after %d timeout(s)", self.stats.source_timeouts,
                         extra={"fields": {"event": "source_ok"}})
            t1 = time.perf_counter()
            self.stats.observe("capture", (t1 - t0) * 1000)
            try:
                self._process(frame, t1)
            except Exception:  # noqa: BLE001 - a bug or a full disk on one frame must not stop the line
                self.stats.frame_errors += 1
                now = time.monotonic()
                if now - self._frame_errlog >= _SINK_ERROR_LOG_S:
                    self._frame_errlog = now
                    log.exception("processing frame %d failed (%d frame error(s) so far)",
                                  frame.index, self.stats.frame_errors, extra={"fields": {"event": "frame_error"}})
                continue
            # Only here: a source or reader that hangs must stop the watchdog pings.
            if self.heartbeat is not None:
                self.heartbeat.beat()

    def _housekeeping(self) -> None:
        if self._hup:
            self._hup = False
            self.notifier.reloading()
            ok = self.reload()
            # READY=1 in both outcomes, or systemd stays in "reloading".
            self.notifier.ready(status="reloaded" if ok else "reload refused (invalid config); running the previous one")
        with self._pending_lock:
            pending, self._pending = self._pending, []
        for cfg, done, result in pending:
            result[0] = self._apply(cfg)
            done.set()
        self._number_waiting()  # results held while ids could not be reserved
        if self.rollout is not None:
            self.rollout.poll(self.reader)  # a model bundle verified and self-tested: switch now
        for kind, ts, window in self.trigger.poll():
            if kind == "open":
                self.tracker.reset()  # a new window is a new item: its codes are new
                log.debug("trigger window open")
            else:
                self._close_window(window, ts)
        now = time.monotonic()
        logs.flush_suppressed()  # a flood that stopped still gets its "N suppressed" line
        if now >= self._next_status:
            if self._next_status:
                states = self._sink_states()
                log.info("status", extra={"fields": {"event": "status", **self.stats.counters(),
                                                     "stage_ms_p50": self.stats.p50(),
                                                     "sinks": self._sink_summary(states),
                                                     "queued": self._queued_per_sink(states),
                                                     "waiting_for_ids": len(self._waiting)}})
            self._next_status = now + float(self.config["status_interval_s"])

    def _process(self, frame, t1: float) -> None:
        self.stats.frames += 1
        trig = self.trigger
        window = trig.window
        if window is not None:
            window.frames += 1
            window.last_frame = frame.index
        if not trig.reading:
            self._observe("frame", frame, [], [])
            return
        # an exception here is a frame error (_loop)
        events = trig.mode == "continuous" and self.config["reader"]["noread_events"]
        # Unread detections also tell a window's noread why it is one (detected, not decoded).
        skip = []
        wake = False
        if events:
            # Labels already read, and hard ones resting between tries: no retries spent on them.
            skip = self.noread_tracker.read_quads(frame.index) + self.noread_tracker.resting_quads(frame.index)
            wake = self.noread_tracker.retry_due(frame.index, frame.image.shape)
        codes = self.reader.read(frame.image, noreads=events or window is not None, video=True, skip=skip, wake=wake)
        unread = [c for c in codes if c.kind == "noread"]
        codes = [c for c in codes if c.kind != "noread"]
        t2 = time.perf_counter()
        self.stats.observe("read", (t2 - t1) * 1000)
        self.stats.codes += len(codes)
        if window is not None and unread and window.reason is None:
            window.unread = list(unread[0].corners)
            window.reason = reason_for(frame.image, window.unread)
        if events:
            gone = self.noread_tracker.update(unread, codes, frame.ts, frame.index)
            for t in self.noread_tracker.tracks:
                if t.last_frame != frame.index or t.read:
                    continue
                if t.reason is None:
                    # Judged once, on first sight: camera (not decodable) or printer (too damaged)?
                    t.reason = reason_for(frame.image, t.corners)
                if self.noread_store is not None:
                    # The label's image as last seen: by the time it counts as a noread it has left.
                    t.image = self.noread_store.crop(frame.image, t.corners)
            self._emit_noreads(gone)
        new = self.tracker.update(codes, frame.ts, frame.index) if codes else []
        if trig.mode == "single":
            for _code, track in new[1:]:
                self.tracker.forget(track)  # not reported in this window: not "seen" either
            new = new[:1]
        if new and len(self._waiting) >= MAX_WAITING:
            # Ids have been unavailable for long: a label counts as reported only once its
            # result is accepted, so these are forgotten and reported when seen again.
            for _code, track in new:
                self.tracker.forget(track)
            self.stats.deferred += len(new)
            new = []
        t3 = time.perf_counter()
        self.stats.observe("track", (t3 - t2) * 1000)
        if new:
            # Print quality of each new label's code, from this frame (~1 ms a code).
            attach_quality(frame.image, [code for code, _track in new])
            verdicts = [self.matcher.check(code.text) if self.matcher else None for code, _track in new]
            makers = [("read", lambda rid, code=code, track=track, m=m:
                       read_result(rid, self.device_id, code, track, frame.index, frame.ts, match=m))
                      for (code, track), m in zip(new, verdicts)]
            if window is not None:
                window.results += len(makers)
            self._publish(makers)
        t4 = time.perf_counter()
        self.stats.observe("sinks", (t4 - t3) * 1000)
        self.stats.observe("total", (t4 - t1) * 1000)
        self._observe("frame", frame, codes, unread)

    def _observe(self, what: str, *args: Any) -> None:
        for obs in self.observers:
            fn = getattr(obs, what, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - a viewer must never cost the line a frame
                now = time.monotonic()
                if now - self._observer_errlog >= _SINK_ERROR_LOG_S:
                    self._observer_errlog = now
                    log.exception("observer %s failed on %s", type(obs).__name__, what)

    def _emit_noreads(self, gone: list) -> None:
        """Labels the detector saw that left the view without a read: one noread each."""
        store = self.noread_store

        def make(rid: int, t) -> dict:  # noqa: ANN001
            if store is not None and t.image is not None:
                store.save(rid, t.image)
                t.image = None
            return noread_result(rid, self.device_id, t.first_seen, t.last_seen, t.frames,
                                 t.last_frame, corners=t.corners, stage="detected", reason=t.reason)

        if gone:
            self._publish([("noread", lambda rid, t=t: make(rid, t)) for t in gone])

    def _close_window(self, window, ts: float) -> None:
        if window.results == 0 and self.trigger.noread:
            self._publish([("noread", lambda rid: noread_result(
                rid, self.device_id, window.opened, ts, window.frames, window.last_frame,
                corners=window.unread, reason=window.reason or "nothing_detected"))])

    def _publish(self, makers: list[tuple[str, Callable[[int], dict]]]) -> None:
        """Accept results (in order) and hand them to the sinks as soon as they have ids.

        An id is only ever used once it is reserved on disk; when that is impossible right
        now (ids.IdsUnavailable: an I/O error on state_dir), results wait here, in order,
        counted in the status, and go out when the next housekeeping pass can number them."""
        self._waiting.extend(makers)
        self._number_waiting()

    def _number_waiting(self) -> None:
        if not self._waiting:
            return
        results = []
        while self._waiting:
            try:
                rid = self.ids.next()
            except OSError as exc:
                if self._ids_error is None:
                    log.error("cannot reserve result ids (%s); holding results in memory, in order, "
                              "until it can", exc, extra={"fields": {"event": "ids_unavailable"}})
                self._ids_error = str(exc)
                break
            kind, make = self._waiting.popleft()
            results.append(make(rid))
            self.stats.items.add(results[-1])  # good reads, mismatches, read rate, grades
            if kind == "read":
                self.stats.reads += 1
            else:
                self.stats.noreads += 1
            if self.rollout is not None:
                self.rollout.record(kind == "read", self.reader)
        if self._ids_error is not None and not self._waiting:
            log.info("result ids can be reserved again; every held result is sent",
                     extra={"fields": {"event": "ids_available"}})
            self._ids_error = None
        if results:
            self._emit(results)

    def _emit(self, results: list[dict]) -> None:
        """Every sink gets every result; one sink failing never keeps it from the others,
        and one result a sink refuses never keeps the next ones from that sink.

        Durable sinks (outbox) go first: a result anyone has seen (a stdout line, a jsonl
        record) is then already committed for the plant, even if we are killed right after.
        Several results from one frame go to a sink with `emit_many` as one batch (the serial
        sink sends them in one PLC frame); the others get them one by one."""
        self.last_result_id = results[-1]["id"]
        for sink in sorted(self.sinks, key=lambda s: getattr(s, "kind", "") not in DURABLE_KINDS):
            many = getattr(sink, "emit_many", None)
            if many is not None and len(results) > 1:
                batches = [(results, many)]
            else:
                batches = [([r], sink.emit) for r in results]
            for batch, call in batches:
                try:
                    call(batch if call is many else batch[0])
                except Exception as exc:  # noqa: BLE001
                    self._sink_failed(sink, batch[0]["id"], exc)
                    continue
                self.stats.sink_emitted[sink.name] = self.stats.sink_emitted.get(sink.name, 0) + len(batch)
        self._observe("results", results)

    def _sink_failed(self, sink: Any, rid: int, exc: Exception) -> None:
        self.stats.sink_errors[sink.name] = self.stats.sink_errors.get(sink.name, 0) + 1
        now = time.monotonic()
        if now - self._sink_errlog.get(sink.name, -1e9) >= _SINK_ERROR_LOG_S:
            self._sink_errlog[sink.name] = now
            log.error("sink %s failed on result %d: %s: %s (%d error(s) so far)", sink.name, rid,
                      type(exc).__name__, exc, self.stats.sink_errors[sink.name],
                      extra={"fields": {"event": "sink_error", "sink": sink.name}})

    def _reopen_source(self) -> None:
        from edge_runtime.capture import open_source

        try:
            if self.source is not None:
                self.source.close()
        except Exception:  # noqa: BLE001
            pass
        try:
            self.source = open_source(dict(self.config["source"]))
        except Exception as exc:  # noqa: BLE001 - keep retrying; the loop must not die
            log.debug("source reopen failed: %s", exc)
            self.source = _DeadSource(str(exc) or type(exc).__name__)
            return
        if self._source_failing:
            self._source_failing = False
            log.info("source reopened", extra={"fields": {"event": "source_reopened"}})

    # ---------------------------------------------------------------------------- reload

    def _apply(self, new: Config) -> bool:
        """Swap in a validated config, touching only what changed."""
        old = self.config
        changed = [k for k in new.data if new.data[k] != old.data.get(k)]
        for key in ("device_id", "state_dir", "model"):
            if new[key] != old[key]:
                log.warning("reload: %s changed (%r -> %r); that needs a restart, keeping %r",
                            key, old[key], new[key], old[key])
                new.data[key] = old[key]
        running = self.state == "running"
        try:
            # New files in the models dir are picked up (and self-tested) on reload too.
            models_fp = model_versions.fingerprint()
            models_changed = new["reader"]["detector"] != "none" and models_fp != self._models_fp
            reader = (self._make_reader(new) if (running and (new["reader"] != old["reader"] or models_changed))
                      else self.reader)
        except ServiceError as exc:
            self.stats.reload_failures += 1
            log.error("reload refused, keeping the running config: %s", exc)
            return False
        if running:
            try:  # a list file is read again on every reload
                self.matcher = Matcher.reloaded(self.matcher, new["match"], self.state_dir)
            except ValueError as exc:
                log.error("reload: %s; keeping the previous [match]", exc)
        if reader is not self.reader and self.rollout is not None:
            self.rollout.apply(reader)  # the rollout's model keeps running in the new reader
        self.reader = reader
        if running:
            self._models_fp = models_fp
        if new["dedup"] != old["dedup"]:
            self.tracker = self._make_tracker(new)
            self.noread_tracker = self._make_noread_tracker(new)
        if new["reader"] != old["reader"]:
            self.noread_store = self._make_noread_store(new)
        if new["trigger"] != old["trigger"]:
            if self.trigger.window is not None:
                log.warning("reload: trigger changed while a window was open; the window is dropped")
            self.trigger = self._make_trigger(new)
        if self.owns_logging and new["log"] != old["log"]:
            logs.setup(new["log"]["level"], new["log"]["format"], log_stream(new))
        self.config = new
        if running:
            self._apply_sinks(old, new)
            if self.rollout is not None:
                self._listen_rollout()
            if new["source"] != old["source"]:
                self._reopen_source()
            if new["metrics"] != old["metrics"]:
                if self.metrics is not None:
                    self.metrics.close()
                    self.metrics = None
                if new["metrics"]["port"] is not None:
                    try:
                        self._start_metrics(new["metrics"]["port"])
                    except ServiceError as exc:
                        log.error("reload: %s; metrics off", exc)
            if new["web"] != old["web"]:
                self._stop_web()
                if new["web"]["port"] is not None:
                    try:
                        self._start_web()
                    except ServiceError as exc:
                        log.error("reload: %s; web view off", exc)
        self.stats.reloads += 1
        log.info("reloaded %s (changed: %s)", new.label, ", ".join(changed) or "nothing",
                 extra={"fields": {"event": "reloaded", "changed": changed}})
        return True

    def _apply_sinks(self, old: Config, new: Config) -> None:
        """Unchanged sinks keep running (no reconnect, no lost in-flight); others restart."""
        by_name = {s.name: s for s in self.sinks}
        old_specs = {s["name"]: s for s in old.sinks}
        keep, fresh = [], []
        for i, spec in enumerate(new.sinks):
            cur = by_name.get(spec["name"])
            if cur is not None and old_specs.get(spec["name"]) == spec:
                keep.append(cur)
                continue
            if cur is not None:
                _close_quietly(cur, float(new["shutdown_timeout_s"]))
                by_name.pop(spec["name"])
            fresh.append((i, spec))
        for name, sink in by_name.items():
            if sink not in keep:
                _close_quietly(sink, float(new["shutdown_timeout_s"]))
        self.sinks = keep
        for i, spec in fresh:
            try:
                sink = self._make_sink(i, spec)
            except ServiceError as exc:
                log.error("reload: %s; that sink is off until the next reload", exc)
                continue
            self.sinks.append(sink)
        order = {s["name"]: i for i, s in enumerate(new.sinks)}
        self.sinks.sort(key=lambda s: order.get(s.name, 1 << 30))


class _DeadSource:
    """Stands in for a source that could not be reopened: the loop keeps backing off."""

    def __init__(self, error: str) -> None:
        self.error = error

    def read(self, timeout: float = 1.0):
        from edge_runtime.capture import SourceError

        raise SourceError(self.error)

    def state(self) -> dict:
        return {"state": "reopening", "last_error": self.error}

    def close(self) -> None:
        pass


def _close_quietly(sink: Any, timeout: float) -> None:
    try:
        sink.close(timeout=timeout)
    except Exception:  # noqa: BLE001 - closing one sink must not keep the others open
        log.exception("closing sink %s failed", getattr(sink, "name", "?"))


def log_stream(cfg: Config) -> TextIO:
    """Logs go to stderr when a stdout sink owns stdout, else to stdout (journald takes both)."""
    return sys.stderr if any(s["kind"] == "stdout" for s in cfg.sinks) else sys.stdout


__all__ = ["Service", "ServiceError", "log_stream", "READ_TIMEOUT_S"]
