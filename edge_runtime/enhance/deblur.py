"""Motion-blur compensation: estimate the smear of a moving label and undo it.

A label crossing the camera during the exposure is smeared along the conveyor by
speed x exposure pixels. That smear is a known, linear blur: Wiener deconvolution with a
line kernel restores module edges that no binarizer can find in the smeared image.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

_GAMMA = 2.2


def line_psf(length: float, angle_deg: float, shape: tuple[int, int]) -> np.ndarray:
    """A normalised line kernel of `length` px along `angle_deg` (0 = +x, image axes),
    centred at the origin and wrapped, ready for FFT convolution on an image of `shape`."""
    h, w = shape
    psf = np.zeros((h, w), np.float32)
    n = max(int(math.ceil(length)) * 4, 2)
    t = np.linspace(-length / 2, length / 2, n)
    a = math.radians(angle_deg)
    xs, ys = t * math.cos(a), t * math.sin(a)
    # Bilinear splat so fractional lengths and angles give distinct kernels.
    for x, y in zip(xs, ys):
        x0, y0 = math.floor(x), math.floor(y)
        fx, fy = x - x0, y - y0
        for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            psf[(y0 + dy) % h, (x0 + dx) % w] += wgt
    return psf / psf.sum()


def wiener(gray: np.ndarray, length: float, angle_deg: float = 0.0, snr: float = 300.0, lowpass: float | None = 0.1,
           gamma: float = _GAMMA) -> np.ndarray:
    """Deconvolve a linear motion blur. By default in linear light, where a camera's blur
    happens; `gamma=1.0` works on the stored values instead, which is where the smear is
    when it was added after the tone curve (phone pipelines, edited or re-encoded images:
    on the foreign-photos bench, 5 shaken codes read only that way).

    `snr` trades ringing against sharpness. The inverse filter lifts every frequency the
    smear attenuated, including those above the code's own modulation, where there is
    only camera noise; `lowpass` (gaussian, sigma in cycles/px) rolls those off again.
    Together they matter for long kernels: at 2-4 module widths the old setting (snr 60,
    no roll-off) read 14 of 40 generated crops deblurred with the *true* kernel, snr 300
    with a 0.1 c/px roll-off 39 of 40 (scripts/measure_psf.py). The image is padded by
    reflection so the FFT's wrap-around does not smear edges into the code.
    """
    if length <= 1.0:
        return gray.copy()
    return _deconvolve(gray, lambda shape: line_psf(length, angle_deg, shape), int(math.ceil(length)) + 4, snr, lowpass, gamma)


def gaussian_psf(sigma: float, shape: tuple[int, int]) -> np.ndarray:
    """A normalised gaussian kernel (defocus) centred at the origin and wrapped."""
    h, w = shape
    y = np.fft.fftfreq(h)[:, None] * h
    x = np.fft.fftfreq(w)[None, :] * w
    k = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma)).astype(np.float32)
    return k / k.sum()


def defocus(gray: np.ndarray, sigma: float, snr: float = 300.0, lowpass: float | None = 0.2, gamma: float = 1.0) -> np.ndarray:
    """Deconvolve a defocus blur of `sigma` px (a gaussian stands in for the lens's disc).

    A code a phone did not focus on loses its module edges to a blur wider than a module;
    zxing-cpp's binarizer then sees gray mush, while Wiener with the blur's own kernel
    brings back what the noise left above it. The defaults are where the foreign-photos
    bench's defocused codes read (snr 300, a 0.2 c/px roll-off, on the stored values)."""
    if sigma <= 0.3:
        return gray.copy()
    return _deconvolve(gray, lambda shape: gaussian_psf(sigma, shape), int(math.ceil(3 * sigma)) + 4, snr, lowpass, gamma)


def _deconvolve(gray: np.ndarray, kernel, pad: int, snr: float, lowpass: float | None, gamma: float) -> np.ndarray:
    src = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    lin = (src.astype(np.float32) / 255.0) ** gamma
    H = np.fft.rfft2(kernel(lin.shape))
    G = np.fft.rfft2(lin)
    F = G * np.conj(H) / (np.abs(H) ** 2 + 1.0 / snr)
    if lowpass:
        fy = np.fft.fftfreq(lin.shape[0])[:, None]
        fx = np.fft.rfftfreq(lin.shape[1])[None, :]
        F *= np.exp(-(fx * fx + fy * fy) / (2.0 * lowpass * lowpass))
    out = np.fft.irfft2(F, s=lin.shape)[pad:-pad, pad:-pad]
    return np.clip(np.clip(out, 0, 1) ** (1 / gamma) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def blur_direction(gray: np.ndarray, step_deg: float = 15.0) -> float:
    """The direction (deg, 0..180) along which the image has the least gradient energy:
    a smear flattens intensity along its own direction and leaves the cross direction."""
    g = gray.astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    sxx, syy, sxy = float((gx * gx).mean()), float((gy * gy).mean()), float((gx * gy).mean())
    best, best_e = 0.0, math.inf
    for deg in np.arange(0.0, 180.0, step_deg):
        a = math.radians(deg)
        c, s = math.cos(a), math.sin(a)
        e = c * c * sxx + s * s * syy + 2 * c * s * sxy
        if e < best_e:
            best, best_e = float(deg), e
    return best


def blur_length(gray: np.ndarray, angle_deg: float, max_len: int = 40) -> float | None:
    """Estimate the smear length from the cepstrum along the blur direction.

    A line blur's spectrum has periodic zeros 1/L apart; their log shows up in the
    cepstrum as a strong negative peak at distance L. None for ROIs too small to tell.
    """
    h, w = gray.shape
    if min(h, w) < 32:
        return None
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    g = (gray.astype(np.float32) - gray.mean()) * win
    spec = np.log1p(np.abs(np.fft.fft2(g)))
    cep = np.real(np.fft.ifft2(spec))
    a = math.radians(angle_deg)
    vals = []
    for d in range(2, min(max_len, min(h, w) // 2)):
        x, y = int(round(d * math.cos(a))) % w, int(round(d * math.sin(a))) % h
        vals.append(cep[y, x])
    vals = np.asarray(vals)
    if len(vals) < 3:
        return None
    # The peak is reliable on a smeared code and meaningless on an unblurred one; callers
    # use it to order their tries (estimate first, then neighbours), never as a verdict.
    return float(int(np.argmin(vals)) + 2)
