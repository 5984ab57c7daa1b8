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

    from edge_runtime import detect

    frame = np.random.default_rng(0).integers(0, 255, (480, 640), dtype=np.uint8)
    for name in ("tflite", "ncnn"):
        det = detect.load(name, model_dir=out)
        assert det.precision == "int8"
        assert isinstance(det.detect(frame), list)
        assert det.logits(np.zeros((256, 320), np.uint8)).shape == (2, 64, 80)
    # the shipped models were not touched
    after = {p.name: p.stat().st_mtime_ns for p in (REPO / "models").iterdir()} if (REPO / "models").exists() else {}
    assert after == shipped


def test_smoke_refuses_to_default_to_shipped_models():
    r = subprocess.run([sys.executable, "-m", "quantize", "all", "--smoke"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "--out" in r.stderr
