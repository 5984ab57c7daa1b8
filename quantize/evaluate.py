"""Evaluate the exported models on the held-out synthetic split.

Per degradation category: recall and precision at IoU >= 0.5 (in frame coordinates), for
INT8 and float, TFLite and NCNN; the fraction of frames on which TFLite INT8 and NCNN INT8
give the same detections; and inference time per frame at 1 and 2 threads.

Codes cut by the frame edge are scored on their visible part; a code less than half visible
is "don't care" (finding it is not required, and finding it is not a false positive).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from quantize.dataset import frame_quads
from quantize.synth import CATEGORIES

log = logging.getLogger("quantize.evaluate")

IOU = 0.5
MIN_VISIBLE = 0.5
GROUPS = {"blurred": ("motion_blur", "defocus")}


def _convex(q: np.ndarray) -> np.ndarray:
    return cv2.convexHull(q.astype(np.float32)).reshape(-1, 2)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = _convex(a), _convex(b)
    inter, _ = cv2.intersectConvexConvex(a, b)
    union = cv2.contourArea(a) + cv2.contourArea(b) - inter
    return float(inter / union) if union > 0 else 0.0


def _clip(q: np.ndarray, w: int, h: int) -> tuple[np.ndarray | None, float]:
    full = cv2.contourArea(_convex(q))
    frame = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    area, poly = cv2.intersectConvexConvex(_convex(q), frame)
    if poly is None or area <= 0:
        return None, 0.0
    return poly.reshape(-1, 2), float(area / full) if full > 0 else 0.0


def match(preds: list[tuple[np.ndarray, float]], gts: list[np.ndarray], ignore: list[np.ndarray]) -> tuple[int, int, int, list[float]]:
    """Greedy by score. Returns (tp, fp, fn, ious of the true positives)."""
    used = [False] * len(gts)
    tp = fp = 0
    ious = []
    for quad, _score in sorted(preds, key=lambda p: -p[1]):
        best, bi = 0.0, -1
        for i, g in enumerate(gts):
            if not used[i]:
                v = iou(quad, g)
                if v > best:
                    best, bi = v, i
        if best >= IOU:
            used[bi] = True
            tp += 1
            ious.append(best)
        elif not any(iou(quad, g) >= IOU * 0.5 for g in ignore):
            fp += 1
    return tp, fp, used.count(False), ious


def rates(tp: int, fp: int, fn: int) -> tuple[float | None, float | None]:
    """(recall, precision), None where undefined (no codes / no detections)."""
    return (tp / (tp + fn) if tp + fn else None, tp / (tp + fp) if tp + fp else None)


def ground_truth(data: dict) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """Per frame: the codes to find (clipped to the frame) and the "don't care" ones."""
    gts, ignores = [], []
    for i in range(len(data["x"])):
        h, w = (int(v) for v in data["frame_hw"][i])
        g, ig = [], []
        for q in frame_quads(data, i):
            clipped, vis = _clip(q, w, h)
            if clipped is None:
                continue
            (g if vis >= MIN_VISIBLE else ig).append(clipped)
        gts.append(g)
        ignores.append(ig)
    return gts, ignores


def to_frame(preds: list[tuple[np.ndarray, float]], data: dict, i: int) -> list[tuple[np.ndarray, float]]:
    """Detections in model-input pixels -> frame i's pixels, clipped to the frame."""
    h, w = (int(v) for v in data["frame_hw"][i])
    ih, iw = data["x"].shape[1:3]  # the input size the frames were letterboxed to
    s = min(iw / w, ih / h)
    out = []
    for quad, score in preds:
        q = quad / s
        q[:, 0] = np.clip(q[:, 0], 0, w)
        q[:, 1] = np.clip(q[:, 1], 0, h)
        out.append((q, score))
    return out


def same_detections(a, b) -> bool:
    if len(a) != len(b):
        return False
    used = [False] * len(b)
    for qa, _ in a:
        hit = next((j for j, (qb, _) in enumerate(b) if not used[j] and iou(qa, qb) >= IOU), None)
        if hit is None:
            return False
        used[hit] = True
    return True


def _models(out: Path, float_dir: Path) -> dict:
    from edge_runtime.detect.ncnn import NcnnDetector
    from edge_runtime.detect.tflite import TFLiteDetector

    models = {"tflite_int8": lambda t: TFLiteDetector(model_dir=out, threads=t),
              "ncnn_int8": lambda t: NcnnDetector(model_dir=out, threads=t)}
    if (float_dir / "manifest.json").exists():
        models["tflite_float"] = lambda t: TFLiteDetector(model_dir=float_dir, threads=t)
        models["ncnn_float"] = lambda t: NcnnDetector(model_dir=float_dir, threads=t)
    return models


def _timing(det, x: np.ndarray, runs: int) -> dict:
    for _ in range(3):
        det.logits(x)
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        det.logits(x)
        t.append(time.perf_counter() - t0)
    td = []
    for _ in range(max(3, runs // 3)):
        t0 = time.perf_counter()
        det.detect_input(x)
        td.append(time.perf_counter() - t0)
    return {"inference_ms_median": round(1e3 * float(np.median(t)), 3),
            "inference_ms_min": round(1e3 * float(np.min(t)), 3),
            "with_decode_ms_median": round(1e3 * float(np.median(td)), 3)}


def evaluate(out: Path, float_dir: Path, val: dict, timing_runs: int = 100) -> dict:
    models = _models(Path(out), Path(float_dir))
    n = len(val["x"])
    gts, ignores = ground_truth(val)
    preds: dict[str, list] = {}
    result: dict = {"frames": n, "codes": int(sum(len(g) for g in gts)), "iou_threshold": IOU, "models": {}}
    for name, make in models.items():
        det = make(1)
        per = []
        t0 = time.monotonic()
        for i in range(n):
            per.append(to_frame(det.detect_input(val["x"][i]), val, i))
        preds[name] = per
        cats: dict[str, list[int]] = {c: [0, 0, 0] for c in (*CATEGORIES, *GROUPS, "overall")}
        all_ious = []
        for i in range(n):
            tp, fp, fn, ious = match(per[i], gts[i], ignores[i])
            all_ious += ious
            c = CATEGORIES[int(val["category"][i])]
            keys = [c, "overall"] + [g for g, members in GROUPS.items() if c in members]
            for k in keys:
                cats[k][0] += tp
                cats[k][1] += fp
                cats[k][2] += fn
        table = {}
        for k, (tp, fp, fn) in cats.items():
            r, p = rates(tp, fp, fn)
            table[k] = {"recall": None if r is None else round(r, 4),
                        "precision": None if p is None else round(p, 4), "tp": tp, "fp": fp, "fn": fn}
        entry = {"per_category": table, "mean_iou_tp": round(float(np.mean(all_ious)), 4) if all_ious else None,
                 "eval_seconds": round(time.monotonic() - t0, 1)}
        x0 = val["x"][0]
        entry["timing"] = {"threads_1": _timing(det, x0, timing_runs), "threads_2": _timing(make(2), x0, timing_runs)}
        result["models"][name] = entry
        o = table["overall"]
        log.info("%s: recall %.4f precision %.4f  %s", name, o["recall"] or 0, o["precision"] or 0, entry["timing"])
    if "tflite_int8" in preds and "ncnn_int8" in preds:
        agree = [same_detections(a, b) for a, b in zip(preds["tflite_int8"], preds["ncnn_int8"])]
        result["tflite_ncnn_int8_agreement"] = round(float(np.mean(agree)), 4)
    if "tflite_float" in preds:
        agree = [same_detections(a, b) for a, b in zip(preds["tflite_int8"], preds["tflite_float"])]
        result["tflite_int8_float_agreement"] = round(float(np.mean(agree)), 4)
    return result


def table(metrics: dict) -> str:
    """Markdown table of the metrics (for the README and reports)."""
    names = list(metrics["models"])
    cats = list(next(iter(metrics["models"].values()))["per_category"])
    lines = ["| category | " + " | ".join(f"{m} R / P" for m in names) + " |",
             "|---|" + "---|" * len(names)]
    for c in cats:
        cells = []
        for m in names:
            e = metrics["models"][m]["per_category"][c]
            cells.append(f"{e['recall']} / {e['precision']}")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines.append("| ms, 1 thread | " + " | ".join(str(metrics["models"][m]["timing"]["threads_1"]["inference_ms_median"]) for m in names) + " |")
    lines.append("| ms, 2 threads | " + " | ".join(str(metrics["models"][m]["timing"]["threads_2"]["inference_ms_median"]) for m in names) + " |")
    return "\n".join(lines)
