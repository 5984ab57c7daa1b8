"""Find the shipped detector models and check them against models/manifest.json.

Where models live (first that exists wins):
  1. $EDGE_RUNTIME_MODELS                          (a deployment's own copy)
  2. <repo>/models next to the edge_runtime package (source checkout, editable install)
  3. <sys.prefix>/share/edge-runtime/models         (wheel install: setup.cfg data_files)

Why a hash check: a model file that is truncated, half-copied by an updater, or swapped for a
different build produces plausible-looking but wrong detections - a silent failure on a line
that must not lose reads. Refusing to start with one clear line is the safe behaviour.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

MANIFEST = "manifest.json"
ENV = "EDGE_RUNTIME_MODELS"


def default_model_dir() -> Path:
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    candidates = [Path(__file__).resolve().parents[2] / "models",
                  Path(sys.prefix) / "share" / "edge-runtime" / "models"]
    for c in candidates:
        if (c / MANIFEST).is_file():
            return c
    return candidates[0]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(model_dir: Path) -> dict:
    from edge_runtime.detect import DetectorUnavailable

    path = Path(model_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DetectorUnavailable(f"{path}: model manifest not found (set {ENV} or build with "
                                  "`python -m quantize all`)") from None
    except (OSError, ValueError) as exc:
        raise DetectorUnavailable(f"{path}: unreadable model manifest ({exc})") from None


def verified_path(model_dir: Path, manifest: dict, filename: str) -> Path:
    """Path of a model file after checking it exists and its sha256 matches the manifest."""
    from edge_runtime.detect import DetectorUnavailable

    path = Path(model_dir) / filename
    entry = manifest.get("files", {}).get(filename)
    if entry is None:
        raise DetectorUnavailable(f"{path}: not listed in {Path(model_dir) / MANIFEST}; refusing an unknown model file")
    if not path.is_file():
        raise DetectorUnavailable(f"{path}: model file missing")
    got = sha256(path)
    if got != entry.get("sha256"):
        raise DetectorUnavailable(f"{path}: sha256 mismatch (manifest {str(entry.get('sha256'))[:12]}..., file "
                                  f"{got[:12]}...): the file is corrupt or from another build; restore it or rebuild "
                                  "with `python -m quantize all`")
    return path


def describe(model_dir: Path, manifest: dict, fmt: str) -> dict:
    """The manifest's entry for one runtime format ('tflite' or 'ncnn'), or a clear error."""
    from edge_runtime.detect import DetectorUnavailable

    entry = manifest.get("formats", {}).get(fmt)
    if entry is None:
        raise DetectorUnavailable(f"{Path(model_dir) / MANIFEST}: no {fmt} model listed")
    return entry


def input_hw(model_dir: Path, manifest: dict) -> tuple[int, int]:
    """The model's input (height, width): frames are letterboxed to it and its decode stride
    maps the output grid back. Manifests from before it was recorded per model are 256 x 320."""
    from edge_runtime.detect import DetectorUnavailable
    from edge_runtime.detect.postprocess import LEGACY_INPUT_HW

    spec = manifest.get("input") or {}
    hw = []
    for key, legacy in zip(("height", "width"), LEGACY_INPUT_HW):
        v = spec.get(key, legacy)
        if isinstance(v, bool) or not isinstance(v, int) or not 16 <= v <= 4096:
            raise DetectorUnavailable(f"{Path(model_dir) / MANIFEST}: input.{key} must be an integer "
                                      f"from 16 to 4096, got {v!r}; rebuild with `python -m quantize all`")
        hw.append(v)
    return hw[0], hw[1]
