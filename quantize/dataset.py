"""Turn synthetic frames into model inputs and targets, cached as .npz.

Inputs go through the runtime's own letterbox (edge_runtime.detect.postprocess), so the model
trains on exactly what it will see. Targets are soft coverage maps at the model's output
stride: each quad is
rasterised at input resolution and area-averaged down, so a cell half covered by a code is
0.5, and the decoder's 0.5 threshold lands on the true edge.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.detect.postprocess import KERNEL_SHRINK, letterbox
from quantize.model import INPUT_H, INPUT_W, stride
from quantize.synth import CATEGORIES, TRAIN_SPLIT, make_frame

SPLITS = {"train": TRAIN_SPLIT, "val": 1, "calib": 2}


SUPER = 8  # targets are rasterised at 8x the input resolution, then area-averaged


def _fill(quads: list[np.ndarray], shrink: float) -> np.ndarray:
    # Not cv2's anti-aliased fill: it bloats a polygon by ~0.7 px per side, and a model trained
    # on that draws every small code ~15 % too large (model 1.1: median area 1.2x the truth for
    # codes under 35 px). A plain fill at 8x, averaged down, is exact to 1/32 of a cell (cv2 fills
    # the pixels on both edges: 1/8 px too wide).
    canvas = np.zeros((INPUT_H * SUPER, INPUT_W * SUPER), np.uint8)
    for q in quads:
        c = q.mean(0)
        pts = c + shrink * (q - c)
        # pixel j covers [j, j+1) and cv2 puts its centre at integer j: shift by half a pixel
        cv2.fillPoly(canvas, [np.round((pts * SUPER - 0.5) * 16).astype(np.int32)], 255, cv2.LINE_8, shift=4)
    st = stride()
    return cv2.resize(canvas, (INPUT_W // st, INPUT_H // st), interpolation=cv2.INTER_AREA)


def targets(quads_in: list[np.ndarray]) -> np.ndarray:
    """(H/stride, W/stride, 2) uint8 soft targets (0..255) for quads given in model-input pixels."""
    return np.stack([_fill(quads_in, 1.0), _fill(quads_in, KERNEL_SHRINK)], axis=-1)


def _one(args: tuple[int, int, int]) -> tuple:
    cv2.setNumThreads(1)
    seed, split, index = args
    fr = make_frame(seed, split, index)
    x, lb = letterbox(fr.image, INPUT_H, INPUT_W)
    quads_in = [q * lb.scale for q in fr.quads]
    return x, targets(quads_in), CATEGORIES.index(fr.category), fr.quads, fr.image.shape


def build(seed: int, split: str, count: int, workers: int = 2) -> dict[str, np.ndarray]:
    jobs = [(seed, SPLITS[split], i) for i in range(count)]
    if workers > 1 and count > 8:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(pool.map(_one, jobs, chunksize=16))
    else:
        rows = [_one(j) for j in jobs]
    quads = [np.asarray(r[3], np.float32).reshape(-1, 4, 2) for r in rows]
    return {
        "x": np.stack([r[0] for r in rows]),
        "y": np.stack([r[1] for r in rows]),
        "category": np.array([r[2] for r in rows], np.int16),
        "frame_hw": np.array([r[4] for r in rows], np.int32),
        "quad_count": np.array([len(q) for q in quads], np.int32),
        "quads": np.concatenate(quads) if any(len(q) for q in quads) else np.zeros((0, 4, 2), np.float32),
    }


def frame_quads(data: dict, i: int) -> np.ndarray:
    start = int(data["quad_count"][:i].sum())
    return data["quads"][start : start + int(data["quad_count"][i])]


def generator_id() -> str:
    """Short hash of the code that makes a frame and its targets (this file, synth.py, the
    model's geometry): a cache written by an older generator is never taken for this one's."""
    from quantize import model, synth

    h = hashlib.sha256()
    for mod in (synth, model):
        h.update(Path(mod.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:10]


def cache_path(work: Path, seed: int, split: str, count: int) -> Path:
    return Path(work) / f"{split}-s{seed}-n{count}-g{generator_id()}.npz"


def load_or_build(work: Path, seed: int, split: str, count: int, workers: int = 2) -> dict[str, np.ndarray]:
    """Cache per (seed, split, count, generator): generation is deterministic, so the cache is too."""
    path = cache_path(work, seed, split, count)
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    data = build(seed, split, count, workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, path)
    return data
