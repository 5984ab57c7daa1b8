"""Power cut: `edge-runtime run` SIGKILLed at random moments, run after run.

The sinks are ordered mqtt, serial, stdout. The service hands a result to the sinks in that
order and a durable sink's emit returns only once the result is committed to its outbox, so
a result printed on stdout (read through a pipe, which survives the kill) must already be in
both outboxes. The broker and the PLC are unreachable during the cuts, so nothing may leave
an outbox: every printed result must be found there after every kill, the sqlite files must
pass an integrity check, and ids must never repeat or go backwards. At the end the peers come
back and everything printed in any run must reach them.
"""

from __future__ import annotations

import collections
import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from edge_runtime.bench.peers import Broker, Plc, PlantSubscriber, SerialLine, free_port
from edge_runtime.outbox import Outbox
from edge_runtime.sinks.serial_frame import unescape

ROOT = Path(__file__).resolve().parents[1]
RUNS = 8


def write_config(tmp: Path, port: int, serial_dev: str) -> Path:
    p = tmp / "powercut.toml"
    p.write_text(f"""
device_id = "pc"
state_dir = "{tmp / 'state'}"
shutdown_timeout_s = 10
[log]
format = "json"
[source]
kind = "synthetic"
realtime = false
width = 640
height = 360
labels_per_s = 10.0
degradations = false
[[sinks]]
kind = "mqtt"
name = "mqtt"
host = "127.0.0.1"
port = {port}
outbox = "{tmp / 'mqtt.sqlite'}"
[[sinks]]
kind = "serial"
name = "serial"
port = "{serial_dev}"
ack = true
reopen_interval_s = 0.2
outbox = "{tmp / 'serial.sqlite'}"
[[sinks]]
kind = "stdout"
""")
    return p


class Run:
    """One `edge-runtime run` with its stdout (results) collected line by line."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "--config", str(config)],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lines: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def results(self) -> list[dict]:
        self.thread.join(20)
        out = []
        for line in self.lines:
            assert line.endswith(b"\n"), f"a torn result line on stdout: {line[:80]!r}"
            out.append(json.loads(line))
        return out


def outbox_rows(path: Path) -> list[tuple[int, bytes]]:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return [(r[0], bytes(r[1])) for r in db.execute("SELECT id, payload FROM outbox ORDER BY id")]
    finally:
        db.close()


def serial_texts(rows: list[tuple[int, bytes]]) -> collections.Counter:
    c: collections.Counter = collections.Counter()
    for _, frame in rows:
        assert frame[:1] == b"\x02" and frame[-1:] == b"\x03", frame[:40]
        c.update(unescape(frame[1:-1]).split(b","))
    return c


def wait_for(pred, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_sigkill_at_random_moments_never_loses_a_result(tmp_path):
    rng = random.Random(20261125)
    port = free_port()
    line = SerialLine(tmp_path / "serial")  # not started: the PLC's adapter is unplugged
    config = write_config(tmp_path, port, line.dev)
    printed: list[dict] = []
    cut_before_results = 0
    for n in range(RUNS):
        run = Run(config)
        try:
            if n % 4 == 3:
                # A cut during start-up (imports, opening the outboxes, the first frames).
                time.sleep(rng.uniform(0.2, 2.0))
            else:
                assert wait_for(lambda: len(run.lines) >= 1, 60), "the service printed no result"
                time.sleep(rng.uniform(0.0, 1.5))
        finally:
            run.proc.send_signal(signal.SIGKILL)
            run.proc.wait(20)
        assert run.proc.returncode == -signal.SIGKILL
        got = run.results()
        cut_before_results += not got
        printed += got

        ids = [r["id"] for r in printed]
        assert ids == sorted(set(ids)), f"run {n}: an id repeated or went backwards across SIGKILL"
        mqtt_rows = outbox_rows(tmp_path / "mqtt.sqlite")
        queued = {}
        for rid, payload in mqtt_rows:
            doc = json.loads(payload)  # every stored payload is a whole, valid result
            assert doc["id"] == rid
            queued[rid] = doc
        lost = [i for i in ids if i not in queued]
        assert not lost, f"run {n}: results printed before the kill are not in the MQTT outbox: {lost[:10]}"
        assert all(queued[r["id"]] == r for r in printed)
        need = collections.Counter(r["text"].encode() for r in printed)
        have = serial_texts(outbox_rows(tmp_path / "serial.sqlite"))
        assert not (need - have), f"run {n}: printed results missing from the serial outbox: {need - have}"
        # The outbox opens cleanly after the cut, with its size accounting intact.
        ob = Outbox(str(tmp_path / "mqtt.sqlite"))
        assert ob.depth() == len(mqtt_rows) and ob._bytes == sum(len(p) for _, p in mqtt_rows)
        ob.close()
    assert len(printed) >= 20, "too few results to say anything"

    # The peers come back: everything printed in any run reaches the plant and the PLC.
    broker = Broker(tmp_path / "broker", port=port, persistence=True)
    broker.start()
    sub = PlantSubscriber(port, "edge/pc/result").start()
    line.start()
    plc = Plc(line)
    plc.start()
    run = Run(config)
    try:
        want = {r["id"] for r in printed}
        assert wait_for(lambda: want <= set(sub.ids("edge/pc/result")), 90), \
            f"not delivered after the cuts: {sorted(want - set(sub.ids('edge/pc/result')))[:10]}"
        need = collections.Counter(r["text"].encode() for r in printed)
        def at_plc() -> collections.Counter:
            return collections.Counter(t for frame in plc.snapshot() for t in frame.split(b","))

        assert wait_for(lambda: not (need - at_plc()), 90), f"not delivered to the PLC: {need - at_plc()}"
    finally:
        run.proc.send_signal(signal.SIGTERM)
        try:
            run.proc.wait(30)
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
        plc.stop()
        sub.close()
        line.stop()
        broker.stop()
    assert run.proc.returncode == 0
