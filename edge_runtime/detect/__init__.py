"""Code detectors: a model that finds QR codes (quads + scores) so decoding works where codes are.

`load("auto")` picks the first shipped INT8 model whose runtime is installed, or None
(the reader then works on the whole frame only).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

BACKENDS = {
    "tflite": "edge_runtime.detect.tflite:TFLiteDetector",
    "ncnn": "edge_runtime.detect.ncnn:NcnnDetector",
}
CHOICES = ("auto", "tflite", "ncnn", "none")


@dataclass
class Detection:
    corners: list[tuple[float, float]]  # 4 points, frame coordinates, clockwise from top-left
    score: float


class DetectorUnavailable(RuntimeError):
    """The named detector cannot run here (model file missing, hash mismatch, no runtime)."""


def load(name: str = "auto", **options):
    if name not in CHOICES:
        raise ValueError(f"unknown detector {name!r}; choose from {', '.join(CHOICES)}")
    if name == "none":
        return None
    names = ["tflite", "ncnn"] if name == "auto" else [name]
    errors = []
    for n in names:
        module, cls = BACKENDS[n].split(":")
        try:
            return getattr(importlib.import_module(module), cls)(**options)
        except (ImportError, OSError, DetectorUnavailable) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            errors.append(msg if msg.startswith(f"{n}:") else f"{n}: {msg}")
    if name == "auto":
        log.info("no detector model available (%s); reading whole frames only", "; ".join(errors))
        return None
    raise DetectorUnavailable(errors[0])


def detect(detector, gray: np.ndarray) -> list[Detection]:
    return [] if detector is None else detector.detect(gray)
