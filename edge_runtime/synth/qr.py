"""Draw real QR codes onto frames with a known geometry (the ground truth).

Codes come from segno (`make_qr`: `segno.make` would pick Micro QR for short strings,
which a line label never carries). A code is warped onto the frame with a homography
so rotation, perspective and fractional module sizes look like a camera saw them:
the warp is done on a k-times supersampled canvas and averaged down (INTER_AREA), which
is what a sensor pixel does, instead of point-sampling a sharp edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import segno

QUIET = 4  # modules of quiet zone the standard asks for


def qr_matrix(payload: bytes | str, error: str = "m", version: int | None = None) -> np.ndarray:
    """Module matrix (True = dark), without quiet zone.

    `boost_error=False` keeps the requested error level: a bench category that asks for
    level L must not silently get M because it happened to fit.
    """
    qr = segno.make_qr(payload, error=error, version=version, boost_error=False)
    return np.array(list(qr.matrix_iter(scale=1, border=0)), dtype=bool)


def square_quad(center: tuple[float, float], side: float, angle_deg: float = 0.0) -> np.ndarray:
    """Corners (4x2, clockwise from the code's top-left) of a square seen head-on."""
    h = side / 2.0
    pts = np.array([[-h, -h], [h, -h], [h, h], [-h, h]], dtype=np.float64)
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return pts @ rot.T + np.asarray(center, dtype=np.float64)


def tilted_quad(
    center: tuple[float, float],
    side: float,
    angle_deg: float = 0.0,
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    focal: float = 900.0,
) -> np.ndarray:
    """Corners of a square label tilted in 3-D and seen by a pinhole camera.

    Real perspective is foreshortening of a plane, not four independently jittered
    corners; this keeps the quads physically plausible. The square is placed at the
    distance where its head-on size would be `side` px.
    """
    h = side / 2.0
    pts = np.array([[-h, -h, 0], [h, -h, 0], [h, h, 0], [-h, h, 0]], dtype=np.float64)
    a, y, p = (math.radians(v) for v in (angle_deg, yaw_deg, pitch_deg))
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    pts = pts @ (rx @ ry @ rz).T
    z = pts[:, 2] + focal
    xy = pts[:, :2] * (focal / z)[:, None]
    return xy + np.asarray(center, dtype=np.float64)


@dataclass
class Placed:
    """Where a code went: its symbol corners and the homography from module space.

    Module space: (0, 0) is the symbol's top-left corner, one unit per module, quiet
    zone at negative coordinates. Other generators (damage masks, glare that must spare a
    finder pattern) map their shapes through `H` to land on the same modules.
    """

    corners: np.ndarray  # 4x2 float, clockwise from the code's top-left
    H: np.ndarray  # 3x3, module space -> frame
    n: int  # modules per side

    def to_frame(self, pts_modules: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts_modules, dtype=np.float64).reshape(-1, 1, 2)
        return cv2.perspectiveTransform(pts, self.H).reshape(-1, 2)


def module_homography(n: int, corners: np.ndarray) -> np.ndarray:
    src = np.array([[0, 0], [n, 0], [n, n], [0, n]], dtype=np.float32)
    return cv2.getPerspectiveTransform(src, np.asarray(corners, dtype=np.float32))


def module_canvas(matrix: np.ndarray, px: int, quiet: int = QUIET) -> np.ndarray:
    """The code upright at `px` pixels a module, quiet zone included: float32, 1.0 = ink.

    Damage is drawn on this canvas (module space) before the warp, so a mark lands on
    the same modules whatever the perspective, and the undistorted damaged code can be
    checked for readability on its own.
    """
    return np.kron(np.pad(matrix, quiet).astype(np.float32), np.ones((px, px), np.float32))


def draw_code(
    frame: np.ndarray,
    matrix: np.ndarray,
    corners: np.ndarray,
    *,
    ink: float | tuple = 20.0,
    paper: float | tuple = 235.0,
    quiet: int = QUIET,
    canvas: np.ndarray | None = None,
) -> Placed:
    """Paint `matrix` onto `frame` (in place) so the symbol's corners land on `corners`.

    The quiet zone is painted as paper; the rest of the frame is untouched. `ink` and
    `paper` are gray levels or BGR tuples (low-contrast codes use values close together).
    `canvas` (from `module_canvas`, possibly altered) replaces the clean rendering.
    """
    n = matrix.shape[0]
    corners = np.asarray(corners, dtype=np.float64)
    H = module_homography(n, corners).astype(np.float64)
    placed = Placed(corners=corners, H=H, n=n)
    outer = placed.to_frame(np.array([[-quiet, -quiet], [n + quiet, -quiet], [n + quiet, n + quiet], [-quiet, n + quiet]]))
    fh, fw = frame.shape[:2]
    x0 = max(int(math.floor(outer[:, 0].min())) - 1, 0)
    y0 = max(int(math.floor(outer[:, 1].min())) - 1, 0)
    x1 = min(int(math.ceil(outer[:, 0].max())) + 2, fw)
    y1 = min(int(math.ceil(outer[:, 1].max())) + 2, fh)
    if x1 <= x0 or y1 <= y0:
        return placed
    # Module size in frame px (smallest side of the symbol / n) picks the supersampling:
    # enough sub-samples per module that AREA averaging gives true partial coverage.
    side = min(np.linalg.norm(corners[(i + 1) % 4] - corners[i]) for i in range(4))
    module_px = side / n
    k = int(min(6, max(2, math.ceil(8.0 / max(module_px, 0.5)))))
    total = n + 2 * quiet
    if canvas is not None:
        src_px = canvas.shape[0] // total
        src = np.asarray(canvas, np.float32)
    else:
        src_px = max(2, int(math.ceil(module_px * k * 1.5)))
        src = module_canvas(matrix, src_px, quiet)
    # Source image: 1.0 = ink, with quiet zone; alpha covers symbol + quiet zone.
    alpha_src = np.ones((total * src_px, total * src_px), np.float32)
    # src pixel (u, v) -> module coord (u/src_px - quiet) -> frame -> supersampled local box.
    to_module = np.array([[1.0 / src_px, 0, -quiet], [0, 1.0 / src_px, -quiet], [0, 0, 1]])
    to_local = np.array([[k, 0, -k * x0], [0, k, -k * y0], [0, 0, 1]], dtype=np.float64)
    # Pixel centres: cv2 maps pixel centres, shift by half a pixel on both ends.
    half_in = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    half_out = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    M = half_out @ to_local @ H @ to_module @ half_in
    size = ((x1 - x0) * k, (y1 - y0) * k)
    ink_sup = cv2.warpPerspective(src, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    a_sup = cv2.warpPerspective(alpha_src, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    dsize = (x1 - x0, y1 - y0)
    inkf = cv2.resize(ink_sup, dsize, interpolation=cv2.INTER_AREA)
    af = cv2.resize(a_sup, dsize, interpolation=cv2.INTER_AREA)
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    ink_c = _color(ink, frame)
    paper_c = _color(paper, frame)
    if roi.ndim == 3:
        inkf = inkf[..., None]
        af = af[..., None]
    # inkf is premultiplied by alpha at the border; divide it out so edges stay paper-coloured.
    code = np.where(af > 1e-3, paper_c + (ink_c - paper_c) * np.clip(inkf / np.maximum(af, 1e-3), 0, 1), paper_c)
    out = roi * (1 - af) + code * af
    frame[y0:y1, x0:x1] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return placed


def _color(v, frame: np.ndarray) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float32)
    if frame.ndim == 2:
        return arr.mean() if arr.ndim else arr
    return arr if arr.ndim else np.repeat(arr, 3)


def finder_boxes(n: int) -> list[tuple[int, int, int, int]]:
    """Module-space boxes (x0, y0, x1, y1) of the three finder patterns with separators."""
    return [(0, 0, 8, 8), (n - 8, 0, n, 8), (0, n - 8, 8, n)]
