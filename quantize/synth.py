"""Seeded generator of labelled frames for the QR detector.

Why our own generator: no pretrained weights or data sets can be fetched here, and the model
must learn the codes a finder-pattern search misses (blurred, glary, tiny, damaged, cut off by
the frame edge) while ignoring the clutter of a packing line (text, 1D barcodes,
DataMatrix-like labels, checkerboards). Every frame is a pure function of (seed, split, index),
so a dataset is reproducible and can be generated in parallel in any order.

A frame's label is the 4 corners (frame pixels, clockwise from the symbol's own top-left) of
every code, without the quiet zone, plus one degradation category per frame; the evaluation
reports recall per category.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field

import cv2
import numpy as np
import segno

# Frames are VGA-class: the size of a line-camera ROI or a handheld preview. A few aspect
# ratios so the model also sees the letterbox padding of 16:9 and square sensors.
FRAME_SIZES = ((640, 480), (640, 480), (640, 480), (640, 360), (512, 512))
CATEGORIES = ("clean", "motion_blur", "defocus", "glare", "low_contrast", "noise", "damage", "small")
EC_LEVELS = "LMQH"


@dataclass
class Frame:
    image: np.ndarray  # uint8 HxW gray
    quads: list[np.ndarray] = field(default_factory=list)  # each float32 (4, 2), frame pixels
    category: str = "clean"


# ---------------------------------------------------------------------------------------------
# backgrounds: cheap vectorised textures; each returns float32 HxW in 0..255


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    small = rng.random((max(2, h // cells), max(2, w // cells))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _bg_procedural(rng, h, w):
    base = rng.uniform(40, 220)
    img = base + rng.uniform(20, 90) * (_smooth_noise(rng, h, w, int(rng.integers(20, 160))) - 0.5)
    gx, gy = np.meshgrid(np.linspace(-1, 1, w, dtype=np.float32), np.linspace(-1, 1, h, dtype=np.float32))
    img += rng.uniform(-50, 50) * gx + rng.uniform(-50, 50) * gy
    return img


def _bg_cardboard(rng, h, w):
    img = rng.uniform(110, 185) + 18 * (_smooth_noise(rng, h, w, 40) - 0.5)
    fibres = rng.normal(0, 1, (h, w)).astype(np.float32)
    k = int(rng.integers(7, 21))
    fibres = cv2.blur(fibres, (k, 1) if rng.random() < 0.5 else (1, k))
    img += rng.uniform(10, 30) * fibres
    if rng.random() < 0.6:  # corrugation seen through the liner
        period = rng.uniform(20, 60)
        xs = np.arange(w, dtype=np.float32) if rng.random() < 0.5 else np.arange(h, dtype=np.float32)[:, None]
        img = img + rng.uniform(4, 14) * np.sin(2 * np.pi * xs / period)
    return img


def _bg_metal(rng, h, w):
    brushed = rng.normal(0, 1, (h, w)).astype(np.float32)
    brushed = cv2.blur(brushed, (int(rng.integers(25, 80)), 1))
    img = rng.uniform(90, 170) + rng.uniform(20, 45) * brushed
    gx = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    img += rng.uniform(30, 90) * np.exp(-((gx - rng.uniform(0, 1)) ** 2) / rng.uniform(0.005, 0.05))
    return img


def _bg_film(rng, h, w):
    field_ = _smooth_noise(rng, h, w, int(rng.integers(40, 120)))
    img = rng.uniform(70, 150) + 25 * (field_ - 0.5)
    ripples = np.sin(field_ * rng.uniform(15, 40))
    img += rng.uniform(40, 110) * np.clip(ripples, 0, 1) ** 6  # bright crinkle highlights
    return img


def _bg_plain(rng, h, w):
    return np.full((h, w), rng.uniform(20, 240), np.float32) + rng.normal(0, 3, (h, w)).astype(np.float32)


def _bg_light(rng, h, w):
    """White or light-grey box, tray or label stock: the commonest surface under a label, and
    one where a light quiet zone hardly differs from the surface around it."""
    gx, gy = np.meshgrid(np.linspace(-1, 1, w, dtype=np.float32), np.linspace(-1, 1, h, dtype=np.float32))
    img = rng.uniform(165, 245) + rng.uniform(-15, 15) * gx + rng.uniform(-15, 15) * gy
    return img + rng.normal(0, rng.uniform(0.5, 3), (h, w)).astype(np.float32)


BACKGROUNDS = (_bg_procedural, _bg_cardboard, _bg_metal, _bg_film, _bg_plain, _bg_light, _bg_light)


# ---------------------------------------------------------------------------------------------
# distractors: things on a line that are not QR codes


def _paste(img, patch, mask, rng, angle=None):
    """Rotate patch (float, 0..255) with its mask and alpha-blend it at a random place."""
    h, w = img.shape
    ph, pw = patch.shape
    angle = rng.uniform(0, 360) if angle is None else angle
    diag = int(math.hypot(ph, pw)) + 2
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, 1.0)
    m[:, 2] += (diag - pw) / 2, (diag - ph) / 2
    p = cv2.warpAffine(patch, m, (diag, diag), flags=cv2.INTER_LINEAR)
    a = cv2.warpAffine(mask, m, (diag, diag), flags=cv2.INTER_LINEAR)
    x0 = int(rng.integers(-diag // 3, max(1, w - diag * 2 // 3)))
    y0 = int(rng.integers(-diag // 3, max(1, h - diag * 2 // 3)))
    xs, ys = max(0, x0), max(0, y0)
    xe, ye = min(w, x0 + diag), min(h, y0 + diag)
    if xe <= xs or ye <= ys:
        return np.zeros((h, w), np.float32)
    sub_p = p[ys - y0 : ye - y0, xs - x0 : xe - x0]
    sub_a = a[ys - y0 : ye - y0, xs - x0 : xe - x0]
    img[ys:ye, xs:xe] = img[ys:ye, xs:xe] * (1 - sub_a) + sub_p * sub_a
    occ = np.zeros((h, w), np.float32)
    occ[ys:ye, xs:xe] = sub_a
    return occ


def _modules_patch(bits: np.ndarray, module: float, dark: float, light: float, quiet: int) -> tuple:
    n = bits.shape[0]
    grid = np.pad(bits, quiet, constant_values=0)
    size = max(4, int(round(grid.shape[1] * module))), max(4, int(round(grid.shape[0] * module)))
    up = cv2.resize(grid.astype(np.float32), size, interpolation=cv2.INTER_NEAREST)
    patch = light + (dark - light) * up
    return patch, np.ones_like(patch)


def _distractor_barcode(rng):
    widths = rng.choice([1, 1, 2, 3, 4], size=int(rng.integers(20, 60))) * rng.uniform(1.0, 3.0)
    total = int(widths.sum()) + 1
    row = np.zeros(total, np.float32)
    x = 0.0
    for i, wd in enumerate(widths):
        if i % 2 == 0:
            row[int(x) : int(x + wd)] = 1
        x += wd
    hgt = int(rng.integers(25, 120))
    bars = np.repeat(row[None, :], hgt, axis=0)
    light, dark = rng.uniform(170, 250), rng.uniform(0, 70)
    patch = np.pad(light + (dark - light) * bars, 8, constant_values=light)
    return patch, np.ones_like(patch)


def _distractor_datamatrix(rng):
    n = int(rng.choice([10, 12, 14, 16, 18, 20, 22, 24, 26, 32]))
    bits = (rng.random((n, n)) < 0.5).astype(np.float32)
    bits[:, 0] = 1  # solid L finder
    bits[-1, :] = 1
    bits[0, :] = np.arange(n) % 2 == 0  # clock tracks
    bits[:, -1] = np.arange(n) % 2 == 1
    return _modules_patch(bits, rng.uniform(2, 8), rng.uniform(0, 70), rng.uniform(170, 250), 2)


def _distractor_checker(rng):
    n = int(rng.integers(4, 14))
    bits = (np.add.outer(np.arange(n), np.arange(n)) % 2).astype(np.float32)
    return _modules_patch(bits, rng.uniform(4, 16), rng.uniform(0, 70), rng.uniform(170, 250), 0)


def _distractor_text(rng):
    lines = int(rng.integers(1, 6))
    scale = rng.uniform(0.35, 1.1)
    width = int(rng.integers(80, 320))
    lh = int(28 * scale) + 4
    patch = np.full((lines * lh + 6, width), int(rng.uniform(160, 250)), np.uint8)
    alphabet = string.ascii_uppercase + string.digits + "   -/:"
    for i in range(lines):
        text = "".join(rng.choice(list(alphabet), size=int(rng.integers(5, 30))))
        font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN]))
        cv2.putText(patch, text, (3, (i + 1) * lh - 3), font, scale, int(rng.uniform(0, 60)),
                    int(rng.integers(1, 3)), cv2.LINE_AA)
    patch = patch.astype(np.float32)
    return patch, np.ones_like(patch)


def _distractor_blobs(rng):
    """Dense random dots (halftone print): texture-like but without QR structure."""
    size = int(rng.integers(40, 160))
    dots = (cv2.resize(rng.random((size // 3, size // 3)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_LINEAR) > rng.uniform(0.55, 0.75)).astype(np.float32)
    light, dark = rng.uniform(150, 250), rng.uniform(0, 90)
    patch = light + (dark - light) * dots
    return patch, np.ones_like(patch)


# DataMatrix-like symbols and checkerboards are listed twice: they are what a detector most
# easily mistakes for a QR code (module grids), so the model must see many of them.
DISTRACTORS = (_distractor_barcode, _distractor_datamatrix, _distractor_datamatrix, _distractor_checker,
               _distractor_checker, _distractor_text, _distractor_text, _distractor_blobs)


# ---------------------------------------------------------------------------------------------
# QR codes


def _qr_bits(rng: np.random.Generator, version: int, ec: str) -> np.ndarray:
    alphabet = string.ascii_letters + string.digits + "-_/.:"
    # Byte capacity at EC level L grows ~ quadratically with the version; start from a random
    # fraction of a generous estimate and halve until it fits: the data is random so the
    # module pattern is not the repeated pad codewords of a near-empty symbol.
    length = max(1, int(rng.uniform(0.3, 1.0) * (1.3 * version * version + 12 * version)))
    while True:
        data = "".join(rng.choice(list(alphabet), size=length))
        try:
            qr = segno.make_qr(data, version=version, error=ec.lower(), boost_error=False,
                               mode="byte")
            return np.array(qr.matrix, dtype=np.float32)
        except Exception:  # segno.DataOverflowError: too much data for this version/EC
            if length == 1:
                raise
            length = max(1, length // 2)


def _bend(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Slight cylinder curvature: a code on a bottle or a bulging bag. Corners stay put."""
    h, w = patch.shape
    amp = rng.uniform(0.01, 0.05) * min(h, w)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    if rng.random() < 0.5:
        map_y = ys + amp * np.sin(np.pi * xs / max(1, w - 1))
        map_x = xs
    else:
        map_x = xs + amp * np.sin(np.pi * ys / max(1, h - 1))
        map_y = ys
    return cv2.remap(patch, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _place_code(rng, img, occupied, small: bool, allow_outside: bool):
    """Render one code into img; returns the quad of the symbol (no quiet zone) or None."""
    h, w = img.shape
    # Short IDs dominate on a line: versions 1-5 are 40 % of codes (the rest 1-20), which also
    # gives many codes with big modules, whose centre looks like any coarse module grid.
    version = int(rng.integers(1, 6)) if rng.random() < 0.4 else int(rng.integers(1, 21))
    ec = EC_LEVELS[int(rng.integers(0, 4))]
    bits = _qr_bits(rng, version, ec)
    n = bits.shape[0]
    max_side = 0.85 * min(h, w)
    m_hi = min(12.0, max_side / (n + 2))
    m_lo = 1.5
    if small:
        m_hi = min(m_hi, 2.3)
    if m_hi < m_lo:
        return None
    module = float(np.exp(rng.uniform(np.log(m_lo), np.log(m_hi))))
    side = module * n
    quiet = int(rng.integers(1, 5))
    # Render at >= 4 px per module so the warp below resamples a crisp source.
    ppm = 4
    src = np.pad(bits, quiet, constant_values=0)
    src = cv2.resize(src, (src.shape[1] * ppm, src.shape[0] * ppm), interpolation=cv2.INTER_NEAREST)
    if rng.random() < 0.3:
        src = _bend(src, rng)
    # Target quad: rotated square with random perspective, placed where it does not overlap.
    for _attempt in range(12):
        angle = rng.uniform(0, 2 * np.pi)
        full = side + 2 * quiet * module
        margin = -0.35 * full if allow_outside else 2
        cx = rng.uniform(margin + full / 2, w - margin - full / 2) if w - 2 * margin > full else w / 2
        cy = rng.uniform(margin + full / 2, h - margin - full / 2) if h - 2 * margin > full else h / 2
        base = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * (full / 2)
        jitter = rng.uniform(-0.12, 0.12, (4, 2)).astype(np.float32) * full
        c, s = math.cos(angle), math.sin(angle)
        rot = np.array([[c, -s], [s, c]], np.float32)
        dst_full = (base + jitter) @ rot.T + np.array([cx, cy], np.float32)
        poly = dst_full.astype(np.int32)
        test = np.zeros_like(occupied)
        cv2.fillConvexPoly(test, poly, 1)
        if (test & occupied).any():
            continue
        break
    else:
        return None
    sh, sw = src.shape
    src_quad = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float32)
    hm = cv2.getPerspectiveTransform(src_quad, dst_full)
    dark = rng.uniform(0, 80)
    light = rng.uniform(150, 255)
    code = cv2.warpPerspective(src, hm, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    alpha = cv2.warpPerspective(np.ones_like(src), hm, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    if rng.random() < 0.75:
        # printed on a label: a light margin around the quiet zone
        lbl = cv2.dilate(alpha, np.ones((3, 3), np.uint8), iterations=int(rng.integers(1, 6)))
        img[:] = img * (1 - lbl) + (light - rng.uniform(0, 15)) * lbl
    img[:] = img * (1 - alpha) + (light + (dark - light) * code) * alpha
    cv2.fillConvexPoly(occupied, poly, 1)
    # symbol corners (inside the quiet zone) in frame coordinates
    q = quiet * ppm
    sym = np.array([[q, q], [sw - q, q], [sw - q, sh - q], [q, sh - q]], np.float32)
    quad = cv2.perspectiveTransform(sym[None], hm)[0]
    return quad, module


# ---------------------------------------------------------------------------------------------
# degradations


def _motion_blur(img, rng, module):
    length = rng.uniform(2.0, min(16.0, max(3.0, 3.0 * module)))
    # mostly along the conveyor (horizontal), sometimes any direction (hand-held scanning)
    angle = rng.normal(0, 8) if rng.random() < 0.8 else rng.uniform(0, 180)
    k = int(math.ceil(length)) | 1
    ker = np.zeros((k, k), np.float32)
    ker[k // 2, :] = 1
    m = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), angle, 1.0)
    ker = cv2.warpAffine(ker, m, (k, k))
    return cv2.filter2D(img, -1, ker / max(ker.sum(), 1e-6))


def _defocus(img, rng, module):
    r = rng.uniform(1.0, min(6.0, max(1.5, 1.3 * module)))
    k = int(math.ceil(r)) * 2 + 1
    yy, xx = np.mgrid[:k, :k] - k // 2
    disk = ((xx * xx + yy * yy) <= r * r).astype(np.float32)
    return cv2.filter2D(img, -1, disk / disk.sum())


def _glare(img, rng, quads):
    h, w = img.shape
    out = img.copy()
    for _ in range(int(rng.integers(1, 3))):
        if quads and rng.random() < 0.85:
            q = quads[int(rng.integers(len(quads)))]
            cx, cy = q.mean(0) + rng.normal(0, 0.25, 2) * np.ptp(q, 0)
            size = rng.uniform(0.15, 0.6) * float(np.ptp(q, 0).max())
        else:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            size = rng.uniform(20, 120)
        sx, sy = size * rng.uniform(0.4, 1.0), size * rng.uniform(0.4, 1.0)
        ang = rng.uniform(0, np.pi)
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32) - cx, np.arange(h, dtype=np.float32) - cy)
        u = xs * math.cos(ang) + ys * math.sin(ang)
        v = -xs * math.sin(ang) + ys * math.cos(ang)
        blob = np.exp(-((u / sx) ** 2 + (v / sy) ** 2) ** rng.uniform(0.8, 2.0))
        out += rng.uniform(120, 300) * blob  # saturates: a specular highlight burns the modules out
    return out


def _damage(img, rng, quads):
    out = img
    for q in quads:
        c = q.mean(0)
        span = float(np.ptp(q, 0).max())
        for _ in range(int(rng.integers(1, 4))):
            kind = rng.random()
            p = c + rng.uniform(-0.5, 0.5, 2) * span
            if kind < 0.4:  # scratch / torn strip
                a = rng.uniform(0, np.pi)
                d = np.array([math.cos(a), math.sin(a)]) * span * rng.uniform(0.3, 0.8)
                cv2.line(out, tuple(int(v) for v in p - d), tuple(int(v) for v in p + d),
                         float(rng.uniform(0, 255)), int(max(1, rng.uniform(0.03, 0.12) * span)))
            elif kind < 0.8:  # tape, stain or a finger: a blob covering part of the symbol
                axes = (int(max(2, rng.uniform(0.1, 0.3) * span)), int(max(2, rng.uniform(0.1, 0.3) * span)))
                cv2.ellipse(out, tuple(int(v) for v in p), axes, rng.uniform(0, 180), 0, 360,
                            float(rng.uniform(0, 255)), -1)
            else:  # a finder pattern destroyed
                corner = q[int(rng.integers(3))]
                r = int(max(2, 0.15 * span))
                cv2.circle(out, tuple(int(v) for v in (corner + (c - corner) * 0.12)), r,
                           float(rng.uniform(100, 255)), -1)
    return out


def _finish(img, rng, strong_noise: bool) -> np.ndarray:
    """Sensor: gain/offset, vignetting, noise, 8-bit clip, optional JPEG."""
    h, w = img.shape
    if rng.random() < 0.4:
        gx, gy = np.meshgrid(np.linspace(-1, 1, w, dtype=np.float32), np.linspace(-1, 1, h, dtype=np.float32))
        img = img * (1 - rng.uniform(0.1, 0.45) * (gx * gx + gy * gy) / 2)
    sigma = rng.uniform(8, 22) if strong_noise else rng.uniform(0.5, 4)
    img = img + rng.normal(0, sigma, img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if strong_noise or rng.random() < 0.5:
        q = int(rng.uniform(15, 45)) if strong_noise else int(rng.uniform(50, 95))
        ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
        out = cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE)
    return out


# ---------------------------------------------------------------------------------------------


# Training frames draw the categories where codes are missed more often: damage (17 of model
# 1.1's 55 misses) and, after damage had been doubled, motion blur and defocus (19 of the
# next build's 46); clean and noise frames (1 miss each) less often. Validation and
# calibration keep one category in 8 each, so metrics compare between builds and the tuned
# threshold fits what is measured.
TRAIN_SPLIT = 0
TRAIN_CATEGORY_WEIGHTS = {"clean": 0.5, "noise": 0.75, "motion_blur": 1.5, "defocus": 1.5, "damage": 2.0}
_TRAIN_CATEGORY_P = np.array([TRAIN_CATEGORY_WEIGHTS.get(c, 1.0) for c in CATEGORIES])
_TRAIN_CATEGORY_P = _TRAIN_CATEGORY_P / _TRAIN_CATEGORY_P.sum()


def _category(rng: np.random.Generator, split: int) -> str:
    if split != TRAIN_SPLIT:
        return CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    return CATEGORIES[int(rng.choice(len(CATEGORIES), p=_TRAIN_CATEGORY_P))]


def make_frame(seed: int, split: int, index: int) -> Frame:
    """One labelled frame, a pure function of (seed, split, index)."""
    rng = np.random.default_rng([seed, split, index])
    w, h = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    category = _category(rng, split)
    img = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))](rng, h, w).astype(np.float32)
    if rng.random() < 0.4:  # a second texture region: a box edge, a label, a tray
        other = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))](rng, h, w).astype(np.float32)
        m = np.zeros((h, w), np.float32)
        pts = rng.uniform(0, 1, (4, 2)) * (w, h)
        cv2.fillConvexPoly(m, cv2.convexHull(pts.astype(np.int32)), 1.0)
        img = img * (1 - m) + other * m
    for _ in range(int(rng.integers(0, 7))):
        patch, mask = DISTRACTORS[int(rng.integers(len(DISTRACTORS)))](rng)
        _paste(img, patch, mask, rng)
    occupied = np.zeros((h, w), np.uint8)
    n_codes = 0 if rng.random() < 0.08 else int(rng.choice([1, 1, 1, 2, 2, 3, 4]))
    quads, modules = [], []
    for _ in range(n_codes):
        placed = _place_code(rng, img, occupied, small=category == "small",
                             allow_outside=rng.random() < 0.2)
        if placed is not None:
            quads.append(placed[0])
            modules.append(placed[1])
    module = float(np.median(modules)) if modules else 3.0
    if category == "low_contrast":
        mid = rng.uniform(60, 190)
        img = mid + (img - img.mean()) * rng.uniform(0.12, 0.3)
    elif category == "glare":
        img = _glare(img, rng, quads)
    elif category == "damage":
        img = _damage(img, rng, quads)
    if category == "motion_blur":
        img = _motion_blur(img, rng, module)
    elif category == "defocus":
        img = _defocus(img, rng, module)
    elif rng.random() < 0.3:  # mild blur everywhere: no lens is perfect
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.0))
    image = _finish(img, rng, strong_noise=category == "noise")
    return Frame(image=image, quads=quads, category=category)
