"""Test images with known QR codes, drawn here so every test knows its ground truth."""

from __future__ import annotations

import cv2
import numpy as np
import segno


def qr_matrix(payload, **kw) -> np.ndarray:
    """1 = dark module, with the standard 4-module quiet zone."""
    return np.pad(np.array(segno.make_qr(payload, **kw).matrix, dtype=np.uint8), 4)


def qr_image(payload, module_px: int = 4, **kw) -> np.ndarray:
    m = qr_matrix(payload, **kw)
    return cv2.resize(((1 - m) * 255).astype(np.uint8), None, fx=module_px, fy=module_px, interpolation=cv2.INTER_NEAREST)


def on_canvas(code: np.ndarray, size=(720, 1280), at=(100, 200), fill=200) -> np.ndarray:
    canvas = np.full(size, fill, np.uint8)
    y, x = at
    canvas[y : y + code.shape[0], x : x + code.shape[1]] = code
    return canvas


def warp_small(payload, module_px: float, size=(720, 1280), angle=0.0, seed=0, **kw) -> np.ndarray:
    """A code drawn at a fractional module size (anti-aliased), rotated, on a mid-gray canvas."""
    m = qr_matrix(payload, **kw)
    s = 8
    big = cv2.resize(((1 - m) * 255).astype(np.uint8), None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST)
    scale = module_px / s
    h, w = size
    c = (big.shape[1] / 2, big.shape[0] / 2)
    a = cv2.getRotationMatrix2D(c, angle, scale)
    a[:, 2] += (w / 2 - c[0], h / 2 - c[1])
    out = cv2.warpAffine(big, a, (w, h), flags=cv2.INTER_AREA, borderValue=255)
    rng = np.random.default_rng(seed)
    noisy = out.astype(np.float32) * 0.8 + 30 + rng.normal(0, 2, out.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)
