"""Choose the detector's score threshold on the calibration split (never on validation).

A component's score is its mean kernel probability. Look-alikes (DataMatrix, checkerboards)
and fragments of damaged codes come out with scores of 0.5-0.8, real codes mostly above 0.9,
and a borderline component is also where TFLite and NCNN disagree, since their int8 rounding
differs.

The rule is recall first, under a precision floor: of the thresholds whose precision (IoU >=
0.5, INT8 TFLite, calibration frames) is at least MIN_PRECISION, the one with the highest
recall; at equal recall the higher threshold. On a line a missed code is a no-read that stops
it, while a false detection costs one failed decode attempt inside the frame's budget (the
reader never reports a payload it did not decode), so F1, which prices both the same, is the
wrong objective. If no threshold reaches the floor, the best F1 wins.
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
MIN_PRECISION = 0.975  # the floor of 0.97, plus a margin for 390 calibration codes


def _floor_met(table: list[dict], min_precision: float) -> list[dict]:
    return [row for row in table if row["precision"] >= min_precision]


def pick(table: list[dict], min_precision: float = MIN_PRECISION) -> dict:
    """The grid row the rule above chooses."""
    ok = _floor_met(table, min_precision)
    if ok:
        return max(ok, key=lambda row: (row["recall"], row["score_threshold"]))
    return max(table, key=lambda row: (row["f1"], -row["score_threshold"]))


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
    return pick(table)["score_threshold"], table


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
    how = (f"highest recall at precision >= {MIN_PRECISION}" if _floor_met(table, MIN_PRECISION)
           else f"no threshold reaches precision {MIN_PRECISION}: best F1")
    log.info("chosen score_threshold %.2f (%s, %d calibration frames)", t, how, len(calib["x"]))
    set_decode(out, t)
    if (Path(float_dir) / MANIFEST).exists():  # floats are compared under the same decoding
        set_decode(float_dir, t)
    return {"score_threshold": t, "calibration_frames": int(len(calib["x"])), "min_precision": MIN_PRECISION,
            "rule": "highest recall at precision >= min_precision (higher threshold on ties), else best F1",
            "grid": table}
