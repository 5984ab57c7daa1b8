"""Blind motion-blur estimation (enhance/psf.py) on generated, smeared, rectified codes.

Each case is drawn by the project's renderer, smeared in linear light by a line kernel of
2-4 module widths, given camera noise, and rectified with its true quad as the reader
does; the truth for the crop is the frame's blur vector mapped through the rectification.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_runtime import roi
from edge_runtime.synth import degrade
from edge_runtime.synth import qr as synth_qr

_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-"


@dataclass
class Case:
    crop: np.ndarray
    payload: str
    length: float  # true smear in crop px
    angle: float  # true smear direction in crop coordinates, 0..180
    module_px: float  # module width in frame px
    h_inv: np.ndarray


def crop_blur(h_inv: np.ndarray, at: tuple[float, float], length: float, angle_deg: float) -> tuple[float, float]:
    """A frame blur vector at `at`, as length and angle in the crop (through the rectify warp)."""
    h = np.linalg.inv(h_inv)
    a = math.radians(angle_deg)
    d = np.array([math.cos(a), math.sin(a)]) * length / 2
    pts = np.array([[at[0] - d[0], at[1] - d[1]], [at[0] + d[0], at[1] + d[1]]], np.float64)
    q = np.c_[pts, np.ones(2)] @ h.T
    q = q[:, :2] / q[:, 2:]
    v = q[1] - q[0]
    return float(np.hypot(*v)), float(math.degrees(math.atan2(v[1], v[0])) % 180.0)


def make_case(rng: np.random.Generator, *, belt: bool = False, blur: bool = True) -> Case:
    """One line-camera code: 4-7 px modules, any rotation, smeared 2-4 modules.

    `belt`: the smear is along the belt (x) within +-8 deg, else in any direction.
    """
    payload = "".join(rng.choice(list(_ALNUM), int(rng.integers(8, 40))))
    matrix = synth_qr.qr_matrix(payload, error="m")
    n = matrix.shape[0]
    module = float(rng.uniform(4.0, 7.0))
    side = n * module
    size = int(side * 2.0) + 40
    frame = np.full((size, size), float(rng.uniform(60, 140)), np.float32)
    corners = synth_qr.square_quad((size / 2, size / 2), side, float(rng.uniform(0, 360)))
    ink, paper = float(rng.uniform(15, 45)), float(rng.uniform(190, 235))
    synth_qr.draw_code(frame, matrix, corners, ink=ink, paper=paper)
    img = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    length = float(rng.uniform(2.0, 4.0)) * module if blur else 0.0
    angle = float(rng.uniform(-8, 8)) % 180 if belt else float(rng.uniform(0, 180))
    if blur:
        img = degrade.motion_blur(img, length, angle)
    noisy = img.astype(np.float32) + rng.normal(0, rng.uniform(2.0, 3.0), img.shape)
    img = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
    quad = [(float(x), float(y)) for x, y in corners]
    crop, h_inv = roi.rectify(img, quad)
    cl, ca = crop_blur(h_inv, (size / 2, size / 2), length, angle) if blur else (0.0, 0.0)
    return Case(crop=crop, payload=payload, length=cl, angle=ca, module_px=module, h_inv=h_inv)
