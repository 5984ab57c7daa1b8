"""Fuzzing with hypothesis: whatever arrives (files, frames, QR payloads, PLC bytes, MQTT
commands, config text), the runtime neither crashes nor hangs, and what it writes stays
well-formed: serial frames frame, JSON parses, MQTT topics come from config only.

Derandomized and without an example database so CI sees the same examples every run; each
test is sized to a few seconds on a busy 2-core box. An example that takes longer than
HANG_S is a failure (SIGALRM), not a stuck CI job.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import logging
import math
import signal
import time

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_runtime import config as config_mod
from edge_runtime import config_toml
from edge_runtime.code import Code, best_effort_text
from edge_runtime.imageio import ImageError, load_gray
from edge_runtime.reader import Reader
from edge_runtime.service.logs import JsonFormatter, TextFormatter
from edge_runtime.service.results import read_result
from edge_runtime.sinks.jsonl import JsonlSink
from edge_runtime.sinks.mqtt import encode_result
from edge_runtime.sinks.mqtt_commands import BadCommand, parse_command
from edge_runtime.sinks.serial import SerialSink
from edge_runtime.sinks.serial_frame import CommandParser, unescape
from edge_runtime.sinks.stdout import StdoutSink
from edge_runtime.track import Track

HANG_S = 10
BASE = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def fuzz(n: int) -> settings:
    return settings(BASE, max_examples=n)


_READER: Reader | None = None


def reader() -> Reader:
    global _READER
    if _READER is None:
        _READER = Reader(deadline_ms=50)
    return _READER


@contextlib.contextmanager
def no_hang(seconds: float = HANG_S):
    """Fail an example that runs longer than `seconds` instead of hanging the suite."""
    def on_alarm(signum, frame):  # noqa: ANN001
        raise TimeoutError(f"example took more than {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def qr_png(payload: bytes = b"LOT-000123", fmt: str = ".png") -> bytes:
    import segno

    m = np.pad(np.array(segno.make_qr(payload).matrix, dtype=np.uint8), 4)
    img = cv2.resize(((1 - m) * 255).astype(np.uint8), None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(fmt, img)
    assert ok
    return buf.tobytes()


SEEDS = [qr_png(fmt=f) for f in (".png", ".jpg", ".bmp", ".tiff", ".webp")]


@st.composite
def mutated_image(draw) -> bytes:
    """A real image file with a few bytes flipped, cut or inserted: reaches the decoders'
    inner parsers, which random bytes alone never get past the magic number."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:i + draw(st.integers(1, 64))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=32))
        else:
            del data[i:]
    return bytes(data)


# ------------------------------------------------------------------------ images and frames


@fuzz(150)
@given(blob=st.one_of(st.binary(max_size=2048), mutated_image()))
def test_arbitrary_bytes_as_image_files_through_decode(tmp_path, blob):
    from edge_runtime.cli import decode as decode_cli

    path = tmp_path / "fuzz.img"
    path.write_bytes(blob)
    with no_hang():
        try:
            gray = load_gray(path)
        except ImageError as exc:
            assert "\n" not in str(exc) and str(exc)
        else:
            assert gray.dtype == np.uint8 and gray.ndim == 2
            reader().read(gray)
        # And the command itself: exit 0/1, exactly one JSON line for the one file.
        out = io.StringIO()
        args = argparse.Namespace(paths=[str(path)], json=True, detector="none", max_pixels=40_000_000,
                                  deadline_ms=50)
        with contextlib.redirect_stdout(out):
            code = decode_cli.run(args)
    assert code in (0, 1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["source"] == str(path)


def _qr_gray() -> np.ndarray:
    return cv2.imdecode(np.frombuffer(SEEDS[0], np.uint8), cv2.IMREAD_GRAYSCALE)


@st.composite
def frames(draw) -> np.ndarray:
    kind = draw(st.sampled_from(["random", "damaged-qr", "line"]))
    if kind == "random":
        shape = draw(st.one_of(
            hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=80),
            st.tuples(st.integers(0, 80), st.integers(0, 80), st.sampled_from([1, 3, 4])),
        ))
        return draw(hnp.arrays(np.uint8, shape))
    if kind == "line":
        # Line-scan cameras and cropped ROIs: 1-3 px tall or wide, up to 5000 px long.
        n, m = draw(st.integers(1, 3)), draw(st.integers(1, 5000))
        return np.full((n, m) if draw(st.booleans()) else (m, n), draw(st.integers(0, 255)), np.uint8)
    img = _qr_gray().copy()
    for _ in range(draw(st.integers(0, 6))):
        y, x = draw(st.integers(0, img.shape[0] - 1)), draw(st.integers(0, img.shape[1] - 1))
        h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
        img[y:y + h, x:x + w] = draw(st.integers(0, 255))
    return img


@fuzz(120)
@given(frame=frames())
def test_arbitrary_pixel_arrays_through_reader(frame):
    with no_hang():
        codes = reader().read(frame)
    assert isinstance(codes, list)
    for c in codes:
        assert isinstance(c.raw, bytes) and len(c.corners) == 4


@fuzz(40)
@given(dtype=st.sampled_from([np.float32, np.float64, np.uint16, np.int8, bool]),
       shape=st.sampled_from([(8, 8), (8, 8, 3), (8, 8, 2), (8,), (2, 2, 2, 2)]))
def test_wrong_frames_are_one_clear_value_error(dtype, shape):
    with pytest.raises(ValueError, match="frame must be"):
        reader().read(np.zeros(shape, dtype))


# ------------------------------------------------------------------------------ sinks


TRACK = Track(tid=1, raw=b"", center=(5, 5), first_seen=1_700_000_000.0, last_seen=1_700_000_000.0,
              first_frame=1, last_frame=1)
CORNERS = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]
# (prefix, suffix, separator, control, checksum): the framings a PLC integrator picks.
FRAMINGS = [
    ("\x02", "\x03", ",", "escape", "none"),
    ("\x02", "\x03", ",", "escape", "xor"),
    ("", "\r\n", ";", "escape", "xor"),
    ("\x02", "\r", ",", "replace", "none"),
    ("", "\n", "|", "strip", "none"),
]


def result_for(raw: bytes, rid: int = 1) -> dict:
    code = Code(text=best_effort_text(raw), raw=raw, corners=CORNERS, decoder="zxing")
    return read_result(rid, "dev", code, TRACK, 1, 1_700_000_000.0)


def payload_of(result: dict) -> bytes:
    if "bytes_b64" in result:
        return base64.b64decode(result["bytes_b64"])
    return result["text"].encode("utf-8")


@pytest.fixture(scope="module")
def serial_sinks(tmp_path_factory):
    d = tmp_path_factory.mktemp("serial")
    sinks = []
    for i, (prefix, suffix, sep, control, checksum) in enumerate(FRAMINGS):
        sinks.append(SerialSink(f"s{i}", "dev", {"port": str(d / "absent"), "outbox": str(d / f"o{i}.sqlite"),
                                                 "prefix": prefix, "suffix": suffix, "separator": sep,
                                                 "control": control, "checksum": checksum}))
    yield sinks
    for s in sinks:
        s.close(1.0)


payloads = st.one_of(st.binary(max_size=600), st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")),
                     st.lists(st.sampled_from([b"\x02", b"\x03", b"\r", b"\n", b"\x00", b"\x1b[31m", b"\\", b"\\x02",
                                               b",", b";", b"|", b"\x7f", b"\xff", "é".encode()]), max_size=40).map(b"".join))


@pytest.fixture(scope="module")
def jsonl_sink(tmp_path_factory):
    path = tmp_path_factory.mktemp("jsonl") / "results.jsonl"
    sink = JsonlSink("j", "dev", {"path": str(path)})
    sink.start()
    yield sink, path
    sink.close()


@fuzz(300)
@given(raws=st.lists(payloads, min_size=1, max_size=3))
def test_every_sink_encoder_keeps_its_format_for_any_payload(serial_sinks, jsonl_sink, raws):
    results = [result_for(raw, rid=i + 1) for i, raw in enumerate(raws)]
    for r, raw in zip(results, raws):
        assert payload_of(r) == raw  # the result dict itself is lossless
        # MQTT: valid UTF-8 JSON, round-trips, and the raw bytes are recoverable.
        doc = json.loads(encode_result(r).decode("utf-8"))
        assert doc == r and payload_of(doc) == raw
        # stdout / jsonl: one ASCII line of valid JSON.
        buf = io.StringIO()
        StdoutSink("o", "dev", stream=buf).emit(r)
        line = buf.getvalue()
        assert line.isascii() and line.count("\n") == 1 and line.endswith("\n") and json.loads(line) == r
        sink, path = jsonl_sink
        with open(path, "rb") as f:
            f.seek(0, 2)
            end = f.tell()
            sink.emit(r)
            f.seek(end)
            written = f.read()
        assert written.isascii() and written.count(b"\n") == 1 and json.loads(written) == r
    for sink, (prefix, suffix, sep, control, checksum) in zip(serial_sinks, FRAMINGS):
        p, s, sp = prefix.encode("latin-1"), suffix.encode("latin-1"), sep.encode("latin-1")
        frame = sink.encode(results)
        if checksum == "xor":
            frame = frame[:-1]
        assert frame.startswith(p) and frame.endswith(s)
        body = frame[len(p):len(frame) - len(s)]
        forbidden = set(range(0x20)) | {0x7F} | set(p) | set(s)
        assert not (set(body) & forbidden), f"framing/control byte inside the body: {body!r}"
        parts = body.split(sp)
        assert len(parts) == len(raws), "the separator appeared inside a payload"
        if control == "escape":
            assert [unescape(x) for x in parts] == raws  # lossless


def test_payload_never_reaches_a_topic(tmp_path):
    """Fuzzed payloads through a running MqttSink to a real broker: every message lands on
    the configured result topic, whatever the payload holds (/, +, #, NUL, ...)."""
    from edge_runtime.bench.peers import Broker, PlantSubscriber
    from edge_runtime.sinks.mqtt import MqttSink

    broker = Broker(tmp_path / "broker", persistence=False).start()
    sub = PlantSubscriber(broker.port, "#", client_id="fuzz-sub").start()
    sink = MqttSink("m", "dev", {"host": "127.0.0.1", "port": broker.port, "outbox": str(tmp_path / "o.sqlite"),
                                 "topic_prefix": "plant/line3"})
    sink.start()
    sent: dict[int, bytes] = {}
    try:
        @fuzz(150)
        @given(raw=st.one_of(payloads, st.sampled_from([b"a/b/#", b"+/+", b"plant/line3/dev/cmd", b"\x00/#"])))
        def emit(raw):
            rid = len(sent) + 1
            sent[rid] = raw
            sink.emit(result_for(raw, rid))

        emit()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and set(sub.ids("plant/line3/dev/result")) < set(sent):
            time.sleep(0.1)
        got = {json.loads(p)["id"]: payload_of(json.loads(p)) for p in sub.on("plant/line3/dev/result")}
        assert got == sent
        assert sub.topics() <= {"plant/line3/dev/result", "plant/line3/dev/status"}
    finally:
        sink.close(2.0)
        sub.close()
        broker.stop()


@fuzz(200)
@given(raw=payloads)
def test_logs_stay_one_safe_line_for_any_payload(raw):
    text = best_effort_text(raw)
    rec = logging.LogRecord("edge_runtime.service", logging.WARNING, __file__, 1, "code %s: %r", (text, raw), None)
    rec.fields = {"text": text}
    j = JsonFormatter().format(rec)
    assert "\n" not in j and j.isascii() and json.loads(j)["text"] == text
    t = TextFormatter().format(rec)
    assert "\n" not in t and "\r" not in t and "\x1b" not in t
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in t)


# ------------------------------------------------------------------- what peers send us


@fuzz(300)
@given(chunks=st.lists(st.binary(max_size=300), max_size=8))
def test_plc_bytes_never_break_the_command_parser(chunks):
    p = CommandParser()
    for c in chunks:
        for ev in p.feed(c):
            assert ev[0] in ("ack", "nak", "cmd")
            if ev[0] == "cmd":
                assert ev[1] and len(ev[1]) <= p.max_line
    assert len(p._buf) <= p.max_line  # line noise cannot grow memory


@fuzz(300)
@given(payload=st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode),
                         st.integers(1, 70_000).map(lambda n: b"[" * n), st.integers(1, 70_000).map(lambda n: b'{"a":' * n)))
def test_mqtt_commands_parse_or_are_refused(payload):
    with no_hang():
        try:
            cmd = parse_command(payload)
        except BadCommand as exc:
            assert "\n" not in str(exc)
        else:
            assert isinstance(cmd, dict) and isinstance(cmd["cmd"], str)


@fuzz(200)
@given(text=st.one_of(st.text(max_size=400), st.binary(max_size=400).map(lambda b: b.decode("latin-1")),
                      st.sampled_from(['[source]\nkind = "synthetic"\n[[sinks]]\nkind = "stdout"\n'])
                      .flatmap(lambda base: st.text(max_size=60).map(lambda extra: base + extra))))
def test_any_config_text_is_accepted_or_refused_in_lines(text):
    try:
        cfg = config_mod.parse(text, "fuzz.toml", "fuzz.toml")
    except config_mod.ConfigError as exc:
        assert exc.problems and all(p.startswith("fuzz.toml") and "\n" not in p for p in exc.problems)
    else:
        assert cfg.sinks


# ------------------------------------------------- every config key with every bad value

# NaN, infinities, negative, huge, and strings that broke the broker or paho (issue 15).
# "q" around the controls: serial framing refuses hex digits (a, b) for its own reason.
BAD_VALUES = [("nan", "nan"), ("inf", "+inf"), ("-inf", "-inf"), ("-1", "-1"), ("1e300", "1e300"),
              ('"q\\nq"', "newline"), ('"q\\u0007q"', "BEL"), ('"q\\u202eq"', "RLO"), (json.dumps("x" * 70_000), "70000 chars")]
# The only (key, kind) that may legitimately hold a control character: serial framing
# strings (STX, ETX, CR LF are their point; "noread"/"mismatch" stand in for a payload) and a
# GStreamer pipeline written over lines.
CONTROLS_OK = {**{(f"sinks[0].{k}", "serial"): {"newline", "BEL"}
                  for k in ("prefix", "suffix", "separator", "replacement", "noread", "mismatch")},
               ("source.pipeline", "gstreamer"): {"newline"}}
REQUIRED_LIT = {"path": '"/tmp"', "url": '"rtsp://127.0.0.1/x"', "pipeline": '"videotestsrc ! appsink"',
                "port": '"/dev/ttyUSB0"'}


def config_with(key: str, kind: str | None, literal: str, state: str) -> str:
    """A valid config in which only `key` (dotted, as messages name it) holds `literal`."""
    from edge_runtime import capture

    head = "" if key == "state_dir" else f'state_dir = "{state}"\n'
    source, sink = '[source]\nkind = "synthetic"\n', '[[sinks]]\nkind = "stdout"\n'
    if key.startswith("source."):
        k = key.split(".", 1)[1]
        kind = kind or "synthetic"
        req = "" if k == "kind" else "".join(f"{r} = {REQUIRED_LIT[r]}\n" for r in sorted(capture.spec(kind)[2]) if r != k)
        source = f"[source]\n{'' if k == 'kind' else f'kind = {json.dumps(kind)}'}\n{req}{k} = {literal}\n"
    elif key.startswith("sinks[0]."):
        k = key.split(".", 1)[1]
        kind = kind or "stdout"
        req = "".join(f"{r} = {REQUIRED_LIT[r]}\n" for r in sorted(getattr(config_mod.sink_module(kind), "REQUIRED", ()))
                      if r != k)
        line = f"{k.split('.')[0]} = {{ {k.split('.')[1]} = {literal} }}" if "." in k else f"{k} = {literal}"
        sink = f"[[sinks]]\n{'' if k == 'kind' else f'kind = {json.dumps(kind)}'}\n{req}{line}\n"
    elif "." in key:
        section, k = key.split(".")
        return f"{head}[{section}]\n{k} = {literal}\n{source}{sink}"
    else:
        head += f"{key} = {literal}\n"
    return head + source + sink


WALK = [(k, kind) for k, kind, _ in config_mod.every_option()] + [
    ("source.kind", None), ("sinks[0].kind", None), ("sinks[0].name", None)]


@pytest.mark.parametrize("key,kind", WALK, ids=[f"{k}@{kind}" if kind else k for k, kind in WALK])
def test_every_config_key_refuses_nan_inf_negative_huge_and_control_values(tmp_path, key, kind):
    path = tmp_path / "c.toml"
    allowed = CONTROLS_OK.get((key, kind), set())
    for literal, what in BAD_VALUES:
        path.write_text(config_with(key, kind, literal, str(tmp_path / "s")))
        try:
            cfg = config_mod.load(str(path))
        except config_mod.ConfigError as exc:
            assert len(exc.problems) == 1, (what, exc.problems)
            line = exc.problems[0]
            assert line.startswith(f"{path}: {key}: "), (what, line)
            assert line.isprintable() and len(line) < 600, (what, line)
        else:
            assert what in allowed, f"{key} ({kind}) = {what} was accepted"
            assert cfg is not None


def test_the_walk_covers_every_kind_and_nested_table():
    from edge_runtime import capture
    from edge_runtime import sinks as sink_registry

    kinds = {kind for _, kind in WALK if kind}
    assert kinds == set(capture.KINDS) | {k for k in sink_registry.KINDS if getattr(config_mod.sink_module(k), "KEYS", ())}
    keys = {k for k, _ in WALK}
    assert {"device_id", "dedup.window_s", "metrics.host", "sinks[0].tls.insecure", "sinks[0].max_inflight"} <= keys
    assert len(WALK) > 90


def _non_finite(obj) -> bool:
    if isinstance(obj, float):
        return not math.isfinite(obj)
    if isinstance(obj, dict):
        return any(_non_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_non_finite(v) for v in obj)
    return False


_anything = st.one_of(st.floats(), st.integers(-2**63, 2**63 - 1), st.text(max_size=80),
                      st.sampled_from(["\u202e", "\x07", "a\nb", "x" * 5000]))


@fuzz(300)
@given(key=st.sampled_from(WALK), value=_anything)
def test_any_value_for_any_key_is_accepted_finite_or_refused_naming_it(key, value):
    """Whatever a key gets (any float incl. NaN/inf, any 64-bit integer, any text), the
    config is either refused with one line naming that key or holds no non-finite number."""
    k, kind = key
    if isinstance(value, float) and not math.isfinite(value):
        literal = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    else:
        literal = config_toml.value(value)  # TOML text (json.dumps would write surrogate pairs)
    text = config_with(k, kind, literal, "/tmp/edge-runtime-fuzz")
    try:
        cfg = config_mod.parse(text, "fuzz.toml", "fuzz.toml")
    except config_mod.ConfigError as exc:
        assert len(exc.problems) == 1 and exc.problems[0].startswith(f"fuzz.toml: {k}: "), (key, value, exc.problems)
        assert exc.problems[0].isprintable()
    else:
        assert not _non_finite(cfg.data)
        if isinstance(value, str) and (k, kind) not in CONTROLS_OK:
            assert not set(value) & _NEVER, (key, value)


# C0, DEL, C1, bidi controls and Unicode line breaks: no accepted config string holds one
# (serial framing strings aside, which hold C0 controls by design).
_NEVER = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
                           *range(0x2066, 0x206A), 0x2028, 0x2029)}
