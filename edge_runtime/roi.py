"""Regions of interest: cut a detected code out of the full-resolution frame, upright.

The detector runs on a downscaled frame and hands back a quadrilateral; decoding and
enhancement then work on a small rectified crop at full resolution, so a large frame costs
little and a small code keeps every pixel it has.
"""

from __future__ import annotations

import cv2
import numpy as np

Quad = list[tuple[float, float]]


def quad_side(quad: Quad) -> float:
    q = np.asarray(quad, np.float32)
    return float(max(np.linalg.norm(q[i] - q[(i + 1) % 4]) for i in range(4)))


def rectify(gray: np.ndarray, quad: Quad, margin: float = 0.25, min_side: int = 160, max_side: int = 480) -> tuple[np.ndarray, np.ndarray]:
    """Warp `quad` (expanded by `margin` of its size on each side, for the quiet zone and
    detector slack) to an upright square crop.

    The crop side follows the code's own size, so resolution is kept; codes smaller than
    `min_side` are upscaled (modules under ~3 px are below what finder scans resolve) and
    huge ones are capped at `max_side` (more pixels would only cost time).
    Returns (crop, H_inv): H_inv maps crop coordinates back to frame coordinates.
    """
    q = np.asarray(quad, np.float32)
    c = q.mean(axis=0)
    expanded = c + (q - c) * (1.0 + 2.0 * margin)
    side = quad_side(quad) * (1.0 + 2.0 * margin)
    s = int(np.clip(side, min_side, max_side))
    dst = np.array([[0, 0], [s - 1, 0], [s - 1, s - 1], [0, s - 1]], np.float32)
    h = cv2.getPerspectiveTransform(expanded, dst)
    # Cubic when enlarging keeps module edges steep; area-like linear when shrinking.
    interp = cv2.INTER_CUBIC if s > side else cv2.INTER_LINEAR
    crop = cv2.warpPerspective(gray, h, (s, s), flags=interp, borderMode=cv2.BORDER_REPLICATE)
    return crop, np.linalg.inv(h)


def map_points(h_inv: np.ndarray, pts) -> Quad:
    if len(pts) == 0:
        return []
    p = np.asarray(pts, np.float64).reshape(-1, 1, 2)
    return [(float(x), float(y)) for x, y in cv2.perspectiveTransform(p, h_inv).reshape(-1, 2)]


def contains(quad: Quad, point: tuple[float, float]) -> bool:
    if len(quad) < 3:
        return False
    return cv2.pointPolygonTest(np.asarray(quad, np.float32), (float(point[0]), float(point[1])), False) >= 0


def cut_by_edge(quad: Quad, shape: tuple[int, ...], margin: float = 3.0) -> bool:
    """Does the quad touch the frame's edge? The detector's quad of a code only partly in
    view stops at the edge; a code that lies wholly inside keeps a quiet zone off it."""
    h, w = shape[:2]
    return any(x < margin or y < margin or x > w - 1 - margin or y > h - 1 - margin for x, y in quad)
