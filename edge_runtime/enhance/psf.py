"""Blind motion-blur estimation: the smear's direction and length, read off the ROI itself.

A line blur of length L along u multiplies the image's spectrum by sinc(L f.u), whose
zeros are parallel lines 1/L apart across the whole spectrum. In the log-spectrum they are
a periodic pattern, so the cepstrum (the spectrum of the log-spectrum) has a sharp negative
peak at the point L*u: direction and length in one place, for any direction (this is the
Radon-of-the-log-spectrum idea in its projection-slice form).

A rectified QR code has a confounder of exactly the same kind: every module is a p x p box,
whose sinc zeros put negative cepstral peaks at (p, 0), (0, p) and their multiples. Those
(and the rest of the code's statistics) are symmetric under the square's symmetries (90 deg
turns and mirrors of an upright crop), a blur is not; subtracting the cepstrum's
symmetrised average removes the code and keeps 3/4 or more of the blur's peak whatever its
direction. This is why the estimate works on the rectified crop, where the code is upright.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Blur:
    """One smear hypothesis: `length_px` along `angle_deg` (0..180, image axes, 0 = +x,
    90 = +y); `score` is the peak's depth in robust standard deviations (higher = surer)."""

    length_px: float
    angle_deg: float
    score: float


_MIN_LEN = 3.0  # below ~3 px the cepstrum is dominated by the spectrum's overall slope
_ANG_STEP = 1.0  # deg; at 60 px one step is ~1 px of arc, finer than the peak
_R_STEP = 0.5  # px
_WORK_SIDE = 200.0
_MAX_RATIO = 0.7  # see _smear_ratio: unsmeared codes measure >= 0.93, smeared <= 0.45


def _log_spectrum(gray: np.ndarray, frac: float = 0.6) -> np.ndarray:
    """Welch-averaged, windowed log power spectrum (DC at [0, 0]).

    One periodogram's bins scatter by a factor of ~e around their mean (random code
    content), which buries the blur's zero lines; averaging 3 x 3 overlapping windows
    cuts that scatter while keeping the zeros, which every window shares. `frac` of the
    crop per window keeps >= 4 zeros of a 4-module smear inside the band."""
    g = gray.astype(np.float32)
    h, w = g.shape
    m = cv2.getOptimalDFTSize(int(min(h, w) * frac))
    m = min(m, min(h, w))
    # The Hann window stops each window's borders from adding a cross of false energy;
    # subtracting the mean first keeps DC from leaking into the low frequencies.
    win = np.outer(np.hanning(m), np.hanning(m)).astype(np.float32)
    acc = np.zeros((m, m), np.float32)
    for y in np.linspace(0, h - m, 3).astype(int):
        for x in np.linspace(0, w - m, 3).astype(int):
            t = g[y : y + m, x : x + m]
            f = cv2.dft((t - float(t.mean())) * win, flags=cv2.DFT_COMPLEX_OUTPUT)
            acc += f[..., 0] ** 2 + f[..., 1] ** 2
    # The floor keeps log(0) out and is about the noise floor, so deep sinc zeros and
    # noise-only bins weigh the same instead of exploding.
    floor = float(np.median(acc)) * 1e-3 + 1e-6
    return np.log(acc + floor)


def _cepstrum(gray: np.ndarray) -> np.ndarray:
    """Real cepstrum of the whitened, signal-weighted log spectrum; quefrency 0 centred."""
    ls = _log_spectrum(gray)
    n = ls.shape[0]
    # Whitening: the code's spectral envelope (1/f fall-off, the blur's own sinc envelope)
    # is smooth and would only fill the low quefrencies; the sinc *zeros* are narrow.
    # (Blurred with DC in the middle, so the reflected border is the highest frequency.)
    env = np.fft.ifftshift(cv2.GaussianBlur(np.fft.fftshift(ls), (0, 0), max(1.5, n / 64.0), borderType=cv2.BORDER_REFLECT))
    # Bins whose envelope is at the noise floor carry no zeros, only noise: fade them out
    # (the noise level is the envelope's low percentile, reached at high frequencies).
    floor = float(np.percentile(env, 10))
    w = np.clip((env - floor) / 2.0, 0.0, 1.0)
    wl = (ls - env) * w
    wl -= float(wl.mean())
    # The whitened log spectrum of a real image is real and even, so its forward transform
    # is real too and equals the inverse (up to scale, which the scoring ignores). A
    # real single-channel input to an *inverse* cv2.dft would be read as packed CCS.
    c = cv2.dft(wl, flags=cv2.DFT_COMPLEX_OUTPUT)[..., 0]
    return np.fft.fftshift(c)


def _polar(cep: np.ndarray, radii: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Cepstrum sampled on (angle, radius); bilinear, so fractional lengths are kept."""
    n = cep.shape[0]
    c = n // 2
    a = np.radians(angles)[:, None]
    xs = (c + radii[None, :] * np.cos(a)).astype(np.float32)
    ys = (c + radii[None, :] * np.sin(a)).astype(np.float32)
    return cv2.remap(cep, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def _symmetric(p: np.ndarray) -> np.ndarray:
    """Subtract the part of the polar cepstrum shared by the square's symmetries.

    Rows are angles 0..179 in 1-deg steps; an upright code looks the same at a, a+90 and
    the mirrors -a, 90-a (mod 180, the cepstrum is point-symmetric)."""
    idx = np.arange(p.shape[0])
    k = p.shape[0]
    q = k // 2  # 90 deg
    return (p + p[(idx + q) % k] + p[(-idx) % k] + p[(q - idx) % k]) / 4.0


def module_pitch(gray: np.ndarray) -> float | None:
    """The code's module width in px, from the module boxes' own cepstral dip on the axes
    of the upright crop (None when there is no clear dip, e.g. not a code)."""
    if gray.ndim != 2 or min(gray.shape) < 32 or float(gray.std()) < 1.0:
        return None
    cep = _cepstrum(gray)
    radii = np.arange(2.5, min(gray.shape) / 6.0, 0.25)
    pol = _polar(cep, radii, np.array([0.0, 90.0, 180.0, 270.0]))
    prof = pol.mean(axis=0)
    j = int(np.argmin(prof))
    return float(radii[j])


def _vertex(m: float, l: float, r: float) -> float:
    """Offset (-0.5..0.5 steps) of a parabola's top through three neighbouring scores."""
    den = l - 2 * m + r
    # A neighbour outside the hinted range is -inf: no parabola, keep the grid step.
    if not math.isfinite(den) or den >= 0:
        return 0.0
    return float(np.clip(0.5 * (l - r) / den, -0.5, 0.5))


def _smear_ratio(gray: np.ndarray):
    """f(angle) -> gradient energy along `angle` / across it (structure tensor).

    Too coarse to find the direction (a code's own edges are axis-aligned) but a reliable
    veto: a smear of 2+ modules leaves < 0.45 of the cross-direction energy along itself,
    an unsmeared code ~1 in every direction, so a cepstral peak whose direction is not
    flattened in the image is the code's own structure, not a blur."""
    g = gray.astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    sxx, syy, sxy = float((gx * gx).mean()), float((gy * gy).mean()), float((gx * gy).mean())

    def energy(deg: float) -> float:
        a = math.radians(deg)
        c, s = math.cos(a), math.sin(a)
        return c * c * sxx + s * s * syy + 2 * c * s * sxy

    return lambda deg: energy(deg) / (energy(deg + 90.0) + 1e-9)


def _angle_diff(a: float, b: float) -> float:
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def estimate(
    gray: np.ndarray,
    *,
    angle_hint: float | None = None,
    angle_tol: float | None = None,
    length_hint: float | None = None,
    max_len: float | None = None,
) -> list[Blur]:
    """Ranked smear hypotheses for a rectified ROI (best first, at most 4, maybe none).

    Only directions the image is actually flattened along survive (see `_smear_ratio`),
    so an unsmeared code, flat paper or noise gives an empty list.

    Hints only narrow the search: `angle_hint` +- `angle_tol` (deg, crop coordinates)
    limits the directions, `length_hint` favours lengths near it (a configured
    speed x exposure is rarely exact), `max_len` caps the length (at most 28 % of the
    crop; default 16 % of it, at most 60 px: 4 modules of a version-1 code in a crop with
    rectify's 25 % margins; longer default ranges only add false peaks).
    """
    if gray.ndim != 2 or min(gray.shape) < 16 or float(gray.std()) < 1.0:
        return []
    # Large crops are estimated at <= 200 px (one scale for both axes keeps angles): the
    # FFTs dominate the cost, and a smear's zeros sit well below the dropped frequencies.
    f = max(1.0, min(gray.shape) / _WORK_SIDE)
    if f > 1.0:
        small = cv2.resize(gray, (round(gray.shape[1] / f), round(gray.shape[0] / f)), interpolation=cv2.INTER_AREA)
        lh = length_hint / f if length_hint else None
        ml = max_len / f if max_len else None
        return [Blur(b.length_px * f, b.angle_deg, b.score) for b in estimate(small, angle_hint=angle_hint, angle_tol=angle_tol, length_hint=lh, max_len=ml)]
    side = min(gray.shape)
    top = min(float(max_len), side * 0.28) if max_len else min(60.0, side * 0.16)
    if top <= _MIN_LEN + 1:
        return []
    cep = _cepstrum(gray)
    angles = np.arange(0.0, 180.0, _ANG_STEP)
    radii = np.arange(_MIN_LEN, top + _R_STEP, _R_STEP)
    pol = _polar(cep, radii, angles)
    res = pol - _symmetric(pol)
    # A peak is a dip; measure it against the residual's own spread (median absolute
    # deviation) so the score means the same on a 160 px crop as on a 480 px one.
    # Per radius: the cepstrum's magnitude falls steeply with quefrency, and a global
    # scale would let the busy low quefrencies win every time.
    med = np.median(res, axis=0, keepdims=True)
    mad = np.median(np.abs(res - med), axis=0, keepdims=True) * 1.4826 + 1e-9
    z = -(res - med) / mad
    if angle_hint is not None and angle_tol is not None:
        d = np.abs((angles - angle_hint + 90.0) % 180.0 - 90.0)
        z[d > angle_tol, :] = -np.inf
    if length_hint:
        # A mild preference, not a window: a wrong belt speed must not hide the truth.
        z = z - 1.5 * np.abs(np.log(radii / float(length_hint)))[None, :]
    ratio = _smear_ratio(gray)
    out: list[Blur] = []
    zz = z.copy()
    for _ in range(10):
        if len(out) >= 4:
            break
        i, j = np.unravel_index(int(np.argmax(zz)), zz.shape)
        s = float(zz[i, j])
        if not math.isfinite(s):
            break
        k = len(angles)
        da = _vertex(z[i, j], z[(i - 1) % k, j], z[(i + 1) % k, j])
        dr = _vertex(z[i, j], z[i, j - 1], z[i, j + 1]) if 0 < j < len(radii) - 1 else 0.0
        length = float(radii[j] + dr * _R_STEP)
        angle = float((angles[i] + da * _ANG_STEP) % 180.0)
        if ratio(angle) < _MAX_RATIO:
            out.append(Blur(length, angle, s))
        # Suppress this peak's neighbourhood so the next pick is a real alternative,
        # not the same dip one grid step away.
        near_a = np.abs((angles - angle + 90.0) % 180.0 - 90.0) < 6.0
        zz[np.ix_(near_a, np.abs(radii - length) < max(2.0, 0.15 * length))] = -np.inf
    return out


def deblur_candidates(crop: np.ndarray, angle_hint: float | None = None, length_hints: Sequence[float] = ()) -> list[tuple[float, float]]:
    """(length_px, angle_deg) pairs in the order the reader should try `deblur.wiener`
    on `crop`: at most 4, empty when the crop shows no smear and no hint was given.

    `angle_hint` (crop coordinates, e.g. the belt direction mapped by `frame_to_crop`)
    narrows the direction to +-10 deg; `length_hints` (crop px) favour nearby lengths.
    The best estimate is followed by its length -+6 %: the cepstral length scatters by
    about +-5 % and Wiener with a long kernel forgives only about that much.
    """
    lh = float(length_hints[0]) if length_hints else None
    tol = 10.0 if angle_hint is not None else None
    cands = estimate(crop, angle_hint=angle_hint, angle_tol=tol, length_hint=lh)
    out: list[tuple[float, float]] = []
    if cands:
        b = cands[0]
        out = [(b.length_px, b.angle_deg), (b.length_px * 0.94, b.angle_deg), (b.length_px * 1.06, b.angle_deg)]
        out += [(c.length_px, c.angle_deg) for c in cands[1:2]]
    for n in length_hints:
        a = angle_hint if angle_hint is not None else (out[0][1] if out else 0.0)
        if all(abs(n - x) > 1.5 or _angle_diff(a, y) > 3 for x, y in out):
            out.insert(min(len(out), 3), (float(n), float(a)))
    return [(round(x, 2), round(y, 2)) for x, y in out[:4]]


def frame_to_crop(h_inv: np.ndarray, at: tuple[float, float], length: float, angle_deg: float) -> tuple[float, float]:
    """A frame smear (e.g. belt angle, speed x exposure) as (length, angle) in the crop that
    `roi.rectify` made: the warp scales the smear and may turn it. `at`: crop point where
    it is evaluated (the centre), `h_inv`: rectify's crop-to-frame homography."""
    p = np.array([at[0], at[1], 1.0])
    f = h_inv @ p
    f = f[:2] / f[2]
    a = math.radians(angle_deg)
    d = np.array([math.cos(a), math.sin(a)]) * length / 2.0
    h = np.linalg.inv(h_inv)
    ends = np.c_[np.stack([f - d, f + d]), np.ones(2)] @ h.T
    ends = ends[:, :2] / ends[:, 2:]
    v = ends[1] - ends[0]
    return float(np.hypot(v[0], v[1])), float(math.degrees(math.atan2(v[1], v[0])) % 180.0)
