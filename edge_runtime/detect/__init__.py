"""Code detectors: a model that finds QR codes (quads + scores) so decoding works where codes are.

`load("auto")` picks, of the shipped INT8 models whose runtime is installed, the one that runs
fastest on this CPU (measured at load), or None (the reader then works on the whole frame only).
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
    """One model folder, no version logic: the backend `name`, or for "auto" the fastest here of
    those that load; raise if none does."""
    names = ["tflite", "ncnn"] if name == "auto" else [name]
    errors, loaded = [], []
    for n in names:
        module, cls = BACKENDS[n].split(":")
        try:
            loaded.append(getattr(importlib.import_module(module), cls)(**options))
        except (ImportError, OSError, DetectorUnavailable) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            errors.append(msg if msg.startswith(f"{n}:") else f"{n}: {msg}")
    if not loaded:
        raise DetectorUnavailable("; ".join(errors) if name == "auto" else errors[0])
    if len(loaded) == 1:
        return loaded[0]
    return _fastest(loaded)


def _fastest(dets: list):
    """The backend with the shortest model call on this CPU. Which one wins depends on the CPU,
    not on the model: on an AVX-512/AMX Xeon TFLite's XNNPACK takes 2.3 ms and NCNN 2.7, on an
    AVX2-only EPYC (Zen 1) TFLite takes 16 ms and NCNN 10. Both give the same detections on
    99 % of frames (the build checks it), so the faster one is the better reader at a deadline."""
    import time

    from edge_runtime.detect.postprocess import letterbox
    from edge_runtime.detect.selftest import sample_frames

    frame = sample_frames()[0][0]
    ms = {}
    for det in dets:
        x, _ = letterbox(frame, *det.input_hw)
        det.logits(x)  # first call allocates and packs weights
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            det.logits(x)
            runs.append((time.perf_counter() - t) * 1000.0)
        ms[det.fmt] = round(min(runs), 2)  # min: the machine's speed, not its neighbours' load
    best = min(dets, key=lambda d: ms[d.fmt])
    best.backend_ms = ms
    log.info("detector backend %s: fastest here (%s ms per model call)", best.fmt,
             ", ".join(f"{k} {v}" for k, v in ms.items()),
             extra={"fields": {"event": "detector_backend", "backend": best.fmt, "ms": ms}})
    return best


def detect(detector, gray: np.ndarray) -> list[Detection]:
    return [] if detector is None else detector.detect(gray)
