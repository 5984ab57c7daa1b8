"""The plant side end to end: 10 `edge-runtime run` devices -> real mosquitto (MQTT 5 shared
subscription) -> `edge-runtime collect` -> a real PostgreSQL (3 collectors) or SQLite (1).

One collector is SIGKILLed mid-run and restarted with the same client id (its session, and the
share the broker kept in it, resume), the broker is restarted once; at the end the table holds
every result of every device's jsonl sink exactly once. `edge-runtime fleet` shows the devices
with their read rates, and a SIGKILLed device as offline through its Last Will.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from mosquitto import HOST, Broker
from pg import postgres  # noqa: F401 - fixture

from edge_runtime.fleet.db import open_db

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 10
FRAMES = 200  # at 10 fps: 20 s of line per device
STALLED = DEVICES - 1  # this device's camera stalls after 60 frames; it is the one killed for the Last Will


def wait_for(pred, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def device_config(tmp: Path, i: int, port: int) -> Path:
    d = tmp / f"dev{i}"
    d.mkdir()
    p = d / "config.toml"
    stall = "stall_after = 60" if i == STALLED else ""
    p.write_text(f"""
device_id = "line{i}"
state_dir = "{d / 'state'}"
status_interval_s = 1.0
[log]
level = "warning"
[reader]
detector = "none"
[source]
kind = "synthetic"
realtime = true
degradations = false
width = 320
height = 240
fps = 10
frames = {FRAMES}
labels_per_s = 3
speed_px_s = 300
seed = {i}
{stall}
[[sinks]]
kind = "jsonl"
name = "ref"
path = "{d / 'ref.jsonl'}"
fsync = true
[[sinks]]
kind = "mqtt"
name = "plant"
host = "{HOST}"
port = {port}
qos = 1
outbox = "{d / 'outbox.sqlite'}"
""")
    return p


def collector_config(tmp: Path, i: int, port: int, url: str, batch_ms: int = 300, shared: bool = True) -> Path:
    p = tmp / f"collector{i}.toml"
    p.write_text(f"""
shared = {str(shared).lower()}
group = "plant"
topic_prefix = "edge"
client_id = "collector-{i}"
[broker]
host = "{HOST}"
port = {port}
keepalive = 10
session_expiry_s = 3600
[db]
url = "{url}"
batch_ms = {batch_ms}
""")
    return p


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    f = open(log, "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen([sys.executable, "-m", "edge_runtime", *args], cwd=ROOT, stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        f.close()


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def fleet_json(url: str) -> list[dict]:
    p = subprocess.run([sys.executable, "-m", "edge_runtime", "fleet", "--db", url, "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def db_count(url: str) -> dict[str, int]:
    db = open_db(url)
    try:
        _, agg = db.fleet_rows(__import__("datetime").datetime.now(__import__("datetime").timezone.utc))
    finally:
        db.close()
    return {a["device_id"]: int(a["results"]) for a in agg}


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def stopped_stats(path: Path) -> list[dict]:
    """The counters each life of a collector logged when it stopped cleanly."""
    import ast

    out = []
    for line in log_text(path).splitlines():
        if "collector stopped {" in line:
            out.append(ast.literal_eval(line[line.index("collector stopped {") + len("collector stopped "):]))
    return out


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"pid {proc.pid} did not stop within {timeout} s on signal {sig}") from None
    return proc.returncode


def run_line(tmp: Path, url: str, collectors: int, shared: bool = True) -> None:
    t0 = time.monotonic()
    broker = Broker(tmpdir=tmp / "broker", persistence=True).start()
    procs: list[subprocess.Popen] = []
    try:
        ccfg = [collector_config(tmp, c, broker.port, url, shared=shared) for c in range(collectors)]
        clog = [tmp / f"collector{c}.log" for c in range(collectors)]
        cols = [spawn(["collect", "--config", str(ccfg[c])], clog[c]) for c in range(collectors)]
        procs += cols
        for c in range(collectors):
            wait_for(lambda c=c: "connected to" in log_text(clog[c]) or cols[c].poll() is not None, 30,
                     f"collector {c} to connect")
            assert cols[c].poll() is None, log_text(clog[c])

        devs = [spawn(["run", "--config", str(device_config(tmp, i, broker.port))], tmp / f"dev{i}" / "log")
                for i in range(DEVICES)]
        procs += devs
        # Mid-run: results from every device are arriving.
        wait_for(lambda: len(db_count(url)) == DEVICES, 60, "results from all devices in the db")

        # A collector dies without a word and its service manager starts it again (same id).
        victim = 0
        cols[victim].send_signal(signal.SIGKILL)
        cols[victim].wait(10)
        time.sleep(1.5)
        cols[victim] = spawn(["collect", "--config", str(ccfg[victim])], clog[victim])
        procs.append(cols[victim])
        wait_for(lambda: "session present: True" in log_text(clog[victim]), 30, "the restarted collector's session")

        # The broker restarts once (graceful: its persistence db keeps the collectors' sessions).
        time.sleep(2.0)
        broker.restart()

        # The fleet view: all devices, online, with read rates (the stalled one has stopped
        # producing but is still online).
        dev_stalled = f"line{STALLED}"
        ref_stalled = tmp / f"dev{STALLED}" / "ref.jsonl"

        def all_online():
            rows = fleet_json(url)
            ok = (len(rows) == DEVICES and all(r["state"] == "online" for r in rows)
                  and all(r["reads_1h"] > 0 and r["read_rate"] is not None for r in rows))
            return rows if ok else None

        rows = wait_for(all_online, 60, "fleet to show 10 online devices with read rates", every=1.0)
        print("\nfleet while running:", [(r["device_id"], r["state"], r["results"], r["read_rate"]) for r in rows])
        wait_for(lambda: db_count(url).get(dev_stalled, 0) == len(jsonl(ref_stalled)) > 0, 60,
                 "the stalled device's results in the db")
        devs[STALLED].send_signal(signal.SIGKILL)
        devs[STALLED].wait(10)

        def stalled_offline():
            rows = fleet_json(url)
            r = {x["device_id"]: x for x in rows}
            return rows if r[dev_stalled]["state"] == "offline" else None

        rows = wait_for(stalled_offline, 30, f"{dev_stalled} offline in the fleet view (Last Will)", every=0.5)
        assert sum(r["state"] == "online" for r in rows) == DEVICES - 1, rows
        print("fleet after the kill:", [(r["device_id"], r["state"]) for r in rows])

        # The others finish their frames and exit on their own (their outboxes drained).
        for i, d in enumerate(devs):
            if i != STALLED:
                assert d.wait(120) == 0, log_text(tmp / f"dev{i}" / "log")[-3000:]
        refs = {f"line{i}": jsonl(tmp / f"dev{i}" / "ref.jsonl") for i in range(DEVICES)}
        total = sum(len(v) for v in refs.values())
        wait_for(lambda: sum(db_count(url).values()) >= total, 60, f"{total} results in the db")
        for c in cols:
            assert stop(c) == 0

        db = open_db(url)
        try:
            stored = db.results()
        finally:
            db.close()
        by_dev: dict[str, dict[int, dict]] = {}
        for r in stored:
            by_dev.setdefault(r["device_id"], {})[r["id"]] = r["payload"]
        lost = dup = wrong = 0
        for dev, results in refs.items():
            ids = [r["id"] for r in results]
            assert len(ids) == len(set(ids)), f"{dev}: its own jsonl repeats an id"
            got = by_dev.get(dev, {})
            lost += len(set(ids) - set(got))
            dup += len(set(got) - set(ids))  # rows that are no result of the device's
            wrong += sum(1 for r in results if r["id"] in got and got[r["id"]] != r)
        dup += len(stored) - len({(r["device_id"], r["id"]) for r in stored})
        stats = [s for p in clog for s in stopped_stats(p)]
        redelivered = sum(s["duplicates"] for s in stats)
        print(f"{len(stored)} stored / {total} produced by {DEVICES} devices through {collectors} collector(s): "
              f"{lost} lost, {dup} duplicated, {wrong} differing; redeliveries ignored (clean stops only): "
              f"{redelivered}; malformed {sum(s['malformed'] for s in stats)}; wall {time.monotonic() - t0:.1f} s")
        assert set(by_dev) == set(refs)
        assert (lost, dup, wrong) == (0, 0, 0)
        assert len(stored) == total
        assert all(s["malformed"] == 0 for s in stats), stats
        for c in range(collectors):
            assert "Traceback" not in log_text(clog[c]), log_text(clog[c])[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        broker.close()


def test_ten_devices_three_collectors_postgresql(tmp_path: Path, postgres) -> None:  # noqa: F811
    run_line(tmp_path, postgres.url, collectors=3)


def test_ten_devices_one_collector_sqlite(tmp_path: Path) -> None:
    run_line(tmp_path, f"sqlite://{tmp_path / 'results.db'}", collectors=1)
