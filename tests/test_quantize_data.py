"""The detector's training data and loss weights (quantize/synth.py, quantize/train.py)."""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest

from quantize import synth
from quantize.dataset import SPLITS, targets

N = 8000


def _shares(split: int) -> dict[str, float]:
    rng = np.random.default_rng(5)
    counts = Counter(synth._category(rng, split) for _ in range(N))
    return {c: counts[c] / N for c in synth.CATEGORIES}


def test_training_frames_draw_damage_more_often_and_clean_less():
    share = _shares(SPLITS["train"])
    w = synth.TRAIN_CATEGORY_WEIGHTS
    total = sum(w.get(c, 1.0) for c in synth.CATEGORIES)
    for c in synth.CATEGORIES:
        assert share[c] == pytest.approx(w.get(c, 1.0) / total, abs=0.015), c
    assert share["damage"] > 2.5 * share["clean"]


@pytest.mark.parametrize("split", ["val", "calib"])
def test_validation_and_calibration_keep_one_category_in_eight(split):
    """What is measured (and what the threshold is tuned on) stays the same from build to build."""
    for c, s in _shares(SPLITS[split]).items():
        assert s == pytest.approx(1 / len(synth.CATEGORIES), abs=0.015), c


def test_a_frame_is_a_pure_function_of_seed_split_and_index():
    a, b = synth.make_frame(3, SPLITS["val"], 11), synth.make_frame(3, SPLITS["val"], 11)
    c = synth.make_frame(3, SPLITS["train"], 11)
    assert np.array_equal(a.image, b.image) and a.category == b.category
    assert all(np.array_equal(p, q) for p, q in zip(a.quads, b.quads))
    assert not np.array_equal(a.image, c.image)


def _square(cx, cy, side):
    h = side / 2
    return np.array([[cx - h, cy - h], [cx + h, cy - h], [cx + h, cy + h], [cx - h, cy + h]], np.float32)


def test_cell_weights_raise_the_loss_on_small_codes_only():
    from quantize.train import REF_CELLS, cell_weights

    big, small = _square(80, 120, 120), _square(250, 60, 16)  # model-input px: 30 x 30 and 4 x 4 cells
    text = targets([big, small])[None, ..., 0]
    w = cell_weights(text, cap=3.0)
    assert w.shape == text.shape and w.dtype == np.float32
    assert w[0, 30, 20] == 1.0  # inside the big code: it needs no help
    assert w[0, 15, 62] == pytest.approx(min(3.0, np.sqrt(REF_CELLS / 16)), rel=0.15)  # inside the small one
    assert w[0, 15, 59] > 1.0 and w[0, 15, 65] > 1.0  # and one cell around it (its blurry edge)
    assert w[0, 15, 57] == 1.0 and w[0, 15, 67] == 1.0
    assert w[0, 50, 70] == 1.0  # background
    assert cell_weights(text, cap=1.0).max() == 1.0  # cap 1 = the plain mean
    assert cell_weights(np.zeros_like(text), cap=3.0).max() == 1.0


def test_targets_are_soft_at_the_edge_so_the_half_threshold_lands_on_it():
    q = _square(100, 100, 40)  # edges at 80 and 120 px: on cell boundaries at stride 4
    t = targets([q])
    assert t[25, 25, 0] == 255 and t[25, 18, 0] == 0 and t[25, 19, 0] < 20  # inside / outside the text map
    assert t[25, 25, 1] == 255 and t[25, 21, 1] < 20  # the kernel is half the size
    shifted = targets([q + 2])  # half a cell: the edge cells become half covered
    assert 100 <= shifted[25, 20, 0] <= 155 and cv2.countNonZero(shifted[..., 0]) > cv2.countNonZero(t[..., 0])
