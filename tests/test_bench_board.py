"""`edge-runtime bench board`: the rate ramp, the report, and the recommendation's logic.

No wall-clock asserts: the machine running the tests is shared; what is checked is that the
report is complete and consistent with its own criteria, and that the recommendation is one of
the settings tried."""

from __future__ import annotations

import json
import subprocess
import sys

from edge_runtime.bench.board import deadline_for, recommend


def run(det: str, th: int, fps: float, *, ok: bool, read_rate: float = 1.0, p99: float = 10.0,
        silent: int = 0) -> dict:
    return {"detector": det, "detector_threads": th, "fps": fps, "sustained": ok, "read_rate": read_rate,
            "deadline_ms": round(1000.0 / fps, 1), "reader_ms": {"p50": p99 / 2, "p99": p99, "max": p99},
            "silent_misses": silent, "duplicates": 0, "false_reads": 0,
            "service_cpu_ms_per_frame": 12.0, "reader_cpu_ms_mean": 9.0}


def setting(det: str, th: int, max_fps: float) -> dict:
    return {"detector": det, "detector_threads": th, "max_fps": max_fps, "at_max": {} if max_fps else None}


def test_recommends_the_best_read_rate_among_settings_that_sustain_the_target():
    runs = [run("tflite", 1, 15, ok=True, read_rate=0.99, p99=40), run("tflite", 1, 30, ok=True, read_rate=0.98, p99=30),
            run("tflite", 2, 15, ok=True, read_rate=0.99, p99=30), run("tflite", 2, 30, ok=True, read_rate=0.98, p99=20),
            run("none", 1, 15, ok=True, read_rate=0.90, p99=5), run("none", 1, 30, ok=True, read_rate=0.90, p99=5),
            run("none", 1, 45, ok=True, read_rate=0.90, p99=5)]
    settings = [setting("tflite", 1, 30), setting("tflite", 2, 30), setting("none", 1, 45)]
    rec = recommend(settings, runs, 30.0)
    # none sustains more fps but reads less; of the tflite ones, 2 threads has more headroom
    assert (rec["detector"], rec["detector_threads"], rec["fps"], rec["sustained"]) == ("tflite", 2, 30.0, True)
    assert rec["deadline_ms"] == deadline_for(30.0, runs[3]) == 30.0  # 33.3 ms less 3 ms besides the reader


def test_below_the_target_it_recommends_the_fastest_setting_and_the_rate_to_set():
    runs = [run("tflite", 1, 10, ok=True), run("tflite", 1, 15, ok=False, p99=90),
            run("ncnn", 1, 10, ok=True), run("ncnn", 1, 15, ok=True), run("ncnn", 1, 20, ok=False, p99=80)]
    settings = [setting("tflite", 1, 10), setting("ncnn", 1, 15)]
    rec = recommend(settings, runs, 30.0)
    assert (rec["detector"], rec["fps"], rec["sustained"]) == ("ncnn", 15, True)
    assert "set the camera to 15 fps" in rec["why"]


def test_when_nothing_is_sustained_the_closest_miss_is_named_and_not_called_sustained():
    runs = [run("tflite", 1, 10, ok=False, silent=2, p99=50), run("none", 1, 10, ok=False, silent=0, p99=150)]
    rec = recommend([setting("tflite", 1, 0), setting("none", 1, 0)], runs, 30.0)
    assert (rec["detector"], rec["sustained"]) == ("none", False)
    assert rec["why"].startswith("NOT sustained")
    assert recommend([], [], 30.0) is None


def test_bench_board_on_this_machine_reports_each_run_and_recommends_a_setting_it_tried():
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "bench", "board", "--rates", "5,10",
                           "--detectors", "tflite,none", "--threads", "1", "--frames", "40", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    rep = json.loads(proc.stdout)
    tried = {(r["detector"], r["detector_threads"]) for r in rep["runs"]}
    assert tried == {("tflite", 1), ("none", 1)}
    for r in rep["runs"]:
        assert r["fps"] in (5.0, 10.0) and r["deadline_ms"] == round(1000.0 / r["fps"], 1)
        assert r["frames"] == 40 and r["labels"] >= 1
        assert set(r["stages_ms"]) == {"detect", "direct", "retries"}
        assert r["reader_ms"]["max"] >= r["reader_ms"]["p99"] >= r["reader_ms"]["p50"] > 0
        # the verdict follows the stated criteria
        meets = (r["silent_misses"] == 0 and r["duplicates"] == 0 and r["false_reads"] == 0
                 and r["reader_ms"]["p99"] <= r["deadline_ms"] and r["frames_dropped"] <= 0.01 * r["frames"])
        assert r["sustained"] == meets
        if r["detector"] == "none":
            assert r["stages_ms"]["detect"]["max"] == 0.0
    # a rate is tried only after the one below it was sustained
    for det in ("tflite", "none"):
        seq = [r for r in rep["runs"] if r["detector"] == det]
        assert seq[0]["fps"] == 5.0 and all(a["sustained"] for a in seq[:-1])
    for s in rep["settings"]:
        ok = [r["fps"] for r in rep["runs"] if (r["detector"], r["detector_threads"]) ==
              (s["detector"], s["detector_threads"]) and r["sustained"]]
        assert s["max_fps"] == (max(ok) if ok else 0.0)
    rec = rep["recommendation"]
    assert (rec["detector"], rec["detector_threads"]) in tried
    assert 0 < rec["deadline_ms"] <= 1000.0 / rec["fps"]
    assert proc.returncode == (0 if rec["sustained"] else 1)
