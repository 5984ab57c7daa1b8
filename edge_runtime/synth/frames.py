"""The decode bench's frames: 1280x720 scenes in named categories of difficulty.

Each category isolates one thing a line camera does to codes (blur, glare, small
modules...) on top of a realistic scene, tuned so a plain decoder reads some but not
all codes: a bench where everyone scores 100% teaches nothing. Every code stays readable
in principle: blur never exceeds ~1.5 modules, glare never wipes a finder pattern,
damage stays under 15% of the data area and off the finders.

Frame i of a category depends only on (seed, category, i), so `--per-category 5` gives
the first five frames of `--per-category 20`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import cv2
import numpy as np

from edge_runtime.synth import degrade
from edge_runtime.synth.background import make_background
from edge_runtime.synth.payloads import make_payload
from edge_runtime.synth.qr import QUIET, Placed, draw_code, finder_boxes, module_canvas, qr_matrix, tilted_quad

WIDTH, HEIGHT = 1280, 720
CATEGORIES = ["nominal", "rotated", "perspective", "small", "lowcontrast", "blur", "glare", "multi", "damaged"]

Truth = dict  # {"payload": bytes, "corners": [[x, y] * 4]}


class _Scene:
    """A frame being built: background plus codes, with their truths and placements."""

    def __init__(self, rng: np.random.Generator, width: int = WIDTH, height: int = HEIGHT) -> None:
        self.rng = rng
        self.w, self.h = width, height
        self.frame = make_background(height, width, rng)
        self.truths: list[Truth] = []
        self.placed: list[Placed] = []
        self._boxes: list[tuple[float, float, float, float]] = []
        self.meta: dict = {}  # what the category chose (blur in modules...), for debugging a frame

    def add_code(
        self,
        module_px: float,
        *,
        angle: float | None = None,
        tilt: float = 8.0,
        error: str | None = None,
        ink: float | tuple = 25.0,
        paper: float | tuple = 235.0,
        payload: bytes | None = None,
        matrix: np.ndarray | None = None,
        canvas: np.ndarray | None = None,
    ) -> Placed | None:
        """Place one code where it fits (inside the frame, apart from the others).

        Pass `payload` and `matrix` (and a damaged `canvas`) to place a prepared code.
        """
        rng = self.rng
        payload = payload if payload is not None else self._unique_payload()
        error = error or str(rng.choice(["l", "m", "q", "h"], p=[0.2, 0.4, 0.25, 0.15]))
        matrix = matrix if matrix is not None else qr_matrix(payload, error=error)
        n = matrix.shape[0]
        side = n * module_px
        angle = float(rng.uniform(-10, 10)) if angle is None else angle
        for _ in range(40):
            reach = (side + 2 * QUIET * module_px) * 0.75 + 4
            if 2 * reach >= min(self.w, self.h):
                return None
            cx = float(rng.uniform(reach, self.w - reach))
            cy = float(rng.uniform(reach, self.h - reach))
            quad = tilted_quad(
                (cx, cy), side, angle, float(rng.uniform(-tilt, tilt)), float(rng.uniform(-tilt, tilt)), focal=1100.0
            )
            box = (cx - reach, cy - reach, cx + reach, cy + reach)
            if any(_overlap(box, b) for b in self._boxes):
                continue
            if quad[:, 0].min() < 2 or quad[:, 1].min() < 2 or quad[:, 0].max() > self.w - 3 or quad[:, 1].max() > self.h - 3:
                continue
            placed = draw_code(self.frame, matrix, quad, ink=ink, paper=paper, canvas=canvas)
            self._boxes.append(box)
            self.placed.append(placed)
            self.truths.append({"payload": payload, "corners": [[round(float(x), 2), round(float(y), 2)] for x, y in quad]})
            return placed
        return None

    def _unique_payload(self) -> bytes:
        have = {t["payload"] for t in self.truths}
        while True:
            p = make_payload(self.rng)
            if p not in have:
                return p

    def camera(
        self, noise: tuple[float, float] = (1.5, 4.0), jpeg: tuple[int, int] | None = (70, 95), jpeg_p: float = 0.6
    ) -> None:
        """What every frame goes through last: sensor noise, then often JPEG."""
        rng = self.rng
        self.frame = degrade.sensor_noise(self.frame, rng, sigma=float(rng.uniform(*noise)), shot=0.05)
        if jpeg and rng.random() < jpeg_p:
            self.frame = degrade.jpeg(self.frame, int(rng.integers(*jpeg)))


def _overlap(a, b) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def _pct_saturated(frame: np.ndarray, placed: Placed, box: tuple[float, float, float, float]) -> float:
    """Fraction of a module-space box that is clipped white (what glare destroyed)."""
    x0, y0, x1, y1 = box
    quad = placed.to_frame(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64))
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, np.round(quad).astype(np.int32), 1)
    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    inside = mask.astype(bool)
    return float((gray[inside] >= 245).mean()) if inside.any() else 0.0


# --- categories -----------------------------------------------------------------------

def _nominal(s: _Scene) -> None:
    r = s.rng
    s.add_code(float(r.uniform(3.0, 7.0)))
    s.frame = degrade.defocus(s.frame, float(r.uniform(0, 0.8)))
    s.camera()


def _rotated(s: _Scene) -> None:
    r = s.rng
    s.add_code(float(r.uniform(2.5, 6.0)), angle=float(r.uniform(0, 360)))
    s.frame = degrade.defocus(s.frame, float(r.uniform(0.3, 1.0)))
    s.camera(noise=(2.0, 5.0))


def _perspective(s: _Scene) -> None:
    r = s.rng
    s.add_code(float(r.uniform(2.5, 6.0)), angle=float(r.uniform(-30, 30)), tilt=55.0)
    s.frame = degrade.defocus(s.frame, float(r.uniform(0.3, 1.0)))
    s.camera(noise=(2.0, 5.0))


def _small(s: _Scene) -> None:
    r = s.rng
    module = float(r.uniform(1.5, 2.5))
    s.add_code(module, angle=float(r.uniform(-20, 20)), error=str(r.choice(["l", "m"])))
    # At 1.5-2.5 px a module, the lens' softness and compression decide readability;
    # a blur disk of at most 1.2 modules across leaves every module there in principle.
    radius = module * float(r.uniform(0.45, 0.6))
    s.meta.update(module_px=round(module, 2), defocus_px=round(radius, 2))
    s.frame = degrade.defocus(s.frame, radius)
    s.camera(noise=(3.0, 6.0), jpeg=(50, 80), jpeg_p=1.0)


def _lowcontrast(s: _Scene) -> None:
    r = s.rng
    contrast = float(r.uniform(20, 50))
    paper = float(r.uniform(90, 200))
    s.add_code(float(r.uniform(2.5, 5.5)), ink=paper - contrast, paper=paper)
    s.frame = degrade.uneven_illumination(s.frame, r, strength=float(r.uniform(0.2, 0.5)))
    s.frame = degrade.defocus(s.frame, float(r.uniform(0.3, 0.9)))
    s.camera(noise=(2.5, 5.0))


def _blur(s: _Scene) -> None:
    r = s.rng
    length = float(r.uniform(4, 14))
    # 1.2-1.6 modules of smear: a box blur nulls the finest module pattern at 2
    # modules, and below ~1.2 zxing-cpp alone reads nearly everything.
    module = max(2.5, length / float(r.uniform(1.2, 1.6)))
    s.meta.update(blur_px=round(length, 2), module_px=round(module, 2), blur_modules=round(length / module, 2))
    s.add_code(module)
    # Wide aperture for the short exposure: shallow depth of field, a little defocus too.
    s.frame = degrade.defocus(s.frame, module * float(r.uniform(0.2, 0.45)))
    s.frame = degrade.motion_blur(s.frame, length, float(r.uniform(-3, 3)))
    # A short exposure to limit that smear leaves a dark frame the sensor gains up: noise.
    s.frame = degrade.low_contrast(s.frame, float(r.uniform(130, 200)), float(r.uniform(60, 100)))
    s.camera(noise=(5.0, 9.0))


def _glare(s: _Scene) -> None:
    r = s.rng
    error = str(r.choice(["m", "q", "h"]))
    placed = s.add_code(float(r.uniform(3.0, 6.5)), error=error)
    # What clips to white is an erasure; a blob touches more codewords than its area
    # share, so stay at about half of what the error level repairs.
    max_clipped = {"m": 0.07, "q": 0.11, "h": 0.15}[error]
    if placed is None:
        s.camera()
        return
    n = placed.n
    clean = s.frame
    for _ in range(20):
        frame = clean
        for _ in range(int(r.integers(1, 3))):
            # Centre on the data area (module space), sized relative to the code.
            c = placed.to_frame(np.array([[r.uniform(0.25, 0.85) * n, r.uniform(0.25, 0.85) * n]]))[0]
            side = float(np.linalg.norm(placed.corners[1] - placed.corners[0]))
            axes = (side * float(r.uniform(0.12, 0.3)), side * float(r.uniform(0.08, 0.2)))
            frame = degrade.glare(frame, (float(c[0]), float(c[1])), axes, float(r.uniform(0, 180)), float(r.uniform(0.6, 1.0)))
        finders_ok = all(_pct_saturated(frame, placed, b) < 0.25 for b in finder_boxes(n))
        clipped = _pct_saturated(frame, placed, (0, 0, n, n))
        if finders_ok and clipped < max_clipped:
            s.meta.update(error=error, clipped=round(clipped, 3))
            s.frame = frame
            break
    s.camera()


def _multi(s: _Scene) -> None:
    r = s.rng
    for _ in range(int(r.integers(3, 7))):
        s.add_code(float(r.uniform(2.5, 5.5)), angle=float(r.uniform(-25, 25)), tilt=15.0)
    s.frame = degrade.defocus(s.frame, float(r.uniform(0.3, 1.0)))
    s.camera(noise=(2.0, 5.0))


def _damaged(s: _Scene) -> None:
    r = s.rng
    module = float(r.uniform(3.0, 6.5))
    error = str(r.choice(["m", "q", "h"], p=[0.3, 0.4, 0.3]))
    # Up to 15% of the data area; _damage_canvas keeps only damage the level repairs.
    cover = {"m": (0.05, 0.10), "q": (0.08, 0.14), "h": (0.10, 0.15)}[error]
    payload = s._unique_payload()
    matrix = qr_matrix(payload, error=error)
    canvas, covered = _damage_canvas(matrix, payload, r, float(r.uniform(*cover)))
    s.meta.update(error=error, damaged=round(covered, 3))
    s.add_code(module, error=error, payload=payload, matrix=matrix, canvas=canvas, tilt=20.0)
    # The damage used up most of the error correction: ordinary optics and noise now
    # decide, as on a line where a scuffed label is also a little out of focus.
    s.frame = degrade.defocus(s.frame, module * float(r.uniform(0.1, 0.3)))
    s.camera(noise=(2.0, 5.0))


def _damage_canvas(
    matrix: np.ndarray, payload: bytes, rng: np.random.Generator, coverage: float, px: int = 12
) -> tuple[np.ndarray, float]:
    """Scratches and blots on the upright code, off the finders, that leave it readable.

    "Readable in principle" is checked, not hoped for: the damaged code, undistorted
    and noise-free, must decode with zxing-cpp; otherwise the marks are drawn again
    (lighter each time). Returns (module-space canvas for draw_code, covered fraction).
    """
    import zxingcpp

    n = matrix.shape[0]
    clean = module_canvas(matrix, px)
    gray = np.clip((1.0 - clean) * 255.0, 0, 255).astype(np.uint8)
    allowed = np.zeros(gray.shape, np.uint8)
    q = QUIET * px
    allowed[q : q + n * px, q : q + n * px] = 1
    for x0, y0, x1, y1 in finder_boxes(n):
        allowed[q + y0 * px : q + y1 * px, q + x0 * px : q + x1 * px] = 0
    for attempt in range(8):
        damaged, covered = degrade.damage(gray, rng, allowed, coverage=coverage * (0.85**attempt), scale=px)
        found = zxingcpp.read_barcodes(damaged, formats=[zxingcpp.BarcodeFormat.QRCode])
        if any(bytes(b.bytes) == payload for b in found):
            return 1.0 - damaged.astype(np.float32) / 255.0, covered
    return clean, 0.0


_BUILDERS: dict[str, Callable[[_Scene], None]] = {
    "nominal": _nominal,
    "rotated": _rotated,
    "perspective": _perspective,
    "small": _small,
    "lowcontrast": _lowcontrast,
    "blur": _blur,
    "glare": _glare,
    "multi": _multi,
    "damaged": _damaged,
}


def make_frame(category: str, seed: int = 0, index: int = 0) -> tuple[np.ndarray, list[Truth]]:
    """Frame `index` of `category` for `seed`: (BGR uint8 1280x720, truths)."""
    if category not in _BUILDERS:
        raise ValueError(f"unknown category {category!r}; choose from {', '.join(CATEGORIES)}")
    scene = make_scene(category, seed, index)
    return scene.frame, scene.truths


def make_scene(category: str, seed: int = 0, index: int = 0) -> _Scene:
    """Like make_frame, keeping what the category chose in `.meta` (for looking into a frame)."""
    if category not in _BUILDERS:
        raise ValueError(f"unknown category {category!r}; choose from {', '.join(CATEGORIES)}")
    rng = np.random.default_rng([seed, CATEGORIES.index(category), index])
    scene = _Scene(rng)
    _BUILDERS[category](scene)
    return scene


def iter_bench_set(
    seed: int = 0, per_category: int = 20, categories: list[str] | None = None
) -> Iterator[tuple[str, np.ndarray, list[Truth]]]:
    """(category, frame, truths) one at a time: 180 frames of 1280x720 are ~500 MB at once."""
    for cat in categories or CATEGORIES:
        for i in range(per_category):
            frame, truths = make_frame(cat, seed, i)
            yield cat, frame, truths


def make_bench_set(
    seed: int = 0, per_category: int = 20, categories: list[str] | None = None
) -> list[tuple[str, np.ndarray, list[Truth]]]:
    """[(category, frame, truths)] for every category, `per_category` frames each (see iter_bench_set)."""
    return list(iter_bench_set(seed, per_category, categories))


def blur_modules(length: float, module_px: float) -> float:
    """Blur length in modules: the quantity that decides if a code is readable at all."""
    return length / module_px if module_px > 0 else math.inf
