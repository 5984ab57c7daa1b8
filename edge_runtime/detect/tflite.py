"""TFLite backend: the full-integer INT8 model on the LiteRT interpreter (XNNPACK)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from edge_runtime.detect.base import ModelDetector

try:  # LiteRT is the successor of tflite_runtime; either gives the same Interpreter
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # pragma: no cover - depends on what the board has installed
    from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]


class TFLiteDetector(ModelDetector):
    fmt = "tflite"
    file_keys = ("model",)

    def _load(self, paths: dict[str, Path]) -> None:
        with _native_stderr_silenced():
            self.interp = Interpreter(model_path=str(paths["model"]), num_threads=self.threads)
            self.interp.allocate_tensors()
            self.interp.invoke()  # the XNNPACK delegate announces itself on first use
        self._in = self.interp.get_input_details()[0]
        self._out = self.interp.get_output_details()[0]
        shape = tuple(int(v) for v in self._in["shape"])
        if shape != (1, *self.input_hw, 1):
            self._refuse_other_input(paths["model"], shape[1:3])
        g = np.arange(256, dtype=np.float64) / 255.0
        if self._in["dtype"] == np.float32:
            self._lut = g.astype(np.float32)
        else:  # quantise every possible gray level once: the frame goes in with one take()
            scale, zp = self._in["quantization"]
            info = np.iinfo(self._in["dtype"])
            self._lut = np.clip(np.round(g / scale + zp), info.min, info.max).astype(self._in["dtype"])

    def logits(self, x: np.ndarray) -> np.ndarray:
        self.interp.set_tensor(self._in["index"], np.take(self._lut, x)[None, :, :, None])
        self.interp.invoke()
        y = self.interp.get_tensor(self._out["index"])[0]
        if y.dtype != np.float32:
            scale, zp = self._out["quantization"]
            y = (y.astype(np.float32) - zp) * scale
        return np.ascontiguousarray(y.transpose(2, 0, 1))


@contextlib.contextmanager
def _native_stderr_silenced():
    """LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." straight to
    file descriptor 2, outside Python's logging: one raw line in a stream where every
    line must be a JSON log object. Point fd 2 at /dev/null for the few milliseconds of
    loading; Python-level writes are flushed first so none of ours is lost."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
