"""NCNN backend: the INT8 .param/.bin (int8 convolutions, calibrated activation scales)."""

from __future__ import annotations

from pathlib import Path

import ncnn
import numpy as np

from edge_runtime.detect import DetectorUnavailable
from edge_runtime.detect.base import ModelDetector


class NcnnDetector(ModelDetector):
    fmt = "ncnn"
    file_keys = ("param", "bin")

    def _load(self, paths: dict[str, Path]) -> None:
        net = ncnn.Net()
        net.opt.num_threads = self.threads
        net.opt.use_vulkan_compute = False
        # Do not spin-wait between layers: on a board shared with capture and decoding threads
        # a spinning OpenMP worker steals the core the next frame needs.
        net.opt.openmp_blocktime = 0
        net.opt.use_int8_inference = True
        if self.precision != "int8":  # the float comparison model: keep it truly fp32
            for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage"):
                setattr(net.opt, flag, False)
        declared = _declared_input_hw(paths["param"])
        if declared is not None and declared != self.input_hw:
            self._refuse_other_input(paths["param"], declared)
        if net.load_param(str(paths["param"])) != 0:
            raise DetectorUnavailable(f"{paths['param']}: ncnn could not parse the model")
        if net.load_model(str(paths["bin"])) != 0:
            raise DetectorUnavailable(f"{paths['bin']}: ncnn could not load the weights")
        self.net = net
        self._in_blob = self.entry.get("input", "in0")
        self._out_blob = self.entry.get("output", "out0")

    def logits(self, x: np.ndarray) -> np.ndarray:
        # ncnn.Mat(ndarray) wraps the array's memory without copying: keep both referenced
        # until extract() has run, or the network reads freed memory.
        arr = np.ascontiguousarray((x.astype(np.float32) * (1.0 / 255.0))[None])
        mat = ncnn.Mat(arr)
        ex = self.net.create_extractor()
        ex.input(self._in_blob, mat)
        ret, out = ex.extract(self._out_blob)
        del mat, arr
        if ret != 0:
            raise RuntimeError(f"ncnn extract failed ({ret})")
        return np.array(out, dtype=np.float32, copy=True)


def _declared_input_hw(param: Path) -> tuple[int, int] | None:
    """(h, w) of the param file's Input layer (0=w 1=h), if it declares them. ncnn itself
    runs any input size, so a manifest/model mismatch would only show as wrong detections."""
    try:
        lines = param.read_text(errors="replace").splitlines()
    except OSError:
        return None  # ncnn's own load_param reports an unreadable file
    for line in lines[2:]:
        f = line.split()
        if f and f[0] == "Input":
            kv = dict(a.split("=", 1) for a in f[4:] if "=" in a)
            try:
                return int(kv["1"]), int(kv["0"])
            except (KeyError, ValueError):
                return None
    return None
