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


@dataclass
class Choice:
    """What `choose` settled on: the detector (None: whole-frame reading), its model version,
    and why a wanted version was refused (None when nothing was)."""

    detector: object | None
    version: str | None = None
    fallback: str | None = None


def choose(name: str = "auto", *, model: str = "", keep=None, self_test: bool = True, **options) -> Choice:
    """Load a model version that passes its sha256 check and self-test (see detect/select.py).

    `model` names a version ("" = the newest that passes); `keep` is the running detector,
    kept when the wanted version is refused (a reload must never make the reader worse).
    The reader (and so the service, on start and on reload) uses this, self-test included."""
    if name not in CHOICES:
        raise ValueError(f"unknown detector {name!r}; choose from {', '.join(CHOICES)}")
    if name == "none":
        return Choice(None)
    from edge_runtime.detect import select

    return select.choose(name, model=model, keep=keep, run_self_test=self_test, **options)


def load(name: str = "auto", **options):
    """A detector without the self-test (building and benchmarking models, where a barely
    trained smoke model must still load); the sha256 check and version choice still apply."""
    options.setdefault("self_test", False)
    return choose(name, **options).detector


def _load_backend(name: str, **options):
    """One model folder, no version logic: the first backend of `name` that loads, or raise."""
    names = ["tflite", "ncnn"] if name == "auto" else [name]
    errors = []
    for n in names:
        module, cls = BACKENDS[n].split(":")
        try:
            return getattr(importlib.import_module(module), cls)(**options)
        except (ImportError, OSError, DetectorUnavailable) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            errors.append(msg if msg.startswith(f"{n}:") else f"{n}: {msg}")
    raise DetectorUnavailable("; ".join(errors) if name == "auto" else errors[0])


def detect(detector, gray: np.ndarray) -> list[Detection]:
    return [] if detector is None else detector.detect(gray)
