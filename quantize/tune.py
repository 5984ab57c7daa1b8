"""Choose the detector's score threshold on the calibration split (never on validation).

A component's score is its mean kernel probability. Look-alikes (DataMatrix, checkerboards)
and fragments of damaged codes come out with scores of 0.5-0.8, real codes mostly above 0.9,
and a borderline component is also where TFLite and NCNN disagree, since their int8 rounding
differs. The threshold is the one with the best F1 (recall and precision at IoU >= 0.5) of the
INT8 TFLite model on the calibration frames; ties go to the lower threshold (more recall).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from edge_runtime.detect.manifest import MANIFEST
from edge_runtime.detect.postprocess import decode

log = logging.getLogger("quantize.tune")

GRID = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def choose(model_dir: Path, data: dict, grid: tuple[float, ...] = GRID) -> tuple[float, list[dict]]:
    from edge_runtime.detect.tflite import TFLiteDetector
    from quantize.evaluate import ground_truth, match, rates, to_frame

    det = TFLiteDetector(model_dir=model_dir, threads=2)
    base = det.params
    gts, ignores = ground_truth(data)
    logits = [det.logits(x) for x in data["x"]]
    table = []
    for t in grid:
        params = replace(base, score_threshold=t)
        tp = fp = fn = 0
        for i, lg in enumerate(logits):
            preds = to_frame(decode(lg, params), data, i)
            a, b, c, _ = match(preds, gts[i], ignores[i])
            tp, fp, fn = tp + a, fp + b, fn + c
        r, p = (v or 0.0 for v in rates(tp, fp, fn))
        f1 = 2 * r * p / (r + p) if r + p else 0.0
        table.append({"score_threshold": t, "recall": round(r, 4), "precision": round(p, 4), "f1": round(f1, 4)})
    best = max(table, key=lambda row: (row["f1"], -row["score_threshold"]))
    return best["score_threshold"], table


def set_decode(model_dir: Path, score_threshold: float) -> None:
    """Write the chosen threshold into a model dir's manifest (manifest_writer keeps it; its
    write_files always writes the whole decode table, so only the threshold changes here)."""
    path = Path(model_dir) / MANIFEST
    m = json.loads(path.read_text())
    m["output"]["decode"]["score_threshold"] = score_threshold
    path.write_text(json.dumps(m, indent=1) + "\n")


def tune(out: Path, float_dir: Path, calib: dict) -> dict:
    t, table = choose(out, calib)
    for row in table:
        log.info("score_threshold %.2f: recall %.4f precision %.4f F1 %.4f", row["score_threshold"],
                 row["recall"], row["precision"], row["f1"])
    log.info("chosen score_threshold %.2f (best F1 on %d calibration frames)", t, len(calib["x"]))
    set_decode(out, t)
    if (Path(float_dir) / MANIFEST).exists():  # floats are compared under the same decoding
        set_decode(float_dir, t)
    return {"score_threshold": t, "calibration_frames": int(len(calib["x"])), "grid": table}
