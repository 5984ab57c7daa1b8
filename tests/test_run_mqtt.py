"""`edge-runtime run` against a real mosquitto: nothing lost when the broker or we go down."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.publish as publish

from mosquitto import HOST, Subscriber, make_broker  # noqa: F401 - fixture
from waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
DEV = "mqtt-e2e"
TOPIC = f"edge/{DEV}/result"


def write_config(tmp_path: Path, port: int, *, extra: str = "", labels_per_s: float = 4.0) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(f"""
device_id = "{DEV}"
state_dir = "{tmp_path / 'state'}"
status_interval_s = 1.0
{extra}
[source]
kind = "synthetic"
realtime = true
degradations = false
labels_per_s = {labels_per_s}

[[sinks]]
kind = "jsonl"
name = "ref"
path = "{tmp_path / 'ref.jsonl'}"
fsync = true

[[sinks]]
kind = "mqtt"
name = "plant"
host = "{HOST}"
port = {port}
qos = 1
""")
    return p


def ref_ids(tmp_path: Path) -> list[int]:
    f = tmp_path / "ref.jsonl"
    return [json.loads(x)["id"] for x in f.read_text().splitlines()] if f.exists() else []


def got_ids(sub: Subscriber) -> list[int]:
    return [json.loads(p)["id"] for p in sub.on(TOPIC)]


def first_arrivals(ids: list[int]) -> list[int]:
    seen, out = set(), []
    for i in ids:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def spawn(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "--config", str(config)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def terminate(p: subprocess.Popen) -> str:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    return out.decode(errors="replace")


def test_broker_stopped_mid_run_and_restarted_all_ids_arrive_in_order(make_broker, tmp_path):
    b = make_broker(persistence=True).start()
    sub = Subscriber(b.port, [TOPIC, f"edge/{DEV}/status"], client_id="e2e-restart", clean_session=False).start()
    p = spawn(write_config(tmp_path, b.port))
    try:
        assert sub.wait_for(lambda: len(got_ids(sub)) >= 3, timeout=60), "no results over MQTT"
        b.stop()
        n = len(ref_ids(tmp_path))
        wait_for(lambda: len(ref_ids(tmp_path)) >= n + 4, what="results emitted while the broker is down")
        b.start()
        n = len(ref_ids(tmp_path))
        wait_for(lambda: len(ref_ids(tmp_path)) >= n + 2, what="results after the broker is back")
        assert sub.wait_for(lambda: set(got_ids(sub)) >= set(ref_ids(tmp_path)), timeout=60)
        status = [json.loads(x) for x in sub.on(f"edge/{DEV}/status")]
        assert any(s.get("state") == "online" and s.get("frames", 0) > 0 and "plant" in s.get("sinks", {})
                   for s in status), status[-3:]
    finally:
        log = terminate(p)
        sub.close()
    assert p.returncode == 0, log[-2000:]
    ref = ref_ids(tmp_path)
    assert ref == sorted(set(ref)) and len(ref) >= 9
    got = got_ids(sub)
    assert set(got) == set(ref), sorted(set(ref) - set(got))
    assert first_arrivals(got) == ref, "first arrivals must be in id order"


def test_runtime_sigkilled_and_restarted_delivers_its_outbox(make_broker, tmp_path):
    b = make_broker()  # down while the first process runs: everything stays in the outbox
    config = write_config(tmp_path, b.port)
    p = spawn(config)
    try:
        wait_for(lambda: len(ref_ids(tmp_path)) >= 5, timeout=60, what="results queued while the broker is down")
    finally:
        p.kill()
        p.wait(10)
    queued = ref_ids(tmp_path)
    b.start()
    sub = Subscriber(b.port, TOPIC).start()
    p = spawn(config)
    try:
        assert sub.wait_for(lambda: set(got_ids(sub)) >= set(queued), timeout=60), \
            sorted(set(queued) - set(got_ids(sub)))
        n = len(ref_ids(tmp_path))
        wait_for(lambda: len(ref_ids(tmp_path)) >= n + 2, what="new results from the second run")
    finally:
        log = terminate(p)
    try:
        assert p.returncode == 0, log[-2000:]
        ref = ref_ids(tmp_path)
        assert ref == sorted(set(ref)), "ids reused across the SIGKILL"
        assert sub.wait_for(lambda: set(got_ids(sub)) >= set(ref), timeout=30)
        assert first_arrivals(got_ids(sub)) == ref
    finally:
        sub.close()


def test_mqtt_trigger_single_mode(make_broker, tmp_path):
    b = make_broker().start()
    config = write_config(tmp_path, b.port, extra="")
    config.write_text(config.read_text() + '\n[trigger]\nmode = "single"\nsource = "mqtt"\n')
    status = f"edge/{DEV}/status"
    sub = Subscriber(b.port, [TOPIC, status]).start()
    p = spawn(config)
    cmd = f"edge/{DEV}/cmd"
    try:
        assert sub.wait_for(lambda: any(json.loads(x)["state"] == "online" for x in sub.on(status)), timeout=60)
        time.sleep(0.5)  # the command subscription goes out right after connect
        assert got_ids(sub) == []
        publish.single(cmd, json.dumps({"cmd": "trigger", "state": "on"}), hostname=HOST, port=b.port, qos=1)
        assert sub.wait_for(lambda: len(got_ids(sub)) == 1, timeout=30)
        publish.single(cmd, "LOFF", hostname=HOST, port=b.port, qos=1)
        publish.multiple([{"topic": cmd, "payload": "LON", "qos": 1}, {"topic": cmd, "payload": "LOFF", "qos": 1}],
                         hostname=HOST, port=b.port)
        assert sub.wait_for(lambda: len(got_ids(sub)) >= 2, timeout=30)
        time.sleep(1.0)
    finally:
        log = terminate(p)
        sub.close()
    assert p.returncode == 0, log[-2000:]
    results = [json.loads(x) for x in sub.on(TOPIC)]
    kinds = [r["kind"] for r in first_unique(results)]
    assert kinds[0] == "read" and kinds[1:] in (["noread"], ["read"]) and len(kinds) == 2, kinds


def first_unique(results: list[dict]) -> list[dict]:
    seen, out = set(), []
    for r in results:
        if r["id"] not in seen:
            seen.add(r["id"])
            out.append(r)
    return out


def test_status_command_is_answered_within_1s(make_broker, tmp_path):
    """The documented `status` command: the service's handler built a status and nobody sent it."""
    b = make_broker().start()
    config = write_config(tmp_path, b.port)
    # only the command can make a status appear during the test, not the periodic one
    config.write_text(config.read_text().replace("status_interval_s = 1.0", "status_interval_s = 3600"))
    status, reply, cmd = f"edge/{DEV}/status", f"edge/{DEV}/reply", f"edge/{DEV}/cmd"
    sub = Subscriber(b.port, [status, reply]).start()
    p = spawn(config)
    try:
        assert sub.wait_for(lambda: any(json.loads(x)["state"] == "online" for x in sub.on(status)), timeout=60)
        time.sleep(1.0)  # the command subscription goes out right after connect
        first = json.loads(sub.on(status)[-1])
        n = len(sub.on(status))
        t0 = time.monotonic()
        publish.single(cmd, json.dumps({"cmd": "status"}), hostname=HOST, port=b.port, qos=1)
        assert sub.wait_for(lambda: len(sub.on(status)) > n, timeout=1.0), "no status within 1 s of the command"
        assert time.monotonic() - t0 < 1.0
        fresh = json.loads(sub.on(status)[-1])
        assert fresh["state"] == "online" and fresh["ts"] > first["ts"] and "plant" in fresh.get("sinks", {}), fresh
        publish.single(cmd, "reload", hostname=HOST, port=b.port, qos=1)
        assert sub.wait_for(lambda: sub.on(reply), timeout=5.0), "no reply to reload"
        assert json.loads(sub.on(reply)[0])["cmd"] == "reload" and json.loads(sub.on(reply)[0])["ok"] is True
    finally:
        log = terminate(p)
        sub.close()
    assert p.returncode == 0, log[-2000:]
