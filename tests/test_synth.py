"""The synthetic frame generator: deterministic, truthful geometry, degradations that do what they say."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import zxingcpp

from edge_runtime.synth import degrade
from edge_runtime.synth.conveyor import SyntheticConveyor
from edge_runtime.synth.frames import CATEGORIES, iter_bench_set, make_bench_set, make_frame, make_scene
from edge_runtime.synth.qr import draw_code, qr_matrix, square_quad, tilted_quad


def _zxing(frame: np.ndarray) -> list[tuple[bytes, np.ndarray]]:
    out = []
    for b in zxingcpp.read_barcodes(frame, formats=[zxingcpp.BarcodeFormat.QRCode]):
        p = b.position
        pts = np.array([[q.x, q.y] for q in (p.top_left, p.top_right, p.bottom_right, p.bottom_left)], float)
        out.append((bytes(b.bytes), pts))
    return out


def _inside(pt, poly) -> bool:
    c = np.asarray(poly, np.float32).reshape(-1, 1, 2)
    return cv2.pointPolygonTest(c, (float(pt[0]), float(pt[1])), False) >= 0


def _textured(seed: int = 0, size: int = 200) -> np.ndarray:
    """Isotropic detail (a code and noise) to measure what a degradation removes."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 128, np.uint8)
    draw_code(img, qr_matrix(b"ISOTROPIC-TEST"), square_quad((size / 2, size / 2), 120, 0))
    return degrade.sensor_noise(img, rng, sigma=3)


def _grad_energy(img: np.ndarray) -> tuple[float, float]:
    f = img.astype(np.float64)
    gx = np.diff(f, axis=1)
    gy = np.diff(f, axis=0)
    return float((gx**2).mean()), float((gy**2).mean())


# --- determinism -------------------------------------------------------------------------

@pytest.mark.parametrize("category", CATEGORIES)
def test_same_seed_same_frame(category):
    a, ta = make_frame(category, seed=3, index=1)
    b, tb = make_frame(category, seed=3, index=1)
    assert a.shape == (720, 1280, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert ta == tb and len(ta) >= 1


def test_other_seed_other_frame_and_set_is_prefix_stable():
    a, _ = make_frame("nominal", seed=0, index=0)
    b, _ = make_frame("nominal", seed=1, index=0)
    assert not np.array_equal(a, b)
    small = make_bench_set(seed=0, per_category=1, categories=["glare"])
    big = make_bench_set(seed=0, per_category=2, categories=["glare"])
    assert np.array_equal(small[0][1], big[0][1]) and len(big) == 2


def test_multi_has_3_to_6_codes_with_distinct_payloads():
    for i in range(3):
        _, truths = make_frame("multi", 0, i)
        assert 3 <= len(truths) <= 6
        assert len({t["payload"] for t in truths}) == len(truths)


def test_payload_mix_includes_binary_and_shift_jis():
    payloads = [t["payload"] for _, _, ts in iter_bench_set(seed=0, per_category=4) for t in ts]
    def is_utf8(b):
        try:
            b.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False
    non_utf8 = [p for p in payloads if not is_utf8(p)]
    assert non_utf8, "no binary/Shift-JIS payloads in the bench"
    assert any(p.startswith(b"LOT-") for p in payloads)
    assert any(b"://" in p for p in payloads)


# --- geometry: truths are where the codes are ---------------------------------------------

def test_truth_corners_match_zxing_on_nominal_frames():
    checked = 0
    for i in range(5):
        frame, truths = make_frame("nominal", 0, i)
        reads = _zxing(frame)
        assert reads, f"nominal frame {i} unreadable"
        for raw, pts in reads:
            t = next(t for t in truths if t["payload"] == raw)
            assert _inside(pts.mean(axis=0), t["corners"])
            # zxing-cpp's corners are the symbol's corners too, in the same order.
            err = np.abs(pts - np.asarray(t["corners"])).max()
            assert err < 4.0, (i, err, pts, t["corners"])
            checked += 1
    assert checked >= 5


def test_rotated_perspective_code_corners_follow_the_warp():
    img = np.full((400, 400), 200, np.uint8)
    quad = tilted_quad((200, 200), 160, angle_deg=135, yaw_deg=30, pitch_deg=-20)
    draw_code(img, qr_matrix(b"ROTATED-135"), quad)
    (raw, pts), = _zxing(img)
    assert raw == b"ROTATED-135"
    assert np.abs(pts - quad).max() < 4.0  # same start corner: top-left of the code, not of the image


def test_small_modules_are_fractional_and_antialiased():
    img = np.full((120, 120), 255, np.uint8)
    draw_code(img, qr_matrix(b"AA"), square_quad((60, 60), 21 * 1.7, 7.0))
    levels = np.unique(img)
    # Point-sampled drawing would give two levels; area sampling gives the edges' coverage.
    assert len(levels) > 20


# --- degradations --------------------------------------------------------------------------

def test_motion_blur_removes_detail_along_its_direction():
    img = _textured()
    ex0, ey0 = _grad_energy(img)
    out = degrade.motion_blur(img, 8.0, angle_deg=0.0)
    ex1, ey1 = _grad_energy(out)
    assert ex1 / ex0 < 0.5 * (ey1 / ey0)
    outv = degrade.motion_blur(img, 8.0, angle_deg=90.0)
    exv, eyv = _grad_energy(outv)
    assert eyv / ey0 < 0.5 * (exv / ex0)


def test_motion_kernel_length_is_fractional():
    a, b = degrade.motion_kernel(4.4), degrade.motion_kernel(4.6)
    assert a.sum() == pytest.approx(1.0) and b.sum() == pytest.approx(1.0)
    assert not np.allclose(a, b)


def test_defocus_blurs_both_directions_alike():
    img = _textured()
    ex0, ey0 = _grad_energy(img)
    ex1, ey1 = _grad_energy(degrade.defocus(img, 2.5))
    assert ex1 < 0.5 * ex0 and ey1 < 0.5 * ey0
    assert 0.6 < (ex1 / ex0) / (ey1 / ey0) < 1.6


def test_glare_saturates_its_core_and_fades_out():
    img = np.full((200, 300, 3), 60, np.uint8)
    out = degrade.glare(img, (150, 100), (40, 20), 0.0, strength=1.0)
    assert out[100, 150].min() >= 250  # clipped core
    row = out[100, 150:300, 0].astype(int)
    assert np.all(np.diff(row) <= 0)  # monotonic falloff
    assert row[-1] == 60 and out[0, 0, 0] == 60  # far away: untouched
    assert 60 < out[100, 150 + 50, 0] < 250  # soft shoulder, not a hard disk


def test_low_contrast_squeezes_the_range():
    img = _textured()
    out = degrade.low_contrast(img, 30, mid=140)
    assert int(out.max()) - int(out.min()) <= 31
    assert abs(float(out.mean()) - 140) < 15


def test_sensor_noise_has_the_requested_sigma_and_follows_the_rng():
    img = np.full((200, 200), 128, np.uint8)
    a = degrade.sensor_noise(img, np.random.default_rng(1), sigma=6.0)
    b = degrade.sensor_noise(img, np.random.default_rng(1), sigma=6.0)
    assert np.array_equal(a, b)
    assert 5.0 < float(a.astype(float).std()) < 7.0


def test_jpeg_loses_more_at_lower_quality():
    img = _textured()
    e_hi = np.abs(degrade.jpeg(img, 95).astype(int) - img).mean()
    e_lo = np.abs(degrade.jpeg(img, 30).astype(int) - img).mean()
    assert 0 < e_hi < e_lo
    assert degrade.jpeg(np.dstack([img] * 3), 50).shape == (200, 200, 3)


def test_damage_stays_inside_its_mask_and_under_15_percent():
    img = _textured()
    allowed = np.zeros(img.shape, np.uint8)
    allowed[50:150, 50:150] = 1
    out, covered = degrade.damage(img, np.random.default_rng(0), allowed, coverage=0.3, scale=5)
    assert 0.0 < covered <= 0.15
    changed = out != img
    assert changed.any()
    assert not changed[allowed == 0].any()


def test_uneven_illumination_is_smooth_and_uneven():
    img = np.full((100, 200), 150, np.uint8)
    out = degrade.uneven_illumination(img, np.random.default_rng(2), strength=0.5)
    assert int(out.max()) - int(out.min()) > 30
    assert np.abs(np.diff(out.astype(int), axis=1)).max() <= 3


def test_degradations_do_not_touch_their_input():
    img = _textured()
    keep = img.copy()
    rng = np.random.default_rng(0)
    degrade.motion_blur(img, 5)
    degrade.defocus(img, 2)
    degrade.glare(img, (100, 100), (30, 30))
    degrade.low_contrast(img, 40)
    degrade.sensor_noise(img, rng)
    degrade.jpeg(img, 50)
    degrade.uneven_illumination(img, rng)
    degrade.damage(img, rng, np.ones(img.shape, np.uint8))
    assert np.array_equal(img, keep)


def test_blur_category_stays_within_readable_smear():
    for i in range(5):
        meta = make_scene("blur", 0, i).meta
        assert 4 <= meta["blur_px"] <= 14
        assert meta["blur_modules"] <= 1.6 + 1e-6


def test_glare_category_spares_the_finder_patterns():
    # The glare must leave all three finders: zxing-cpp on a fresh, glare-free copy of the
    # same code finds it, and the frame itself still shows three dark finder centres.
    for i in range(4):
        scene = make_scene("glare", 0, i)
        placed = scene.placed[0]
        gray = cv2.cvtColor(scene.frame, cv2.COLOR_BGR2GRAY)
        n = placed.n
        for cx, cy in ((3.5, 3.5), (n - 3.5, 3.5), (3.5, n - 3.5)):
            x, y = placed.to_frame(np.array([[cx, cy]]))[0]
            assert gray[int(round(y)), int(round(x))] < 140, (i, cx, cy)


# --- conveyor -------------------------------------------------------------------------------

def test_conveyor_moves_labels_by_speed_over_fps():
    conv = SyntheticConveyor(seed=5, speed_px_s=600.0, fps=30.0, degradations=False)
    frames = [conv.next_frame() for _ in range(40)]
    moved = []
    for (_, a), (_, b) in zip(frames, frames[1:]):
        for ta in a:
            tb = next((t for t in b if t["label_id"] == ta["label_id"]), None)
            if tb is not None:
                d = np.asarray(tb["corners"]) - np.asarray(ta["corners"])
                moved.append(d)
    assert len(moved) > 20
    d = np.asarray(moved)
    assert np.allclose(d[..., 0], 20.0, atol=0.51)
    assert np.allclose(d[..., 1], 0.0)


def test_conveyor_is_deterministic_and_labels_are_unique():
    a = SyntheticConveyor(seed=7)
    b = SyntheticConveyor(seed=7)
    ids_payload = {}
    for _ in range(60):
        fa, ta = a.next_frame()
        fb, tb = b.next_frame()
        assert np.array_equal(fa, fb) and ta == tb
        assert fa.shape == (720, 1280, 3) and fa.dtype == np.uint8
        for t in ta:
            assert set(t) == {"payload", "corners", "label_id"}
            assert ids_payload.setdefault(t["label_id"], t["payload"]) == t["payload"]
    assert len(set(ids_payload.values())) == len(ids_payload) >= 3
    assert not np.array_equal(SyntheticConveyor(seed=8).frame_at(30)[0], a.frame_at(30)[0])


def test_conveyor_truths_are_readable_where_they_say():
    conv = SyntheticConveyor(seed=0)
    hits = 0
    for f in range(30, 90, 6):
        frame, truths = conv.frame_at(f)
        for raw, pts in _zxing(frame):
            t = next((t for t in truths if t["payload"] == raw), None)
            if t is None:
                continue  # a code partly out of the frame carries no truth
            assert _inside(pts.mean(axis=0), t["corners"])
            hits += 1
    assert hits >= 10


def test_conveyor_label_rate_and_small_frames():
    conv = SyntheticConveyor(width=320, height=240, fps=10.0, speed_px_s=100.0, labels_per_s=0.5)
    frame, _ = conv.next_frame()
    assert frame.shape == (240, 320, 3)
    # Label i enters at frame i * fps / labels_per_s = 20 i: label 1 at frame 20.
    assert conv.label_x(1, 40) - conv.label_x(1, 20) == 200
    with pytest.raises(ValueError):
        SyntheticConveyor(width=32, height=32)


def test_stopped_conveyor_shows_one_still_label():
    conv = SyntheticConveyor(speed_px_s=0.0, degradations=False)
    (a, ta), (b, tb) = conv.frame_at(0), conv.frame_at(500)
    assert np.array_equal(a, b)
    assert [t["label_id"] for t in ta] == [0] and ta == tb


def test_damaged_codes_are_damaged_yet_readable_in_principle():
    from edge_runtime.synth.frames import _damage_canvas
    from edge_runtime.synth.qr import module_canvas

    payload = b"LOT-DAMAGED-01"
    matrix = qr_matrix(payload, error="q")
    canvas, covered = _damage_canvas(matrix, payload, np.random.default_rng(4), 0.12)
    assert 0.03 < covered <= 0.15
    clean = module_canvas(matrix, 12)
    assert np.abs(canvas - clean).mean() > 0.01  # marks changed modules
    upright = np.clip((1 - canvas) * 255, 0, 255).astype(np.uint8)
    assert [raw for raw, _ in _zxing(upright)] == [payload]
    for i in range(3):
        assert make_scene("damaged", 0, i).meta["damaged"] > 0.03
