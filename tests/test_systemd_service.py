"""`edge-runtime run` speaking the systemd notify protocol, as systemd would see it.

Plays systemd's part with a real AF_UNIX datagram socket as NOTIFY_SOCKET and WATCHDOG_USEC=2 s
(so the service pings every second): READY=1 after start-up, WATCHDOG=1 while frames flow and
none once the capture loop is stuck (the synthetic source's stall_after), RELOADING=1/READY=1
around SIGHUP, STOPPING=1 and exit status 0 on SIGTERM with the outbox intact.

The MQTT sink points at a port where no broker listens, so every result stays in its outbox:
after the stop, the outbox must hold exactly the results the jsonl sink saw.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from edge_runtime.outbox import Outbox

WATCHDOG_USEC = 2_000_000
START_TIMEOUT = 90.0  # imports + model load on a loaded 2-core machine


class FakeSystemd:
    """Receives the service's datagrams in a thread; every message is kept with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def fields(self, since: float = 0.0) -> list[tuple[float, str]]:
        """Every KEY=VALUE line received after `since` (a datagram may carry several)."""
        with self._lock:
            msgs = list(self.messages)
        return [(t, f) for t, m in msgs if t >= since for f in m.split("\n")]

    def wait_for(self, field: str, proc: subprocess.Popen, timeout: float, since: float = 0.0) -> float:
        """Arrival time of the first `field` (exact line, or a prefix ending in '=') after `since`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, f in self.fields(since):
                if f == field or (field.endswith("=") and f.startswith(field)):
                    return t
            if proc.poll() is not None:
                time.sleep(0.3)  # the last datagrams may still be in flight
                for t, f in self.fields(since):
                    if f == field or (field.endswith("=") and f.startswith(field)):
                        return t
                raise AssertionError(f"service exited ({proc.returncode}) before sending {field}; got {self.fields()}")
            time.sleep(0.05)
        raise AssertionError(f"no {field} within {timeout}s; got {self.fields()[-20:]}")

    def pings(self, since: float = 0.0) -> list[float]:
        return [t for t, f in self.fields(since) if f == "WATCHDOG=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, state: Path, *, stall_after: int = 0, device_id: str = "sd-test") -> None:
    path.write_text(f"""
device_id = "{device_id}"
state_dir = "{state}"
status_interval_s = 1.0
shutdown_timeout_s = 1.0
[reader]
detector = "none"
[source]
kind = "synthetic"
realtime = true
fps = 10.0
width = 640
height = 480
labels_per_s = 3.0
speed_px_s = 200.0
degradations = false  # every label readable: the test is about the protocol, not the reader
stall_after = {stall_after}
[log]
format = "json"
[[sinks]]
kind = "jsonl"
name = "audit"
path = "{state}/results.jsonl"
[[sinks]]
kind = "mqtt"
name = "plant"
host = "127.0.0.1"
port = {_free_port()}
""")


@pytest.fixture
def service(tmp_path):
    """Starts `python -m edge_runtime run --config FILE` under a fake systemd; returns a starter."""
    started: list[tuple[subprocess.Popen, FakeSystemd]] = []
    dirs: list[Path] = []

    def start(config: Path) -> tuple[subprocess.Popen, FakeSystemd, Path]:
        # A short directory, not tmp_path: AF_UNIX paths are limited to 107 bytes.
        sock_dir = Path(tempfile.mkdtemp(prefix="sdn-"))
        dirs.append(sock_dir)
        fake = FakeSystemd(sock_dir / "notify.sock")
        env = {**os.environ, "NOTIFY_SOCKET": str(fake.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        env.pop("WATCHDOG_PID", None)
        log = open(tmp_path / "service.log", "w")  # noqa: SIM115 - closed at teardown
        proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "--config", str(config)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        started.append((proc, fake))
        return proc, fake, tmp_path / "service.log"

    yield start
    for proc, fake in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        fake.close()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def wait_ready(proc: subprocess.Popen, fake: FakeSystemd, log: Path) -> float:
    """READY=1's arrival. Fails fast (not after START_TIMEOUT) when the service logs that it
    runs but never says so to systemd: Service.run() does not call Notifier.ready()."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            return fake.wait_for("READY=1", proc, timeout=1.0)
        except AssertionError:
            if proc.poll() is not None:
                raise
        if '"event": "started"' in log.read_text():
            try:
                return fake.wait_for("READY=1", proc, timeout=10.0)
            except AssertionError:
                raise AssertionError("the service logged that it runs, but sent no READY=1 to NOTIFY_SOCKET "
                                     "(is edge_runtime/service/loop.py wired to notify.py? docs/systemd.md)") from None
    raise AssertionError(f"no READY=1 within {START_TIMEOUT}s; log: {log.read_text()[-2000:]}")


def stop_and_check(proc: subprocess.Popen, fake: FakeSystemd) -> None:
    """SIGTERM -> STOPPING=1, then exit status 0 well within TimeoutStopSec=30."""
    t_term = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    fake.wait_for("STOPPING=1", proc, timeout=30, since=t_term)
    assert proc.wait(30) == 0


def outbox_ids(path: Path) -> list[int]:
    """Result ids waiting in an outbox file, after an integrity check of the database."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()
    box = Outbox(str(path))
    try:
        return [rid for rid, _ in box.peek(limit=1_000_000)]
    finally:
        box.close()


def test_ready_watchdog_status_and_clean_stop(tmp_path, service):
    state = tmp_path / "state"
    cfg = tmp_path / "cfg.toml"
    write_config(cfg, state)
    proc, fake, log = service(cfg)

    t_ready = wait_ready(proc, fake, log)
    # Pings keep arriving while frames flow (one a second): wait for several, all after READY=1.
    deadline = time.monotonic() + 30
    while len(fake.pings()) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    pings = fake.pings()
    assert len(pings) >= 4, fake.fields()[-20:]
    assert pings[0] >= t_ready
    fake.wait_for("STATUS=", proc, timeout=20, since=t_ready)
    # Wait until a few results went to both sinks, then stop.
    deadline = time.monotonic() + 60
    results = state / "results.jsonl"
    while time.monotonic() < deadline and (not results.exists() or len(results.read_text().splitlines()) < 2):
        time.sleep(0.2)
    stop_and_check(proc, fake)

    delivered = [json.loads(line)["id"] for line in results.read_text().splitlines()]
    assert len(delivered) >= 2
    # No broker: every result is still in the MQTT outbox, which was closed cleanly.
    assert outbox_ids(state / "outbox-plant.sqlite") == sorted(delivered)


def test_watchdog_pings_stop_when_the_capture_loop_is_stuck(tmp_path, service):
    state = tmp_path / "state"
    cfg = tmp_path / "cfg.toml"
    write_config(cfg, state, stall_after=40)  # 4 s of frames at 10 fps, then every read blocks
    proc, fake, log = service(cfg)
    wait_ready(proc, fake, log)
    fake.wait_for("WATCHDOG=1", proc, timeout=30)  # frames flowed and were pinged for

    # Then silence: systemd (WatchdogSec=2 s) would kill and restart the service. Wait for a
    # quiet gap of twice the watchdog interval while the process is alive and stuck.
    gap = 2 * WATCHDOG_USEC / 1e6
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        last = (fake.pings() or [0.0])[-1]
        if time.monotonic() - last >= gap:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the service must hang, not exit, for the watchdog to matter"
    last = fake.pings()[-1]
    assert time.monotonic() - last >= gap, f"still pinging while stalled: {fake.pings()[-10:]}"
    # ...and stays silent.
    time.sleep(1.5)
    assert fake.pings()[-1] == last
    # Even stuck, SIGTERM stops it cleanly (reads time out, the loop sees the stop).
    stop_and_check(proc, fake)


def test_reload_is_announced_and_an_invalid_config_keeps_the_service_running(tmp_path, service):
    state = tmp_path / "state"
    cfg = tmp_path / "cfg.toml"
    write_config(cfg, state)
    proc, fake, log = service(cfg)
    wait_ready(proc, fake, log)
    fake.wait_for("WATCHDOG=1", proc, timeout=30)

    # A valid change: RELOADING=1 (with MONOTONIC_USEC for systemd >= 253), then READY=1.
    cfg.write_text(cfg.read_text().replace("labels_per_s = 3.0", "labels_per_s = 2.0"))
    t0 = time.monotonic()
    proc.send_signal(signal.SIGHUP)
    t_reloading = fake.wait_for("RELOADING=1", proc, timeout=30, since=t0)
    fake.wait_for("MONOTONIC_USEC=", proc, timeout=5, since=t0)
    t_ready = fake.wait_for("READY=1", proc, timeout=30, since=t_reloading)

    # An invalid file is refused: still READY=1 (systemd leaves "reloading"), and frames flow on.
    cfg.write_text(cfg.read_text().replace('kind = "synthetic"', 'kind = "no-such-source"'))
    t1 = time.monotonic()
    proc.send_signal(signal.SIGHUP)
    t_reloading = fake.wait_for("RELOADING=1", proc, timeout=30, since=t1)
    fake.wait_for("READY=1", proc, timeout=30, since=t_reloading)
    t2 = time.monotonic()
    fake.wait_for("WATCHDOG=1", proc, timeout=30, since=t2)
    assert proc.poll() is None
    assert t_ready < t1
    stop_and_check(proc, fake)
