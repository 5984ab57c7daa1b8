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
import math
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


# ------------------------------------------- values that type-check but are bad (issue 15)

SYNTH = BASE_SOURCE
JSONL = '[[sinks]]\nkind = "jsonl"\npath = "/tmp/r.jsonl"\n'
# (body, key, says): each reproduces a report of issue 15 items 8 and 9. All passed
# check-config before; on the line they broke delivery, looped, or ended in a traceback.
ISSUE_15 = [
    ('device_id = "a\\nb"\n' + SYNTH + BASE_SINK, "device_id", "printable"),
    ('device_id = "line3\\u202e1mac"\n' + SYNTH + BASE_SINK, "device_id", "printable"),
    ('device_id = "line3\\u0007"\n' + SYNTH + BASE_SINK, "device_id", "printable"),
    (f'device_id = "{"d" * 70_000}"\n' + SYNTH + BASE_SINK, "device_id", "at most 64 characters"),
    ("shutdown_timeout_s = nan\n" + SYNTH + BASE_SINK, "shutdown_timeout_s", "must be a finite number, got nan"),
    ("status_interval_s = nan\n" + SYNTH + BASE_SINK, "status_interval_s", "must be a finite number, got nan"),
    ("[dedup]\nwindow_s = nan\n" + SYNTH + BASE_SINK, "dedup.window_s", "must be a finite number, got nan"),
    (SYNTH + "fps = nan\n" + BASE_SINK, "source.fps", "must be a finite number, got nan"),
    (SYNTH + "width = 100000\n" + BASE_SINK, "source.width", "must be at most 8192, got 100000"),
    (SYNTH + JSONL + "max_mb = -1.0\n", "sinks[0].max_mb", "must be at least 0.001, got -1.0"),
    (SYNTH + JSONL + "keep = -3\n", "sinks[0].keep", "must be at least 1, got -3"),
    (SYNTH + '[[sinks]]\nkind = "mqtt"\nmax_inflight = inf\n', "sinks[0].max_inflight", "must be a finite number, got inf"),
    ('[metrics]\nport = 9108\nhost = "not a host"\n' + SYNTH + BASE_SINK, "metrics.host",
     'must be a hostname or an IP address, got "not a host"'),
]


@pytest.mark.parametrize("body,key,says", ISSUE_15, ids=[f"{k}:{i}" for i, (_, k, _) in enumerate(ISSUE_15)])
def test_issue_15_values_are_refused_in_process(tmp_path, body, key, says):
    path = tmp_path / "c.toml"
    path.write_text(f'state_dir = "{tmp_path / "s"}"\n{body}')
    with pytest.raises(ConfigError) as ei:
        config_mod.load(str(path))
    assert len(ei.value.problems) == 1, ei.value.problems
    line = ei.value.problems[0]
    assert line.startswith(f"{path}: {key}: ") and says in line, line
    assert line.isprintable() and len(line) < 400, line  # one short, safe line whatever the value held


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize("case", [0, 1, 4, 7, 8, 9, 11, 12], ids=lambda i: ISSUE_15[i][1])
def test_issue_15_values_exit_2_with_one_line(tmp_path, command, case):
    body, key, says = ISSUE_15[case]
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "s"}"\n{body}')
    p = run_cli(*(["check-config", str(cfg)] if command == "check-config" else ["run", "--config", str(cfg)]))
    assert p.returncode == 2, p.stdout[-1000:] + p.stderr[-2000:]
    assert "Traceback" not in p.stderr and p.stdout == "", p.stderr[-2000:]
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{cfg}: {key}: ") and says in lines[0], p.stderr[-2000:]


def test_device_id_limit_is_64_printable_characters(tmp_path):
    ok = tmp_path / "ok.toml"
    ok.write_text(f'state_dir = "{tmp_path / "s"}"\ndevice_id = "{"d" * 64}"\n{SYNTH}{BASE_SINK}')
    assert config_mod.load(str(ok))["device_id"] == "d" * 64
    for bad in ("d" * 65, "line\u200f3", "line\u20663", "cam\u061c1", "a\u2028b", "a\u0085b"):
        with pytest.raises(ConfigError) as ei:
            config_mod.from_dict({"device_id": bad, "state_dir": str(tmp_path), "source": {"kind": "synthetic"},
                                  "sinks": [{"kind": "stdout"}]}, "c.toml")
        assert [p.split(": ")[1] for p in ei.value.problems] == ["device_id"], (bad, ei.value.problems)


@pytest.mark.parametrize("host,ok", [("127.0.0.1", True), ("0.0.0.0", True), ("::1", True), ("fe80::1%eth0", True),
                                     ("localhost", True), ("broker.plant-3.local", True), ("broker.local.", True),
                                     ("not a host", False), ("", False), ("-bad.local", False), ("a..b", False),
                                     ("999.1.1.1", False), ("x" * 64 + ".local", False), ("host:1883", False),
                                     ("tcp://broker", False)])
def test_hosts_are_checked_syntactically_and_name_their_key(tmp_path, host, ok):
    doc = {"state_dir": str(tmp_path), "source": {"kind": "synthetic"}, "metrics": {"port": 9108, "host": host},
           "sinks": [{"kind": "mqtt", "host": host}]}
    if ok:
        cfg = config_mod.from_dict(doc, "c.toml")
        assert cfg["metrics"]["host"] == host and cfg.sinks[0]["host"] == host
    else:
        with pytest.raises(ConfigError) as ei:
            config_mod.from_dict(doc, "c.toml")
        assert [p.split(": ")[1] for p in ei.value.problems] == ["metrics.host", "sinks[0].host"], ei.value.problems


def test_every_numeric_key_declares_a_finite_range():
    """A key added without a range fails here: NaN, inf and absurd numbers are refused for
    every number by one rule, and that rule needs the range declared next to the key."""
    keys = config_mod.every_option()
    numeric = [(k, kind, o) for k, kind, o in keys if o is not None and (int in o.types or float in o.types)]
    assert len(numeric) > 40
    missing = [f"{k}@{kind}" for k, kind, o in numeric
               if o.minimum is None or o.maximum is None or not all(map(math.isfinite, (o.minimum, o.maximum)))
               or o.minimum > o.maximum]
    assert not missing, f"numeric keys without a finite (min, max): {missing}"
    # The walk reaches every kind and the nested tls table.
    kinds = {kind for _, kind, _ in keys}
    assert kinds >= set(capture.KINDS) | {"jsonl", "mqtt", "serial"}
    assert "sinks[0].tls.ca_file" in {k for k, _, _ in keys}
    # And the defaults themselves are inside their ranges.
    for k, kind, o in numeric:
        if isinstance(o.default, (int, float)):
            assert o.minimum <= o.default <= o.maximum, (k, kind)


def test_sinks_and_sources_built_in_code_refuse_the_same_values(tmp_path):
    from edge_runtime.capture import SourceError, check_options
    from edge_runtime.sinks.jsonl import JsonlSink
    from edge_runtime.sinks.mqtt_options import resolve_options
    from edge_runtime.sinks.serial import validate_options

    for opts in ({"max_mb": -1.0}, {"keep": -3}, {"keep": 0}, {"max_mb": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(opts))):
            JsonlSink("j", "d", {"path": str(tmp_path / "r.jsonl"), **opts})
    for opts in ({"width": 100_000}, {"fps": float("nan")}):
        with pytest.raises(SourceError, match=next(iter(opts))):
            check_options("synthetic", opts)
    for key in ("max_inflight", "keepalive", "status_interval_s"):
        with pytest.raises(ValueError, match=key):
            resolve_options("m", "dev", {key: float("inf")})
    for key in ("ack_timeout_ms", "reopen_interval_s", "retries"):
        with pytest.raises(ValueError, match=key):
            validate_options("s", "dev", {"port": "/dev/ttyUSB0", key: float("nan")})


def test_jsonl_keep_1_keeps_every_result_until_rotation(tmp_path):
    """The repro of `keep = -3` (20 results, 1 line left), with the smallest allowed values."""
    from edge_runtime.sinks.jsonl import JsonlSink

    path = tmp_path / "r.jsonl"
    sink = JsonlSink("j", "d", {"path": str(path), "max_mb": 0.001, "keep": 1})
    for i in range(20):
        sink.emit({"id": i, "text": "x" * 40})
    sink.close()
    lines = (tmp_path / "r.jsonl.1").read_text().splitlines() + path.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == list(range(20))  # one rotation, nothing lost


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
    broker = Broker(tmp_path / "broker", persistence=False, allow_anonymous=False, extra=f"password_file {pw}").start()
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
