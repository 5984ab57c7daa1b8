"""`python -m quantize all --smoke`: the whole build chain on tiny data still yields INT8
models in both formats that the runtime backends load and run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent



def test_smoke_chain_builds_loadable_int8_models(tmp_path):
    out = tmp_path / "models"
    shipped = {p.name: p.stat().st_mtime_ns for p in (REPO / "models").iterdir()} if (REPO / "models").exists() else {}
    r = subprocess.run([sys.executable, "-m", "quantize", "all", "--smoke", "--out", str(out),
                        "--work", str(tmp_path / "work")], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert set(m["formats"]) == {"tflite", "ncnn"}
    assert m["build"]["command"].startswith("python -m quantize all --smoke")
    assert m["metrics"]["models"]["tflite_int8"]["per_category"]["overall"]["tp"] >= 0
    proof = m["metrics"]["ncnn_int8_proof"]
    for layer in proof.values():  # ncnn computed with int8: matches the int8 simulation, not float
        assert layer["max_abs_err_vs_int8_sim"] < 1e-4 < layer["max_abs_err_vs_float"]
    assert b"\x38\x4b\x0d\x00" in (out / m["formats"]["ncnn"]["bin"]).read_bytes()  # int8 weight tag
    # the tune step's choice (its rule on the calibration split) is what the manifest decodes with
    from quantize.tune import pick

    choice = m["metrics"]["score_threshold_choice"]
    assert m["output"]["decode"]["score_threshold"] == choice["score_threshold"] == pick(choice["grid"])["score_threshold"]

    from edge_runtime import detect

    frame = np.random.default_rng(0).integers(0, 255, (480, 640), dtype=np.uint8)
    for name in ("tflite", "ncnn"):
        det = detect.load(name, model_dir=out)
        assert det.precision == "int8"
        assert isinstance(det.detect(frame), list)
        h, w = det.input_hw  # the geometry the build recorded, which the graph's output matches
        assert (h, w) == (m["input"]["height"], m["input"]["width"])
        st = m["output"]["decode"]["stride"]
        assert det.logits(np.zeros((h, w), np.uint8)).shape == (2, h // st, w // st)
    # the shipped models were not touched
    after = {p.name: p.stat().st_mtime_ns for p in (REPO / "models").iterdir()} if (REPO / "models").exists() else {}
    assert after == shipped


def test_smoke_refuses_to_default_to_shipped_models():
    r = subprocess.run([sys.executable, "-m", "quantize", "all", "--smoke"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "--out" in r.stderr


def test_shipped_manifest_decodes_with_the_threshold_its_build_chose():
    m = json.loads((REPO / "models" / "manifest.json").read_text())
    choice = m["metrics"]["score_threshold_choice"]
    assert choice["calibration_frames"] >= 256 and len(choice["grid"]) >= 5
    from quantize.tune import pick

    best = pick(choice["grid"], choice["min_precision"])
    assert m["output"]["decode"]["score_threshold"] == best["score_threshold"]

    from edge_runtime import detect

    assert detect.load("tflite", model_dir=REPO / "models").params.score_threshold == best["score_threshold"]


def test_new_model_files_reset_a_tuned_threshold(tmp_path):
    """A threshold tuned for an older build must not stick to newly exported files."""
    from edge_runtime.detect.postprocess import DecodeParams
    from quantize import manifest_writer, tune

    for p in (REPO / "models").iterdir():
        if p.suffix in (".tflite", ".param", ".bin"):
            (tmp_path / p.name).write_bytes(p.read_bytes())
    manifest_writer.write_files(tmp_path, {"tflite": {"model": "qr_detector_int8.tflite", "precision": "int8"}})
    tune.set_decode(tmp_path, 0.75)
    assert json.loads((tmp_path / "manifest.json").read_text())["output"]["decode"]["score_threshold"] == 0.75
    manifest_writer.write_files(tmp_path, {"tflite": {"model": "qr_detector_int8.tflite", "precision": "int8"}})
    decode = json.loads((tmp_path / "manifest.json").read_text())["output"]["decode"]
    assert decode["score_threshold"] == DecodeParams().score_threshold


def test_threshold_rule_is_recall_first_under_the_precision_floor():
    from quantize.tune import pick

    def row(t, r, p):
        return {"score_threshold": t, "recall": r, "precision": p, "f1": 2 * r * p / (r + p) if r + p else 0.0}

    grid = [row(0.5, 0.985, 0.96), row(0.6, 0.980, 0.976), row(0.7, 0.980, 0.980), row(0.8, 0.970, 0.990)]
    assert pick(grid, 0.975)["score_threshold"] == 0.7  # 0.5 is under the floor; 0.6 and 0.7 tie on recall
    assert pick(grid, 0.995)["score_threshold"] == max(grid, key=lambda r: r["f1"])["score_threshold"]  # none reaches it
    zeros = [row(t, 0.0, 0.0) for t in (0.5, 0.6)]  # a model that finds nothing (the smoke build)
    assert pick(zeros, 0.975)["score_threshold"] == 0.5
