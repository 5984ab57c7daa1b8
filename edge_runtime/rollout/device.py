"""The device side of a rollout: a signed bundle arrives on the channel this device follows; it
is verified, written under state_dir/models/<version>, loaded and self-tested off the capture
loop, and swapped in between two frames. The running model stays until the new one has passed
every check; any failure is one log line (event model_refused) and `last_event` in the status.

After a switch the read rate is watched (monitor.py); a model that reads more than X points
worse than the one before it over its first N items is replaced by that one again and never
installed again on this device (event model_fell_back).

Which model runs survives a restart: state_dir/models/rollout.json names it, and it is loaded
(checked and self-tested again) at start. Without it, or when it no longer passes, the device
runs what its config chooses ([reader] model) until a bundle comes.

Threads: `offer()` runs on paho's network thread and only stores the message; the worker thread
verifies, writes and loads; `poll()` and `record()` run on the capture loop, which alone touches
the reader.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_runtime.rollout import bundle as bundle_mod
from edge_runtime.rollout import keys
from edge_runtime.rollout.monitor import RateMonitor
from edge_runtime.service.ids import fsync_dir

log = logging.getLogger("edge_runtime.rollout")
STATE_FILE = "rollout.json"
KEEP_VERSIONS = 3  # the running one, the one before it (the fallback) and one arriving


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Rollout:
    def __init__(self, model_cfg: dict, state_dir: str, topic_prefix: str, detector: str = "auto",
                 threads: int = 1) -> None:
        self.channel: str = model_cfg["channel"]
        self.public_key = keys.load_public(model_cfg["public_key"])
        self.topic = bundle_mod.topic(topic_prefix, self.channel)
        self.dir = Path(state_dir) / "models"
        self.detector_name = detector
        self.threads = threads
        self.monitor = RateMonitor(model_cfg["fallback_items"], model_cfg["fallback_points"])
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._offer: bytes | None = None
        # (detector, version, kind, judging) from the worker, taken in order by poll()
        self._ready: collections.deque[tuple[Any, str, str, dict | None]] = collections.deque()
        self._worker: threading.Thread | None = None
        self._quiet: set[str] = set()  # digests already refused or skipped: a reconnect re-sends them
        # Owned by the capture loop:
        self.base: tuple[Any, str | None] = (None, None)  # the config's detector and version
        self.current: tuple[Any, str] | None = None  # the rollout's detector and version, when one runs
        self.previous: tuple[Any, str | None] | None = None  # what a fallback goes back to (None det: base)
        self.running: str | None = None  # the version the reader runs now
        # Persisted (rollout.json):
        self.active: str | None = None
        self.previous_version: str | None = None
        self.since: str | None = None
        self.rejected: dict[str, str] = {}
        self.last_event: dict | None = None
        self.installs = self.refusals = self.fallbacks = 0

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        saved = self._load_state()
        self.rejected = dict(saved.get("rejected") or {})
        restore = self._restorer(saved) if saved.get("active") else None
        self._worker = threading.Thread(target=self._run, args=(restore,), name="model-rollout", daemon=True)
        self._worker.start()

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout)

    # ---- paho's thread ---------------------------------------------------------------------
    def offer(self, message: bytes) -> None:
        """A message on the channel's topic (retained: every connect re-delivers it)."""
        with self._lock:
            self._offer = bytes(message)
        self._wake.set()

    # ---- the capture loop -------------------------------------------------------------------
    def apply(self, reader) -> None:  # noqa: ANN001
        """The loop made a reader from its config (start, reload): remember that as the base and
        run the rollout's model in it, if one runs."""
        self.base = (reader.detector, reader.model_version)
        self.running = reader.model_version
        if self.current is not None:
            self._put(reader, *self.current)

    def poll(self, reader) -> None:  # noqa: ANN001
        while self._ready:
            self._take(reader, *self._ready.popleft())

    def _take(self, reader, det, version: str, kind: str, judging: dict | None) -> None:  # noqa: ANN001
        if kind == "previous":  # loaded at start for a judgement still open
            self.previous = (det, version)
            return
        was = self.running
        if kind == "install":
            self.previous = self.current if self.current is not None else (None, self.base[1])
        elif self.previous is None:
            self.previous = (None, self.base[1])
        self.current = (det, version)
        self._put(reader, det, version)
        if kind == "install":
            self.monitor.switched()
            self.active, self.previous_version, self.since = version, self.previous[1], _now()
            self.installs += 1
            self._event("installed", version, f"running, was {was}")
            judged = (f"judged over the next {self.monitor.n} items" if self.monitor.judging else
                      f"not judged (no baseline: too few items on {was})")
            log.info("model %s from channel %s verified, self-tested and running (was %s); %s", version,
                     self.channel, was, judged,
                     extra={"fields": {"event": "model_switched", "model": version, "previous": was,
                                       "channel": self.channel}})
        else:  # restored at start
            if judging:
                self.monitor.resume(judging["baseline"], judging["baseline_items"])
            log.info("model %s (channel %s) restored from %s", version, self.channel, self.dir / version,
                     extra={"fields": {"event": "model_restored", "model": version}})
        self._save()

    def record(self, read: bool, reader) -> None:  # noqa: ANN001
        """One item (a read or a noread) counted for the model that runs now."""
        verdict = self.monitor.record(read)
        if verdict is None or not verdict.fall_back or self.current is None:
            if verdict is not None:
                log.info("model %s kept: read %.1f%% over %d items, %.1f%% before", self.running,
                         100 * verdict.rate, verdict.items, 100 * verdict.baseline,
                         extra={"fields": {"event": "model_kept", "model": self.running}})
                self._save()
            return
        bad = self.current[1]
        det, version = self.previous if self.previous is not None else (None, self.base[1])
        to_base = det is None
        if to_base:
            det, version = self.base
        reason = (f"read {100 * verdict.rate:.1f}% over {verdict.items} items, {100 * verdict.baseline:.1f}% "
                  f"on {version} before it (more than {self.monitor.points:g} points worse)")
        self.rejected[bad] = reason
        self.current = None if to_base else (det, version)
        self.previous = None
        self._put(reader, det, version)
        self.monitor.switched(judge=False)
        self.active = version if self.current is not None else None
        self.since = _now()
        self.fallbacks += 1
        self._event("fell_back", bad, reason)
        log.warning("model %s fell back to %s: %s", bad, version, reason,
                    extra={"fields": {"event": "model_fell_back", "model": bad, "active": version}})
        self._save()

    def _put(self, reader, det, version) -> None:  # noqa: ANN001
        reader.detector = det
        reader.model_version = version
        self.running = version

    def state(self) -> dict:
        return {"channel": self.channel, "active": self.running, "from_channel": self.active is not None,
                "since": self.since, "previous": self.previous_version, "rejected": sorted(self.rejected),
                "installs": self.installs, "refusals": self.refusals, "fallbacks": self.fallbacks,
                "judging": self.monitor.state(), "last_event": self.last_event}

    def _event(self, what: str, version: str | None, detail: str) -> None:
        self.last_event = {"event": what, "version": version, "detail": detail, "ts": _now()}

    # ---- the worker ------------------------------------------------------------------------
    def _run(self, restore) -> None:  # noqa: ANN001
        if restore is not None:  # before any bundle: a newer one must not be overtaken by it
            restore()
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                message, self._offer = self._offer, None
            if message is None or self._stop.is_set():
                continue
            try:
                self._consider(message)
            except Exception as e:  # noqa: BLE001 - a bug here must not end rollouts (or the loop)
                log.exception("model bundle on %s: %s", self.topic, e)

    def _consider(self, message: bytes) -> None:
        if not message:
            return  # the channel was cleared (an empty retained message)
        digest = hashlib.sha256(message).hexdigest()
        if digest in self._quiet:
            return
        try:
            b = bundle_mod.verify(message, self.public_key, self.channel)
        except bundle_mod.Refused as e:
            return self._refuse(digest, None, str(e))
        if b.version == self.running:
            self._quiet.add(digest)
            return
        if b.version in self.rejected:
            self._quiet.add(digest)
            log.warning("model %s on channel %s is not installed again: it fell back on this device (%s)",
                        b.version, self.channel, self.rejected[b.version],
                        extra={"fields": {"event": "model_refused", "model": b.version}})
            return
        try:
            path = self._install(b)
        except OSError as e:
            # Not remembered: the disk may have room on the next delivery.
            return self._refuse(None, b.version, f"cannot write {self.dir}: {e.strerror or e}")
        try:
            det = self._load(b.version, path)
        except Exception as e:  # noqa: BLE001 - DetectorUnavailable, a runtime's error: one line
            return self._refuse(digest, b.version, str(e).splitlines()[0] if str(e) else type(e).__name__)
        self._ready.append((det, b.version, "install", None))

    def _refuse(self, digest: str | None, version: str | None, reason: str) -> None:
        if digest is not None:
            self._quiet.add(digest)
        self.refusals += 1
        self._event("refused", version, reason)
        log.warning("model bundle on %s refused: %s; keeping %s", self.topic, reason, self.running,
                    extra={"fields": {"event": "model_refused", "model": version, "active": self.running}})

    def _load(self, version: str, path: Path):
        from edge_runtime.detect import DetectorUnavailable
        from edge_runtime.detect.select import try_version
        from edge_runtime.detect.versions import _check

        info = _check(version, path)
        if not info.ok:
            raise DetectorUnavailable(info.error or "fails its sha256 check")
        try:
            return try_version(self.detector_name, info, threads=self.threads)
        except Exception as e:  # noqa: BLE001 - a runtime's own error for a broken file (ValueError...)
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DetectorUnavailable(f"model {version} does not load or fails its self-test: {first}") from None

    def _install(self, b: bundle_mod.Bundle) -> Path:
        """Write the version's folder (fsynced, renamed into place); a complete copy is reused."""
        from edge_runtime.detect.versions import _check

        final = self.dir / b.version
        if final.is_dir() and _check(b.version, final).ok:
            return final
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{b.version}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            for name, data in [*b.files.items(), (bundle_mod.MANIFEST, json.dumps(b.manifest, indent=1).encode())]:
                with open(tmp / name, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            fsync_dir(tmp)
            shutil.rmtree(final, ignore_errors=True)  # a damaged copy
            os.rename(tmp, final)
            fsync_dir(self.dir)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._prune(keep={b.version, self.active, self.previous_version})
        return final

    def _prune(self, keep: set) -> None:
        from edge_runtime.detect.versions import version_key

        have = [p for p in self.dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        extra = sorted((p for p in have if p.name not in keep), key=lambda p: version_key(p.name))
        for p in extra[:max(0, len(have) - KEEP_VERSIONS)]:
            shutil.rmtree(p, ignore_errors=True)

    # ---- persistence ----------------------------------------------------------------------
    def _restorer(self, saved: dict):
        """What the worker runs first: load the persisted model (and the one a still-open judgement
        would fall back to); poll() swaps it in. A version that no longer passes leaves the
        config's model."""
        version, prev = str(saved["active"]), saved.get("previous")
        self.active, self.previous_version, self.since = version, prev, saved.get("since")

        def load() -> None:
            try:
                det = self._load(version, self.dir / version)
            except Exception as e:  # noqa: BLE001
                self.active = None
                self._event("refused", version, f"persisted model no longer loads: {e}")
                log.warning("model %s from %s no longer passes (%s); running the config's model", version,
                            self.dir, str(e).splitlines()[0] if str(e) else type(e).__name__,
                            extra={"fields": {"event": "model_refused", "model": version}})
                return
            judging = saved.get("judging") if isinstance(saved.get("judging"), dict) else None
            if judging and prev and (self.dir / prev).is_dir():
                try:
                    self._ready.append((self._load(prev, self.dir / prev), prev, "previous", None))
                except Exception:  # noqa: BLE001 - no fallback target on disk: the config's model
                    pass
            self._ready.append((det, version, "restore", judging))

        return load

    def _load_state(self) -> dict:
        try:
            d = json.loads((self.dir / STATE_FILE).read_text())
            return d if isinstance(d, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable (%s); starting with the config's model", self.dir / STATE_FILE, e)
            return {}

    def _save(self) -> None:
        m = self.monitor
        d = {"active": self.active, "previous": self.previous_version, "since": self.since, "channel": self.channel,
             "rejected": self.rejected,
             "judging": ({"baseline": m.baseline, "baseline_items": m.baseline_items} if m.judging else None)}
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / f".{STATE_FILE}.tmp"
            with open(tmp, "w") as f:
                json.dump(d, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / STATE_FILE)
        except OSError as e:
            # The switch itself happened; only a restart would forget it.
            log.warning("cannot save %s (%s); after a restart the config's model runs until the bundle "
                        "comes again", self.dir / STATE_FILE, e.strerror or e)
