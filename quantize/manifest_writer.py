"""Write models/manifest.json: what each file is, its sha256, how to feed and decode it,
how well it does, and exactly how it was built."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from edge_runtime.detect.manifest import MANIFEST, sha256
from edge_runtime.detect.postprocess import DecodeParams
from quantize import model as qmodel

NAME = "qr-detector"
VERSION = "1.2.0"


def _base(model_dir: Path, formats: dict, decode: dict | None = None) -> dict:
    files = {}
    for fmt in formats.values():
        for key in ("model", "param", "bin"):
            if key in fmt:
                p = model_dir / fmt[key]
                files[fmt[key]] = {"sha256": sha256(p), "bytes": p.stat().st_size}
    return {
        "name": NAME,
        "version": VERSION,
        "input": {"height": qmodel.INPUT_H, "width": qmodel.INPUT_W, "channels": 1, "format": "gray8",
                  "resize": "letterbox: scale to fit (INTER_AREA), top-left aligned, zero padding",
                  "normalisation": "x = gray / 255 (TFLite int8: q = round(x / scale) + zero_point from the model)"},
        # decode: the defaults, or what an earlier step (quantize/tune.py) chose for this build
        "output": {"layout": "NHWC (TFLite) / CHW (NCNN)", "decode": {**default_decode().as_dict(), **(decode or {})}},
        "formats": formats,
        "files": files,
    }


def default_decode() -> DecodeParams:
    """Decoding of a fresh build: the output stride of this graph, and the smallest component
    scaled with the input resolution (48 px^2 at 1.1's 256 x 320 input: the same frame area)."""
    scale = qmodel.INPUT_W / 320
    return DecodeParams(stride=qmodel.stride(), min_area=48.0 * scale * scale)


def write_files(model_dir: Path, formats: dict) -> dict:
    """Manifest with files/io only (what the runtime needs); metrics are added by write()."""
    path = model_dir / MANIFEST
    old = json.loads(path.read_text()) if path.exists() else {}
    # New model files: decoding starts from the defaults (a threshold tuned for an older build
    # would be stale); the tune step sets it again.
    m = _base(model_dir, {**old.get("formats", {}), **formats})
    for k in ("metrics", "build"):
        if k in old:
            m[k] = old[k]
    path.write_text(json.dumps(m, indent=1) + "\n")
    return m


def write(model_dir: Path, *, metrics: dict | None, train: dict, config: dict, seed: int, command: str,
          seconds: float) -> dict:
    import numpy as np
    import tensorflow as tf

    path = model_dir / MANIFEST
    m = json.loads(path.read_text())
    m = {**_base(model_dir, m["formats"], m.get("output", {}).get("decode")), "metrics": metrics}
    m["build"] = {
        "command": command, "seed": seed, "seconds": round(seconds, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config, "train": {k: v for k, v in train.items() if k != "loss_history"},
        "final_loss": train.get("loss_history", [None])[-1],
        "gflops": round(qmodel.flops() / 1e9, 3),
        "tensorflow": tf.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    path.write_text(json.dumps(m, indent=1) + "\n")
    return m
