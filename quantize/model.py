"""The detector network, described once as a plain layer list.

The same list builds the Keras training model (conv + BatchNorm + ReLU), the folded inference
model (conv with bias + ReLU: what TFLite is converted from) and the NCNN graph
(quantize/ncnn_int8.py), and counts FLOPs. Only four operations are used - Conv2D, ReLU
(fused), nearest 2x upsampling and channel concat - all of which have full-integer kernels in
TFLite and a Convolution int8 path in NCNN, so nothing falls back to float on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The input size of the model built here; the runtime reads it from each model's manifest.
# A VGA-class frame goes in at half resolution. Tried for 1.2: the full-resolution frame
# (512 x 640) under a 6x6 stride-4 first conv, the same output grid for +18 MFLOP - no better
# (recall 0.911 against 0.922 in a 3,000-step A/B), so the cheaper input stays.
INPUT_H = 256
INPUT_W = 320


@dataclass(frozen=True)
class Node:
    name: str
    op: str  # conv | up | concat
    inputs: tuple[str, ...]
    out: int = 0  # conv output channels
    k: int = 3
    s: int = 1
    relu: bool = True


def _c(name, src, out, s=1, k=3, relu=True):
    return Node(name, "conv", (src,), out, k, s, relu)


# Encoder down to 1/64 of the input for context (a big code's centre is a field of modules; it
# needs to see an edge or a finder to be sure), decoder back to 1/4 (a 64 x 80 output grid)
# with skip connections.
GRAPH: tuple[Node, ...] = (
    _c("c1", "input", 16, s=2),
    _c("c2", "c1", 24, s=2),
    _c("c3", "c2", 24),
    _c("c4", "c3", 48, s=2),
    _c("c5", "c4", 48),
    _c("c6", "c5", 64, s=2),
    _c("c7", "c6", 64),
    _c("c8", "c7", 96, s=2),
    _c("c9", "c8", 96),
    # Stride 64 (4 x 5 cells): a big low-version code (6+ px per module at the input) spans
    # 130+ px, and the centre of it only knows it is a QR code - not a checkerboard or a
    # DataMatrix - if it sees the finder patterns at the corners. The stride-32 stages'
    # effective field of view is too narrow for that; this stage costs 0.04 GFLOP.
    _c("c14", "c9", 112, s=2),
    _c("c15", "c14", 112),
    Node("u0", "up", ("c15",)),
    Node("m0", "concat", ("u0", "c9")),
    _c("c16", "m0", 96),
    Node("u1", "up", ("c16",)),
    Node("m1", "concat", ("u1", "c7")),
    _c("c10", "m1", 48),
    Node("u2", "up", ("c10",)),
    Node("m2", "concat", ("u2", "c5")),
    _c("c11", "m2", 32),
    Node("u3", "up", ("c11",)),
    Node("m3", "concat", ("u3", "c3")),
    _c("c12", "m3", 16, k=1),
    _c("c13", "c12", 16),
    _c("head", "c13", 2, k=1, relu=False),
)
OUTPUT = "head"


def shapes() -> dict[str, tuple[int, int, int]]:
    """(h, w, c) of every node's output."""
    sh = {"input": (INPUT_H, INPUT_W, 1)}
    for n in GRAPH:
        if n.op == "conv":
            h, w, _ = sh[n.inputs[0]]
            sh[n.name] = (-(-h // n.s), -(-w // n.s), n.out)
        elif n.op == "up":
            h, w, c = sh[n.inputs[0]]
            sh[n.name] = (2 * h, 2 * w, c)
        else:
            h, w, _ = sh[n.inputs[0]]
            sh[n.name] = (h, w, sum(sh[i][2] for i in n.inputs))
    return sh


def stride() -> int:
    """Input px per output cell (the decode stride written to the manifest)."""
    return INPUT_H // shapes()[OUTPUT][0]


def same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """(before, after) padding of TF/TFLite 'SAME' along one axis; NCNN is given it explicitly."""
    total = max((-(-size // s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def flops() -> int:
    """Multiply-adds x 2 of all convolutions at the input size."""
    sh = shapes()
    total = 0
    for n in GRAPH:
        if n.op == "conv":
            h, w, c = sh[n.name]
            total += 2 * h * w * c * n.k * n.k * sh[n.inputs[0]][2]
    return total


def build_keras(train: bool = True):
    """Keras model; train=True adds BatchNorm after every conv but the head."""
    import tensorflow as tf

    L = tf.keras.layers
    t = {"input": L.Input((INPUT_H, INPUT_W, 1), name="input")}
    for n in GRAPH:
        if n.op == "conv":
            bn = train and n.relu
            x = L.Conv2D(n.out, n.k, strides=n.s, padding="same", use_bias=not bn, name=n.name)(t[n.inputs[0]])
            if bn:
                x = L.BatchNormalization(momentum=0.95, name=n.name + "_bn")(x)
            if n.relu:
                x = L.ReLU(name=n.name + "_relu")(x)
        elif n.op == "up":
            x = L.UpSampling2D(2, interpolation="nearest", name=n.name)(t[n.inputs[0]])
        else:
            x = L.Concatenate(name=n.name)([t[i] for i in n.inputs])
        t[n.name] = x
    return tf.keras.Model(t["input"], t[OUTPUT], name="qrdet")


def folded_weights(model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """BatchNorm folded into each conv: {name: (kernel HWIO float32, bias float32)}."""
    out = {}
    for n in GRAPH:
        if n.op != "conv":
            continue
        conv = model.get_layer(n.name)
        w = conv.kernel.numpy().astype(np.float64)
        b = conv.bias.numpy().astype(np.float64) if conv.use_bias else np.zeros(n.out)
        try:
            bn = model.get_layer(n.name + "_bn")
        except ValueError:
            bn = None
        if bn is not None:
            gamma, beta, mean, var = (v.numpy().astype(np.float64) for v in
                                      (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
            f = gamma / np.sqrt(var + bn.epsilon)
            w = w * f
            b = (b - mean) * f + beta
        out[n.name] = (w.astype(np.float32), b.astype(np.float32))
    return out


def build_folded(weights: dict[str, tuple[np.ndarray, np.ndarray]]):
    m = build_keras(train=False)
    for name, (w, b) in weights.items():
        m.get_layer(name).set_weights([w, b])
    return m
