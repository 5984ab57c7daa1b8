"""Glare suppression and motion-blur compensation each rescue an ROI zxing-cpp cannot read."""

import numpy as np

from edge_runtime.decode import load
from edge_runtime.enhance import deblur, glare
from qrgen import on_canvas, qr_image

zx = load("zxing")


def reads(img, payload) -> bool:
    return payload in [c.text for c in zx.decode(img, fast=True)]


def glared(payload: str) -> np.ndarray:
    """Faint print under a broad specular veil with a small saturated core."""
    base = on_canvas(qr_image(payload, module_px=4), size=(300, 300), at=(40, 40), fill=255).astype(np.float32)
    yy, xx = np.mgrid[0:300, 0:300]
    img = base / 255 * 25 + 90 + 150 * np.exp(-((xx - 140) ** 2 + (yy - 120) ** 2) / (2 * 35**2))
    img[(xx - 140) ** 2 + (yy - 120) ** 2 < 36] = 255
    return np.clip(img, 0, 255).astype(np.uint8)


def smeared(payload: str, length: float, angle: float, seed: int = 0) -> np.ndarray:
    """A label moving `length` px along `angle` during the exposure (blur in linear light)."""
    from edge_runtime.synth.degrade import motion_blur

    base = on_canvas(qr_image(payload, module_px=4), size=(200, 200), at=(30, 30), fill=255)
    b = motion_blur(base, length, angle).astype(np.float32) * 0.8 + 25
    b += np.random.default_rng(seed).normal(0, 2, b.shape)
    return np.clip(b, 0, 255).astype(np.uint8)


def test_glare_suppress_rescues_veiled_code():
    img = glared("GLARE-1")
    assert not reads(img, "GLARE-1")
    out = glare.suppress(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert reads(out, "GLARE-1")


def test_saturated_mask_finds_the_core_only():
    img = glared("GLARE-1")
    m = glare.saturated_mask(img, grow=0)
    assert m[120, 140] == 255 and m[10, 10] == 0 and (m > 0).mean() < 0.01


def test_wiener_with_the_right_length_rescues_a_smear():
    img = smeared("BLUR-0042", 6, 0)
    assert not reads(img, "BLUR-0042")
    assert reads(deblur.wiener(img, 6, 0), "BLUR-0042")


def test_blur_direction_and_length_estimates():
    assert deblur.blur_direction(smeared("BLUR-0042", 10, 0)) in (0.0, 165.0, 15.0)
    assert deblur.blur_direction(smeared("BLUR-0042", 10, 90)) in (75.0, 90.0, 105.0)
    est = [deblur.blur_length(smeared("BLUR-0042", n, 0), 0.0) for n in (8, 10, 12, 14)]
    assert sum(e is not None and abs(e - n) <= 1 for e, n in zip(est, (8, 10, 12, 14))) >= 3


def test_reader_rescues_a_smear_through_its_roi_path():
    """With a detection for the code, the reader's deblur sweep reads what zxing misses."""
    from edge_runtime import Reader
    from edge_runtime.detect import Detection

    img = smeared("BLUR-0042", 6, 0)

    class Fixed:
        def detect(self, gray):
            return [Detection(corners=[(30.0, 30.0), (30.0 + 29 * 4, 30.0), (30.0 + 29 * 4, 30.0 + 29 * 4), (30.0, 30.0 + 29 * 4)], score=0.9)]

    r = Reader(detector="none", blur_angle=0.0)
    r.detector = Fixed()
    codes = r.read(img)
    assert [c.text for c in codes] == ["BLUR-0042"] and codes[0].stage in ("enhanced", "roi")
