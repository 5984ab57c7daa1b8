"""Export the trained detector to TFLite: float (comparison) and full-integer INT8 (shipped).

INT8: int8 weights (per-channel) and activations, calibrated by TFLite's converter on
representative synthetic frames (min/max per tensor); the input is int8 too (gray - 128 for
scale 1/255), so the device never converts a frame to float.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from quantize import model as qmodel
from quantize import manifest_writer

log = logging.getLogger("quantize.export")

TFLITE_INT8 = "qr_detector_int8.tflite"
TFLITE_FLOAT = "qr_detector_float.tflite"


def _converter(weights):
    import tensorflow as tf

    net = qmodel.build_folded(weights)
    return tf, tf.lite.TFLiteConverter.from_keras_model(net)


def write_tflite(weights, calib: np.ndarray, out: Path, float_dir: Path | None = None, seed: int = 0) -> None:
    tf, conv = _converter(weights)
    if float_dir is not None:
        float_dir.mkdir(parents=True, exist_ok=True)
        (float_dir / TFLITE_FLOAT).write_bytes(conv.convert())
        manifest_writer.write_files(float_dir, {"tflite": {"model": TFLITE_FLOAT, "precision": "float32"}})

    tf, conv = _converter(weights)

    def representative():
        for x in calib:
            yield [x[None, :, :, None].astype(np.float32) / 255.0]

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    blob = conv.convert()
    (out / TFLITE_INT8).write_bytes(blob)
    _check_full_int8(out / TFLITE_INT8)
    manifest_writer.write_files(out, {"tflite": {"model": TFLITE_INT8, "precision": "int8"}})
    log.info("tflite int8: %d bytes", len(blob))


def _check_full_int8(path: Path) -> None:
    """Refuse to ship a model in which any tensor stayed float (a silent float fallback)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    floats = [d["name"] for d in it.get_tensor_details() if d["dtype"] == np.float32]
    if floats:
        raise RuntimeError(f"{path}: not full-integer, float tensors: {floats[:5]}")
