"""Configuration and environment faults: every one ends in one line naming what to fix.

- every key of every section, source kind and sink kind given a value of the wrong type
  (generated from the registries, so a new key is covered the day it is added);
- missing files (config, folder, video, TLS CA), a state_dir or jsonl path under a file;
- devices that cannot be used: a camera that is not there or is not a camera, a serial
  port that is not a tty (the service keeps running, results wait in the outbox);
- a broker refusing the credentials and TLS with the wrong CA: one log line naming the
  problem, retried with backoff, every result kept in the outbox, and delivered once the
  config is fixed and reloaded (SIGHUP).
"""

from __future__ import annotations

import importlib
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_runtime import capture
from edge_runtime import config as config_mod
from edge_runtime import sinks as sink_registry
from edge_runtime.bench.peers import Broker
from edge_runtime.config import ConfigError, _opt_for, type_ok

ROOT = Path(__file__).resolve().parents[1]
BASE_SOURCE = '[source]\nkind = "synthetic"\n'
BASE_SINK = '[[sinks]]\nkind = "stdout"\n'
# TOML literals and their Python values, in order of preference for "a wrong type".
CANDIDATES = [('"wrong"', "wrong"), ("7", 7), ("7.5", 7.5), ("true", True), ("[1, 2]", [1, 2]), ("{ a = 1 }", {"a": 1})]
X_STR, PATH_STR = '"x"', '"/tmp/x"'
REQUIRED_VALUES = {"path": '"/tmp"', "device": "0", "url": '"rtsp://127.0.0.1/x"',
                   "pipeline": '"videotestsrc ! appsink"', "port": '"/dev/ttyUSB0"'}


def wrong_literal(types: tuple | None) -> str:
    if not types:
        return "[1, 2]"  # no declared type: an array is wrong for every scalar option we have
    return next(lit for lit, val in CANDIDATES if not type_ok(val, types))


def wrong_type_cases() -> list[tuple[str, str]]:
    """(dotted key, config text with only that key wrong) for every key we know of."""
    cases = []
    for k, o in config_mod.TOP.items():
        cases.append((k, f"{k} = {wrong_literal(o.types)}\n{BASE_SOURCE}{BASE_SINK}"))
    for sec, spec in config_mod.SECTIONS.items():
        for k, o in spec.items():
            cases.append((f"{sec}.{k}", f"[{sec}]\n{k} = {wrong_literal(o.types)}\n{BASE_SOURCE}{BASE_SINK}"))
    for kind in capture.KINDS:
        defaults, keys, required, types = capture.spec(kind)
        for k in sorted(keys):
            lines = [f'kind = "{kind}"', *(f"{r} = {REQUIRED_VALUES.get(r, X_STR)}" for r in sorted(required) if r != k),
                     f"{k} = {wrong_literal(tuple(types.get(k) or (type(defaults[k]),)))}"]
            cases.append((f"source.{k}@{kind}", "[source]\n" + "\n".join(lines) + "\n" + BASE_SINK))
    for kind, target in sink_registry.KINDS.items():
        mod = importlib.import_module(target.split(":")[0])
        defaults, types = getattr(mod, "DEFAULTS", {}), getattr(mod, "TYPES", None) or {}
        required = getattr(mod, "REQUIRED", ())
        for k in sorted(getattr(mod, "KEYS", ())):
            opt = _opt_for(k, defaults.get(k), types.get(k))
            lines = [f'kind = "{kind}"', *(f"{r} = {REQUIRED_VALUES.get(r, PATH_STR)}" for r in sorted(required) if r != k),
                     f"{k} = {wrong_literal(opt.types if opt else None)}"]
            cases.append((f"sinks[0].{k}@{kind}", BASE_SOURCE + "[[sinks]]\n" + "\n".join(lines) + "\n"))
    return cases


CASES = wrong_type_cases()


@pytest.mark.parametrize("key,text", CASES, ids=[c[0] for c in CASES])
def test_each_key_with_a_wrong_type_is_one_line_naming_it(tmp_path, key, text):
    path = tmp_path / "config.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n' + text if not key.startswith("state_dir") else text)
    dotted = key.split("@")[0]
    try:
        config_mod.load(str(path))
    except ConfigError as exc:
        problems = exc.problems
    else:
        pytest.fail(f"{dotted} with a wrong type was accepted:\n{text}")
    assert len(problems) == 1, problems
    line = problems[0]
    assert line.startswith(f"{path}: {dotted}:"), line
    assert "\n" not in line and ("expected" in line or "must" in line), line


def test_the_generated_cases_cover_every_kind():
    kinds = {c[0].split("@")[1] for c in CASES if "@" in c[0]}
    with_keys = {k for k, t in sink_registry.KINDS.items() if getattr(importlib.import_module(t.split(":")[0]), "KEYS", ())}
    assert kinds == set(capture.KINDS) | with_keys
    assert len(CASES) > 60


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("sink_lines,key", [
    ('kind = "mqtt"\npassword_env = ["MQTT_PW"]', "sinks[0].password_env"),
    ('kind = "mqtt"\ntls = "ca.pem"', "sinks[0].tls"),
    ('kind = "serial"\nport = "/dev/ttyUSB0"\nbaudrate = "fast"', "sinks[0].baudrate"),
    ('kind = "jsonl"\npath = 7', "sinks[0].path"),
    # A string "false" is truthy: accepted, it would switch the broker hostname check off.
    ('kind = "mqtt"\ntls = { insecure = "false" }', "sinks[0].tls.insecure"),
])
def test_check_config_prints_one_line_and_exits_2(tmp_path, sink_lines, key):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'state_dir = "{tmp_path}"\n{BASE_SOURCE}[[sinks]]\n{sink_lines}\n')
    p = run_cli("check-config", str(cfg))
    assert p.returncode == 2, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{cfg}: {key}:"), p.stderr[-2000:]


# ------------------------------------------------------------------------- missing things


def start_failure(tmp_path: Path, body: str) -> str:
    """`edge-runtime run` with `body` must exit 2 with exactly one error line: return it."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(body)
    p = run_cli("run", "--config", str(cfg))
    assert p.returncode == 2, p.stdout[-1000:] + p.stderr[-1000:]
    assert "Traceback" not in p.stdout + p.stderr, p.stderr[-3000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("edge-runtime: error:")]
    config_lines = [ln for ln in p.stderr.splitlines() if ln.startswith(f"{cfg}")]
    assert len(errors) + len(config_lines) == 1, p.stderr[-2000:]
    return (errors or config_lines)[0]


def test_missing_config_file(tmp_path):
    p = run_cli("run", "--config", str(tmp_path / "nope.toml"))
    assert p.returncode == 2 and p.stderr.strip() == f"{tmp_path / 'nope.toml'}: cannot read: No such file or directory"


@pytest.mark.parametrize("source,needle", [
    ('kind = "folder"\npath = "/nonexistent/labels"', "/nonexistent/labels"),
    ('kind = "video"\npath = "/nonexistent/line3.mp4"', "/nonexistent/line3.mp4"),
    ('kind = "camera"\ndevice = "/dev/video99"', "/dev/video99"),
])
def test_missing_source_is_one_line_naming_it(tmp_path, source, needle):
    line = start_failure(tmp_path, f'state_dir = "{tmp_path / "s"}"\n[source]\n{source}\n{BASE_SINK}')
    assert line.startswith("edge-runtime: error: source:") and needle in line


def test_camera_that_is_not_a_camera(tmp_path):
    fake = tmp_path / "video0"
    fake.write_bytes(b"not a v4l2 device")
    line = start_failure(tmp_path, f'state_dir = "{tmp_path / "s"}"\n[source]\nkind = "camera"\ndevice = "{fake}"\n'
                                   f'[[sinks]]\nkind = "jsonl"\npath = "{tmp_path / "o.jsonl"}"\n')
    assert line.startswith("edge-runtime: error: source:") and str(fake) in line


def test_missing_tls_ca_file_names_the_key(tmp_path):
    line = start_failure(tmp_path, f'state_dir = "{tmp_path / "s"}"\n{BASE_SOURCE}[[sinks]]\nkind = "mqtt"\n'
                                   'tls = { ca_file = "/nonexistent/plant-ca.pem" }\n')
    assert "sinks[0].tls.ca_file" in line and "/nonexistent/plant-ca.pem" in line


def test_state_dir_and_jsonl_under_a_file(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    line = start_failure(tmp_path, f'state_dir = "{blocker / "state"}"\n{BASE_SOURCE}{BASE_SINK}')
    assert line.startswith("edge-runtime: error: state_dir") and str(blocker / "state") in line
    line = start_failure(tmp_path, f'state_dir = "{tmp_path / "s"}"\n{BASE_SOURCE}[[sinks]]\nkind = "jsonl"\n'
                                   f'path = "{blocker / "out.jsonl"}"\n')
    assert "sinks[0]" in line and str(blocker / "out.jsonl") in line


# ---------------------------------------------------------------------- unusable devices


def wait_for(pred, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return bool(pred())


def test_serial_port_that_is_not_a_tty_keeps_results_in_the_outbox(tmp_path, caplog):
    """The service starts, says once which port is unusable and why, and queues every result."""
    from edge_runtime.service.loop import Service

    not_a_tty = tmp_path / "ttyUSB0"
    not_a_tty.write_bytes(b"")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "s"}"\n[source]\nkind = "synthetic"\nrealtime = false\nframes = 150\n'
                   f'width = 640\nheight = 360\ndegradations = false\n'
                   f'[[sinks]]\nkind = "serial"\nport = "{not_a_tty}"\nreopen_interval_s = 0.2\noutbox = "{tmp_path / "o.sqlite"}"\n'
                   f'[[sinks]]\nkind = "jsonl"\npath = "{tmp_path / "o.jsonl"}"\n')
    caplog.set_level(logging.INFO)
    svc = Service(config_mod.load(str(cfg)))
    t = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    assert wait_for(lambda: svc.stats.frames >= 150 or not t.is_alive(), 60)
    t.join(60)
    assert not t.is_alive()
    produced = [json.loads(x)["id"] for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(produced) >= 5
    db = sqlite3.connect(tmp_path / "o.sqlite")
    queued = [r[0] for r in db.execute("SELECT id FROM outbox ORDER BY id")]
    db.close()
    assert queued == produced, "results for an unusable port must wait in the outbox"
    lines = [r.getMessage() for r in caplog.records if str(not_a_tty) in r.getMessage()]
    assert len(lines) == 1, lines  # one line per outage, not one per retry
    assert "not available" in lines[0] and "\n" not in lines[0]


# ------------------------------------------------------------ broker refuses us, wrong CA


class Svc:
    """`edge-runtime run` in a subprocess, its JSON log lines collected from stdout."""

    def __init__(self, cfg: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "--config", str(cfg)], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.logs: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.logs.append(json.loads(line))
            except ValueError:
                self.logs.append({"msg": line.decode(errors="replace"), "level": "raw"})

    def msgs(self, needle: str) -> list[str]:
        return [e["msg"] for e in list(self.logs) if needle in e.get("msg", "")]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def outbox_depth(path: Path) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    finally:
        db.close()


def mqtt_config(tmp: Path, port: int, mqtt_lines: str) -> str:
    return (f'device_id = "cf"\nstate_dir = "{tmp / "state"}"\n[source]\nkind = "synthetic"\nrealtime = true\n'
            f'width = 640\nheight = 360\nlabels_per_s = 4.0\n'
            f'[[sinks]]\nkind = "mqtt"\nname = "plant"\nhost = "127.0.0.1"\nport = {port}\n'
            f'outbox = "{tmp / "outbox.sqlite"}"\n{mqtt_lines}\n'
            f'[[sinks]]\nkind = "jsonl"\nname = "ledger"\npath = "{tmp / "ledger.jsonl"}"\n')


def refused_then_fixed(tmp_path: Path, broker: Broker, bad: str, good: str, needle: str, broker_says: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(mqtt_config(tmp_path, broker.port, bad))
    svc = Svc(cfg)
    outbox = tmp_path / "outbox.sqlite"
    try:
        assert wait_for(lambda: svc.msgs(needle), 60), [e.get("msg") for e in svc.logs][-10:]
        # Retried with backoff: the broker sees several attempts, the log has one line.
        assert wait_for(lambda: broker.log_path.read_text(errors="replace").count(broker_says) >= 3, 60), \
            broker.log_path.read_text(errors="replace")[-2000:]
        assert wait_for(lambda: outbox_depth(outbox) >= 5, 60)
        lines = svc.msgs(needle)
        assert len(lines) == 1 and f"127.0.0.1:{broker.port}" in lines[0] and "outbox" in lines[0], lines
        ledger = tmp_path / "ledger.jsonl"
        produced = len(ledger.read_text().splitlines())
        assert outbox_depth(outbox) >= produced - 1  # everything produced is queued (one may be in flight)
        # Fix the config and reload: every queued result is acknowledged by the broker.
        cfg.write_text(mqtt_config(tmp_path, broker.port, good))
        svc.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: svc.msgs("reloaded"), 60), [e.get("msg") for e in svc.logs][-10:]
        assert wait_for(lambda: outbox_depth(outbox) <= 1, 60), outbox_depth(outbox)
        assert not svc.msgs("Traceback") and not [e for e in svc.logs if "exc" in e]
    finally:
        assert svc.stop() == 0


def test_broker_refusing_credentials(tmp_path):
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "line3", "s3cret"], check=True, capture_output=True)
    broker = Broker(tmp_path / "broker", persistence=False, anonymous=False, extra=f"password_file {pw}").start()
    try:
        refused_then_fixed(tmp_path, broker, 'username = "line3"\npassword = "wrong"',
                           'username = "line3"\npassword = "s3cret"', "refused the connection", "not authorised")
    finally:
        broker.stop()


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def test_tls_with_the_wrong_ca(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    for ca in ("plant-ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN={ca}",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "plant-ca.crt", "-CAkey", "plant-ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=d)
    broker = Broker(tmp_path / "broker", persistence=False,
                    extra=f"cafile {d}/plant-ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key").start()
    try:
        refused_then_fixed(tmp_path, broker, f'tls = {{ ca_file = "{d}/other-ca.crt" }}',
                           f'tls = {{ ca_file = "{d}/plant-ca.crt" }}', "certificate verification failed",
                           "New connection from")
    finally:
        broker.stop()
