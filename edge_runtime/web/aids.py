"""Aiming aids for setting up a camera: pure functions from pixels (and quads) to numbers,
plus the plain-words hint an installer acts on. Nothing here keeps state or touches the
service; the web view calls them at most once a second on a downscaled copy and on small
crops of the codes, never on the capture thread.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge_runtime.enhance import psf

# Levels at or beyond these count as clipped: sensor black / white, where detail is lost.
CLIP_LOW, CLIP_HIGH = 5, 250
# A QR module needs ~2 px to be sampled reliably (ISO 15415 and every reader's manual agree).
MIN_MODULE_PX = 2.0


def to_gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def focus_score(gray: np.ndarray) -> float:
    """Variance of the Laplacian: high for sharp edges, low when defocused. Comparable only
    between images of the same scene and scale, which is how an installer turns the lens."""
    if gray.size == 0 or min(gray.shape[:2]) < 3:
        return 0.0
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def histogram(gray: np.ndarray, bins: int = 32) -> dict:
    """Exposure histogram (shares per bin, summing to 1) and the shares of clipped pixels."""
    n = max(1, gray.size)
    full = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    hist = full.reshape(bins, 256 // bins).sum(axis=1) / n
    return {
        "bins": [round(float(x), 4) for x in hist],
        "mean": round(float(gray.mean()) if gray.size else 0.0, 1),
        "clipped_low": round(float(full[: CLIP_LOW + 1].sum() / n), 4),
        "clipped_high": round(float(full[CLIP_HIGH:].sum() / n), 4),
    }


def side_px(corners: list) -> float:
    """Mean side length of a quad in pixels."""
    q = np.asarray(corners, np.float64).reshape(-1, 2)
    if q.shape != (4, 2):
        return 0.0
    return float(np.mean([np.hypot(*(q[(i + 1) % 4] - q[i])) for i in range(4)]))


def modules_for(version: int) -> int:
    return 17 + 4 * int(version)


# Byte-mode capacity of QR versions 1..10 at error correction level M (the usual default):
# the smallest version holding a payload is the likeliest one when nothing else tells.
_BYTES_M = (14, 26, 42, 62, 84, 106, 122, 152, 180, 213)


def version_for_bytes(n: int) -> int | None:
    for v, cap in enumerate(_BYTES_M, start=1):
        if n <= cap:
            return v
    return None


def module_px(corners: list, *, version: int | None = None, crop: np.ndarray | None = None,
              payload_len: int | None = None) -> float | None:
    """Pixels per module of a code: its side / its modules when the version is known, else
    with the version guessed from the payload's length (level M; off by at most a version
    at other levels, ~15 %), else the module pitch measured in its crop (a cepstral dip,
    enhance.psf.module_pitch, which can land on twice the pitch: the last resort)."""
    side = side_px(corners)
    if side <= 0:
        return None
    v = version or (version_for_bytes(payload_len) if payload_len else None)
    if v:
        return side / modules_for(v)
    if crop is not None:
        pitch = psf.module_pitch(to_gray(crop))
        if pitch:
            return float(pitch)
    return None


def smear_px(crop: np.ndarray, angle_hint: float | None = None) -> float:
    """Length of the motion smear in a code's crop (0 when none shows): enhance.psf's blind
    estimate, the same one the deblur uses."""
    gray = to_gray(crop)
    blurs = psf.estimate(gray, angle_hint=angle_hint, angle_tol=20.0 if angle_hint is not None else None)
    return float(blurs[0].length_px) if blurs else 0.0


# -- hints: one short sentence each, what to do rather than what was measured ---------------

def exposure_hint(h: dict) -> str:
    if h["clipped_high"] > 0.05:
        return f"too bright: {h['clipped_high'] * 100:.0f} % clipped white, lower exposure or gain"
    if h["mean"] < 50 or h["clipped_low"] > 0.3:
        return "too dark: raise exposure, gain or light"
    return "exposure ok"


def focus_hint(score: float, on_codes: bool) -> str:
    # Laplacian variance of a sharp printed code is in the hundreds to thousands; a blurred
    # one is tens. On the whole frame (no code seen) the scene decides, so say less.
    where = "codes" if on_codes else "frame (no code seen)"
    if score < 30:
        return f"soft: turn the focus ring ({where})"
    if score < 100:
        return f"fair: try to sharpen ({where})"
    return f"sharp ({where})"


def module_hint(px: float | None) -> str:
    if px is None:
        return "no code read yet"
    if px < MIN_MODULE_PX:
        return f"codes too small: < {MIN_MODULE_PX:g} px per module, move closer or zoom"
    return f"ok: {px:.1f} px per module"


def smear_hint(modules: float | None) -> str:
    if modules is None:
        return "no code to measure"
    if modules >= 1.0:
        return f"smear {math.ceil(modules - 0.5):d} modules: shorten exposure"
    return "no visible smear"


def aids(small: np.ndarray, crops: list[tuple[list, np.ndarray, int]], angle_hint: float | None = None) -> dict:
    """Every aid with its hint. `small`: the downscaled frame; `crops`: (corners in frame
    coordinates, the code's crop at full resolution, payload length in bytes) for the codes
    read in it (empty: the whole frame stands in for focus)."""
    gray = to_gray(small)
    h = histogram(gray)
    if crops:
        focus = float(np.median([focus_score(to_gray(c)) for _, c, _ in crops]))
    else:
        focus = focus_score(gray)
    mods, smears = [], []
    for corners, crop, n in crops:
        m = module_px(corners, crop=crop, payload_len=n)
        if m:
            mods.append(m)
            smears.append(smear_px(crop, angle_hint) / m)
    mod = float(np.median(mods)) if mods else None
    smear = float(np.median(smears)) if smears else None
    return {
        "focus": {"score": round(focus, 1), "on_codes": bool(crops), "hint": focus_hint(focus, bool(crops))},
        "exposure": {**h, "hint": exposure_hint(h)},
        "module_px": {"value": None if mod is None else round(mod, 2), "hint": module_hint(mod)},
        "smear_modules": {"value": None if smear is None else round(smear, 2), "hint": smear_hint(smear)},
    }
