"""Match-code validation, the read counters and the serial sink's mismatch string and templates
(issue 17 items 2, 3, 5): units, config errors, and `edge-runtime run` with a PLC on a real
pseudo-terminal pair."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from edge_runtime import config
from edge_runtime.config import ConfigError
from edge_runtime.match import COUNTER_FILE, MAX_PAYLOAD, Matcher
from edge_runtime.service.counters import ReadCounters
from edge_runtime.sinks.serial_frame import parse_template, result_payload

from pty_pair import SocatPair, read_until
from test_service import VALIDATOR, Running, make_config, read_jsonl, wait_for

ROOT = Path(__file__).resolve().parent.parent
BASE = 'state_dir = "{state}"\n[source]\nkind = "synthetic"\n[[sinks]]\nkind = "stdout"\n'


# ------------------------------------------------------------------------------- Matcher


def test_exact_is_the_whole_payload():
    m = Matcher("exact", "LOT-000001")
    assert m.check("LOT-000001") is True
    assert m.check("LOT-0000012") is False and m.check("xLOT-000001") is False and m.check(None) is False


def test_regex_is_searched_and_long_payloads_are_not():
    m = Matcher("regex", "LOT-0000[0-4]")
    assert m.check("LOT-000042") and m.check("lot LOT-000001 x")
    assert not m.check("LOT-000050")
    anchored = Matcher("regex", "^A[0-9]{3}$")
    assert anchored.check("A123") and not anchored.check("A1234")
    assert not Matcher("regex", "A").check("A" * (MAX_PAYLOAD + 1))


def test_list_is_read_at_build_and_again_on_reload(tmp_path):
    path = tmp_path / "ok.txt"
    path.write_text("LOT-000001\r\nLOT-000002  \n\n")
    section = {"mode": "list", "pattern": "", "list": str(path), "step": 1, "start": None}
    m = Matcher.build(section, str(tmp_path))
    assert m.check("LOT-000001") and m.check("LOT-000002") and not m.check("LOT-000003") and not m.check("")
    path.write_text("LOT-000003\n")
    again = Matcher.reloaded(m, section, str(tmp_path))
    assert again.check("LOT-000003") and not again.check("LOT-000001")


def test_off_builds_no_matcher():
    assert Matcher.build({"mode": "off", "pattern": "", "list": None, "step": 1, "start": None}, None) is None


def test_increment_follows_the_last_run_of_digits_and_resyncs(tmp_path):
    m = Matcher("increment", step=1, state_dir=str(tmp_path))
    assert m.check("line2-part000") is True  # the first read sets the sequence
    assert m.check("line2-part001") is True
    assert m.check("line2-part003") is False  # one label skipped: one mismatch...
    assert m.check("line2-part004") is True  # ...then the sequence goes on from what was read
    assert m.check("no digits") is False
    assert m.check("line2-part005") is True
    assert m.check("line2-part005") is False  # the same label twice
    stepped = Matcher("increment", step=10, start=100)
    assert stepped.check("x100") and stepped.check("x110") and not stepped.check("x111")
    assert not Matcher("increment", start=5).check("x4")


def test_increment_is_kept_across_a_restart(tmp_path):
    m = Matcher("increment", step=2, state_dir=str(tmp_path))
    assert m.check("part010") and m.check("part012")
    assert (tmp_path / COUNTER_FILE).exists()
    after = Matcher("increment", step=2, state_dir=str(tmp_path))  # a new process, same state_dir
    assert after.expected == 14
    assert after.check("part014") is True
    assert Matcher("increment", step=2, state_dir=str(tmp_path)).check("part010") is False
    # A new `start` in the config starts a new sequence.
    restarted = Matcher("increment", step=2, start=0, state_dir=str(tmp_path))
    assert restarted.expected == 0 and restarted.check("part000")


def test_increment_keeps_counting_in_memory_when_the_file_cannot_be_written(tmp_path, caplog):
    blocked = tmp_path / "state"
    blocked.mkdir()
    (blocked / COUNTER_FILE).mkdir()  # a directory where the file should be: every write fails
    m = Matcher("increment", state_dir=str(blocked))
    assert m.check("p1") and m.check("p2") and m.check("p3") and not m.check("p5")
    assert sum("cannot write" in r.getMessage() for r in caplog.records) == 1


# ------------------------------------------------------------------------- config errors


@pytest.mark.parametrize("table,key,says", [
    ('mode = "regex"\npattern = "LOT-(0"', "match.pattern", "not a valid regular expression"),
    ('mode = "regex"', "match.pattern", "required"),
    ('mode = "exact"\npattern = ""', "match.pattern", "required"),
    ('mode = "regex"\npattern = "' + "a" * 600 + '"', "match.pattern", "at most 512"),
    ('mode = "list"\nlist = "/nonexistent/accepted.txt"', "match.list", "cannot read"),
    ('mode = "list"', "match.list", "required"),
    ('mode = "increment"\nstep = 0', "match.step", "at least 1"),
    ('mode = "sometimes"', "match.mode", "expected one of"),
])
def test_bad_match_config_is_one_line_naming_the_key(tmp_path, table, key, says):
    text = BASE.format(state=tmp_path / "state") + "[match]\n" + table + "\n"
    with pytest.raises(ConfigError) as ei:
        config.parse(text, "c.toml", None)
    assert len(ei.value.problems) == 1, ei.value.problems
    line = ei.value.problems[0]
    assert line.startswith(f"c.toml: {key}: ") and says in line and "\n" not in line, line


def test_bad_regex_exits_2_naming_the_key(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE.format(state=tmp_path / "state") + '[match]\nmode = "regex"\npattern = "(?P<x"\n')
    p = subprocess.run([sys.executable, "-m", "edge_runtime", "check-config", str(cfg)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{cfg}: match.pattern: "), p.stderr


@pytest.mark.parametrize("template,says", [
    ("{text};{nope}", "unknown field {nope}"),
    ("{text.__class__.__init__}", "unknown field"),
    ("{text!r}", "unknown field"),
    ("{text:>10}", "unknown field"),
    ("{text", "unbalanced"),
    ("{text},{id}", "separator"),  # the default separator is ","
])
def test_bad_template_is_a_config_error_naming_the_key(tmp_path, template, says):
    text = (f'state_dir = "{tmp_path}"\n[source]\nkind = "synthetic"\n[[sinks]]\nkind = "serial"\n'
            f'port = "/dev/ttyUSB0"\ntemplate = {json.dumps(template)}\n')
    with pytest.raises(ConfigError) as ei:
        config.parse(text, "c.toml", None)
    (line,) = ei.value.problems
    assert line.startswith("c.toml: sinks[0].template: ") and says in line, line


# -------------------------------------------------------------------- frames (pure units)


READ = {"id": 42, "device_id": "dev", "ts": "2026-12-03T08:00:00.000Z", "kind": "read", "text": "LOT-1",
        "corners": [[10.0, 20.0], [30.0, 20.0], [30.0, 40.0], [10.0, 40.0]], "decoder": "zxing", "stage": "direct",
        "quality": {"grade": "B", "score": 2.7}}


def test_mismatch_string_replaces_the_payload_only_for_a_mismatch():
    assert result_payload({**READ, "match": False}, b"NOREAD", "utf-8", mismatch=b"NG") == b"NG"
    assert result_payload({**READ, "match": True}, b"NOREAD", "utf-8", mismatch=b"NG") == b"LOT-1"
    assert result_payload({**READ, "match": False}, b"NOREAD", "utf-8") == b"LOT-1"  # not configured
    assert result_payload(READ, b"NOREAD", "utf-8", mismatch=b"NG") == b"LOT-1"  # [match] off


def test_template_fields():
    t = parse_template("{text}|{id}|{grade}|{quality.score}|{match}|{x},{y}|{decoder}|{stage}|{ts}|{device_id}|{{}}")
    got = result_payload({**READ, "match": True}, b"NOREAD", "utf-8", template=t)
    assert got == b"LOT-1|42|B|2.7|1|20,30|zxing|direct|2026-12-03T08:00:00.000Z|dev|{}"
    noread = {"id": 43, "kind": "noread", "text": None, "corners": [], "decoder": "", "stage": ""}
    assert result_payload(noread, b"NOREAD", "utf-8", template=t).startswith(b"NOREAD|43||||,|")


def test_template_values_get_the_payloads_control_rule():
    from edge_runtime.sinks.serial import SerialSink

    sink = SerialSink("plc", "dev\x01", {"port": "/dev/null-nonexistent", "prefix": "", "suffix": "\r\n",
                                         "template": "{text};{device_id}"})
    try:
        frame = sink.encode([{**READ, "text": "A\rB;", "device_id": "d\x03"}])
    finally:
        sink.close(timeout=0.1)
    assert frame == b"A\\x0dB;;d\\x03\r\n"


# ------------------------------------------------------------------------------ counters


def test_read_rate_over_the_window_and_since_start():
    c = ReadCounters(window=4)
    for kind in ("noread", "noread", "read", "read", "read", "read"):
        c.add({"kind": kind})
    assert c.read_rate() == {"last_4": 1.0, "since_start": round(4 / 6, 4)}
    c.add({"kind": "noread"})
    assert c.read_rate() == {"last_4": 0.75, "since_start": 0.5714}
    assert (c.reads, c.noreads, c.good_reads, c.mismatches) == (4, 3, 4, 0)
    c.add({"kind": "read", "match": False})
    c.add({"kind": "read", "match": True})
    assert (c.reads, c.good_reads, c.mismatches) == (6, 5, 1)
    assert ReadCounters().read_rate() == {"last_1000": None, "since_start": None}


def test_quality_mean_and_worst_over_the_last_reads():
    c = ReadCounters(window=3)
    for score in (0.2, 4.0, 3.0, 2.0):
        c.add({"kind": "read", "quality": {"grade": "?", "score": score}})
    c.add({"kind": "read"})  # no quality: not counted
    c.add({"kind": "noread"})
    assert c.quality() == {"reads": 3, "mean_score": 3.0, "mean_grade": "B", "worst_score": 2.0, "worst_grade": "C"}
    buckets, total = c.histogram()
    assert buckets == [("0.5", 1), ("1.5", 1), ("2.5", 2), ("3.5", 3), ("4.5", 4), ("+Inf", 4)]
    assert total == pytest.approx(9.2)


def test_prometheus_has_the_counters_and_the_quality_histogram(tmp_path):
    path = make_config(tmp_path, source={"frames": 0, "width": 640, "height": 360},
                       extra='[match]\nmode = "regex"\npattern = "LOT-00000[0-1]"\n')
    path.write_text(path.read_text() + '[metrics]\nport = 0\nhost = "127.0.0.1"\n')
    with Running(path) as run:
        svc = run.service
        wait_for(lambda: svc.stats.items.mismatches >= 2, what="two mismatches")
        body = urllib.request.urlopen(f"http://127.0.0.1:{svc.metrics.port}/metrics", timeout=10).read().decode()
        status = svc.status()
    samples = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in body.splitlines()
               if ln and not ln.startswith("#")}
    assert samples["edge_runtime_mismatches_total"] >= 2
    assert samples["edge_runtime_good_reads_total"] == 2  # LOT-000000, LOT-000001
    assert samples['edge_runtime_read_rate{window="1000"}'] == 1.0
    assert samples['edge_runtime_read_rate{window="start"}'] == 1.0
    assert "# TYPE edge_runtime_quality_score histogram" in body
    n = samples["edge_runtime_quality_score_count"]
    assert n >= 4 and samples['edge_runtime_quality_score_bucket{le="+Inf"}'] == n
    assert 0 <= samples["edge_runtime_quality_score_sum"] <= 4 * n
    assert 0 <= samples['edge_runtime_quality_worst_score{window="1000"}'] <= 4
    assert status["good_reads"] == 2 and status["mismatches"] >= 2
    assert status["quality_last_1000"]["mean_grade"] in "ABCDF"


# ---------------------------------------------------------------- end to end, with a PLC


def run_with_plc(tmp_path: Path, serial_extra: str) -> tuple[list[dict], list[bytes], dict]:
    """`edge-runtime run` on 300 synthetic frames with [match] regex, a jsonl sink and a serial
    sink to a pty pair whose PLC end this test reads: (jsonl results, PLC frames, stopped line)."""
    pair = SocatPair(tmp_path / "pty").start()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
device_id = "match-e2e"
state_dir = "{tmp_path / 'state'}"

[source]
kind = "synthetic"
realtime = false
frames = 300
width = 640
height = 360
degradations = false

[match]
mode = "regex"
pattern = "LOT-00000[0-4]"

[[sinks]]
kind = "jsonl"
name = "ref"
path = "{tmp_path / 'ref.jsonl'}"

[[sinks]]
kind = "serial"
name = "plc"
port = "{pair.dev}"
baudrate = 115200
prefix = ""
suffix = "\\r\\n"
{serial_extra}
""")
    plc = pair.open_plc()
    data = b""
    try:
        proc = subprocess.run([sys.executable, "-m", "edge_runtime", "run", "--config", str(cfg)], cwd=ROOT,
                              capture_output=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
        results = read_jsonl(tmp_path / "ref.jsonl")
        data = read_until(plc, lambda d: d.count(b"\r\n") >= len(results), timeout=20)
    finally:
        os.close(plc)
        pair.stop()
    stopped = next(json.loads(ln) for ln in proc.stdout.decode().splitlines() if '"event": "stopped"' in ln)
    return results, [f for f in data.split(b"\r\n") if f], stopped


def test_regex_mismatch_is_flagged_sent_as_ng_and_counted(tmp_path):
    results, frames, stopped = run_with_plc(tmp_path, 'mismatch = "NG"')
    reads = [r for r in results if r["kind"] == "read"]
    assert len(reads) >= 10
    for r in results:
        VALIDATOR.validate(r)
        assert ("match" in r) == (r["kind"] == "read")
    for r in reads:
        assert r["match"] is (r["text"] in {f"LOT-00000{i}" for i in range(5)}), r
    flagged = [r for r in reads if not r["match"]]
    assert flagged and any(r["match"] for r in reads)
    expected = [b"NOREAD" if r["kind"] == "noread" else b"NG" if r["match"] is False else r["text"].encode()
                for r in results]
    assert frames == expected
    assert stopped["mismatches"] == len(flagged)
    assert stopped["good_reads"] == len(reads) - len(flagged)
    assert stopped["reads"] == len(reads) and stopped["read_rate"]["since_start"] is not None


def test_template_frames_arrive_in_that_form(tmp_path):
    results, frames, stopped = run_with_plc(tmp_path, 'mismatch = "NG"\ntemplate = "{text};{id};{match}"')
    reads = [r for r in results if r["kind"] == "read"]
    assert reads and len(frames) == len(results)
    for r, f in zip(results, frames):
        if r["kind"] == "noread":
            assert f == f"NOREAD;{r['id']};".encode()
            continue
        text = "NG" if r["match"] is False else r["text"]
        assert f == f"{text};{r['id']};{int(r['match'])}".encode(), (r, f)
    assert any(f.startswith(b"NG;") for f in frames) and any(f.endswith(b";1") for f in frames)
    assert stopped["mismatches"] == sum(1 for r in reads if not r["match"])


def test_list_file_is_read_again_on_reload_of_a_running_service(tmp_path):
    accepted = tmp_path / "accepted.txt"
    accepted.write_text("LOT-000000\n")
    path = make_config(tmp_path, source={"frames": 0, "realtime": True, "labels_per_s": 6.0},
                       extra=f'[match]\nmode = "list"\nlist = "{accepted}"\n')
    with Running(path) as run:
        svc = run.service
        wait_for(lambda: svc.stats.items.mismatches >= 1, what="a label not on the list")
        accepted.write_text("".join(f"LOT-{i:06d}\n" for i in range(1000)))
        assert svc.reload() is True
        done = svc.last_result_id
        wait_for(lambda: any(r["id"] > done for r in read_jsonl(tmp_path / "out.jsonl")), what="a read after reload")
    results = [r for r in read_jsonl(tmp_path / "out.jsonl") if r["kind"] == "read"]
    before = [r for r in results if r["id"] <= done]
    after = [r for r in results if r["id"] > done]
    assert before[0]["text"] == "LOT-000000" and before[0]["match"] is True
    assert all(r["match"] is False for r in before[1:]) and len(before) >= 2
    assert after and all(r["match"] is True for r in after)
