"""Glare suppression and motion-blur compensation each rescue an ROI zxing-cpp cannot read."""

import numpy as np
import pytest

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


zb = load("zbar")


def reads_any(img, payload) -> bool:
    """zxing-cpp or ZBar: the reader tries both on a deconvolved crop."""
    return reads(img, payload) or payload in [c.text for c in zb.decode(img)]


def defocused(payload: str, module_px: int, sigma: float, seed: int) -> np.ndarray:
    import cv2

    base = on_canvas(qr_image(payload, module_px=module_px), size=(240, 240), at=(20, 20), fill=230).astype(np.float32) * 0.8 + 20
    b = cv2.GaussianBlur(base, (0, 0), sigma) + np.random.default_rng(seed).normal(0, 2, base.shape)
    return np.clip(b, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("module_px,sigma", [(4, 2.5), (5, 3.0)])
def test_defocus_restores_codes_blurred_past_their_modules(module_px, sigma):
    """A defocus wider than half a module: neither zxing-cpp nor ZBar reads one of the six;
    Wiener with a gaussian of one of the reader's two widths (3 and 2 px) reads all six."""
    before = after = 0
    for seed in range(6):
        p = f"DEFOCUS-{seed:02d}-ABCDEFGHJK"
        img = defocused(p, module_px, sigma, seed)
        before += reads_any(img, p)
        out = [deblur.defocus(img, s) for s in (3.0, 2.0)]
        assert all(o.shape == img.shape and o.dtype == np.uint8 for o in out)
        after += any(reads_any(o, p) for o in out)
    assert before == 0 and after == 6


def test_defocus_of_a_sharp_image_is_the_image():
    img = defocused("SHARP", 6, 0.5, 0)
    assert np.array_equal(deblur.defocus(img, 0.2), img)


def test_a_smear_added_after_the_tone_curve_is_undone_on_the_stored_values():
    """Photos smeared after gamma (phone pipelines, edited images): deconvolving in linear
    light leaves a ghost of the smear that reads less often than working on the stored
    values, which the reader tries second."""
    L = 13.0  # 2.6 modules
    lin_reads = raw_reads = 0
    for seed in range(10):
        p = f"SHAKE-{seed:02d}-XYZ"
        base = on_canvas(qr_image(p, module_px=5), size=(240, 240), at=(20, 20), fill=255).astype(np.float32) * 0.55 + 20
        angle = float(np.random.default_rng(seed).uniform(0, 180))
        H = np.fft.rfft2(deblur.line_psf(L, angle, base.shape))  # on the stored values
        b = np.fft.irfft2(np.fft.rfft2(base) * H, s=base.shape) + np.random.default_rng(seed).normal(0, 4, base.shape)
        img = np.clip(b, 0, 255).astype(np.uint8)
        assert not reads_any(img, p)
        lin_reads += reads_any(deblur.wiener(img, L, angle), p)
        raw_reads += reads_any(deblur.wiener(img, L, angle, gamma=1.0, lowpass=0.2), p)
    print(f"\nsmear after the tone curve: linear light {lin_reads}/10, stored values {raw_reads}/10")
    assert raw_reads >= 9 and raw_reads > lin_reads
