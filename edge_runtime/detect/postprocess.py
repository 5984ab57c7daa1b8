"""Shared pre/post-processing of the QR detector: letterbox in, quads out.

Both runtime backends (TFLite, NCNN) and the training/evaluation code in quantize/ use these
functions, so a model trained and evaluated offline decodes identically on the device.

The model (see quantize/README.md) outputs two logit maps at a stride its manifest gives:
  channel 0 "text"  : the code's area (everything inside the 4 corners)
  channel 1 "kernel": the code's area shrunk toward its centre by KERNEL_SHRINK
Kernels of neighbouring codes never touch even when the codes do, so each kernel component is
one code; its area grows back into the "text" map (PSENet-style) and a quad is fitted to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Model geometry comes from each model's manifest (input height/width, decode stride), so
# model versions of different input sizes can sit side by side in models/<version>/. These
# are the values of manifests written before the geometry was recorded per model (1.0, 1.1).
LEGACY_INPUT_HW = (256, 320)
KERNEL_SHRINK = 0.5  # kernel corners = centroid + KERNEL_SHRINK * (corner - centroid)


@dataclass(frozen=True)
class DecodeParams:
    """Output decoding parameters; written to the manifest with the model."""

    text_threshold: float = 0.5  # probability for a cell to be code area
    kernel_threshold: float = 0.5  # probability for a cell to be code kernel
    score_threshold: float = 0.5  # mean kernel probability for a component to be reported
    min_area: float = 48.0  # model-input px^2; at a 256 x 320 input a v1 code at 1.5 px/module is ~250
    stride: int = 4  # model-input px per output cell

    def as_dict(self) -> dict:
        return {"text_threshold": self.text_threshold, "kernel_threshold": self.kernel_threshold,
                "score_threshold": self.score_threshold, "min_area": self.min_area,
                "stride": self.stride, "kernel_shrink": KERNEL_SHRINK,
                "channels": ["text_logit", "kernel_logit"]}


@dataclass(frozen=True)
class Letterbox:
    """Frame -> model input mapping: scale to fit, top-left aligned, zero padding."""

    scale: float
    width: int  # resized frame size inside the input
    height: int

    def to_frame(self, pts: np.ndarray) -> np.ndarray:
        return pts / self.scale


def letterbox(gray: np.ndarray, height: int, width: int) -> tuple[np.ndarray, Letterbox]:
    """Resize a uint8 gray frame of any size into the fixed model input (top-left, pad 0).

    INTER_AREA: downscaling averages modules instead of aliasing them, the same filter the
    training data went through.
    """
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 gray frame, got {gray.dtype} {gray.shape}")
    h, w = gray.shape
    s = min(width / w, height / h)
    nw, nh = max(1, min(width, round(w * s))), max(1, min(height, round(h * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    out = np.zeros((height, width), np.uint8)
    out[:nh, :nw] = cv2.resize(gray, (nw, nh), interpolation=interp)
    return out, Letterbox(scale=s, width=nw, height=nh)


def order_clockwise(quad: np.ndarray) -> np.ndarray:
    """Order 4 points clockwise (image coordinates, y down) starting nearest the top-left."""
    c = quad.mean(0)
    ang = np.arctan2(quad[:, 1] - c[1], quad[:, 0] - c[0])
    q = quad[np.argsort(ang)]
    start = int(np.argmin(q[:, 0] + q[:, 1]))
    return np.roll(q, -start, axis=0)


_PIXEL_CORNERS = np.array([[[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]], np.float32)


def _fit_quad(region: np.ndarray) -> np.ndarray | None:
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    pts = np.concatenate(contours).reshape(-1, 2).astype(np.float32)
    # Contour points are pixel centres: their hull is half a pixel short of the region on every
    # side (a 16 px code came out 15 px). The hull of the boundary pixels' corners is the region's.
    corners = (cv2.convexHull(pts).reshape(-1, 1, 2) + _PIXEL_CORNERS).reshape(-1, 2)
    hull = cv2.convexHull(corners.astype(np.float32))
    hull_area = cv2.contourArea(hull)
    peri = cv2.arcLength(hull, True)
    # Prefer a true quadrilateral (perspective) when the hull is close to one; otherwise a
    # rectangle of the region's orientation.
    for frac in (0.02, 0.04, 0.06, 0.09):
        approx = cv2.approxPolyDP(hull, frac * peri, True)
        if len(approx) == 4:
            if cv2.contourArea(approx) >= 0.9 * hull_area:
                return approx.reshape(4, 2).astype(np.float32) + 0.5
            break
        if len(approx) < 4:
            break
    # A region with no clear corners is a small or blurred code whose corners the stride-cell
    # output rounded off. Its minimum-area rectangle circumscribes the rounded shape (a disc's
    # is 27 % larger); scaled to the region's own area it is the code's size again. Model 1.2
    # on its calibration split: mean IoU 0.858 -> 0.886, one more code at IoU >= 0.5.
    (cx, cy), (rw, rh), angle = cv2.minAreaRect(hull)
    k = float(np.sqrt(hull_area / (rw * rh))) if rw * rh > 0 else 1.0
    return cv2.boxPoints(((cx, cy), (rw * k, rh * k), angle)).astype(np.float32) + 0.5


def decode(logits: np.ndarray, params: DecodeParams = DecodeParams()) -> list[tuple[np.ndarray, float]]:
    """Model output (2, H/stride, W/stride) logits -> [(quad (4,2) in model-input px, score)]."""
    text_p = 1.0 / (1.0 + np.exp(-logits[0].astype(np.float32)))
    kern_p = 1.0 / (1.0 + np.exp(-logits[1].astype(np.float32)))
    kern = (kern_p > params.kernel_threshold).astype(np.uint8)
    n, labels = cv2.connectedComponents(kern, connectivity=8)
    if n <= 1:
        return []
    labels = labels.astype(np.float32)
    text = text_p > params.text_threshold
    # Grow each kernel into the text area one cell ring at a time: a cell joins the kernel it
    # touches first, so touching codes stay separate.
    for _ in range(max(labels.shape)):
        grown = cv2.dilate(labels, np.ones((3, 3), np.uint8))
        add = (labels == 0) & text & (grown > 0)
        if not add.any():
            break
        labels[add] = grown[add]
    h, w = text.shape
    st = int(params.stride)
    # Sub-cell boundary: upsample the probabilities to input resolution and threshold there.
    text_up = cv2.resize(text_p, (w * st, h * st), interpolation=cv2.INTER_LINEAR)
    lab_up = cv2.resize(labels, (w * st, h * st), interpolation=cv2.INTER_NEAREST)
    # pixel centres: map (i + 0.5) * stride - 0.5 of the low-res grid == INTER_LINEAR's convention
    results = []
    for i in range(1, n):
        kmask = labels == i
        score = float(kern_p[(kern == 1) & kmask].mean()) if ((kern == 1) & kmask).any() else 0.0
        if score < params.score_threshold:
            continue
        region = ((lab_up == i) & (text_up > params.text_threshold)).astype(np.uint8)
        if int(region.sum()) < params.min_area:
            continue
        quad = _fit_quad(region)
        if quad is None:
            continue
        results.append((order_clockwise(quad), score))
    return results
