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

from mosquitto import HOST, Broker, broker  # noqa: F401 - fixture
from pg import postgres  # noqa: F401 - fixture

from edge_runtime.fleet.db import open_db
from waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 10
FRAMES = 200  # at 10 fps: 20 s of line per device
STALLED = DEVICES - 1  # this device's camera stalls after 60 frames; it is the one killed for the Last Will


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
    broker = Broker(tmp / "broker", persistence=True).start()
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


# ---- smaller, deterministic cases ---------------------------------------------------------

def result(device: str, i: int, **kw) -> dict:
    d = {"id": i, "device_id": device, "ts": "2026-12-03T08:15:12.117Z", "kind": "read", "text": f"LOT-{i:06d}",
         "format": "QRCode", "corners": [[1.0, 2.0], [3.0, 2.0], [3.0, 4.0], [1.0, 4.0]], "decoder": "zxing",
         "stage": "direct", "frame": i, "latency_ms": 1.5, "first_seen": "2026-12-03T08:15:12.117Z",
         "last_seen": "2026-12-03T08:15:12.117Z", "frames": 1}
    d.update(kw)
    return d


def publish(port: int, msgs: list[tuple[str, bytes]]) -> None:
    """QoS 1, each acknowledged by the broker before returning."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{time.monotonic_ns()}")
    c.connect(HOST, port)
    c.loop_start()
    try:
        for topic, payload in msgs:
            c.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


def start_collector(cfg: Path, log: Path) -> subprocess.Popen:
    n = log_text(log).count("connected to")
    p = spawn(["collect", "--config", str(cfg)], log)
    wait_for(lambda: log_text(log).count("connected to") > n or p.poll() is not None, 30, "the collector to connect")
    assert p.poll() is None, log_text(log)
    time.sleep(0.5)  # SUBACK
    return p


def stored_ids(url: str) -> list[tuple[str, int]]:
    db = open_db(url)
    try:
        return [(r["device_id"], r["id"]) for r in db.results()]
    finally:
        db.close()


@pytest.mark.parametrize("shared", [False, True])
def test_broker_restart_while_the_collector_is_away(tmp_path: Path, shared: bool) -> None:
    """What mosquitto (2.0.11 here) keeps of a stopped collector's session over its own restart:
    a plain subscription, so results published meanwhile are stored when the collector is back;
    not a $share subscription, so those results match no one and are gone. This is why the
    collector reconnects faster than the devices, and why a single collector should use
    `shared = false` (README, Broker clusters). If a newer broker restores shared subscriptions,
    the shared case fails here: update the README."""
    url = f"sqlite://{tmp_path / 'r.db'}"
    with Broker(tmp_path / "broker", persistence=True) as broker:
        cfg = collector_config(tmp_path, 0, broker.port, url, batch_ms=20, shared=shared)
        log = tmp_path / "collector.log"
        p = start_collector(cfg, log)
        publish(broker.port, [("edge/d1/result", json.dumps(result("d1", 1)).encode())])
        wait_for(lambda: stored_ids(url) == [("d1", 1)], 20, "the first result")
        assert stop(p) == 0
        publish(broker.port, [("edge/d1/result", json.dumps(result("d1", 2)).encode())])  # queued in the session
        broker.restart()
        publish(broker.port, [("edge/d1/result", json.dumps(result("d1", 3)).encode())])  # nobody subscribed yet
        p = start_collector(cfg, log)
        try:
            expected = [("d1", 1), ("d1", 2), ("d1", 3)] if not shared else [("d1", 1), ("d1", 2)]
            wait_for(lambda: stored_ids(url) == expected, 20, f"stored {expected}")
            publish(broker.port, [("edge/d1/result", json.dumps(result("d1", 4)).encode())])
            wait_for(lambda: stored_ids(url) == [*expected, ("d1", 4)], 20, "the result after the restart")
        finally:
            assert stop(p) == 0


def test_malformed_messages_are_counted_acknowledged_and_not_fatal(tmp_path: Path, broker) -> None:
    url = f"sqlite://{tmp_path / 'r.db'}"
    cfg = collector_config(tmp_path, 0, broker.port, url, batch_ms=20)
    log = tmp_path / "collector.log"
    p = start_collector(cfg, log)
    bad = [
        ("edge/d1/result", b"\xff\xfe not utf-8"),
        ("edge/d1/result", b"{not json"),
        ("edge/d1/result", b"[1, 2]"),
        ("edge/d1/result", json.dumps({"id": 5, "device_id": "d1"}).encode()),  # fields missing
        ("edge/d1/result", json.dumps(result("d2", 6)).encode()),  # another device's id on d1's topic
        ("edge/d1/result", json.dumps(result("d1", 0)).encode()),  # id must be >= 1
        ("edge/d1/result", json.dumps(result("d1", 2**63)).encode()),  # beyond BIGINT
        ("edge/d1/result", json.dumps(result("d1", 7, ts="yesterday")).encode()),
        ("edge/d1/status", b'{"state": "sleepy"}'),
    ]
    good = [("edge/d1/result", json.dumps(result("d1", 8, text="A\u0000B")).encode()),
            ("edge/d1/result", json.dumps(result("d1", 9)).encode()),
            ("edge/d1/result", json.dumps(result("d1", 9)).encode())]  # a redelivery: stored once
    publish(broker.port, bad + good)
    wait_for(lambda: stored_ids(url) == [("d1", 8), ("d1", 9)], 20, "the valid results")
    assert p.poll() is None
    assert stop(p) == 0
    [stats] = stopped_stats(log)
    assert stats["malformed"] == len(bad), stats
    assert (stats["stored"], stats["duplicates"]) == (2, 1), stats
    text = log_text(log)
    assert "Traceback" not in text
    assert "malformed message on 'edge/d1/result' acknowledged and dropped (it can never be stored): not UTF-8" in text
    assert "device_id 'd2' is not the topic's 'd1'" in text
    # Acknowledged, so the broker does not give them back to the restarted collector.
    p = start_collector(cfg, log)
    time.sleep(1.5)
    assert stop(p) == 0
    assert stopped_stats(log)[-1]["malformed"] == 0
    db = open_db(url)
    try:
        nul = [r for r in db.results() if r["id"] == 8][0]["payload"]["text"]
    finally:
        db.close()
    assert nul == "A\ufffdB"  # NUL cannot be stored in PostgreSQL text/jsonb: U+FFFD, exact bytes in bytes_b64


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_collector_config_errors_are_one_line_each(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('grup = "x"\ntopic_prefix = "a/+"\n[broker]\nport = "1883"\nhots = "x"\n'
                   '[db]\nurl = "mysql://x"\nbatch_size = 0\npassword_env = "NO_SUCH_VAR_FOR_EDGE_TEST"\n')
    p = run_cli("collect", "--config", str(cfg))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert "Traceback" not in p.stderr
    for key in ("grup", "topic_prefix", "broker.port", "broker.hots", "db.url", "db.batch_size", "db.password_env"):
        assert sum(f": {key}:" in line for line in lines) == 1, (key, lines)
    assert all(line.startswith(f"{cfg}: ") for line in lines), lines
    assert len(lines) == 7, lines
    p = run_cli("collect", "--config", str(tmp_path / "missing.toml"))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "cannot read" in p.stderr, p.stderr
    cfg.write_text('[db]\nurl = "postgresql://nobody@127.0.0.1:1/x"\n')
    p = run_cli("collect", "--config", str(cfg))
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith("edge-runtime: error: db postgresql://nobody@127.0.0.1:1/x: cannot connect:"), p.stderr
    assert p.stderr.count("\n") == 1, p.stderr


def test_fleet_errors_are_one_line(tmp_path: Path) -> None:
    for url, want in ((f"sqlite://{tmp_path / 'none.db'}", "no such database file"),
                      ("mysql://x/y", "expected sqlite:///path or postgresql://"),
                      ("postgresql://u:secret@127.0.0.1:1/x", "cannot connect")):
        p = run_cli("fleet", "--db", url)
        assert p.returncode == 2, p
        assert p.stderr.count("\n") == 1 and want in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert "secret" not in p.stderr


def test_database_outage_acknowledges_nothing_and_loses_nothing(tmp_path: Path, broker, postgres) -> None:  # noqa: F811
    """PostgreSQL goes away mid-run: the collector keeps the batch unacknowledged and retries; it
    is even SIGKILLed during the outage. Once the database is back (and the collector restarted),
    the broker's redelivery fills the table: every result once."""
    cfg = collector_config(tmp_path, 0, broker.port, postgres.url, batch_ms=20)
    log = tmp_path / "collector.log"
    p = start_collector(cfg, log)
    try:
        publish(broker.port, [("edge/d1/result", json.dumps(result("d1", i)).encode()) for i in (1, 2)])
        wait_for(lambda: stored_ids(postgres.url) == [("d1", 1), ("d1", 2)], 20, "the first results")
        # Outage 1: the same collector retries and stores the held batch once the database is back.
        postgres.halt()
        publish(broker.port, [("edge/d1/result", json.dumps(result("d1", i)).encode()) for i in (3, 4, 5)])
        wait_for(lambda: "nothing of this batch is acknowledged" in log_text(log), 20, "the collector to notice")
        postgres.start()
        wait_for(lambda: stored_ids(postgres.url) == [("d1", i) for i in range(1, 6)], 60, "the held batch")
        # Outage 2: the collector is SIGKILLed with the batch in hand, never acknowledged.
        n = log_text(log).count("nothing of this batch is acknowledged")
        postgres.halt()
        publish(broker.port, [("edge/d1/result", json.dumps(result("d1", i)).encode()) for i in (6, 7)])
        wait_for(lambda: log_text(log).count("nothing of this batch is acknowledged") > n, 20, "the collector to notice")
        assert p.poll() is None
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        postgres.start()
        p = start_collector(cfg, log)
        want = [("d1", i) for i in range(1, 8)]
        wait_for(lambda: stored_ids(postgres.url) == want, 30, "every result after the outage")
    finally:
        assert stop(p) == 0
    assert "Traceback" not in log_text(log)
