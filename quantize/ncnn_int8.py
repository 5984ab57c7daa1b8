"""Write the detector as NCNN .param/.bin: float, and INT8 with our own calibration.

The pip ncnn wheel has no ncnn2table/ncnn2int8, so this module does their job in ncnn's own
format (layer/convolution.cpp load_param/load_model, modelbin.cpp):
  * .param: `Convolution ... 8=2` (int8_scale_term) on every conv; the rest (Split, Interp,
    Concat) runs on the dequantized fp32 blobs, as ncnn2int8 leaves them;
  * .bin per int8 conv: weight_data as an int8 blob (tag 0x000D4B38, 4-byte aligned), bias
    fp32, weight_data_int8_scales (one per output channel, 127/max|w|), bottom_blob_int8_scales
    (one, 127/max|activation| of the conv's input over the calibration frames).
ncnn scales multiply (int8 = round(x * scale)), the reverse of TFLite's convention.
`prove_int8` then loads the file in the ncnn runtime and shows that its convolutions compute
with int8 arithmetic (they match an int8 simulation, not the float model).
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np

from quantize import manifest_writer
from quantize import model as qmodel
from quantize.model import INPUT_H, INPUT_W

log = logging.getLogger("quantize.ncnn")

NCNN_INT8 = "qr_detector_int8.ncnn"
NCNN_FLOAT = "qr_detector_float.ncnn"
INPUT_BLOB = "in0"
OUTPUT_BLOB = "out0"
TAG_INT8 = 0x000D4B38


def _consumers() -> dict[str, list[str]]:
    uses: dict[str, list[str]] = {"input": []}
    for n in qmodel.GRAPH:
        uses.setdefault(n.name, [])
        for i in n.inputs:
            uses[i].append(n.name)
    return uses


def _graph_lines(scales: dict | None) -> list[str]:
    """Layer lines; a blob read by two layers goes through a Split, as ncnn expects."""
    uses = _consumers()
    blob = {"input": INPUT_BLOB}
    taken: dict[str, int] = {}
    lines = [f"Input {INPUT_BLOB} 0 1 {INPUT_BLOB} 0={INPUT_W} 1={INPUT_H} 2=1"]

    def ref(src: str, consumer: str) -> str:
        if len(uses[src]) == 1:
            return blob[src]
        k = uses[src].index(consumer)
        return f"{blob[src]}_s{k}"

    def emit_split(name: str):
        if len(uses[name]) > 1:
            outs = " ".join(f"{blob[name]}_s{k}" for k in range(len(uses[name])))
            lines.append(f"Split {name}_split 1 {len(uses[name])} {blob[name]} {outs}")

    emit_split("input")
    for n in qmodel.GRAPH:
        top = OUTPUT_BLOB if n.name == qmodel.OUTPUT else n.name
        blob[n.name] = top
        bottoms = " ".join(ref(i, n.name) for i in n.inputs)
        if n.op == "conv":
            cin = qmodel.shapes()[n.inputs[0]][2]
            top_, bottom_, left, right = _pads(n)  # TF 'SAME': stride 2 on even sizes pads only right/bottom
            pad = f"4={left} 15={right} 14={top_} 16={bottom_}"
            parts = [f"0={n.out}", f"1={n.k}", f"3={n.s}", pad, "5=1", f"6={n.out * cin * n.k * n.k}"]
            if scales is not None:
                parts.append("8=2")
            if n.relu:
                parts.append("9=1")
            lines.append(f"Convolution {n.name} 1 1 {bottoms} {top} " + " ".join(parts))
        elif n.op == "up":
            lines.append(f"Interp {n.name} 1 1 {bottoms} {top} 0=1 1=2.000000e+00 2=2.000000e+00")
        else:
            lines.append(f"Concat {n.name} {len(n.inputs)} 1 {bottoms} {top} 0=0")
        emit_split(n.name)
    return lines


def _pads(n) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding of conv node n, as TFLite's 'SAME' computes it."""
    h, w, _ = qmodel.shapes()[n.inputs[0]]
    return (*qmodel.same_pads(h, n.k, n.s), *qmodel.same_pads(w, n.k, n.s))


def _write_param(path: Path, scales: dict | None) -> None:
    lines = _graph_lines(scales)
    blobs = set()
    for ln in lines:
        f = ln.split()
        nb, nt = int(f[2]), int(f[3])
        blobs.update(f[4 : 4 + nb + nt])
    path.write_text("7767517\n" + f"{len(lines)} {len(blobs)}\n" + "\n".join(lines) + "\n")


def quantize_weight(w_oihw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel symmetric int8: (int8 weights, ncnn scales = 127 / max|w|)."""
    flat = w_oihw.reshape(w_oihw.shape[0], -1)
    amax = np.abs(flat).max(axis=1)
    scale = np.where(amax > 0, 127.0 / np.maximum(amax, 1e-12), 1.0).astype(np.float32)
    q = _round_clip(flat * scale[:, None])
    return q.reshape(w_oihw.shape), scale


def _round_clip(v: np.ndarray) -> np.ndarray:
    # ncnn's float2int8: round half away from zero, clamp to [-127, 127]
    return np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), -127, 127).astype(np.int8)


def _write_bin(path: Path, weights: dict, scales: dict | None) -> None:
    with open(path, "wb") as f:
        for n in qmodel.GRAPH:
            if n.op != "conv":
                continue
            w, b = weights[n.name]
            oihw = np.ascontiguousarray(w.transpose(3, 2, 0, 1)).astype(np.float32)
            if scales is None:
                f.write(struct.pack("<I", 0))  # flag 0: raw float32 follows
                f.write(oihw.tobytes())
                f.write(b.astype("<f4").tobytes())
            else:
                q, wscale = quantize_weight(oihw)
                raw = q.tobytes()
                f.write(struct.pack("<I", TAG_INT8))
                f.write(raw + b"\0" * (-len(raw) % 4))
                f.write(b.astype("<f4").tobytes())
                f.write(wscale.astype("<f4").tobytes())  # weight_data_int8_scales[num_output]
                f.write(np.array([scales[n.name]], "<f4").tobytes())  # bottom_blob_int8_scales[1]


def calibrate(weights: dict, calib: np.ndarray, batch: int = 16) -> dict[str, float]:
    """ncnn bottom_blob_int8_scale of every conv: 127 / max |input activation| (float model).

    Max rather than KL: the model's inputs and post-ReLU maps have no long tails worth
    clipping here, and max is what TFLite's converter uses, so the two INT8 models see the
    same ranges and agree with each other.
    """
    import tensorflow as tf

    net = qmodel.build_folded(weights)

    def tensor(name):
        if name == "input":
            return net.input
        node = next(n for n in qmodel.GRAPH if n.name == name)
        if node.op == "conv" and node.relu:
            return net.get_layer(name + "_relu").output
        return net.get_layer(name).output

    convs = [n for n in qmodel.GRAPH if n.op == "conv"]
    probe = tf.keras.Model(net.input, [tensor(n.inputs[0]) for n in convs])
    amax = np.zeros(len(convs))
    for s in range(0, len(calib), batch):
        outs = probe(calib[s : s + batch, :, :, None].astype(np.float32) / 255.0, training=False)
        for i, o in enumerate(outs):
            amax[i] = max(amax[i], float(np.abs(o.numpy()).max()))
    return {n.name: float(127.0 / max(a, 1e-6)) for n, a in zip(convs, amax)}


def write_ncnn(weights: dict, calib: np.ndarray, out: Path, float_dir: Path | None = None) -> dict:
    scales = calibrate(weights, calib)
    _write_param(out / f"{NCNN_INT8}.param", scales)
    _write_bin(out / f"{NCNN_INT8}.bin", weights, scales)
    (out / f"{NCNN_INT8}.table").write_text(
        "".join(f"{k} {v:.6f}\n" for k, v in scales.items()))  # human-readable copy, ncnn2table style
    fmt = {"param": f"{NCNN_INT8}.param", "bin": f"{NCNN_INT8}.bin", "input": INPUT_BLOB, "output": OUTPUT_BLOB,
           "precision": "int8", "calibration": "max |activation| over calibration frames"}
    manifest_writer.write_files(out, {"ncnn": fmt})
    if float_dir is not None:
        float_dir.mkdir(parents=True, exist_ok=True)
        _write_param(float_dir / f"{NCNN_FLOAT}.param", None)
        _write_bin(float_dir / f"{NCNN_FLOAT}.bin", weights, None)
        manifest_writer.write_files(float_dir, {"ncnn": {**fmt, "param": f"{NCNN_FLOAT}.param",
                                                         "bin": f"{NCNN_FLOAT}.bin", "precision": "float32"}})
    proof = prove_int8(out, weights, calib[0])
    log.info("ncnn int8 proof: %s", proof)
    return {"scales": scales, "proof": proof}


def _im2col_conv(x_chw: np.ndarray, w_oihw: np.ndarray, stride: int, pads: tuple[int, int, int, int]) -> np.ndarray:
    """Plain conv (no bias) by im2col: x float/int (C,H,W), pads (top, bottom, left, right)."""
    c, h, w = x_chw.shape
    o, _, k, _ = w_oihw.shape
    xp = np.pad(x_chw, ((0, 0), (pads[0], pads[1]), (pads[2], pads[3])))
    oh = (xp.shape[1] - k) // stride + 1
    ow = (xp.shape[2] - k) // stride + 1
    cols = np.empty((c, k, k, oh, ow), x_chw.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, i, j] = xp[:, i : i + stride * oh : stride, j : j + stride * ow : stride]
    return (w_oihw.reshape(o, -1) @ cols.reshape(c * k * k, -1)).reshape(o, oh, ow)


def prove_int8(model_dir: Path, weights: dict, x: np.ndarray, layers: tuple[str, ...] = ("c1", "c9", "head")) -> dict:
    """Run the INT8 .param/.bin in the ncnn runtime and compare chosen convs' outputs with
    (a) an int8 simulation of ncnn's arithmetic and (b) the float conv, on ncnn's own input
    blob for that layer. int8 inference shows as error(int8 sim) << error(float)."""
    import ncnn

    net = ncnn.Net()
    net.opt.use_int8_inference = True
    net.opt.num_threads = 1
    net.opt.lightmode = False  # keep intermediate blobs alive: we read a layer's input and output
    pp = str(model_dir / f"{NCNN_INT8}.param")
    if net.load_param(pp) != 0 or net.load_model(str(model_dir / f"{NCNN_INT8}.bin")) != 0:
        raise RuntimeError(f"{pp}: ncnn refused the int8 model")
    scales = dict(line.split() for line in (model_dir / f"{NCNN_INT8}.table").read_text().splitlines())
    nodes = {n.name: n for n in qmodel.GRAPH}
    lines = {ln.split()[1]: ln.split() for ln in _graph_lines({})}
    result = {}
    for name in layers:
        n = nodes[name]
        ex = net.create_extractor()
        arr = np.ascontiguousarray((x.astype(np.float32) / 255.0)[None])
        mat = ncnn.Mat(arr)  # ncnn.Mat wraps arr's memory: both must outlive the extractor run
        ex.input(INPUT_BLOB, mat)
        bottom = lines[name][4]
        top = lines[name][5]
        _, a = ex.extract(bottom)
        a = np.array(a, dtype=np.float32, copy=True)
        _, y = ex.extract(top)
        y = np.array(y, dtype=np.float32, copy=True)
        w, b = weights[name]
        oihw = w.transpose(3, 2, 0, 1).astype(np.float32)
        pads = _pads(n)
        qw, ws = quantize_weight(oihw)
        bs = float(scales[name])
        qa = _round_clip(a * bs).astype(np.int32)
        acc = _im2col_conv(qa, qw.astype(np.int32), n.s, pads).astype(np.float64)
        sim = acc / (bs * ws[:, None, None]) + b[:, None, None]
        ref = _im2col_conv(a.astype(np.float64), oihw.astype(np.float64), n.s, pads) + b[:, None, None]
        if n.relu:
            sim, ref = np.maximum(sim, 0), np.maximum(ref, 0)
        result[name] = {"max_abs_err_vs_int8_sim": float(np.abs(y - sim).max()),
                        "max_abs_err_vs_float": float(np.abs(y - ref).max()),
                        "output_range": float(np.abs(ref).max())}
    return result
