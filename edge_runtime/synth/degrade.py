"""What a line camera does to a label, as pure functions on uint8 gray/BGR arrays.

Each function returns a new array of the same shape and dtype and never touches its
input, so the bench, the tests and the conveyor compose them freely. Randomness comes
in only through an explicit `numpy.random.Generator`, which keeps every frame
reproducible from a seed.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

_GAMMA = 2.2


def _to_linear(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float32) / 255.0) ** _GAMMA


def _from_linear(lin: np.ndarray) -> np.ndarray:
    return np.clip(np.clip(lin, 0, 1) ** (1 / _GAMMA) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def motion_kernel(length: float, angle_deg: float = 0.0) -> np.ndarray:
    """Normalized line kernel of `length` px along `angle_deg`, fractional ends.

    Angles are in image coordinates: 0 is along x (the conveyor), 90 along y, 45
    from top-left to bottom-right.

    A fractional length matters: the bench sweeps 4..14 px and a kernel rounded to whole
    pixels would make 4.4 and 4.6 px identical.
    """
    length = max(float(length), 1.0)
    size = int(math.ceil(length)) + 2
    size += 1 - size % 2
    k = np.zeros((size, size), np.float32)
    c = size // 2
    half = length / 2.0
    for x in range(size):
        # Coverage of pixel [x-0.5, x+0.5] by the segment [c-half, c+half].
        lo, hi = max(x - 0.5, c - half), min(x + 0.5, c + half)
        k[c, x] = max(hi - lo, 0.0)
    if angle_deg % 180:
        rot = cv2.getRotationMatrix2D((c, c), -angle_deg, 1.0)
        k = cv2.warpAffine(k, rot, (size, size), flags=cv2.INTER_LINEAR)
    return k / k.sum()


def motion_blur(img: np.ndarray, length: float, angle_deg: float = 0.0, linear_light: bool = True) -> np.ndarray:
    """Blur along a direction, as a moving label during the exposure.

    Light adds up in linear intensity, not in gamma-encoded values; blurring in linear
    light is why a real smeared highlight eats into dark modules more than a naive blur.
    """
    if length <= 1.0:
        return img.copy()
    k = motion_kernel(length, angle_deg)
    if not linear_light:
        return cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT)
    return _from_linear(cv2.filter2D(_to_linear(img), -1, k, borderType=cv2.BORDER_REFLECT))


def disk_kernel(radius: float) -> np.ndarray:
    """Anti-aliased disk (the defocus point-spread function of a round aperture)."""
    r = max(float(radius), 0.5)
    size = 2 * int(math.ceil(r)) + 1
    ss = 8
    ax = (np.arange(size * ss) + 0.5) / ss - size / 2.0
    xx, yy = np.meshgrid(ax, ax)
    fine = (xx**2 + yy**2 <= r * r).astype(np.float32)
    k = fine.reshape(size, ss, size, ss).mean(axis=(1, 3))
    return k / k.sum()


def defocus(img: np.ndarray, radius: float) -> np.ndarray:
    """Out-of-focus blur: a label nearer or farther than the focus plane."""
    if radius < 0.5:
        return img.copy()
    return _from_linear(cv2.filter2D(_to_linear(img), -1, disk_kernel(radius), borderType=cv2.BORDER_REFLECT))


def glare(
    img: np.ndarray,
    center: tuple[float, float],
    axes: tuple[float, float],
    angle_deg: float = 0.0,
    strength: float = 1.0,
    core: float = 0.45,
) -> np.ndarray:
    """A specular highlight: a saturated elliptical core with a soft falloff.

    Inside `core` (fraction of the axes) the sensor clips to white and nothing of the
    print survives; outside it the highlight adds light that fades with distance, which
    is what lowers the local contrast a decoder's binarizer sees.
    """
    h, w = img.shape[:2]
    ax, ay = max(axes[0], 1.0), max(axes[1], 1.0)
    reach = 2.2  # the tail is negligible beyond ~2.2 axes
    x0 = max(int(center[0] - reach * max(ax, ay)), 0)
    x1 = min(int(center[0] + reach * max(ax, ay)) + 1, w)
    y0 = max(int(center[1] - reach * max(ax, ay)), 0)
    y1 = min(int(center[1] + reach * max(ax, ay)) + 1, h)
    out = img.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    a = math.radians(angle_deg)
    dx, dy = xx - center[0], yy - center[1]
    u = (dx * math.cos(a) + dy * math.sin(a)) / ax
    v = (-dx * math.sin(a) + dy * math.cos(a)) / ay
    d = np.sqrt(u * u + v * v)
    # 1 inside the core, smooth gaussian-like tail outside it.
    t = np.clip((d - core) / (1.6 - core), 0, None)
    alpha = strength * np.exp(-4.0 * t * t)
    alpha = np.where(d <= core, strength, alpha).astype(np.float32)
    lin = _to_linear(out[y0:y1, x0:x1])
    if lin.ndim == 3:
        alpha = alpha[..., None]
    # Added light in linear space, then sensor saturation.
    lin = lin + alpha * 1.6
    out[y0:y1, x0:x1] = _from_linear(lin)
    return out


def low_contrast(img: np.ndarray, contrast: float, mid: float = 128.0) -> np.ndarray:
    """Squeeze the whole 0..255 range into `contrast` levels around `mid`.

    Faded thermal print and laser marks on grey plastic end up 20-50 levels apart.
    """
    scale = float(contrast) / 255.0
    out = (img.astype(np.float32) - 127.5) * scale + float(mid)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def sensor_noise(img: np.ndarray, rng: np.random.Generator, sigma: float = 4.0, shot: float = 0.0) -> np.ndarray:
    """Read noise (gaussian, `sigma` levels) plus optional shot noise growing with brightness."""
    f = img.astype(np.float32)
    std = np.full_like(f, float(sigma))
    if shot > 0:
        std = np.sqrt(std**2 + shot * f)
    f = f + rng.standard_normal(f.shape, dtype=np.float32) * std
    return np.clip(f + 0.5, 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int = 60) -> np.ndarray:
    """Recompress as JPEG: IP cameras and phone captures hand the reader blocky frames."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - cv2 always encodes uint8
        return img.copy()
    flag = cv2.IMREAD_GRAYSCALE if img.ndim == 2 else cv2.IMREAD_COLOR
    return cv2.imdecode(buf, flag)


def uneven_illumination(
    img: np.ndarray, rng: np.random.Generator, strength: float = 0.4, vignette: float = 0.3
) -> np.ndarray:
    """Multiply by a smooth light field: a lamp off to one side plus lens vignetting."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx = xx / w - 0.5
    yy = yy / h - 0.5
    ang = rng.uniform(0, 2 * math.pi)
    ramp = xx * math.cos(ang) + yy * math.sin(ang)  # -0.7..0.7
    field = 1.0 + strength * ramp * 1.4
    field *= 1.0 - vignette * (xx * xx + yy * yy) * 2.0
    field = np.clip(field, 0.05, 2.0)
    f = img.astype(np.float32)
    f = f * (field[..., None] if f.ndim == 3 else field)
    return np.clip(f + 0.5, 0, 255).astype(np.uint8)


def damage(
    img: np.ndarray,
    rng: np.random.Generator,
    allowed: np.ndarray,
    coverage: float = 0.08,
    scale: float = 4.0,
) -> tuple[np.ndarray, float]:
    """Scratches and blots inside `allowed` (uint8/bool mask) covering about `coverage` of it.

    Returns (image, covered fraction). Marks are light (abrasion, label torn to white
    backing) or dark (ink, dirt). `scale` is a module size in px, so marks are the size
    of a few modules. The caller keeps `allowed` off the finder patterns: a code with a
    finder wiped out is not "damaged", it is gone.
    """
    coverage = min(float(coverage), 0.15)
    allowed = allowed.astype(bool)
    area = int(allowed.sum())
    out = img.copy()
    if area == 0 or coverage <= 0:
        return out, 0.0
    ys, xs = np.nonzero(allowed)
    mask = np.zeros(allowed.shape, np.uint8)
    covered = 0.0
    for _ in range(60):
        if covered >= coverage:
            break
        i = int(rng.integers(len(xs)))
        cx, cy = int(xs[i]), int(ys[i])
        mark = np.zeros_like(mask)
        if rng.random() < 0.5:
            L = rng.uniform(4, 14) * scale
            a = rng.uniform(0, math.pi)
            p0 = (int(cx - L / 2 * math.cos(a)), int(cy - L / 2 * math.sin(a)))
            p1 = (int(cx + L / 2 * math.cos(a)), int(cy + L / 2 * math.sin(a)))
            cv2.line(mark, p0, p1, 255, max(1, int(round(rng.uniform(0.4, 1.0) * scale))), cv2.LINE_AA)
        else:
            ax = (max(1, int(rng.uniform(0.8, 2.5) * scale)), max(1, int(rng.uniform(0.8, 2.5) * scale)))
            cv2.ellipse(mark, (cx, cy), ax, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
        mark[~allowed] = 0
        trial = np.maximum(mask, mark)
        frac = float((trial > 127).sum()) / area
        if frac > 0.15:
            continue
        value = 250.0 if rng.random() < 0.5 else 25.0
        a = (mark.astype(np.float32) / 255.0)
        if out.ndim == 3:
            a = a[..., None]
        out = np.clip(out.astype(np.float32) * (1 - a) + value * a + 0.5, 0, 255).astype(np.uint8)
        mask = trial
        covered = frac
    return out, covered
