"""Each enhancement turns a generated ROI that zxing-cpp cannot read into one it can."""

import cv2
import numpy as np
import pytest

from edge_runtime.decode import load
from edge_runtime.enhance import clahe, local_normalize, sharpen, stretch, to_gray, upscale
from qrgen import on_canvas, qr_image, warp_small

zx = load("zxing")
PAYLOAD = "ENH-0042"


def printed(contrast: float, glare_amp: float = 0.0, sigma: float = 40.0) -> np.ndarray:
    """Dark ink `contrast` levels above a gray floor, plus a soft specular bloom."""
    base = on_canvas(qr_image(PAYLOAD, module_px=4), size=(400, 600), at=(60, 150), fill=255).astype(np.float32)
    yy, xx = np.mgrid[0:400, 0:600]
    bloom = glare_amp * np.exp(-((xx - 300) ** 2 + (yy - 150) ** 2) / (2 * sigma**2))
    return np.clip(base / 255 * contrast + 50 + bloom, 0, 255).astype(np.uint8)


def reads(img) -> bool:
    return [c.text for c in zx.decode(img)] == [PAYLOAD]


def reads_small(img, payload) -> bool:
    return payload in [c.text for c in zx.decode(img, fast=True)]


CASES = {
    "stretch: faint print": (lambda: printed(15), stretch),
    "local_normalize: faint print under a glare bloom": (lambda: printed(15, 140, 40), local_normalize),
    "clahe: faint print under a glare bloom": (lambda: printed(15, 140, 40), clahe),
    "sharpen: defocus": (
        lambda: cv2.GaussianBlur(on_canvas(qr_image(PAYLOAD, module_px=4), size=(400, 600), at=(60, 150), fill=255), (0, 0), 2.5),
        lambda g: sharpen(g, amount=2.0),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_enhancement_rescues_unreadable_roi(case):
    make, op = CASES[case]
    img = make()
    assert not reads(img), "the case must be unreadable without the enhancement"
    out = op(img)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert reads(out)


def test_upscale_rescues_sub_1_5_px_modules():
    img = warp_small("SMALL-1", 1.2, size=(400, 600), angle=10)
    assert not reads_small(img, "SMALL-1") and not [c for c in zx.decode(img)]
    up = upscale(img, 2.0)
    assert up.shape == (800, 1200)
    assert reads_small(up, "SMALL-1")


def test_ops_are_pure():
    img = printed(30, 100)
    before = img.copy()
    for op in (stretch, local_normalize, clahe, sharpen, upscale):
        op(img)
    assert np.array_equal(img, before)


def test_stretch_on_flat_image_is_identity():
    flat = np.full((50, 50), 77, np.uint8)
    assert np.array_equal(stretch(flat), flat)


def test_to_gray_shapes():
    assert to_gray(np.zeros((4, 5, 3), np.uint8)).shape == (4, 5)
    assert to_gray(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5)
    assert to_gray(np.zeros((4, 5, 1), np.uint8)).shape == (4, 5)
    with pytest.raises(ValueError, match="shape"):
        to_gray(np.zeros((4, 5, 2), np.uint8))
