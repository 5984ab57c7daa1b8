"""Model rollout units: keys, the signed bundle's checks, the read-rate rule, the device side's
install/switch/fallback/restore with the real shipped model files through the real runtimes, the
[model] config rules, and `models promote` against a real SQLite database and a real mosquitto."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from mosquitto import HOST, broker  # noqa: F401 - fixture

from edge_runtime import config as config_mod
from edge_runtime.fleet.db import open_db
from edge_runtime.fleet.rows import iso, result_row, status_row
from edge_runtime.rollout import bundle, keys
from edge_runtime.rollout.device import Rollout
from edge_runtime.rollout.monitor import MIN_BASELINE, RateMonitor

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


@pytest.fixture(scope="module")
def signing(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    public = keys.generate(d / "sign.pem")
    return keys.load_private(d / "sign.pem"), public


@pytest.fixture(scope="module")
def shipped():
    return bundle.read_model_dir(MODELS)


def renamed(shipped, version: str):
    manifest, files = shipped
    return {**manifest, "version": version}, files


# ---- keys and bundles ------------------------------------------------------------------------
def test_keygen_never_overwrites_and_public_key_rules(tmp_path):
    public = keys.generate(tmp_path / "k.pem")
    assert keys.public_problem(public) is None
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    with pytest.raises(keys.KeyProblem, match="already exists"):
        keys.generate(tmp_path / "k.pem")
    assert "base64" in keys.public_problem("not base64!")
    assert "32 bytes" in keys.public_problem("AAAA")
    (tmp_path / "rsa.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(keys.KeyProblem, match="rsa.pem"):
        keys.load_private(tmp_path / "rsa.pem")


def test_bundle_round_trip_and_every_refusal(signing, shipped, tmp_path):
    key, public = signing
    pub = keys.load_public(public)
    manifest, files = renamed(shipped, "2.0.0")
    msg = bundle.pack(manifest, files, "canary", key)
    assert len(msg) <= bundle.MAX_BYTES
    b = bundle.verify(msg, pub, "canary")
    assert b.version == "2.0.0" and b.files == files and b.manifest == manifest

    other = keys.generate(tmp_path / "other.pem")
    with pytest.raises(bundle.Refused, match="bad signature"):
        bundle.verify(msg, keys.load_public(other), "canary")
    with pytest.raises(bundle.Refused, match="signed for channel 'canary', this device follows 'stable'"):
        bundle.verify(msg, pub, "stable")  # re-published on stable by someone without the key
    flipped = bytearray(msg)
    flipped[len(msg) // 2] ^= 1
    with pytest.raises(bundle.Refused, match="bad signature"):
        bundle.verify(bytes(flipped), pub, "canary")  # changed after signing
    with pytest.raises(bundle.Refused, match="sha256 mismatch"):
        bundle.verify(bundle.sign(bytes(flipped[:-bundle.SIG_BYTES]), key), pub, "canary")  # a corrupt build, signed
    with pytest.raises(bundle.Refused, match="not a model bundle"):
        bundle.verify(b"hello" * 20, pub, "canary")
    with pytest.raises(bundle.Refused, match="larger than"):
        bundle.verify(b"x" * (bundle.MAX_BYTES + 1), pub, "canary")
    # a manifest that lists another sha256 than the file sent
    bad = json.loads(json.dumps(manifest))
    first = next(iter(bad["files"]))
    bad["files"][first]["sha256"] = "0" * 64
    with pytest.raises(bundle.Refused, match="not in its manifest"):
        bundle.verify(bundle.pack(bad, files, "canary", key), pub, "canary")
    with pytest.raises(bundle.Refused, match="folder"):
        bundle.verify(bundle.pack({**manifest, "version": "../x"}, files, "canary", key), pub, "canary")
    # promotion: the same model signed for stable
    stable = bundle.resign(msg, "stable", key)
    assert bundle.verify(stable, pub, "stable").files == files
    with pytest.raises(bundle.Refused, match="channel"):
        bundle.verify(stable, pub, "canary")


def test_publishing_refuses_a_damaged_folder(tmp_path, shipped):
    manifest, files = shipped
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert bundle.read_model_dir(tmp_path)[0]["version"] == manifest["version"]
    name = next(iter(files))
    (tmp_path / name).write_bytes(files[name][:-1])
    with pytest.raises(bundle.Refused, match="sha256 mismatch"):
        bundle.read_model_dir(tmp_path)


# ---- the read-rate rule ----------------------------------------------------------------------
def feed(m: RateMonitor, reads: int, noreads: int):
    verdicts = [m.record(True) for _ in range(reads)] + [m.record(False) for _ in range(noreads)]
    return [v for v in verdicts if v is not None]


def test_monitor_falls_back_only_when_worse_by_more_than_x_points():
    m = RateMonitor(items=100, points=5)
    feed(m, 95, 5)  # 95 % on the previous model
    m.switched()
    assert m.judging
    (v,) = feed(m, 89, 11)  # 89 %: 6 points worse
    assert v.fall_back and v.rate == 0.89 and v.baseline == 0.95
    m = RateMonitor(items=100, points=5)
    feed(m, 95, 5)
    m.switched()
    (v,) = feed(m, 91, 9)  # 4 points worse: kept
    assert not v.fall_back
    assert feed(m, 0, 200) == []  # judged once per switch


def test_monitor_without_a_baseline_does_not_judge():
    m = RateMonitor(items=500, points=5)
    feed(m, MIN_BASELINE - 1, 0)
    m.switched()
    assert not m.judging and feed(m, 0, 600) == []


# ---- the device side, real model files through the real runtimes ------------------------------
def model_cfg(public: str, items: int = 60, points: float = 5.0) -> dict:
    return {"channel": "canary", "public_key": public, "fallback_items": items, "fallback_points": points, "sink": None}


def reader_with_shipped():
    from edge_runtime.detect import choose

    c = choose("auto", model_dir=MODELS)
    return SimpleNamespace(detector=c.detector, model_version=c.version, model_fallback=None)


def wait_swap(r: Rollout, reader, version: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while reader.model_version != version:
        assert time.monotonic() < deadline, f"no switch to {version}; last event {r.last_event}"
        time.sleep(0.05)
        r.poll(reader)


def test_device_installs_switches_falls_back_and_restores(signing, shipped, tmp_path):
    key, public = signing
    reader = reader_with_shipped()
    base_det = reader.detector
    r = Rollout(model_cfg(public), str(tmp_path), "edge")
    r.apply(reader)
    r.start()
    try:
        for _ in range(100):
            r.record(True, reader)  # 100 % on the shipped model: the baseline
        r.offer(bundle.pack(*renamed(shipped, "3.0.0"), "canary", key))
        wait_swap(r, reader, "3.0.0")
        assert reader.detector is not base_det and reader.detector.version == "3.0.0"
        assert r.state()["judging"]["judging"] and r.state()["last_event"]["event"] == "installed"
        saved = json.loads((tmp_path / "models" / "rollout.json").read_text())
        assert saved["active"] == "3.0.0" and saved["judging"]["baseline"] == 1.0
        for i in range(60):
            r.record(i % 10 != 0, reader)  # 90 %: 10 points worse
        assert reader.model_version != "3.0.0" and reader.detector is base_det  # back on the shipped model
        st = r.state()
        assert st["last_event"]["event"] == "fell_back" and st["rejected"] == ["3.0.0"] and st["fallbacks"] == 1
        # offered again (a reconnect re-sends the retained bundle): not installed again
        r.offer(bundle.pack(*renamed(shipped, "3.0.0"), "canary", key))
        time.sleep(1.0)
        r.poll(reader)
        assert reader.detector is base_det
        # a better one is taken, judged, kept
        r.offer(bundle.pack(*renamed(shipped, "3.1.0"), "canary", key))
        wait_swap(r, reader, "3.1.0")
        for _ in range(60):
            r.record(True, reader)
        assert reader.model_version == "3.1.0" and r.state()["judging"] == {"judging": False}
    finally:
        r.close()
    # a restart: the same state_dir brings 3.1.0 back, checked and self-tested again
    reader2 = reader_with_shipped()
    r2 = Rollout(model_cfg(public), str(tmp_path), "edge")
    r2.apply(reader2)
    r2.start()
    try:
        wait_swap(r2, reader2, "3.1.0")
        assert r2.state()["rejected"] == ["3.0.0"]
    finally:
        r2.close()
    # damaged on disk since: refused at start, the config's model runs
    (tmp_path / "models" / "3.1.0" / "qr_detector_int8.tflite").write_bytes(b"0")
    reader3 = reader_with_shipped()
    r3 = Rollout(model_cfg(public), str(tmp_path), "edge")
    r3.apply(reader3)
    r3.start()
    try:
        deadline = time.monotonic() + 30
        while (r3.last_event or {}).get("event") != "refused":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r3.poll(reader3)
        assert reader3.model_version == reader_with_shipped().model_version
    finally:
        r3.close()


def test_device_refuses_on_a_full_disk_and_keeps_running(signing, shipped, tmp_path):
    key, public = signing
    reader = reader_with_shipped()
    before = reader.model_version
    (tmp_path / "models").write_text("not a folder")  # mkdir fails like a read-only or full state_dir
    r = Rollout(model_cfg(public), str(tmp_path), "edge")
    r.apply(reader)
    r.start()
    try:
        r.offer(bundle.pack(*renamed(shipped, "4.0.0"), "canary", key))
        deadline = time.monotonic() + 30
        while r.refusals == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r.poll(reader)
        assert reader.model_version == before and "cannot write" in r.last_event["detail"]
    finally:
        r.close()


# ---- config ------------------------------------------------------------------------------------
def problems(doc: dict) -> list[str]:
    base = {"source": {"kind": "synthetic"}, "sinks": [{"kind": "mqtt", "name": "plant", "host": "localhost"}]}
    try:
        config_mod.from_dict({**base, "state_dir": "/tmp/x-rollout-cfg", **doc})
    except config_mod.ConfigError as e:
        return e.problems
    return []


def test_model_config_rules(signing):
    _, public = signing
    assert problems({"model": {"channel": "canary", "public_key": public}}) == []
    assert problems({"model": {"channel": "canary"}})[0].endswith(
        "model.channel: needs model.public_key (the line 'edge-runtime models keygen' prints)")
    assert any("model.public_key" in p and "base64" in p for p in problems({"model": {"channel": "canary", "public_key": "x y"}}))
    assert any("model.channel" in p for p in problems({"model": {"channel": "a/b", "public_key": public}}))
    assert any("model.sink" in p for p in problems({"model": {"channel": "c", "public_key": public, "sink": "nope"}}))
    assert any("needs a [[sinks]] entry" in p for p in problems({"model": {"channel": "c", "public_key": public},
                                                                 "sinks": [{"kind": "stdout"}]}))
    assert any("model.fallback_points" in p for p in problems({"model": {"fallback_points": float("nan")}}))
    assert any("model.fallback_items" in p for p in problems({"model": {"fallback_items": 5}}))


# ---- promotion ---------------------------------------------------------------------------------
def seed(db, devices: dict[str, tuple[str, str, float]], now: datetime) -> None:
    """devices: id -> (channel, model, read rate); 200 results each over the last 30 minutes."""
    since = iso(now - timedelta(minutes=40))
    statuses, results = [], []
    for dev, (channel, model, rate) in devices.items():
        st = {"state": "online", "device_id": dev, "ts": iso(now), "model": model,
              "model_rollout": {"channel": channel, "since": since}}
        statuses.append(status_row(dev, json.dumps(st).encode(), iso(now)))
        for i in range(200):
            kind = "read" if i < rate * 200 else "noread"
            r = {"id": i + 1, "device_id": dev, "ts": iso(now - timedelta(minutes=30) + timedelta(seconds=i)),
                 "kind": kind, "text": "x" if kind == "read" else None, "format": "QR", "corners": [],
                 "decoder": "zxing", "stage": "direct", "frame": i, "latency_ms": 1.0, "first_seen": 0,
                 "last_seen": 0, "frames": 1}
            results.append(result_row(dev, json.dumps(r).encode(), iso(now)))
    db.write(results, statuses)


def test_promote_refuses_a_worse_canary_and_publishes_a_better_one(broker, signing, shipped, tmp_path):  # noqa: F811
    from edge_runtime.fleet.config import load
    from edge_runtime.rollout.plant import fetch, publish

    key, public = signing
    key_file = tmp_path / "sign.pem"
    from cryptography.hazmat.primitives import serialization

    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    plant = tmp_path / "plant.toml"
    plant.write_text(f'topic_prefix = "edge"\n[broker]\nhost = "{HOST}"\nport = {broker.port}\n')
    cfg = load(str(plant), need_db=False)
    now = datetime.now(timezone.utc)

    def promote(url: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edge_runtime", "models", "promote", "--from", "canary",
                               "--to", "stable", "--db", url, "--key", str(key_file), "--config", str(plant)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    worse = f"sqlite:///{tmp_path / 'worse.db'}"
    db = open_db(worse)
    seed(db, {"c1": ("canary", "5.0.0", 0.90), "s1": ("stable", "1.2.0", 0.97), "s2": ("stable", "1.2.0", 0.95)}, now)
    db.close()
    out = promote(worse)
    assert "nothing is published on channel 'canary'" in out.stderr and out.returncode == 1
    publish(cfg, "canary", bundle.pack(*renamed(shipped, "5.0.0"), "canary", key))
    out = promote(worse)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "promote refused: model 5.0.0 reads worse than stable: canary 90.00% (1 device(s), 200 items) < " \
           "stable 96.00% (2 device(s), 400 items)" in out.stderr
    assert fetch(cfg, "stable") is None  # nothing was published

    better = f"sqlite:///{tmp_path / 'better.db'}"
    db = open_db(better)
    seed(db, {"c1": ("canary", "5.0.0", 0.98), "c2": ("canary", "1.2.0", 0.10),  # c2 does not run 5.0.0 yet
              "s1": ("stable", "1.2.0", 0.97)}, now)
    db.close()
    view = subprocess.run([sys.executable, "-m", "edge_runtime", "fleet", "--db", better, "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert {r["device_id"]: (r["channel"], r["model"]) for r in json.loads(view.stdout)} == {
        "c1": ("canary", "5.0.0"), "c2": ("canary", "1.2.0"), "s1": ("stable", "1.2.0")}
    out = promote(better)
    assert out.returncode == 0, out.stderr
    assert "promoted model 5.0.0 from canary to stable: canary 98.00% (1 device(s), 200 items)" in out.stdout
    b = bundle.verify(fetch(cfg, "stable"), keys.load_public(public), "stable")
    assert b.version == "5.0.0"
