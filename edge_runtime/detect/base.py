"""What the TFLite and NCNN detector backends share: model lookup with the sha256 check,
letterbox in, decoding out. A backend only says how to load its files and run one input."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.detect import Detection, DetectorUnavailable
from edge_runtime.detect import manifest as mf
from edge_runtime.detect import postprocess as pp


def thread_count(threads) -> int:
    """The thread count a detector runs with for a requested one (at least 1). Also what a
    reload compares, so a running detector is kept only if it runs the count asked for."""
    return max(1, int(threads))


class ModelDetector:
    fmt = ""  # manifest "formats" key
    file_keys: tuple[str, ...] = ()  # keys of that entry naming files

    def __init__(self, model_dir: str | Path | None = None, threads: int = 1,
                 score_threshold: float | None = None) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else mf.default_model_dir()
        self.manifest = mf.load_manifest(self.model_dir)
        self.entry = mf.describe(self.model_dir, self.manifest, self.fmt)
        paths = {k: mf.verified_path(self.model_dir, self.manifest, self.entry[k]) for k in self.file_keys}
        d = dict(self.manifest.get("output", {}).get("decode", {}))
        if score_threshold is not None:
            d["score_threshold"] = float(score_threshold)
        fields = pp.DecodeParams.__dataclass_fields__
        self.params = pp.DecodeParams(**{k: v for k, v in d.items() if k in fields})
        self.input_hw = mf.input_hw(self.model_dir, self.manifest)
        st = self.params.stride
        if isinstance(st, bool) or not isinstance(st, int) or st < 1 or any(v % st for v in self.input_hw):
            raise DetectorUnavailable(f"{self.model_dir / mf.MANIFEST}: output.decode.stride must be a positive "
                                      f"integer dividing the input size {self.input_hw}, got {st!r}")
        self.threads = thread_count(threads)
        self.precision = self.entry.get("precision", "int8")
        self._lock = threading.Lock()  # interpreters are not re-entrant
        self._load(paths)

    def _load(self, paths: dict[str, Path]) -> None:
        raise NotImplementedError

    def _refuse_other_input(self, path: Path, declared_hw) -> None:
        """A model file whose own input size is not the manifest's: letterboxing to one and
        decoding by the other would put every quad in the wrong place."""
        raise DetectorUnavailable(f"{path}: model input is {' x '.join(map(str, declared_hw))}, but its "
                                  f"manifest says {self.input_hw[0]} x {self.input_hw[1]}; the files are from "
                                  "different builds")

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Model input (input_hw uint8, letterboxed) -> (2, H/stride, W/stride) float logits."""
        raise NotImplementedError

    def detect_input(self, x: np.ndarray) -> list[tuple[np.ndarray, float]]:
        with self._lock:
            logits = self.logits(x)
        return pp.decode(logits, self.params)

    def detect(self, gray: np.ndarray) -> list[Detection]:
        """Quads (frame coordinates, clockwise from top-left) and scores of the codes in a frame."""
        gray = np.asarray(gray)
        if gray.ndim == 3:
            gray = cv2.cvtColor(gray, cv2.COLOR_BGR2GRAY if gray.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
        x, lb = pp.letterbox(gray, *self.input_hw)
        h, w = gray.shape
        out = []
        for quad, score in self.detect_input(x):
            q = lb.to_frame(quad)
            q[:, 0] = np.clip(q[:, 0], 0, w)
            q[:, 1] = np.clip(q[:, 1], 0, h)
            out.append(Detection(corners=[(float(a), float(b)) for a, b in q], score=score))
        return out
