"""Backgrounds a code sits on: belt, cardboard, printed text, 1-D barcodes.

Distractors matter more than prettiness: printed text and barcode stripes are what
make a finder-pattern search waste time or produce false candidates on a real line.
"""

from __future__ import annotations

import cv2
import numpy as np

_WORDS = [
    "LOT", "BATCH", "EXP", "QTY", "MADE IN", "NET WT", "KEEP DRY", "FRAGILE", "THIS SIDE UP",
    "REF", "SN", "PO", "ITEM", "2026-11-25", "0041", "PALLET 7", "LINE 3", "HANDLE WITH CARE",
]


def smooth_noise(h: int, w: int, rng: np.random.Generator, scale: float, octaves: int = 3) -> np.ndarray:
    """Value noise in [0, 1]: a few octaves of upsampled random grids."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        s = max(scale / (2**o), 1.0)
        gh, gw = max(int(h / s) + 2, 2), max(int(w / s) + 2, 2)
        grid = rng.random((gh, gw), dtype=np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def cardboard(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Brown corrugated board: fibres along one axis plus blotches."""
    base = np.array([95, 140, 175], np.float32)  # BGR kraft
    fib = rng.standard_normal((h, w // 6 + 1), dtype=np.float32)
    fib = cv2.resize(fib, (w, h), interpolation=cv2.INTER_LINEAR)
    fib = cv2.GaussianBlur(fib, (0, 0), sigmaX=4, sigmaY=0.6)
    blot = smooth_noise(h, w, rng, 120)
    shade = 0.85 + 0.25 * blot + 0.06 * fib
    img = base[None, None, :] * shade[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def belt(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Dark rubber conveyor belt with a fine texture and a few scuffs."""
    n = smooth_noise(h, w, rng, 40, octaves=4)
    fine = rng.standard_normal((h, w), dtype=np.float32) * 5
    g = 45 + 25 * n + fine
    img = np.repeat(g[..., None], 3, axis=2)
    return np.clip(img, 0, 255).astype(np.uint8)


def texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A generic procedural surface (plastic, painted metal) of a random tint."""
    tint = rng.uniform(60, 220, size=3).astype(np.float32)
    n = smooth_noise(h, w, rng, rng.uniform(30, 200))
    img = tint[None, None, :] * (0.75 + 0.4 * n[..., None])
    return np.clip(img, 0, 255).astype(np.uint8)


def printed_text(img: np.ndarray, rng: np.random.Generator, lines: int = 12) -> np.ndarray:
    """Print lines of label-like text on `img` (a copy)."""
    out = img.copy()
    h, w = out.shape[:2]
    for _ in range(lines):
        words = " ".join(rng.choice(_WORDS, size=int(rng.integers(1, 4))))
        words += f" {int(rng.integers(0, 999999)):06d}"
        scale = float(rng.uniform(0.5, 1.6))
        thick = int(rng.integers(1, 3))
        org = (int(rng.integers(0, max(w - 100, 1))), int(rng.integers(20, h)))
        color = tuple(int(c) for c in rng.uniform(0, 70, size=3))
        cv2.putText(out, words, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)
    return out


def barcode_stripes(img: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int, int]) -> np.ndarray:
    """A 1-D barcode-like block of bars inside `box` (x0, y0, x1, y1) on white."""
    out = img.copy()
    x0, y0, x1, y1 = box
    cv2.rectangle(out, (x0 - 10, y0 - 8), (x1 + 10, y1 + 8), (235, 235, 235), -1)
    x = x0
    dark = True
    while x < x1:
        wbar = int(rng.integers(1, 5)) * max(1, (x1 - x0) // 120)
        if dark:
            cv2.rectangle(out, (x, y0), (min(x + wbar, x1) - 1, y1), (25, 25, 25), -1)
        x += wbar
        dark = not dark
    return out


def make_background(h: int, w: int, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """A BGR frame-sized background of a random (or named) kind, with distractors."""
    kinds = ("cardboard", "belt", "texture", "paper")
    kind = kind or str(rng.choice(kinds))
    if kind == "cardboard":
        img = cardboard(h, w, rng)
    elif kind == "belt":
        img = belt(h, w, rng)
    elif kind == "texture":
        img = texture(h, w, rng)
    else:
        shade = smooth_noise(h, w, rng, 300)
        g = 200 + 40 * shade
        img = np.clip(np.repeat(g[..., None], 3, axis=2), 0, 255).astype(np.uint8)
    if kind != "belt" or rng.random() < 0.5:
        img = printed_text(img, rng, lines=int(rng.integers(4, 14)))
    for _ in range(int(rng.integers(0, 3))):
        bw, bh = int(rng.integers(120, 320)), int(rng.integers(40, 110))
        x0, y0 = int(rng.integers(20, max(w - bw - 20, 21))), int(rng.integers(20, max(h - bh - 20, 21)))
        img = barcode_stripes(img, rng, (x0, y0, x0 + bw, y0 + bh))
    return img
