"""Glare suppression for labels under film or on glossy stock.

A specular highlight does two things: its saturated core destroys modules outright
(only the code's error correction can restore those), and its soft veil lifts the
background so the code's contrast drops to a few grey levels. We cannot undo the first;
we undo the second by estimating the veil from the surroundings, ignoring saturated
pixels, and dividing it out.
"""

from __future__ import annotations

import cv2
import numpy as np


def saturated_mask(gray: np.ndarray, level: int = 250, grow: int = 2) -> np.ndarray:
    """Pixels lost to specular reflection (uint8 0/255), grown a little to cover the halo."""
    mask = (gray >= level).astype(np.uint8) * 255
    if grow:
        mask = cv2.dilate(mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return mask


def suppress(gray: np.ndarray, sigma: float = 12.0) -> np.ndarray:
    """Remove the highlight veil and restore local contrast (pure: returns a new array).

    The veil is estimated by a normalised blur that skips saturated pixels, so the core
    does not bleed into its neighbourhood's estimate; the saturated core itself is set to
    the local paper level, which reads as light modules (errors the code's EC absorbs)
    rather than as a white hole that breaks the binarizer's threshold around it.
    """
    g = gray.astype(np.float32)
    lost = saturated_mask(gray) > 0
    valid = (~lost).astype(np.float32)
    num = cv2.GaussianBlur(g * valid, (0, 0), sigma)
    den = cv2.GaussianBlur(valid, (0, 0), sigma)
    bg = num / np.maximum(den, 1e-3)
    # The paper level around a code is the bright envelope, not the mean of ink and paper.
    paper = cv2.dilate(bg, np.ones((5, 5), np.uint8))
    ratio = g / np.maximum(paper, 1.0)
    ratio[lost] = 1.0
    out = ratio * 200.0
    return np.clip(out, 0, 255).astype(np.uint8)
