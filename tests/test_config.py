"""Config validation: every problem is one line naming the file and the dotted key."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

from edge_runtime import config
from edge_runtime.cli import main
from edge_runtime.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent

BASE = """
device_id = "dev1"
state_dir = "{state}"
[source]
kind = "synthetic"
[[sinks]]
kind = "stdout"
"""


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    p = tmp_path / name
    p.write_text(text.replace("{state}", str(tmp_path / "state")), encoding="utf-8")
    return p


def problems(tmp_path: Path, text: str) -> list[str]:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        config.load(str(p))
    return ei.value.problems


@pytest.mark.parametrize("value,says", [("0", "reader.detector_threads: must be at least 1, got 0"),
                                         ("2.5", "reader.detector_threads: expected integer, got 2.5")])
def test_detector_threads_is_checked(tmp_path, value, says):
    path = write(tmp_path, BASE + f"[reader]\ndetector_threads = {value}\n")
    with pytest.raises(config.ConfigError) as ei:
        config.load(str(path))
    assert ei.value.problems == [f"{path}: {says}"]


def test_minimal_config_gets_every_default(tmp_path):
    cfg = config.load(str(write(tmp_path, BASE)))
    assert cfg["device_id"] == "dev1"
    assert cfg["reader"] == {"decoders": ["zxing", "opencv", "zbar"], "detector": "auto", "model": "", "deadline_ms": 33.0,
                             "detector_threads": 1, "blur_angle": None, "speed_px_s": None, "exposure_ms": None,
                             "noread_events": True, "noread_score": 0.6, "noread_dir": None,
                             "noread_keep": 200, "noread_max_mb": 50.0}
    assert cfg["trigger"]["mode"] == "continuous"
    assert cfg["dedup"]["window_s"] == 2.0
    assert cfg["metrics"]["port"] is None
    assert cfg["source"]["fps"] == 30.0 and cfg["source"]["realtime"] is True
    assert cfg.sinks == [{"kind": "stdout", "name": "stdout0"}]


def test_wrong_type_in_a_sink_names_file_and_dotted_key(tmp_path):
    text = BASE + '[[sinks]]\nkind = "serial"\nport = "/dev/ttyUSB0"\nbaudrate = "fast"\n'
    assert problems(tmp_path, text) == [f"{tmp_path / 'config.toml'}: sinks[1].baudrate: expected integer, got \"fast\""]


def test_relative_path_is_named_as_given(tmp_path, monkeypatch):
    write(tmp_path, BASE + "[reader]\ndeadline_ms = \"soon\"\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as ei:
        config.load("config.toml")
    assert ei.value.problems == ['config.toml: reader.deadline_ms: expected number, got "soon"']


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("[reader]\nspeed = 1\n", "reader.speed: unknown key"),
        ("[dedup]\nwindow_s = true\n", "dedup.window_s: expected number, got true"),
        ("[dedup]\ndirection = \"left\"\n", "dedup.direction: expected one of \"any\", \"+x\", \"-x\", \"+y\", \"-y\", got \"left\""),
        ("[dedup]\nwindow_s = -1\n", "dedup.window_s: must be at least 0, got -1"),
        ("[trigger]\nmode = \"burst\"\n", "trigger.mode: expected one of"),
        ("[reader]\ndecoders = [\"zxing\", 3]\n", "reader.decoders[1]: expected string, got 3"),
        ("[reader]\ndecoders = [\"zxing\", \"quirc\"]\n", "reader.decoders[1]: expected one of"),
        ("[reader]\ndetector = \"yolo\"\n", "reader.detector: expected one of"),
        ("[metrics]\nport = 70000\n", "metrics.port: must be at most 65535, got 70000"),
        ("[metrics]\nport = \"9100\"\n", "metrics.port: expected integer, got \"9100\""),
        ("[log]\nformat = \"xml\"\n", "log.format: expected one of \"json\", \"text\", got \"xml\""),
        ("[[sinks]]\nkind = \"jsonl\"\n", "sinks[1].path: missing (required for kind \"jsonl\")"),
        ("[[sinks]]\nkind = \"jsonl\"\npath = \"x\"\nkeep = 1.5\n", "sinks[1].keep: expected integer, got 1.5"),
        ("[[sinks]]\nkind = \"kafka\"\n", "sinks[1].kind: expected one of "
         + ", ".join(f'"{k}"' for k in __import__("edge_runtime.sinks").sinks.KINDS) + ', got "kafka"'),
        ("[[sinks]]\nname = \"x\"\n", "sinks[1].kind: missing"),
        ("[[sinks]]\nkind = \"stdout\"\nname = \"stdout0\"\n", "sinks[1].name: duplicate sink name \"stdout0\""),
        ("[[sinks]]\nkind = \"mqtt\"\nqos = 3\n", "sinks[1].qos: must be at most 2, got 3"),
        ("[[sinks]]\nkind = \"mqtt\"\nqos = 1.5\n", "sinks[1].qos: mqtt sink 'mqtt1': qos must be 0, 1 or 2, got 1.5"),
        ("[[sinks]]\nkind = \"mqtt\"\nhots = \"x\"\n", "sinks[1].hots: unknown key for kind \"mqtt\""),
        ("[[sinks]]\nkind = \"mqtt\"\ntls = { ca = \"x\" }\n", "sinks[1].tls.ca: unknown key"),
        ("[[sinks]]\nkind = \"serial\"\nport = \"/dev/x\"\nparity = \"Q\"\n", "sinks[1].parity: serial sink 'serial1' option 'parity' must be"),
    ],
)
def test_each_kind_of_error_names_its_key(tmp_path, extra, expected):
    got = problems(tmp_path, BASE + extra)
    label = str(tmp_path / "config.toml")
    assert len(got) == 1, got
    assert got[0].startswith(f"{label}: {expected}"), got


def test_unknown_top_level_key(tmp_path):
    got = problems(tmp_path, "colour = 1\n" + BASE)
    assert got == [f"{tmp_path / 'config.toml'}: colour: unknown key (known: " + ", ".join(
        sorted(["device_id", "state_dir", "status_interval_s", "shutdown_timeout_s", "reader", "model", "trigger", "dedup", "match",
                "metrics", "web", "log", "source", "sinks"])) + ")"]


def test_a_key_after_sinks_belongs_to_the_sink_and_is_named_there(tmp_path):
    got = problems(tmp_path, BASE + 'status_interval_s = "often"\n')
    assert got[0].startswith(f"{tmp_path / 'config.toml'}: sinks[0].status_interval_s: unknown key for kind \"stdout\"")


def test_source_errors(tmp_path):
    head = 'state_dir = "{state}"\n[[sinks]]\nkind = "stdout"\n'
    assert problems(tmp_path, head)[0].endswith("source: missing table [source] (e.g. kind = \"camera\")")
    got = problems(tmp_path, head + '[source]\nkind = "webcam"\n')
    assert "source.kind: expected one of \"camera\"" in got[0]
    got = problems(tmp_path, head + '[source]\nkind = "synthetic"\nfsp = 30\nfps = "fast"\n')
    assert [g.split(": ", 1)[1] for g in got] == [
        "source.fsp: unknown key for kind \"synthetic\" (known: " + ", ".join(sorted({"kind", *config_keys("synthetic")})) + ")",
        'source.fps: expected number, got "fast"',
    ]
    assert problems(tmp_path, head + '[source]\nkind = "video"\n')[0].endswith('source.path: missing (required for kind "video")')


def config_keys(kind):
    from edge_runtime import capture

    return capture.spec(kind)[1]


def test_all_problems_are_reported_at_once(tmp_path):
    text = BASE + '[reader]\ndeadline_ms = "x"\ndetector = "y"\n[log]\nlevel = 3\n'
    got = problems(tmp_path, text)
    keys = [line.split(": ")[1] for line in got]
    assert keys == ["reader.deadline_ms", "reader.detector", "log.level"]


def test_no_sinks_is_an_error(tmp_path):
    got = problems(tmp_path, 'state_dir = "{state}"\n[source]\nkind = "synthetic"\n')
    assert got[0].split(": ", 2)[1] == "sinks"
    got = problems(tmp_path, 'state_dir = "{state}"\nsinks = []\n[source]\nkind = "synthetic"\n')
    assert got[0].split(": ", 2)[1] == "sinks"


def test_trigger_source_needs_its_sink(tmp_path):
    got = problems(tmp_path, BASE + '[trigger]\nmode = "single"\nsource = "serial"\n')
    assert got == [f'{tmp_path / "config.toml"}: trigger.source: "serial" needs a [[sinks]] entry with kind = "serial"']


def test_toml_syntax_error_names_file_and_line(tmp_path):
    got = problems(tmp_path, 'device_id = "a"\n\n[source\nkind = "synthetic"\n')
    assert len(got) == 1
    assert got[0].startswith(f"{tmp_path / 'config.toml'}: line 3, column ")


def test_duplicate_key_is_a_syntax_error_with_line(tmp_path):
    got = problems(tmp_path, BASE + '[source]\nkind = "synthetic"\n')
    assert got[0].startswith(f"{tmp_path / 'config.toml'}: line ")


def test_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(ConfigError) as ei:
        config.load(str(tmp_path / "missing.toml"))
    assert ei.value.problems == [f"{tmp_path / 'missing.toml'}: cannot read: No such file or directory"]
    p = tmp_path / "latin.toml"
    p.write_bytes(b'device_id = "a"\nx = "\xe9"\n')
    with pytest.raises(ConfigError) as ei:
        config.load(str(p))
    assert ei.value.problems == [f"{p}: line 2: not UTF-8 text (TOML files are UTF-8)"]


def test_password_from_env_is_checked_and_never_printed(tmp_path, monkeypatch, capsys):
    text = BASE + '[[sinks]]\nkind = "mqtt"\nusername = "u"\npassword_env = "TEST_EDGE_MQTT_PW"\n'
    monkeypatch.delenv("TEST_EDGE_MQTT_PW", raising=False)
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'config.toml'}: sinks[1].password_env: environment variable TEST_EDGE_MQTT_PW is not set"
    ]
    monkeypatch.setenv("TEST_EDGE_MQTT_PW", "hunter2-secret")
    p = write(tmp_path, text + '[[sinks]]\nkind = "mqtt"\nname = "m2"\nusername = "u"\npassword = "inline-secret"\n')
    assert main(["check-config", str(p)]) == 0
    out = capsys.readouterr().out
    assert "hunter2-secret" not in out and "inline-secret" not in out
    assert 'password_env = "TEST_EDGE_MQTT_PW"' in out
    assert 'password = "********"' in out


def test_url_credentials_are_masked(tmp_path, capsys):
    text = 'state_dir = "{state}"\n[source]\nkind = "rtsp"\nurl = "rtsp://admin:s3cret@10.0.0.5/s1"\n[[sinks]]\nkind = "stdout"\n'
    assert main(["check-config", str(write(tmp_path, text))]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and 'url = "rtsp://admin:********@10.0.0.5/s1"' in out


def test_check_config_prints_effective_toml_that_is_itself_valid(tmp_path, capsys):
    p = write(tmp_path, BASE + '[[sinks]]\nkind = "serial"\nport = "/dev/ttyUSB0"\n')
    assert main(["check-config", str(p)]) == 0
    out = capsys.readouterr().out
    doc = tomllib.loads(out)
    assert doc["dedup"] == {"window_s": 2.0, "max_distance_px": 200.0, "direction": "any"}
    assert doc["sinks"][1]["baudrate"] == 9600
    # The durable outbox defaults into state_dir, next to the ids.
    assert doc["sinks"][1]["outbox"] == str(tmp_path / "state" / "outbox-serial1.sqlite")
    # The printed config round-trips: feeding it back gives the same effective config.
    again = write(tmp_path, out, "again.toml")
    assert config.load(str(again)).data == config.load(str(p)).data


def test_check_config_exit_2_with_one_line_per_problem_on_stderr(tmp_path):
    p = write(tmp_path, BASE + '[[sinks]]\nkind = "serial"\nport = "/dev/x"\nbaudrate = "fast"\n[reader]\nretry = 1\n')
    r = subprocess.run([sys.executable, "-m", "edge_runtime", "check-config", str(p)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"{p}: reader.retry: unknown key (known: decoders, detector, model, deadline_ms, detector_threads, blur_angle, speed_px_s, exposure_ms, noread_events, noread_score, noread_dir, noread_keep, noread_max_mb)",
        f'{p}: sinks[1].baudrate: expected integer, got "fast"',
    ]
    assert "Traceback" not in r.stderr


def test_run_with_invalid_config_exits_2_without_traceback(tmp_path):
    p = write(tmp_path, BASE + "[dedup]\nwindow_s = \"2s\"\n")
    r = subprocess.run([sys.executable, "-m", "edge_runtime", "run", "--config", str(p)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip() == f'{p}: dedup.window_s: expected number, got "2s"'


def test_example_config_and_demo_are_valid(monkeypatch):
    cfg = config.load(str(ROOT / "examples" / "config.toml"))
    assert {s["kind"] for s in cfg.sinks} == {"stdout", "jsonl", "mqtt", "serial"}
    demo = config.load(None)
    assert demo.demo and demo["source"]["kind"] == "synthetic" and demo["source"]["fps"] == 30.0
    assert demo["source"]["realtime"] is True
    assert [s["kind"] for s in demo.sinks] == ["stdout"]
    assert demo["state_dir"].startswith(tempfile.gettempdir())


def test_state_dir_falls_back_when_default_is_not_writable(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "_writable", lambda path: False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    cfg = config.load(str(write(tmp_path, '[source]\nkind = "synthetic"\n[[sinks]]\nkind = "stdout"\n')))
    assert cfg["state_dir"] == str(tmp_path / "xdg" / "edge-runtime")
    assert cfg.notes and "not writable" in cfg.notes[0]


def test_device_id_defaults_to_hostname_and_rejects_topic_characters(tmp_path):
    import socket

    cfg = config.load(str(write(tmp_path, BASE.replace('device_id = "dev1"\n', ""))))
    assert cfg["device_id"] == socket.gethostname()
    got = problems(tmp_path, BASE.replace('"dev1"', '"line/3"'))
    assert got[0].split(": ")[1] == "device_id"


# -------------------------------------------------------------------- fuzz: never a traceback

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_KEYS = ["kind", "name", "path", "port", "mode", "source", "window_s", "decoders", "detector", "deadline_ms",
         "device_id", "state_dir", "level", "format", "baudrate", "qos", "tls", "fps", "frames", "realtime",
         "password_env", "direction", "max_distance_px", "host", "keep", "max_mb", "x"]
_KINDS = ["synthetic", "camera", "video", "folder", "rtsp", "stdout", "jsonl", "mqtt", "serial", "nope"]
_scalars = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(),
                     st.sampled_from(_KINDS), st.text(max_size=8))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4)), max_leaves=12)
_table = st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=4)), _values, max_size=6)
_doc = st.fixed_dictionaries({}, optional={
    "device_id": _values, "state_dir": st.just("/tmp/edge-runtime-fuzz"), "status_interval_s": _values,
    "reader": _table, "source": st.one_of(_table, _values), "trigger": _table, "dedup": _table,
    "metrics": _table, "log": _table, "sinks": st.one_of(st.lists(_table, max_size=3), _values),
    "\x1b[2J\n": _values})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_doc)
def test_any_document_is_valid_or_one_line_per_problem(doc):
    try:
        cfg = config.from_dict(doc, "fuzz.toml")
    except ConfigError as exc:
        assert exc.problems
        for line in exc.problems:
            assert line.startswith("fuzz.toml: ") and "\n" not in line
    else:
        tomllib.loads(cfg.to_toml())  # the effective config always prints as valid TOML
        assert not _non_finite(cfg.data)  # NaN/inf anywhere is refused, nested tables too


def _non_finite(obj) -> bool:
    if isinstance(obj, float):
        return obj != obj or obj in (float("inf"), float("-inf"))
    if isinstance(obj, (list, dict)):
        return any(_non_finite(v) for v in (obj.values() if isinstance(obj, dict) else obj))
    return False
