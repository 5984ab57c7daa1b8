"""Self-test of a detector model on built-in sample frames, run before a model is trusted.

A model can pass its sha256 check and still be wrong for this runtime (a build with broken
decode thresholds, a mis-quantised export, a runtime that computes garbage on this CPU). Such a
model finds nothing, and the reader then silently falls back to slow whole-frame reading or misses
codes: a line slowing down with no error anywhere. So before a model is used it must find known
codes at known places. Frames are drawn here (segno), nothing is read from disk.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import segno

FRAME_HW = (720, 1280)
# (text, QR version, px per module, rotation deg, centre) per frame: a couple of module sizes
# and angles the shipped models find with a wide margin (test_detect covers harder cases).
SAMPLES = (
    (("SELFTEST A", 2, 8.0, 0, (330, 300)), ("SELFTEST B", 3, 7.0, 0, (900, 420))),
    (("SELFTEST C", 4, 6.0, 20, (640, 360)),),
    (("SELFTEST D", 1, 10.0, -15, (300, 420)), ("SELFTEST E", 2, 9.0, 30, (980, 300))),
)


def draw_codes(codes, seed: int = 0, frame_hw: tuple[int, int] = FRAME_HW) -> tuple[np.ndarray, list[np.ndarray]]:
    """codes: [(text, version, module_px, angle_deg, (cx, cy))] -> (gray frame, [true quad]).

    Also what tests/test_detect.py draws its detection cases with."""
    rng = np.random.default_rng(seed)
    h, w = frame_hw
    img = np.full((h, w), 150, np.float32) + rng.normal(0, 3, (h, w)).astype(np.float32)
    quads = []
    for text, version, module, angle, (cx, cy) in codes:
        m = np.array(segno.make_qr(text, version=version, error="m").matrix, np.float32)
        n = m.shape[0]
        src = cv2.resize(np.pad(m, 4), ((n + 8) * 8,) * 2, interpolation=cv2.INTER_NEAREST)
        side = (n + 8) * module
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        base = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * side / 2
        dst = (base @ np.array([[c, -s], [s, c]], np.float32).T + (cx, cy)).astype(np.float32)
        sz = float(src.shape[0])
        hm = cv2.getPerspectiveTransform(np.array([[0, 0], [sz, 0], [sz, sz], [0, sz]], np.float32), dst)
        code = cv2.warpPerspective(src, hm, (w, h), flags=cv2.INTER_LINEAR)
        alpha = cv2.warpPerspective(np.ones_like(src), hm, (w, h), flags=cv2.INTER_LINEAR)
        img = img * (1 - alpha) + (235 - 215 * code) * alpha
        q = np.array([[32, 32], [sz - 32, 32], [sz - 32, sz - 32], [32, sz - 32]], np.float32)  # the code without quiet zone
        quads.append(cv2.perspectiveTransform(q[None], hm)[0])
    return np.clip(img, 0, 255).astype(np.uint8), quads


@functools.lru_cache(maxsize=1)
def sample_frames() -> tuple[tuple[np.ndarray, list[np.ndarray]], ...]:
    """The built-in frames with their true code quads (drawn once per process)."""
    return tuple(draw_codes(codes, seed=i) for i, codes in enumerate(SAMPLES))


def count_found(detector) -> tuple[int, int]:
    """(codes found, codes drawn): found = some detection's centre lies inside the true quad."""
    found = total = 0
    for frame, quads in sample_frames():
        centres = [np.mean(np.asarray(d.corners, np.float32), axis=0) for d in detector.detect(frame)]
        for q in quads:
            total += 1
            if any(cv2.pointPolygonTest(q.reshape(-1, 1, 2), (float(c[0]), float(c[1])), False) >= 0 for c in centres):
                found += 1
    return found, total


def self_test(detector) -> None:
    """Raise DetectorUnavailable unless the detector finds every code on the sample frames."""
    from edge_runtime.detect import DetectorUnavailable

    try:
        found, total = count_found(detector)
    except Exception as exc:  # noqa: BLE001 - a runtime crashing on real input is a failed test too
        raise DetectorUnavailable(f"self-test failed: {type(exc).__name__}: {exc}") from None
    if found < total:
        raise DetectorUnavailable(f"self-test failed: found {found} of {total} codes on built-in sample frames")
