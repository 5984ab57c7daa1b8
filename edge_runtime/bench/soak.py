"""`edge-runtime bench soak`: the whole service under faults, then an audit of every result.

The service runs in this process on the synthetic conveyor (as fast as it can go), with a
jsonl ledger, an MQTT sink to a real mosquitto and a serial sink (ACK mode) to a real
pseudo-terminal whose far end plays the PLC. While it runs, faults are injected at random
(seeded) moments:

  broker_restart  mosquitto stopped for 0.5-2.5 s, then started on the same port
  serial_unplug   the socat pty pair killed (the device vanishes, EIO), then recreated
  source_stall    the camera delivers nothing for 0.5-2.5 s (reads time out)
  disk_full       the filesystem holding the outboxes (a tmpfs we mount) filled to the
                  last byte for 0.5-2.5 s; without root, a tiny outbox_max_mb instead, so
                  the drop policy is what gets exercised
  disk_full_outage  the disk full *and* the broker down: the MQTT outbox must grow on a
                  full disk (once sqlite's WAL has reached its working size, a full disk
                  alone costs nothing); the broker returns 0.5 s before the space does
  state_disk_full the filesystem of state_dir (the result id file; a tmpfs of its own)
                  filled to the last byte: ids must still be reserved, no result lost
  fd_exhaustion   every free file descriptor of the process taken (EMFILE on any open)
  trigger_flood   100,000 LON/LOFF pairs queued at once (signal trigger, ignored in
                  continuous mode) and 2,000 MQTT LON commands: frames must keep flowing
  idle_metrics    500 connections to /metrics that send half a request and go idle;
                  a scrape during it must be answered

At the end every id in the ledger (what the service produced) must have reached the
plant subscriber and the PLC, or still be in that sink's outbox, or be a counted loss
(a drop by the outbox policy, or an emit the sink refused, e.g. with the disk full).
And every label of the conveyor's ground truth must have exactly one result in the ledger
(bench line's audit): a result lost before it was numbered never reaches the ledger, so
the id books alone cannot see it.
`unexplained` must be 0: a result that vanished without being counted is the failure this
bench exists to find. MQTT QoS 1 and serial ACK mode are at-least-once, so duplicates
(after a broker restart or a lost ACK) are expected; they are counted, not failures.
"""

from __future__ import annotations

import argparse
import base64
from array import array
import contextlib
import json
import logging
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from edge_runtime.bench.peers import Broker, Plc, PlantSubscriber, SerialLine, rss_mb

FAULTS = ("broker_restart", "serial_unplug", "source_stall", "disk_full", "disk_full_outage",
          "state_disk_full", "fd_exhaustion", "trigger_flood", "idle_metrics")
STATE_TMPFS_MB = 4
DEVICE = "soak"
TMPFS_MB = 16
DRAIN_S = 120.0
POLICY_OUTBOX_MB = 0.004  # ~8 results: without a tmpfs, a broker outage overflows it


def add_parser(sub) -> None:  # noqa: ANN001 - argparse's private _SubParsersAction
    p = sub.add_parser(
        "soak",
        help="run the service with MQTT and serial peers under injected faults; audit every result",
        description="Runs the service on the synthetic conveyor against a real mosquitto and a "
        "pseudo-terminal PLC, injects broker restarts, serial unplugs, source stalls and a full "
        "outbox disk at random moments, then checks that every produced id reached every sink "
        "(or is still queued, or is a counted drop). Exit 0 when nothing is unaccounted for.",
    )
    p.add_argument("--frames", type=int, default=10_000, help="frames to run (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="conveyor and fault schedule seed (default %(default)s)")
    p.add_argument("--out", metavar="FILE", help="also write the JSON report to FILE")
    p.add_argument("--faults", choices=("on", "off"), default="on", help="inject faults (default on)")
    p.add_argument("--workdir", metavar="DIR", help="keep state, outboxes, ledger and logs in DIR (default: temp, removed)")
    p.add_argument("--width", type=int, default=640, help="frame width (default %(default)s)")
    p.add_argument("--height", type=int, default=360, help="frame height (default %(default)s)")
    p.add_argument("--labels-per-s", type=float, default=3.0, help="labels passing per second of belt (default %(default)s)")
    p.set_defaults(func=cmd_soak)


def cmd_soak(args: argparse.Namespace) -> int:
    from edge_runtime.cli import UserError
    from edge_runtime.bench.peers import PeerError

    if args.frames < 1:
        raise UserError("--frames must be at least 1")
    try:
        report = run_soak(args.frames, seed=args.seed, faults=args.faults == "on", workdir=args.workdir,
                          width=args.width, height=args.height, labels_per_s=args.labels_per_s,
                          progress=lambda m: print(m, file=sys.stderr, flush=True))
    except PeerError as exc:
        raise UserError(str(exc)) from None
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(summary(report))
    return 0 if report["ok"] else 1


# ------------------------------------------------------------------------------ the run


class _Control:
    """Fault switches shared by the injector and the wrapped source."""

    def __init__(self) -> None:
        self.stall_until = 0.0
        self.injecting = True  # the source does not finish while faults are still scheduled
        self.backlog: Callable[[], int] = lambda: 0
        self.drain_deadline: float | None = None

    def hold(self) -> bool:
        """Keep the source from finishing until the faults are over and the durable sinks
        have drained (up to DRAIN_S): the sinks flush on close only while connected, and
        the audit should see deliveries, not a queue left by the last fault."""
        if self.injecting:
            return True
        if self.drain_deadline is None:
            self.drain_deadline = time.monotonic() + DRAIN_S
        try:
            return self.backlog() > 0 and time.monotonic() < self.drain_deadline
        except Exception:  # noqa: BLE001 - a sink's state() failing must not hang the run
            return False


class _FaultySource:
    """Wraps the service's source: stalls on demand, and holds 'finished' back until the
    fault injector is done, so the run ends with every peer healthy and the flush is fair."""

    def __init__(self, inner: Any, ctl: _Control) -> None:
        self.inner = inner
        self.ctl = ctl
        from edge_runtime.bench.line import LabelBook

        self.book = LabelBook()  # the conveyor's ground truth, a few hundred bytes per label

    def read(self, timeout: float = 1.0):  # noqa: ANN201
        from edge_runtime.capture import SourceTimeout

        left = self.ctl.stall_until - time.monotonic()
        if left > 0:
            time.sleep(min(left, timeout))
            raise SourceTimeout("soak fault injection: source stalled")
        frame = self.inner.read(timeout)
        if frame is None and self.ctl.hold():
            time.sleep(min(0.1, timeout))
            raise SourceTimeout("soak: waiting for the faults to end and the sinks to drain")
        if frame is not None:
            self.book.add(frame.index, frame.truths or [])
        return frame

    def state(self) -> dict:
        return self.inner.state()

    def close(self) -> None:
        self.inner.close()


class _EmitLedger:
    """Which result ids each sink was offered, and which of those it refused (raised).

    The service counts sink errors per call; this counts per result, so a loss can be
    matched to the id it concerns."""

    def __init__(self) -> None:
        # Offered ids as compact arrays (8 bytes each): this bookkeeping shares the RSS figure.
        self.offered: dict[str, array] = {}
        self.failed: dict[str, set[int]] = {}

    def wrap(self, sink: Any) -> None:
        name = sink.name
        self.offered[name], self.failed[name] = array("q"), set()

        def wrapped(fn: Callable, many: bool) -> Callable:
            def call(arg):  # noqa: ANN001, ANN202
                ids = [int(r["id"]) for r in (arg if many else [arg])]
                self.offered[name].extend(ids)
                try:
                    return fn(arg)
                except Exception:
                    self.failed[name].update(ids)
                    raise
            return call

        sink.emit = wrapped(sink.emit, False)
        if getattr(sink, "emit_many", None) is not None:
            sink.emit_many = wrapped(sink.emit_many, True)


def _mount_tmpfs(path: Path, mb: int) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(path)],
                       capture_output=True, text=True)
    return r.returncode == 0


def _umount(path: Path) -> None:
    for _ in range(20):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.25)


def _fill_disk(directory: Path) -> Path:
    """Fill the filesystem of `directory` to the last byte (ENOSPC); returns the ballast."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 4096, 512, 1):
            chunk = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk)
    finally:
        os.close(fd)
    return ballast


def _config_doc(work: Path, frames: int, seed: int, width: int, height: int, labels_per_s: float,
                broker: Broker, line: SerialLine, outbox_dir: Path, mqtt_outbox_mb: float,
                metrics_port: int | None = None) -> dict:
    return {
        "device_id": DEVICE,
        "state_dir": str(work / "state"),
        "metrics": {"port": metrics_port},
        "status_interval_s": 5.0,
        "shutdown_timeout_s": 60.0,
        # Tracks outlive the longest stall: a label still in view after a stall is the same label.
        "dedup": {"window_s": 10.0},
        "log": {"level": "info", "format": "json"},
        "source": {"kind": "synthetic", "realtime": False, "frames": frames, "seed": seed,
                   "width": width, "height": height, "labels_per_s": labels_per_s, "degradations": False},
        "sinks": [
            {"kind": "jsonl", "name": "ledger", "path": str(work / "ledger.jsonl")},
            {"kind": "mqtt", "name": "mqtt", "host": "127.0.0.1", "port": broker.port, "topic_prefix": "soak",
             "qos": 1, "keepalive": 10, "status_interval_s": 5, "outbox": str(outbox_dir / "mqtt.sqlite"),
             "outbox_max_mb": mqtt_outbox_mb},
            {"kind": "serial", "name": "serial", "port": line.dev, "baudrate": 115200, "ack": True,
             "ack_timeout_ms": 1000, "retries": 3, "reopen_interval_s": 0.5,
             "outbox": str(outbox_dir / "serial.sqlite")},
        ],
    }


def _exhaust_fds(dur: float) -> int:
    """Take every free descriptor of this process for `dur` s (EMFILE on any open); returns
    how many were taken. The soft limit is lowered first so that "every" is a few hundred."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, top + 256), hard))
    plugs: list[int] = []
    try:
        with contextlib.suppress(OSError):
            while True:
                plugs.append(os.open(os.devnull, os.O_RDONLY))
        time.sleep(dur)
    finally:
        for fd in plugs:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return len(plugs)


def _trigger_flood(svc: Any, broker: Broker) -> dict:
    """The attack's flood: LON/LOFF pairs from the signal trigger and LON over MQTT."""
    import paho.mqtt.client as mqtt

    for _ in range(100_000):
        svc.trigger.push(True)
        svc.trigger.push(False)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-flood")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        for _ in range(2000):
            c.publish(f"soak/{DEVICE}/cmd", b'{"cmd":"LON"}', qos=0)
    finally:
        time.sleep(0.5)
        c.loop_stop()
        c.disconnect()
    return {"pairs": 100_000, "mqtt_commands": 2000}


def _idle_metrics(port: int, dur: float) -> dict:
    """500 half-sent requests left idle, and one real scrape while they are open."""
    import socket
    import urllib.request

    socks = []
    try:
        for _ in range(500):
            sk = socket.create_connection(("127.0.0.1", port), timeout=5)
            sk.sendall(b"GET /metr")
            socks.append(sk)
        t = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                scrape_ok = r.status == 200 and b"edge_runtime_frames" in r.read()
        except OSError:
            scrape_ok = False
        scrape_ms = round((time.monotonic() - t) * 1000, 1)
        time.sleep(dur)
    finally:
        for sk in socks:
            sk.close()
    return {"connections": len(socks), "scrape_ok": scrape_ok, "scrape_ms": scrape_ms}


def _inject(kind: str, dur: float, at_frame: int, broker: Broker, line: SerialLine, ctl: _Control,
            outbox_dir: Path, tmpfs: bool, svc: Any = None, state_dir: Path | None = None,
            metrics_port: int | None = None) -> dict:
    """Apply one fault for `dur` seconds and repair it; returns what was done."""
    t = time.monotonic()
    entry: dict = {"kind": kind, "at_frame": at_frame, "duration_s": dur}
    if kind == "state_disk_full" and state_dir is not None:
        ballast = _fill_disk(state_dir)
        try:
            time.sleep(dur)
        finally:
            ballast.unlink()
    elif kind == "fd_exhaustion":
        entry["fds_taken"] = _exhaust_fds(dur)
    elif kind == "trigger_flood" and svc is not None:
        entry.update(_trigger_flood(svc, broker))
    elif kind == "idle_metrics" and metrics_port:
        entry.update(_idle_metrics(metrics_port, dur))
    elif kind == "disk_full_outage" and tmpfs:
        broker.stop()
        ballast = _fill_disk(outbox_dir)
        try:
            time.sleep(dur)
            broker.start()
            time.sleep(0.5)
        finally:
            ballast.unlink()
    elif kind == "broker_restart" or (kind.startswith("disk_full") and not tmpfs):
        # Without a tmpfs, "disk full" is a longer outage overflowing a tiny outbox.
        broker.stop()
        time.sleep(dur if kind == "broker_restart" else dur * 2)
        broker.start()
    elif kind == "serial_unplug":
        line.stop()
        time.sleep(dur)
        line.start()
    elif kind == "source_stall":
        ctl.stall_until = time.monotonic() + dur
        time.sleep(dur)
    elif kind == "disk_full":
        ballast = _fill_disk(outbox_dir)
        try:
            time.sleep(dur)
        finally:
            ballast.unlink()
    entry["took_s"] = round(time.monotonic() - t, 2)
    return entry


def _schedule(rng: random.Random, frames: int) -> list[tuple[int, str, float]]:
    n = max(len(FAULTS), frames // 2500)
    kinds: list[str] = []
    while len(kinds) < n:
        block = list(FAULTS)
        rng.shuffle(block)
        kinds += block
    points = sorted(int(rng.uniform(0.05, 0.8) * frames) for _ in range(n))
    return [(p, k, round(rng.uniform(0.5, 2.5), 2)) for p, k in zip(points, kinds[:n])]


def run_soak(
    frames: int,
    *,
    seed: int = 0,
    faults: bool = True,
    workdir: str | None = None,
    width: int = 640,
    height: int = 360,
    labels_per_s: float = 3.0,
    progress: Callable[[str], None] = lambda m: None,
) -> dict:
    """Run the soak and return the report (see module docstring); report["ok"] is the verdict."""
    from edge_runtime import config as config_mod
    from edge_runtime import config_toml
    from edge_runtime.service import logs
    from edge_runtime.service.loop import Service

    keep = workdir is not None
    work = Path(workdir) if keep else Path(tempfile.mkdtemp(prefix="edge-runtime-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    outbox_dir = work / "outbox"
    outbox_dir.mkdir(exist_ok=True)
    tmpfs = faults and _mount_tmpfs(outbox_dir, TMPFS_MB)
    state_dir = work / "state"
    state_dir.mkdir(exist_ok=True)
    state_tmpfs = tmpfs and _mount_tmpfs(state_dir, STATE_TMPFS_MB)
    from edge_runtime.bench.peers import free_port

    metrics_port = free_port() if faults else None
    disk_mode = f"tmpfs {TMPFS_MB} MB filled to ENOSPC" if tmpfs else (
        f"outbox_max_mb {POLICY_OUTBOX_MB} (drop policy; no tmpfs: not root or mount refused)" if faults else "off")
    broker = Broker(work / "broker", persistence=True)
    line = SerialLine(work / "serial")
    sub: PlantSubscriber | None = None
    plc: Plc | None = None
    log_file = open(work / "service.log", "w", encoding="utf-8")  # noqa: SIM115 - closed in finally
    handler = None
    report: dict = {}
    try:
        broker.start()
        sub = PlantSubscriber(broker.port, "soak/#", keep_payloads=False).start()
        line.start()
        plc = Plc(line)
        plc.start()
        mqtt_mb = 64.0 if (tmpfs or not faults) else POLICY_OUTBOX_MB
        doc = _config_doc(work, frames, seed, width, height, labels_per_s, broker, line, outbox_dir, mqtt_mb,
                          metrics_port)
        cfg_path = work / "soak.toml"
        cfg_path.write_text(config_toml.dumps(doc))
        cfg = config_mod.load(str(cfg_path))
        handler = logs.setup("info", "json", log_file)
        ctl = _Control()
        emits = _EmitLedger()
        holder: dict[str, Any] = {}

        class SoakService(Service):
            """The real service; its sinks and source are instrumented as they are made, so
            not one result escapes the audit (wrapping after start would race the loop)."""

            def _make_sink(self, index: int, spec: dict):  # noqa: ANN202
                sink = super()._make_sink(index, spec)
                emits.wrap(sink)
                return sink

            def _open_source(self) -> None:
                super()._open_source()
                self.source = holder["source"] = _FaultySource(self.source, ctl)

        svc = SoakService(cfg)
        errors: list[BaseException] = []

        def run_service() -> None:
            try:
                svc.run(install_signals=False)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        thread = threading.Thread(target=run_service, name="soak-service", daemon=True)
        thread.start()
        while svc.state != "running" and thread.is_alive():
            time.sleep(0.01)
        if errors:
            raise errors[0]
        t_start = time.monotonic()
        durable = [s for s in svc.sinks if s.kind in ("mqtt", "serial")]
        ctl.backlog = lambda: sum(int(s.state().get("queued", 0)) for s in durable)
        rss = {"start": round(rss_mb(), 1)}
        progress(f"soak: {frames} frames, faults {'on' if faults else 'off'} ({disk_mode}), work dir {work}")

        injected: list[dict] = []
        schedule = _schedule(random.Random(seed), frames) if faults else []
        sinks_by_name = {s.name: s for s in svc.sinks}
        last_state: dict[str, dict] = {}

        # Faults are injected from this thread, which outlives the run: mosquitto and socat
        # die with the *thread* that started them (PR_SET_PDEATHSIG is per thread), so a
        # helper thread restarting them would take them down when it ends.
        pending = list(schedule)
        if not pending:
            ctl.injecting = False
        warm_at = max(1, frames // 10)
        next_progress = time.monotonic() + 30
        t_capture = 0.0
        # The longest time without a processed frame (the systemd watchdog's view); the
        # service's own beat count is read, so a fault injected from here is measured too.
        gap = {"max_s": 0.0, "frames": 0, "at": time.monotonic()}

        def watch_frames() -> None:
            while thread.is_alive():
                n, now = svc.stats.frames, time.monotonic()
                if n != gap["frames"]:
                    gap["frames"], gap["at"] = n, now
                elif n < frames:
                    gap["max_s"] = max(gap["max_s"], now - gap["at"])
                time.sleep(0.05)

        watcher = threading.Thread(target=watch_frames, name="soak-watchdog", daemon=True)
        watcher.start()
        while thread.is_alive():
            time.sleep(0.05)
            if "warm" not in rss and svc.stats.frames >= warm_at:
                rss["warm"] = round(rss_mb(), 1)
            with contextlib.suppress(Exception):
                last_state = {n: dict(s.state()) for n, s in sinks_by_name.items()}
            if svc.stats.frames >= frames and "end" not in rss:
                t_capture = time.monotonic() - t_start
                rss["end"] = round(rss_mb(), 1)
            if pending and svc.stats.frames >= pending[0][0]:
                _point, kind, dur = pending.pop(0)
                injected.append(_inject(kind, dur, svc.stats.frames, broker, line, ctl, outbox_dir, tmpfs,
                                        svc=svc, state_dir=state_dir if state_tmpfs else None,
                                        metrics_port=metrics_port))
                progress(f"soak: fault {kind} at frame {injected[-1]['at_frame']} for {dur} s")
                if not pending:
                    ctl.injecting = False
            if time.monotonic() >= next_progress:
                next_progress += 30
                progress(f"soak: {svc.stats.frames}/{frames} frames, {svc.stats.reads} results, "
                         f"{(svc.stats.frames / (time.monotonic() - t_start)):.1f} frames/s, RSS {rss_mb():.0f} MB")
        if errors:
            raise errors[0]
        if "end" not in rss:
            t_capture = time.monotonic() - t_start
            rss["end"] = round(rss_mb(), 1)
        rss.setdefault("warm", rss["end"])
        seconds = time.monotonic() - t_start

        # The service flushed and closed its sinks; now let the peers receive the rest.
        report = _audit(work, outbox_dir, svc, sub, plc, emits, last_state, sinks_by_name)
        from edge_runtime.bench.line import audit as audit_labels

        labels = audit_labels(_read_ledger(work / "ledger.jsonl"), holder["source"].book)
        report.update({
            "labels": {k: labels[k] for k in ("labels", "reads", "noreads", "silent_misses", "silent_labels",
                                               "duplicates", "duplicate_labels", "false_reads", "stray_noreads")},
            "max_frame_gap_s": round(gap["max_s"], 2),
            "state_disk": f"tmpfs {STATE_TMPFS_MB} MB" if state_tmpfs else "not a tmpfs (state_disk_full not injected)",
            "frames": svc.stats.frames,
            "seed": seed,
            "faults_enabled": faults,
            "disk_full_mode": disk_mode,
            "capture_seconds": round(t_capture, 1),
            "total_seconds": round(seconds, 1),
            "frames_per_s": round(svc.stats.frames / t_capture, 1) if t_capture > 0 else 0.0,
            "rss_mb": rss,
            "faults": injected,
            "service": svc.stats.counters(),
            "log": _log_counts(work / "service.log"),
            "frame_size": [width, height],
        })
        report["ok"] = (report["ids_increasing"] and report["mqtt_foreign_topics"] == []
                        and report["plc_garbage_bytes"] == 0 and report["mqtt_malformed"] == 0
                        and report["sinks"]["serial"]["unmatched_frames"] == 0
                        and all(s["unexplained"] == 0 for s in report["sinks"].values())
                        and labels["silent_misses"] == 0 and labels["duplicates"] == 0
                        and labels["false_reads"] == 0 and labels["stray_noreads"] == 0
                        and report["max_frame_gap_s"] <= 10.0
                        and all(f.get("scrape_ok", True) for f in injected))
        if keep:
            (work / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        return report
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
        log_file.close()
        if plc is not None:
            plc.stop()
        if sub is not None:
            sub.close()
        line.stop()
        broker.stop()
        if tmpfs:
            _umount(outbox_dir)
        if state_tmpfs:
            _umount(state_dir)
        if not keep and report.get("ok"):
            shutil.rmtree(work, ignore_errors=True)
        elif not keep:
            progress(f"soak: work dir kept for inspection: {work}")


# ---------------------------------------------------------------------------- the audit


def _outbox_rows(path: Path) -> list[tuple[int, bytes]]:
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [(int(r[0]), bytes(r[1])) for r in db.execute("SELECT id, payload FROM outbox ORDER BY id")]
    finally:
        db.close()


def _read_ledger(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
    return out


def _payload_bytes(r: dict) -> bytes:
    if r.get("bytes_b64"):
        return base64.b64decode(r["bytes_b64"])
    return (r.get("text") or "").encode("utf-8")


def _align_plc(ledger: list[dict], frames: list[bytes]) -> tuple[set[int], int, int]:
    """Map PLC frames back to ids: the serial sink delivers in id order, one frame per emit
    (several codes joined by ","), and a resend repeats the previous frame. Returns
    (delivered ids, duplicate frames, frames that match nothing)."""
    texts = [_payload_bytes(r) for r in ledger]
    ids = [r["id"] for r in ledger]
    delivered: set[int] = set()
    dups = unmatched = 0
    p = 0
    prev: bytes | None = None
    for body in frames:
        parts = body.split(b",")
        m = len(parts)
        if texts[p:p + m] == parts:
            delivered.update(ids[p:p + m])
            p += m
            prev = body
            continue
        if body == prev:
            dups += 1
            continue
        j = next((k for k in range(p, len(texts) - m + 1) if texts[k:k + m] == parts), None)
        if j is None:
            # Not ahead of us: an older frame delivered again (a resend after a lost ACK).
            if any(texts[k:k + m] == parts for k in range(max(0, p - 64), p)):
                dups += 1
            else:
                unmatched += 1
            continue
        delivered.update(ids[j:j + m])
        p = j + m
        prev = body
    return delivered, dups, unmatched


def account(produced: set[int], delivered: set[int], queued: set[int], failed: set[int],
            offered: set[int], dropped: int) -> dict:
    """One sink's books. `missing` = produced - delivered - queued; each missing id must be
    a counted loss: an emit the sink refused (`failed`), a result the service never offered
    it (`not_offered`: lost without the sink knowing), or one of `dropped` policy evictions
    (counted, ids unknown). What is left is `unexplained`: a silent loss."""
    failed = failed & produced
    not_offered = produced - offered
    missing = produced - delivered - queued
    unaccounted = missing - failed - not_offered
    unexplained = max(0, len(unaccounted) - dropped)
    return {
        "delivered": len(delivered & produced),
        "queued": len(queued & produced),
        "dropped": dropped,
        "emit_failed": len(failed),
        "not_offered": len(not_offered),
        "missing": len(missing),
        "unexplained": unexplained,
        "unexplained_ids": sorted(unaccounted)[:20] if unexplained else [],
        "delivered_and_queued": len(delivered & queued),
    }


def _audit(work: Path, outbox_dir: Path, svc: Any, sub: PlantSubscriber, plc: Plc, emits: _EmitLedger,
           last_state: dict[str, dict], sinks: dict[str, Any]) -> dict:
    from edge_runtime.sinks.serial_frame import unescape

    ledger = _read_ledger(work / "ledger.jsonl")
    produced = [r["id"] for r in ledger]
    produced_set = set(produced)
    by_text_order = sorted(ledger, key=lambda r: r["id"])
    mqtt_queued = {rid for rid, _ in _outbox_rows(outbox_dir / "mqtt.sqlite")}
    serial_rows = _outbox_rows(outbox_dir / "serial.sqlite")
    serial_queued: set[int] = set()
    index = {r["id"]: i for i, r in enumerate(by_text_order)}
    for rid, frame in serial_rows:
        n = len(unescape(frame[1:-1]).split(b","))  # STX body ETX: one id per code in the frame
        i = index.get(rid)
        if i is not None:
            serial_queued.update(r["id"] for r in by_text_order[i:i + n])

    topic = f"soak/{DEVICE}/result"
    expect_mqtt = produced_set - mqtt_queued - emits.failed.get("mqtt", set())
    deadline = time.monotonic() + 90
    stable_since, last_n = time.monotonic(), -1
    while time.monotonic() < deadline:
        got = set(sub.ids(topic))
        n = sub.count(topic) + len(plc.snapshot())
        if n != last_n:
            last_n, stable_since = n, time.monotonic()
        if expect_mqtt <= got and time.monotonic() - stable_since > 2.0:
            break
        if time.monotonic() - stable_since > 15.0:
            break  # nothing new for 15 s: what is missing will not come
        time.sleep(0.2)

    mqtt_ids = sub.ids(topic)
    plc_delivered, plc_dups, plc_unmatched = _align_plc(by_text_order, plc.snapshot())
    out_sinks = {}
    for name, delivered, dups, queued in (
        ("mqtt", set(mqtt_ids) & produced_set, len(mqtt_ids) - len(set(mqtt_ids)), mqtt_queued),
        ("serial", plc_delivered, plc_dups, serial_queued),
    ):
        sink = sinks.get(name)
        outbox = getattr(sink, "_outbox", None)
        dropped = int(getattr(outbox, "dropped", last_state.get(name, {}).get("dropped", 0)) or 0)
        out_sinks[name] = account(produced_set, delivered, queued, emits.failed.get(name, set()),
                                  set(emits.offered.get(name, ())), dropped)
        out_sinks[name]["duplicates"] = dups
    out_sinks["serial"]["unmatched_frames"] = plc_unmatched
    # replies to the flood's MQTT commands are the service's own; the commands are the flood's
    foreign = sorted(t for t in sub.topics()
                     if t not in (topic, *(f"soak/{DEVICE}/{x}" for x in ("status", "reply", "cmd"))))
    return {
        "results": len(produced),
        "ids_increasing": produced == sorted(produced_set),
        "sinks": out_sinks,
        "mqtt_foreign_topics": foreign,
        "mqtt_malformed": sum(1 for i in mqtt_ids if i not in produced_set),
        "plc_garbage_bytes": plc.garbage,
        "plc_reopens": plc.reopens,
    }


def _log_counts(path: Path) -> dict:
    counts = {"lines": 0, "warning": 0, "error": 0}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                counts["lines"] += 1
                with contextlib.suppress(ValueError):
                    lvl = json.loads(line).get("level")
                    if lvl in counts:
                        counts[lvl] += 1
    except OSError:
        pass
    return counts


def summary(r: dict) -> str:
    lines = [
        f"soak: {r['frames']} frames in {r['capture_seconds']} s = {r['frames_per_s']} frames/s; "
        f"{r['results']} results; RSS start {r['rss_mb']['start']} MB, after warm-up {r['rss_mb']['warm']} MB, "
        f"end {r['rss_mb']['end']} MB",
        f"faults: {len(r['faults'])} injected ({', '.join(sorted({f['kind'] for f in r['faults']})) or 'none'}); "
        f"outbox disk: {r['disk_full_mode']}",
    ]
    lab = r.get("labels", {})
    if lab:
        lines.append(f"labels {lab['labels']}: reads {lab['reads']}, noreads {lab['noreads']}, silent misses "
                     f"{lab['silent_misses']}, duplicates {lab['duplicates']}, false reads {lab['false_reads']}; "
                     f"longest gap without a frame {r['max_frame_gap_s']} s")
    for name, s in r["sinks"].items():
        lines.append(
            f"{name:7s} delivered {s['delivered']}, queued {s['queued']}, dropped {s['dropped']}, "
            f"emit failed {s['emit_failed']}, not offered {s['not_offered']}, duplicates {s['duplicates']}, "
            f"missing {s['missing']}, unexplained {s['unexplained']}")
    lines.append("verdict: " + ("OK - every result delivered, queued or counted" if r["ok"] else "FAILED - see report"))
    return "\n".join(lines)
