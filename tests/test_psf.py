"""Blind motion-blur estimation (enhance/psf.py) on generated, smeared, rectified codes.

Each case is drawn by the project's renderer, smeared in linear light by a line kernel of
2-4 module widths, given camera noise, and rectified with its true quad as the reader
does; the truth for the crop is the frame's blur vector mapped through the rectification.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_runtime import roi
from edge_runtime.synth import degrade
from edge_runtime.synth import qr as synth_qr

_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-"


@dataclass
class Case:
    crop: np.ndarray
    payload: str
    length: float  # true smear in crop px
    angle: float  # true smear direction in crop coordinates, 0..180
    module_px: float  # module width in frame px
    h_inv: np.ndarray


def crop_blur(h_inv: np.ndarray, at: tuple[float, float], length: float, angle_deg: float) -> tuple[float, float]:
    """A frame blur vector at `at`, as length and angle in the crop (through the rectify warp)."""
    h = np.linalg.inv(h_inv)
    a = math.radians(angle_deg)
    d = np.array([math.cos(a), math.sin(a)]) * length / 2
    pts = np.array([[at[0] - d[0], at[1] - d[1]], [at[0] + d[0], at[1] + d[1]]], np.float64)
    q = np.c_[pts, np.ones(2)] @ h.T
    q = q[:, :2] / q[:, 2:]
    v = q[1] - q[0]
    return float(np.hypot(*v)), float(math.degrees(math.atan2(v[1], v[0])) % 180.0)


def make_case(rng: np.random.Generator, *, belt: bool = False, blur: bool = True, tilt: float = 0.0) -> Case:
    """One line-camera code: 4-7 px modules, any rotation, smeared 2-4 modules.

    `belt`: the smear is along the belt (x) within +-8 deg, else in any direction.
    `tilt`: the label is also turned up to this many degrees in yaw and pitch (perspective).
    """
    payload = "".join(rng.choice(list(_ALNUM), int(rng.integers(8, 40))))
    matrix = synth_qr.qr_matrix(payload, error="m")
    n = matrix.shape[0]
    module = float(rng.uniform(4.0, 7.0))
    side = n * module
    size = int(side * 2.0) + 40
    frame = np.full((size, size), float(rng.uniform(60, 140)), np.float32)
    yaw, pitch = (float(rng.uniform(-tilt, tilt)) for _ in range(2))
    corners = synth_qr.tilted_quad((size / 2, size / 2), side, float(rng.uniform(0, 360)), yaw, pitch)
    ink, paper = float(rng.uniform(15, 45)), float(rng.uniform(190, 235))
    synth_qr.draw_code(frame, matrix, corners, ink=ink, paper=paper)
    img = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    length = float(rng.uniform(2.0, 4.0)) * module if blur else 0.0
    angle = float(rng.uniform(-8, 8)) % 180 if belt else float(rng.uniform(0, 180))
    if blur:
        img = degrade.motion_blur(img, length, angle)
    noisy = img.astype(np.float32) + rng.normal(0, rng.uniform(2.0, 3.0), img.shape)
    img = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
    quad = [(float(x), float(y)) for x, y in corners]
    crop, h_inv = roi.rectify(img, quad)
    cl, ca = crop_blur(h_inv, (size / 2, size / 2), length, angle) if blur else (0.0, 0.0)
    return Case(crop=crop, payload=payload, length=cl, angle=ca, module_px=module, h_inv=h_inv)


# --- tests -------------------------------------------------------------------------------
import functools  # noqa: E402

from edge_runtime.decode.zxing import ZxingDecoder  # noqa: E402
from edge_runtime.enhance import deblur, psf  # noqa: E402

_ZX = ZxingDecoder()


def _reads(img: np.ndarray, payload: str) -> bool:
    return payload in [c.text for c in _ZX.decode(img, fast=True)]


@functools.lru_cache(maxsize=None)
def _cases(seed: int, n: int, belt: bool, tilt: float = 0.0) -> tuple[Case, ...]:
    rng = np.random.default_rng(seed)
    return tuple(make_case(rng, belt=belt, tilt=tilt) for _ in range(n))


def _todays_tries(crop: np.ndarray) -> list[tuple[float, float]]:
    """The reader's sweep before psf.py: one direction, estimated length + fixed lengths."""
    angle = deblur.blur_direction(crop)
    lengths = [x for x in [deblur.blur_length(crop, angle)] if x is not None]
    lengths += [e for e in (6.0, 9.0, 12.0, 4.0, 15.0) if all(abs(e - x) > 1.5 for x in lengths)]
    return [(n, angle) for n in lengths]


def _read_counts(cases) -> dict[str, int]:
    cnt = {"today": 0, "psf": 0, "true": 0}
    for c in cases:
        cnt["today"] += any(_reads(deblur.wiener(c.crop, n, a), c.payload) for n, a in _todays_tries(c.crop))
        cnt["psf"] += any(_reads(deblur.wiener(c.crop, n, a), c.payload) for n, a in psf.deblur_candidates(c.crop))
        cnt["true"] += _reads(deblur.wiener(c.crop, c.length, c.angle), c.payload)
    return cnt


def test_estimate_any_direction_error():
    ae, le = [], []
    for c in _cases(11, 60, False):
        est = psf.estimate(c.crop)
        assert est, "a smear of 2-4 modules must give a candidate"
        ae.append(psf._angle_diff(est[0].angle_deg, c.angle))
        le.append(abs(est[0].length_px - c.length) / c.length)
    print(f"\nany direction: angle error median {np.median(ae):.2f} deg, length error median {100 * np.median(le):.1f} %")
    # Measured ~0.7 deg and ~2.5 %; the issue asks for <= 3 deg and <= 15 %.
    assert np.median(ae) <= 3.0
    assert np.median(le) <= 0.15
    assert np.mean((np.array(ae) <= 3.0) & (np.array(le) <= 0.15)) >= 0.8


def test_read_rate_any_direction_matches_true_kernel():
    cnt = _read_counts(_cases(11, 60, False))
    print(f"\nany direction, reads of 60: {cnt}")
    assert cnt["true"] >= 45  # the deconvolution itself works (snr 300 + roll-off)
    assert cnt["psf"] >= 0.9 * cnt["true"]
    assert cnt["psf"] >= cnt["today"] + 10


def test_read_rate_belt_axis_matches_true_kernel():
    cnt = _read_counts(_cases(12, 40, True))
    print(f"\nbelt +-8 deg, reads of 40: {cnt}")
    assert cnt["psf"] >= 0.9 * cnt["true"]
    assert cnt["psf"] >= cnt["today"] + 6


def test_read_rate_with_perspective():
    """A tilted label: the crop is perspective-warped, so the smear varies a little over it;
    the truth is taken at the centre, the estimate sees the whole crop."""
    cnt = _read_counts(_cases(15, 30, False, tilt=25.0))
    print(f"\ntilted 25 deg, reads of 30: {cnt}")
    assert cnt["psf"] >= 0.9 * cnt["true"]
    assert cnt["psf"] >= cnt["today"] + 6


def test_belt_hint_narrows_the_direction():
    """The configured belt axis (frame x), mapped into the crop, keeps the estimate there."""
    errs = []
    for c in _cases(12, 40, True)[:20]:
        centre = (c.crop.shape[1] / 2, c.crop.shape[0] / 2)
        _, hint = psf.frame_to_crop(c.h_inv, centre, 10.0, 0.0)
        est = psf.estimate(c.crop, angle_hint=hint, angle_tol=10.0)
        assert est and all(psf._angle_diff(b.angle_deg, hint) <= 10.5 for b in est)
        errs.append(psf._angle_diff(est[0].angle_deg, c.angle))
    assert np.median(errs) <= 3.0


def test_frame_to_crop_maps_the_smear_through_rectify():
    c = _cases(12, 40, True)[0]
    size = c.h_inv @ np.array([c.crop.shape[1] / 2, c.crop.shape[0] / 2, 1.0])
    at_frame = (size[0] / size[2], size[1] / size[2])
    want = crop_blur(c.h_inv, at_frame, 14.0, 30.0)
    got = psf.frame_to_crop(c.h_inv, (c.crop.shape[1] / 2, c.crop.shape[0] / 2), 14.0, 30.0)
    assert abs(got[0] - want[0]) < 0.05 and psf._angle_diff(got[1], want[1]) < 0.1


def test_unblurred_code_is_not_destroyed():
    rng = np.random.default_rng(13)
    readable = 0
    for _ in range(12):
        c = make_case(rng, blur=False)
        if not _reads(c.crop, c.payload):
            continue
        readable += 1
        for n, a in psf.deblur_candidates(c.crop):
            assert _reads(deblur.wiener(c.crop, n, a), c.payload), (n, a)
    assert readable >= 8


def test_flat_and_noise_crops_do_not_crash():
    rng = np.random.default_rng(14)
    shapes = [(8, 8), (8, 300), (17, 9), (31, 500), (64, 64), (160, 160), (300, 301)]
    for shape in shapes:
        for img in (np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8), rng.integers(0, 256, shape, dtype=np.uint8)):
            cands = psf.deblur_candidates(img)
            assert len(cands) <= 4
            assert all(isinstance(n, float) and isinstance(a, float) and 0 <= a < 180 for n, a in cands)
            for b in psf.estimate(img):
                assert 0 < b.length_px and 0 <= b.angle_deg < 180
    # Noise has no smear direction: nothing to deblur.
    assert psf.deblur_candidates(rng.integers(0, 256, (200, 200), dtype=np.uint8)) == []


def test_length_hints_are_tried_when_the_crop_shows_nothing():
    flat = np.full((200, 200), 128, np.uint8)
    assert psf.deblur_candidates(flat, angle_hint=5.0, length_hints=(12.0,)) == [(12.0, 5.0)]
