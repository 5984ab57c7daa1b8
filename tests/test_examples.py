"""The shipped examples, run as a user runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from mosquitto import Broker

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_every_example_passes_check_config(monkeypatch):
    for path in sorted(EXAMPLES.glob("*.toml")):
        p = cli("check-config", str(path), env={**os.environ, "EDGE_MQTT_PASSWORD": "x"})
        assert p.returncode == 0, (path.name, p.stderr)


def test_the_full_example_fails_on_its_camera_before_any_sink_opens_or_state_is_written(tmp_path):
    """Repro: it connected to the broker, created outboxes and warned about /dev/ttyUSB0,
    and only then failed on /dev/video0."""
    state = tmp_path / "state"
    text = (EXAMPLES / "config.toml").read_text()
    text = text.replace('state_dir = "/var/lib/edge-runtime"', f'state_dir = "{state}"')
    text = text.replace('path = "/var/lib/edge-runtime/results.jsonl"', f'path = "{tmp_path / "r.jsonl"}"')
    assert str(state) in text
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    p = cli("run", "--config", str(cfg), env={**os.environ, "EDGE_MQTT_PASSWORD": "x"})
    assert p.returncode == 2
    assert "source: camera /dev/video0" in p.stderr and "Traceback" not in p.stderr
    out = p.stdout + p.stderr
    assert "ttyUSB0" not in out and "mqtt" not in out.lower()  # no sink was started
    assert not state.exists() and not (tmp_path / "r.jsonl").exists()  # no state written


def test_the_synthetic_mqtt_example_runs_as_documented(tmp_path):
    """The README's two lines: run it, watch `edge/#` on the broker."""
    broker = Broker().start()
    try:
        text = (EXAMPLES / "synthetic-mqtt.toml").read_text()
        # Only what a test must change: its own broker's port and a private home.
        text = re.sub(r"^port = 1883$", f"port = {broker.port}", text, flags=re.M)
        cfg = tmp_path / "synthetic-mqtt.toml"
        cfg.write_text(text)
        env = {**os.environ, "HOME": str(tmp_path / "home")}
        seen: list[tuple[str, dict]] = []
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sub.on_message = lambda c, u, m: seen.append((m.topic, json.loads(m.payload)))
        sub.connect("127.0.0.1", broker.port)
        sub.subscribe("edge/#", qos=1)
        sub.loop_start()
        proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "--config", str(cfg)], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and sum(t == "edge/demo-line/result" for t, _ in seen) < 3:
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
            sub.loop_stop()
        assert proc.returncode == 0, err[-2000:]
        results = [p for t, p in seen if t == "edge/demo-line/result"]
        assert len(results) >= 3 and all(r["device_id"] == "demo-line" for r in results)
        assert any(t == "edge/demo-line/status" for t, _ in seen)
        ledger = tmp_path / "home" / ".local/state/edge-runtime-example/results.jsonl"
        ids = [json.loads(x)["id"] for x in ledger.read_text().splitlines()]
        assert {r["id"] for r in results} <= set(ids)
    finally:
        broker.stop()
