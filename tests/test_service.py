"""The service end to end on the synthetic conveyor: in-process and as `python -m edge_runtime run`."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from edge_runtime import config
from edge_runtime.capture import open_source
from edge_runtime.code import Code
from edge_runtime.service.ids import IdAllocator, StateDirError
from edge_runtime.service.loop import Service
from edge_runtime.service.results import noread_result, read_result, rfc3339
from edge_runtime.sinks.jsonl import JsonlSink
from edge_runtime.sinks.stdout import StdoutSink
from edge_runtime.track import Track
from waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "edge_runtime" / "data" / "result.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FormatChecker())
SOURCE = {"kind": "synthetic", "realtime": False, "degradations": False, "seed": 3}


def toml_value(v) -> str:
    return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")


def make_config(tmp_path: Path, *, source: dict | None = None, sinks: list[dict] | None = None,
                extra: str = "", name: str = "config.toml") -> Path:
    src = {**SOURCE, **(source or {})}
    sinks = sinks if sinks is not None else [{"kind": "jsonl", "name": "out", "path": str(tmp_path / "out.jsonl")}]
    lines = ['device_id = "test-dev"', f'state_dir = "{tmp_path / "state"}"', extra, "[source]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in src.items()]
    for s in sinks:
        lines += ["[[sinks]]", *(f"{k} = {toml_value(v)}" for k, v in s.items())]
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truths_for(source: dict, frames: int) -> dict[bytes, int]:
    """Payload -> number of frames the code was entirely in view (the conveyor's ground truth)."""
    src = open_source({**source, "frames": frames})
    seen: dict[bytes, int] = {}
    try:
        while (f := src.read(5.0)) is not None:
            for t in f.truths or []:
                seen[t["payload"]] = seen.get(t["payload"], 0) + 1
    finally:
        src.close()
    return seen


class Running:
    """A Service running in a thread (in-process), stopped at exit."""

    def __init__(self, path: Path) -> None:
        self.service = Service(config.load(str(path)))
        self.code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.code = self.service.run(install_signals=False)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.error = exc

    def __enter__(self) -> "Running":
        self.thread.start()
        wait_for(lambda: self.service.state in ("running", "stopped") or self.error, what="service start")
        if self.error:
            raise self.error
        return self

    def __exit__(self, *exc) -> None:
        self.service.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()


# ---------------------------------------------------------------------------- in-process


def test_every_label_read_once_ids_increasing_schema_valid(tmp_path):
    frames = 150
    path = make_config(tmp_path, source={"frames": frames})
    svc = Service(config.load(str(path)))
    assert svc.run(install_signals=False) == 0
    results = read_jsonl(tmp_path / "out.jsonl")
    for r in results:
        VALIDATOR.validate(r)
    ids = [r["id"] for r in results]
    assert ids == sorted(set(ids)) and ids[0] >= 1
    # A label only entering the view as the source ends is detected, never read: its noread
    # comes with the end of the source. No other noread on this clean belt.
    noreads = [r for r in results if r["kind"] == "noread"]
    assert all(r["frame"] >= frames - 5 for r in noreads), noreads
    results = [r for r in results if r["kind"] == "read"]
    texts = [r["text"] for r in results]
    assert len(texts) == len(set(texts)), "a label was reported twice"
    truth = truths_for(SOURCE, frames)
    well_seen = {p.decode() for p, n in truth.items() if n >= 5}
    assert len(well_seen) >= 5
    assert well_seen <= set(texts), f"missed: {well_seen - set(texts)}"
    assert set(texts) <= {p.decode() for p in truth}, "a result that was never on the belt"
    assert svc.stats.frames == frames and svc.stats.reads == len(results)
    assert all(r["device_id"] == "test-dev" for r in results)


def test_ids_continue_above_previous_run(tmp_path):
    path = make_config(tmp_path, source={"frames": 60})
    Service(config.load(str(path))).run(install_signals=False)
    first = [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")]
    Service(config.load(str(path))).run(install_signals=False)
    both = [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")]
    assert len(both) > len(first) > 0
    assert both == sorted(set(both))


def test_a_failing_sink_never_stops_the_loop_or_the_other_sinks(tmp_path):
    # /dev/full: every write fails with ENOSPC, like a full disk.
    sinks = [{"kind": "jsonl", "name": "full", "path": "/dev/full"},
             {"kind": "jsonl", "name": "out", "path": str(tmp_path / "out.jsonl")}]
    svc = Service(config.load(str(make_config(tmp_path, source={"frames": 90}, sinks=sinks))))
    assert svc.run(install_signals=False) == 0
    good = read_jsonl(tmp_path / "out.jsonl")
    assert len(good) == svc.stats.reads + svc.stats.noreads and svc.stats.reads > 0
    assert svc.stats.sink_errors["full"] == len(good)
    assert svc.stats.sink_emitted["out"] == len(good)


def test_stop_from_another_thread_and_status(tmp_path):
    path = make_config(tmp_path, source={"realtime": True})
    with Running(path) as run:
        wait_for(lambda: run.service.stats.reads >= 1, what="a read")
        st = run.service.status()
        json.dumps(st)  # plain JSON types only
        assert st["service"] == "running" and st["source"]["state"] == "open"
        assert st["sinks"]["out"]["delivered"] >= 1 and st["sinks"]["out"]["kind"] == "jsonl"
        assert st["stage_ms_p50"]["read"] > 0
    assert run.code == 0 and run.service.state == "stopped"


def test_reload_refuses_invalid_config_and_applies_a_valid_one(tmp_path):
    path = make_config(tmp_path, source={"realtime": True})
    good = path.read_text()
    with Running(path) as run:
        svc = run.service
        path.write_text(good + "[dedup]\nwindow_s = \"long\"\n")
        assert svc.reload() is False
        assert svc.stats.reload_failures == 1 and svc.config["dedup"]["window_s"] == 2.0
        # Add a second sink: the first keeps running untouched, the new one gets results.
        first = svc.sinks[0]
        path.write_text(good + f'[[sinks]]\nkind = "jsonl"\nname = "second"\npath = "{tmp_path / "second.jsonl"}"\n')
        assert svc.reload() is True
        assert svc.sinks[0] is first and [s.name for s in svc.sinks] == ["out", "second"]
        wait_for(lambda: read_jsonl(tmp_path / "second.jsonl"), what="a result in the new sink")
    a = {r["id"] for r in read_jsonl(tmp_path / "out.jsonl")}
    b = {r["id"] for r in read_jsonl(tmp_path / "second.jsonl")}
    assert b and b <= a


def test_single_mode_one_result_per_window_and_noread(tmp_path):
    path = make_config(tmp_path, source={"realtime": True}, extra="")
    path.write_text(path.read_text() + '[trigger]\nmode = "single"\nsource = "signal"\n')
    with Running(path) as run:
        svc = run.service
        time.sleep(0.3)
        assert read_jsonl(tmp_path / "out.jsonl") == []  # closed: nothing is read
        # A window opened and closed before any frame: it is held open for one frame
        # (every window sees one): exactly one result for it, a read if a label was in
        # that frame, else a noread.
        svc.trigger.push(True)
        svc.trigger.push(False)
        wait_for(lambda: len(read_jsonl(tmp_path / "out.jsonl")) == 1, what="the short window's result")
        wait_for(lambda: svc.trigger.window is None, what="short window closed")
        reads_before = svc.stats.reads
        # A long window on a busy belt: exactly one result although several labels pass.
        svc.trigger.push(True)
        wait_for(lambda: svc.stats.reads >= reads_before + 1, what="a read in the window")
        frames_then = svc.stats.frames
        wait_for(lambda: svc.stats.frames >= frames_then + 60, what="two more seconds of frames")
        svc.trigger.push(False)
        wait_for(lambda: svc.trigger.window is None and svc.trigger.windows == 2, what="window closed")
        time.sleep(0.2)
    results = read_jsonl(tmp_path / "out.jsonl")
    for r in results:
        VALIDATOR.validate(r)
    assert len(results) == 2 and results[1]["kind"] == "read"
    first = results[0]
    assert first["kind"] == "read" or (first["text"] is None and first["frames"] == 1)
    assert results[1]["id"] > results[0]["id"]


def test_window_mode_reports_every_distinct_code_in_the_window(tmp_path):
    path = make_config(tmp_path, source={"realtime": True, "labels_per_s": 4.0})
    path.write_text(path.read_text() + '[trigger]\nmode = "window"\n')
    with Running(path) as run:
        svc = run.service
        svc.trigger.push(True)
        wait_for(lambda: svc.stats.reads >= 3, what="three reads in the window")
        svc.trigger.push(False)
        wait_for(lambda: svc.trigger.window is None, what="window closed")
        n = len(read_jsonl(tmp_path / "out.jsonl"))
        frames_then = svc.stats.frames
        wait_for(lambda: svc.stats.frames >= frames_then + 30, what="frames while closed")
        assert len(read_jsonl(tmp_path / "out.jsonl")) == n  # closed: no more results
    results = read_jsonl(tmp_path / "out.jsonl")
    texts = [r["text"] for r in results]
    assert len(texts) >= 3 and len(set(texts)) == len(texts) and all(r["kind"] == "read" for r in results)


def test_metrics_endpoint(tmp_path):
    path = make_config(tmp_path, source={"realtime": True}, extra="")
    path.write_text(path.read_text() + '[metrics]\nport = 0\nhost = "127.0.0.1"\n')
    with Running(path) as run:
        wait_for(lambda: run.service.stats.reads >= 1, what="a read")
        port = run.service.metrics.port
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "edge_runtime_frames_total" in body
    assert 'edge_runtime_sink_emitted_total{sink="out"}' in body
    assert 'edge_runtime_stage_ms_p50{stage="read"}' in body
    assert 'edge_runtime_sink_delivered{sink="out"}' in body


def test_state_dir_used_by_another_instance_is_refused(tmp_path):
    from edge_runtime.service.loop import ServiceError

    path = make_config(tmp_path, source={"frames": 5})
    held = IdAllocator(str(tmp_path / "state"))
    try:
        with pytest.raises(ServiceError, match="in use by another edge-runtime process"):
            Service(config.load(str(path))).run(install_signals=False)
    finally:
        held.close()


# ------------------------------------------------------------------------- unit pieces


def test_result_dicts_are_schema_valid_including_binary_payloads():
    c = Code(text="\u00ff\u0001", raw=b"\xff\x01", corners=[(0, 0), (10, 0), (10, 10), (0, 10)], decoder="zxing")
    t = Track(tid=1, raw=c.raw, center=(5, 5), first_seen=1_700_000_000.0, last_seen=1_700_000_000.0,
              first_frame=7, last_frame=7)
    r = read_result(5, "d", c, t, 7, 1_700_000_000.0, now=1_700_000_000.0123)
    VALIDATOR.validate(r)
    assert r["bytes_b64"] == "/wE=" and r["latency_ms"] == pytest.approx(12.3, abs=0.01)
    assert r["ts"] == "2023-11-14T22:13:20.000Z"
    utf8 = read_result(6, "d", Code(text="é", raw="é".encode(), corners=c.corners), t, 7, 1_700_000_000.0)
    assert "bytes_b64" not in utf8
    n = noread_result(7, "d", 1_700_000_000.0, 1_700_000_001.5, 45, 99)
    VALIDATOR.validate(n)
    assert n["text"] is None and n["first_seen"] != n["last_seen"]
    bad = dict(n, text="x")
    assert not VALIDATOR.is_valid(bad)
    assert rfc3339(0.9999) == "1970-01-01T00:00:00.999Z"


def test_stdout_sink_never_writes_control_characters_raw():
    buf = io.StringIO()
    s = StdoutSink("o", "d", {}, stream=buf)
    s.emit({"id": 1, "text": "\x1b[2J\x1b]0;pwned\x07\nline2\u2028"})
    out = buf.getvalue()
    assert out.count("\n") == 1 and "\x1b" not in out and "\x07" not in out and "\u2028" not in out
    assert json.loads(out)["text"] == "\x1b[2J\x1b]0;pwned\x07\nline2\u2028"


def test_jsonl_sink_rotates_keeping_n_backups(tmp_path):
    p = tmp_path / "r.jsonl"
    s = JsonlSink("j", "d", {"path": str(p), "max_mb": 0.001, "keep": 2, "fsync": True})  # ~1 KB
    s.start()
    for i in range(100):
        s.emit({"id": i, "text": "x" * 50})
    s.close()
    files = sorted(x.name for x in tmp_path.iterdir())
    assert files == ["r.jsonl", "r.jsonl.1", "r.jsonl.2"]
    ids = [r["id"] for f in ("r.jsonl.2", "r.jsonl.1", "r.jsonl") for r in read_jsonl(tmp_path / f)]
    assert ids == list(range(ids[0], 100))  # newest kept, in order, no gaps
    assert all(os.path.getsize(tmp_path / f) <= 1100 for f in files)


# -------------------------------------------------------------------------- subprocess


def spawn(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edge_runtime", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_ids_never_reused_across_sigkill(tmp_path):
    out = tmp_path / "out.jsonl"
    path = make_config(tmp_path, source={"realtime": True, "fps": 30.0},
                       sinks=[{"kind": "jsonl", "name": "out", "path": str(out), "fsync": True}])
    counts = []
    for _ in range(3):
        before = len(read_jsonl(out))
        p = spawn(["run", "--config", str(path)])
        try:
            wait_for(lambda: len(read_jsonl(out)) >= before + 3, timeout=60, what="results from the run")
        finally:
            p.kill()
            p.wait(20)
        assert p.returncode == -signal.SIGKILL
        counts.append(len(read_jsonl(out)))
    ids = [r["id"] for r in read_jsonl(out)]
    assert ids == sorted(set(ids)), "an id was reused or went backwards after SIGKILL"
    assert counts[0] < counts[1] < counts[2]


def test_sigterm_exits_0_and_logs_json_on_stdout(tmp_path):
    out = tmp_path / "out.jsonl"
    path = make_config(tmp_path, source={"realtime": True})
    p = spawn(["run", "--config", str(path)])
    try:
        wait_for(lambda: read_jsonl(out), timeout=60, what="a first result")
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, stderr.decode()
    # No stdout sink: logs are JSON objects, one per line, on stdout.
    logs = [json.loads(line) for line in stdout.decode().splitlines()]
    events = [e.get("event") for e in logs]
    assert "started" in events and events[-1] == "stopped"
    assert all({"ts", "level", "logger", "msg"} <= set(e) for e in logs)


def test_sighup_with_invalid_config_keeps_running(tmp_path):
    out = tmp_path / "out.jsonl"
    path = make_config(tmp_path, source={"realtime": True})
    good = path.read_text()
    p = spawn(["run", "--config", str(path)])
    try:
        wait_for(lambda: read_jsonl(out), timeout=60, what="a first result")
        path.write_text(good + "[reader]\ndeadline = 5\n")
        p.send_signal(signal.SIGHUP)
        n = len(read_jsonl(out))
        wait_for(lambda: len(read_jsonl(out)) >= n + 2, timeout=30, what="results after the refused reload")
        assert p.poll() is None
        p.send_signal(signal.SIGTERM)
        stdout, _ = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0
    refused = [json.loads(line) for line in stdout.decode().splitlines() if "reload refused" in line]
    assert len(refused) == 1 and "reader.deadline: unknown key" in refused[0]["msg"]


def test_demo_without_arguments_prints_results_quickly():
    p = spawn(["run"])
    lines: list[dict] = []

    def reader():
        for raw in p.stdout:
            lines.append(json.loads(raw))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        wait_for(lambda: len(lines) >= 2, timeout=20, what="demo results on stdout")
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        finally:
            if p.poll() is None:
                p.kill()
    assert p.returncode == 0
    for r in lines:
        VALIDATOR.validate(r)
        assert r["text"].startswith("LOT-")


def test_sigusr1_toggles_a_signal_trigger(tmp_path):
    out = tmp_path / "out.jsonl"
    path = make_config(tmp_path, source={"realtime": True})
    path.write_text(path.read_text() + '[trigger]\nmode = "single"\nsource = "signal"\n')
    p = spawn(["run", "--config", str(path)])
    try:
        wait_for(lambda: any(b'"started"' in line for line in [p.stdout.readline()]), timeout=60, what="start")
        time.sleep(1.0)
        assert read_jsonl(out) == []  # window closed: labels pass unread
        p.send_signal(signal.SIGUSR1)
        wait_for(lambda: len(read_jsonl(out)) == 1, timeout=30, what="one read after SIGUSR1")
        p.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
    assert p.returncode == 0
    (r,) = read_jsonl(out)
    assert r["kind"] == "read"


def test_sink_that_cannot_start_is_one_line_and_exit_2(tmp_path):
    path = make_config(tmp_path, sinks=[{"kind": "jsonl", "name": "out", "path": "/dev/null/results.jsonl"}])
    r = subprocess.run([sys.executable, "-m", "edge_runtime", "run", "--config", str(path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    err = [line for line in r.stderr.splitlines() if line.startswith("edge-runtime: error:")]
    assert err == ["edge-runtime: error: sinks[0] (jsonl 'out'): cannot write /dev/null/results.jsonl: Not a directory"]
    assert "Traceback" not in r.stderr


def test_binary_and_hostile_payloads_end_to_end_through_stdout(tmp_path):
    """A folder of real images: a non-UTF-8 label and one carrying ANSI escapes and a newline."""
    import base64

    import cv2
    from qrgen import on_canvas, qr_image

    folder = tmp_path / "frames"
    folder.mkdir()
    binary = b"\xff\xfe\x00\x01LOT\x80"
    hostile = "\x1b[2J\x1b]0;owned\x07\nFAKE LOG LINE"
    cv2.imwrite(str(folder / "a.png"), on_canvas(qr_image(binary, module_px=6), size=(480, 640), at=(100, 100)))
    cv2.imwrite(str(folder / "b.png"), on_canvas(qr_image(hostile.encode(), module_px=6), size=(480, 640), at=(100, 100)))
    path = tmp_path / "c.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n[source]\nkind = "folder"\npath = "{folder}"\n'
                    '[[sinks]]\nkind = "stdout"\n')
    r = subprocess.run([sys.executable, "-m", "edge_runtime", "run", "--config", str(path)], cwd=ROOT,
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    out = r.stdout
    assert b"\x1b" not in out and b"\x07" not in out and max(out) < 0x80
    results = [json.loads(line) for line in out.decode("ascii").splitlines()]
    assert len(results) == 2
    for res in results:
        VALIDATOR.validate(res)
    a, b = results
    assert base64.b64decode(a["bytes_b64"]) == binary
    assert b["text"] == hostile and "bytes_b64" not in b


def test_source_failing_at_run_time_is_reopened_and_logged_once(tmp_path, caplog):
    path = make_config(tmp_path, source={"realtime": True})
    with Running(path) as run:
        svc = run.service
        wait_for(lambda: svc.stats.reads >= 1, what="a read")

        class Unplugged:  # what a driver does when the device vanishes
            def read(self, timeout=1.0):
                raise OSError(19, "No such device")

            def state(self):
                return {"state": "open"}

            def close(self):
                pass

        original = svc.source
        with caplog.at_level("INFO", logger="edge_runtime.service"):
            svc.source = Unplugged()
            reads = svc.stats.reads
            wait_for(lambda: svc.stats.reads >= reads + 2, what="reads after the reopen")
        # Closed only now: the loop may still have been inside original.read() at the swap,
        # and a source closed under it fails with some other error than the device's.
        original.close()
    assert svc.stats.source_errors == 1
    failed = [r for r in caplog.records if r.getMessage().startswith("source failed")]
    assert len(failed) == 1 and "No such device" in failed[0].getMessage()
    assert any(r.getMessage() == "source reopened" for r in caplog.records)


def test_trigger_events_in_order_repeats_ignored_and_wrong_source_refused():
    from edge_runtime.service.trigger import Trigger, parse_state

    assert [parse_state(x) for x in ("LON", "loff", "on", "OFF", True, "toggle")] == [True, False, True, False, True, None]
    t = Trigger("single", "serial")
    assert not t.reading
    t.on_serial("on")
    t.on_serial("on")  # PLCs resend: still one window
    t.on_mqtt({"cmd": "LOFF"})  # from the wrong peer: ignored
    [(kind, _, w)] = t.poll()
    assert kind == "open" and t.reading and t.windows == 1
    w.results = 1
    assert not t.reading  # single: one result per window, then stop reading
    t.on_serial("off")
    t.on_serial("bogus")  # logged, ignored
    assert [k for k, _, _ in t.poll()] == ["close"] and t.window is None
    s = Trigger("window", "signal")
    s.on_signal()
    s.on_signal()
    assert [k for k, _, _ in s.poll()] == ["open"]  # closed before any frame: held for one
    s.on_signal()  # LON while it waits for that frame: folded in, and leaves the trigger on
    assert s.poll() == [] and s.state()["coalesced"] == 1
    s.window.frames += 1  # the loop read a frame in it
    assert [k for k, _, _ in s.poll()] == ["close", "open"] and s.windows == 2
    c = Trigger("continuous")
    c.push(False)
    assert c.poll() == [] and c.reading


def test_status_and_stopped_lines_say_sink_states_and_what_is_still_queued(tmp_path, caplog):
    """Repro: 9 results were queued in the outbox and the stopped line said nothing."""
    sinks = [{"kind": "jsonl", "name": "out", "path": str(tmp_path / "out.jsonl")},
             {"kind": "mqtt", "name": "plant", "host": "127.0.0.1", "port": 9, "qos": 1}]  # nobody there
    path = make_config(tmp_path, source={"frames": 150, "width": 640, "height": 360},
                       sinks=sinks, extra="status_interval_s = 0.1\nshutdown_timeout_s = 0.5\n")
    with caplog.at_level("INFO", logger="edge_runtime.service"):
        with Running(path) as run:
            wait_for(lambda: run.service.state == "stopped", timeout=120, what="source finished")
    results = read_jsonl(tmp_path / "out.jsonl")
    assert results
    status = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "status"]
    assert status, "no status line"
    f = status[-1].fields
    assert f["sinks"]["out"].startswith("up") and f["sinks"]["plant"].startswith("down")
    assert "queued" in f["sinks"]["plant"] and f["queued"]["plant"] >= 1
    (stopped,) = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "stopped"]
    assert stopped.fields["queued"] == {"out": 0, "plant": len(results)}
    assert f"plant {len(results)}" in stopped.getMessage()


def test_a_second_sigterm_while_winding_down_still_exits_0(tmp_path):
    """A SIGTERM arriving after the service stopped (systemd, an impatient operator) must not
    kill the process by the signal: our handler stays until the process exits."""
    slow_sink = [{"kind": "mqtt", "name": "plant", "host": "127.0.0.1", "port": 9, "qos": 1},
                 {"kind": "jsonl", "name": "out", "path": str(tmp_path / "out.jsonl")}]
    path = make_config(tmp_path, source={"realtime": True, "width": 640, "height": 360}, sinks=slow_sink,
                       extra="shutdown_timeout_s = 1.5\n")
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: read_jsonl(tmp_path / "out.jsonl"), timeout=60, what="a result")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        for _ in range(20):  # keep sending while it drains and exits
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.1)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-1500:]


def test_reads_carry_print_quality_and_noreads_a_reason(tmp_path):
    path = make_config(tmp_path, source={"frames": 90})
    Service(config.load(str(path))).run(install_signals=False)
    reads = [r for r in read_jsonl(tmp_path / "out.jsonl") if r["kind"] == "read"]
    graded = [r for r in reads if r.get("quality")]
    assert reads and len(graded) == len(reads)
    for r in graded:
        VALIDATOR.validate(r)
        assert r["quality"]["grade"] in "ABCDF" and 0 <= r["quality"]["sc"] <= 1
    # A window on an empty belt: its noread says nothing was detected (look at the camera).
    empty = tmp_path / "empty"
    empty.mkdir()
    path = make_config(empty, source={"realtime": True, "labels_per_s": 0})
    path.write_text(path.read_text() + '[trigger]\nmode = "window"\nsource = "signal"\n')
    with Running(path) as run:
        run.service.trigger.push(True)
        time.sleep(0.3)
        run.service.trigger.push(False)
        wait_for(lambda: read_jsonl(empty / "out.jsonl"), what="the window's noread")
    (n,) = read_jsonl(empty / "out.jsonl")
    VALIDATOR.validate(n)
    assert n["kind"] == "noread" and n["reason"] == "nothing_detected" and n["frames"] >= 1
