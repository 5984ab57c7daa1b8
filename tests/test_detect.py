"""The shipped INT8 detector models, loaded through the runtime backends.

Frames are drawn here (segno + OpenCV), independent of the training generator, so the test
also checks that the model generalises beyond its own synthetic data a little.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime import detect
from edge_runtime.detect import DetectorUnavailable
from edge_runtime.detect import manifest as mf
from edge_runtime.detect.selftest import draw_codes

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"


def _render(frame_hw, codes, seed=0):
    """codes: [(text, version, module_px, angle_deg, (cx, cy))] -> (gray frame, [quad])."""
    return draw_codes(codes, seed=seed, frame_hw=frame_hw)


def _iou(a, b):
    a = cv2.convexHull(np.asarray(a, np.float32))
    b = cv2.convexHull(np.asarray(b, np.float32))
    inter, _ = cv2.intersectConvexConvex(a, b)
    return inter / (cv2.contourArea(a) + cv2.contourArea(b) - inter)


CASES = {
    "one upright": ((480, 640), [("HELLO LINE 7", 2, 4.0, 0, (320, 240))]),
    "rotated small": ((480, 640), [("LOT 42-A", 1, 2.5, 30, (160, 330))]),
    "two codes": ((480, 640), [("PALLET 0001", 3, 3.5, 10, (170, 200)), ("PALLET 0002", 5, 3.0, -25, (470, 280))]),
    "wide frame": ((720, 1280), [("CARTON 7", 4, 6.0, 45, (900, 360))]),
}


@pytest.fixture(scope="module", params=["tflite", "ncnn"])
def detector(request):
    return detect.load(request.param)


@pytest.mark.parametrize("case", list(CASES))
def test_shipped_model_finds_codes(detector, case):
    hw, codes = CASES[case]
    frame, truth = _render(hw, codes)
    dets = detector.detect(frame)
    assert len(dets) == len(truth), (case, [d.score for d in dets])
    for q in truth:
        best = max(_iou(d.corners, q) for d in dets)
        assert best >= 0.5, (case, best)
    for d in dets:
        assert len(d.corners) == 4 and 0.0 < d.score <= 1.0
        xs, ys = zip(*d.corners)
        assert min(xs) >= 0 and max(xs) <= hw[1] and min(ys) >= 0 and max(ys) <= hw[0]


def test_empty_frame_has_no_detections(detector):
    rng = np.random.default_rng(3)
    frame = cv2.GaussianBlur(rng.integers(60, 200, (480, 640)).astype(np.uint8), (0, 0), 6)
    assert detector.detect(frame) == []


def test_tflite_and_ncnn_agree():
    tfl, ncn = detect.load("tflite"), detect.load("ncnn")
    for case, (hw, codes) in CASES.items():
        frame, _ = _render(hw, codes, seed=1)
        a, b = tfl.detect(frame), ncn.detect(frame)
        assert len(a) == len(b), case
        for da in a:
            assert max(_iou(da.corners, db.corners) for db in b) >= 0.5, case


def test_shipped_manifest_matches_files_and_limits():
    m = json.loads((MODELS / "manifest.json").read_text())
    assert m["name"] and m["version"].count(".") == 2
    for name, entry in m["files"].items():
        p = MODELS / name
        assert mf.sha256(p) == entry["sha256"], name
        assert p.stat().st_size <= 1_000_000, name  # product card: each model file <= 1 MB
    assert m["formats"]["tflite"]["precision"] == "int8" and m["formats"]["ncnn"]["precision"] == "int8"
    assert "8=2" in (MODELS / m["formats"]["ncnn"]["param"]).read_text()  # int8 convolutions
    assert m["metrics"]["models"]["tflite_int8"]["per_category"]["overall"]["recall"] is not None
    assert m["build"]["command"].startswith("python -m quantize all")


def test_tflite_model_is_full_integer():
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(MODELS / json.loads((MODELS / "manifest.json").read_text())["formats"]["tflite"]["model"]))
    assert it.get_input_details()[0]["dtype"] == np.int8
    assert not [t["name"] for t in it.get_tensor_details() if t["dtype"] == np.float32]


@pytest.mark.parametrize("backend,key", [("tflite", "model"), ("ncnn", "bin"), ("ncnn", "param")])
def test_sha256_mismatch_is_refused(tmp_path, backend, key):
    copy = tmp_path / "models"
    shutil.copytree(MODELS, copy)
    m = json.loads((copy / "manifest.json").read_text())
    target = copy / m["formats"][backend][key]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(DetectorUnavailable) as exc:
        detect.load(backend, model_dir=copy)
    msg = str(exc.value)
    assert "sha256 mismatch" in msg and target.name in msg and "\n" not in msg


def test_missing_manifest_and_file_are_clear(tmp_path):
    with pytest.raises(DetectorUnavailable, match="manifest not found"):
        detect.load("tflite", model_dir=tmp_path)
    copy = tmp_path / "m"
    shutil.copytree(MODELS, copy)
    (copy / json.loads((copy / "manifest.json").read_text())["formats"]["ncnn"]["bin"]).unlink()
    with pytest.raises(DetectorUnavailable, match="model file missing"):
        detect.load("ncnn", model_dir=copy)
    # auto falls back to whole-frame reading instead of failing
    assert detect.load("auto", model_dir=tmp_path) is None


def test_env_var_picks_model_dir(tmp_path, monkeypatch):
    copy = tmp_path / "elsewhere"
    shutil.copytree(MODELS, copy)
    monkeypatch.setenv(mf.ENV, str(copy))
    assert mf.default_model_dir() == copy
    assert detect.load("tflite").model_dir == copy
    monkeypatch.setenv(mf.ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DetectorUnavailable, match="nowhere"):
        detect.load("ncnn")


def _with_manifest(tmp_path, edit):
    copy = tmp_path / "models"
    shutil.copytree(MODELS, copy)
    m = json.loads((copy / "manifest.json").read_text())
    edit(m)
    (copy / "manifest.json").write_text(json.dumps(m))
    return copy


@pytest.mark.parametrize("backend,named", [("tflite", "qr_detector_int8.tflite"), ("ncnn", "qr_detector_int8.ncnn.param")])
def test_manifest_input_size_that_is_not_the_models_is_refused(tmp_path, backend, named):
    """The frame is letterboxed to the manifest's input size; a model file of another size
    (files from two builds) would see a squeezed frame and miss codes without an error."""
    def edit(m):
        m["input"]["height"] //= 2
        m["input"]["width"] //= 2
    with pytest.raises(DetectorUnavailable) as exc:
        detect.load(backend, model_dir=_with_manifest(tmp_path, edit))
    msg = str(exc.value)
    assert named in msg and "different builds" in msg and "\n" not in msg


@pytest.mark.parametrize("key,value,says", [("height", "512", "input.height"), ("width", 0, "input.width"),
                                           ("stride", 3, "output.decode.stride"), ("stride", 0, "output.decode.stride")])
def test_bad_geometry_in_manifest_is_one_clear_line(tmp_path, key, value, says):
    def edit(m):
        (m["output"]["decode"] if key == "stride" else m["input"])[key] = value
    copy = _with_manifest(tmp_path, edit)
    for backend in ("tflite", "ncnn"):
        with pytest.raises(DetectorUnavailable) as exc:
            detect.load(backend, model_dir=copy)
        msg = str(exc.value)
        assert says in msg and "manifest.json" in msg and "\n" not in msg


def test_manifest_without_geometry_means_the_first_models_256_by_320():
    from edge_runtime.detect.postprocess import LEGACY_INPUT_HW

    assert mf.input_hw(MODELS, {"files": {}}) == LEGACY_INPUT_HW == (256, 320)


@pytest.mark.parametrize("stride", [4, 8])
def test_decode_maps_output_cells_back_by_the_manifests_stride(stride):
    """The same logit map means a region twice as large in input pixels at stride 8."""
    from edge_runtime.detect.postprocess import DecodeParams, decode

    logits = np.full((2, 64, 80), -8.0, np.float32)
    logits[0, 10:20, 30:40] = 8.0  # text: cells 10..19 x 30..39
    logits[1, 13:17, 33:37] = 8.0  # kernel: the centre half
    [(quad, score)] = decode(logits, DecodeParams(stride=stride, min_area=10))
    assert score > 0.99
    xs, ys = quad[:, 0], quad[:, 1]
    assert abs(xs.min() - 30 * stride) <= stride and abs(xs.max() - 40 * stride) <= stride
    assert abs(ys.min() - 10 * stride) <= stride and abs(ys.max() - 20 * stride) <= stride


def test_auto_runs_the_backend_that_is_faster_on_this_cpu(monkeypatch):
    """Which runtime is faster depends on the CPU (TFLite on an AMX Xeon, NCNN on a Zen 1
    EPYC), so "auto" times both at load and keeps the faster; slowing one down flips it."""
    import time

    from edge_runtime.detect.ncnn import NcnnDetector

    real = NcnnDetector.logits

    def slow_ncnn(self, x):
        time.sleep(0.05)  # slower than either runtime's model call on any machine we know
        return real(self, x)

    det = detect.load("auto", model_dir=MODELS)
    assert set(det.backend_ms) == {"tflite", "ncnn"}
    assert det.fmt == min(det.backend_ms, key=det.backend_ms.get)
    monkeypatch.setattr(NcnnDetector, "logits", slow_ncnn)
    det = detect.load("auto", model_dir=MODELS)
    assert det.fmt == "tflite" and det.backend_ms["ncnn"] >= 50
    monkeypatch.setattr(NcnnDetector, "logits", real)
    from edge_runtime.detect.tflite import TFLiteDetector

    real_t = TFLiteDetector.logits
    monkeypatch.setattr(TFLiteDetector, "logits", lambda self, x: (time.sleep(0.05), real_t(self, x))[1])
    assert detect.load("auto", model_dir=MODELS).fmt == "ncnn"


def test_auto_with_one_runtime_missing_takes_the_other(monkeypatch):
    import edge_runtime.detect as d

    monkeypatch.setitem(d.BACKENDS, "tflite", "edge_runtime.detect.no_such_module:X")
    det = detect.load("auto", model_dir=MODELS)
    assert det.fmt == "ncnn" and not hasattr(det, "backend_ms")
