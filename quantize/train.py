"""Train the detector (Keras, CPU, at most 2 threads, deterministic for a seed)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np

from quantize import model as qmodel
from quantize.model import INPUT_H, INPUT_W

log = logging.getLogger("quantize.train")


def setup_tf(seed: int, threads: int = 2):
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process: keep the first setting
        pass
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    return tf


def _loss_fn(tf):
    def loss(y_true, logits, cell_w):
        p = tf.sigmoid(logits)
        total = 0.0
        for ch in (0, 1):
            t = y_true[..., ch]
            l = logits[..., ch]
            bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=t, logits=l)
            b = tf.reduce_sum(bce * cell_w) / tf.reduce_sum(cell_w)
            inter = tf.reduce_sum(p[..., ch] * t, axis=[1, 2])
            dice = 1.0 - (2.0 * inter + 1.0) / (tf.reduce_sum(p[..., ch], axis=[1, 2]) + tf.reduce_sum(t, axis=[1, 2]) + 1.0)
            total += b * 4.0 + tf.reduce_mean(dice)
        return total

    return loss


REF_CELLS = 100.0  # a code of 10 x 10 output cells (80 px across in a VGA frame) has weight 1


def cell_weights(text: np.ndarray, cap: float) -> np.ndarray:
    """(B, h, w) BCE weight per output cell: 1, and up to `cap` on and around small codes.

    Why: in a per-cell mean a code of 3 x 3 cells is 1/10 of the loss of a 10 x 10 one, and a
    soft image-level Dice is dominated by the big code in the same frame, so small codes are
    learnt last - they are most of model 1.1's misses (46 of 55 were under 50 input px across).
    Each code (a connected component of the text target) gets sqrt(REF_CELLS / its area),
    clipped to [1, cap], spread one cell outward so the blurry edge cells count as well.
    """
    out = np.ones(text.shape[:3], np.float32)
    if cap <= 1.0:
        return out
    for b in range(len(text)):
        n, lab = cv2.connectedComponents((text[b] >= 64).astype(np.uint8), connectivity=8)
        if n <= 1:
            continue
        area = np.bincount(lab.ravel(), weights=text[b].ravel() / 255.0, minlength=n)
        w = np.clip(np.sqrt(REF_CELLS / np.maximum(area, 1e-3)), 1.0, cap).astype(np.float32)
        w[0] = 1.0
        out[b] = cv2.dilate(w[lab], np.ones((3, 3), np.uint8))
    return out


PROBE_STEPS = 40


def train(data: dict, out_dir: Path, *, seed: int, epochs: int, batch: int = 16, lr: float = 3e-3,
          threads: int = 2, time_budget_s: float | None = None, max_steps: int | None = None,
          small_code_weight: float = 1.0) -> dict:
    """Train and write folded float weights (out_dir/weights.npz); returns a small summary.

    time_budget_s caps the wall time (the 60 min budget on a shared 2-core machine): after a
    few probe steps the number of steps is cut to what fits, and the cosine schedule is laid
    out over that; the summary records it (`steps`, `stopped_early`) so the run can be
    repeated bit for bit with max_steps.
    """
    tf = setup_tf(seed, threads)
    net = qmodel.build_keras(train=True)
    x_all, y_all = data["x"], data["y"]
    n = len(x_all)
    steps_per_epoch = max(1, n // batch)
    planned = steps_per_epoch * epochs
    total_steps = planned if max_steps is None else min(planned, max_steps)
    warm = min(200, max(1, total_steps // 10))
    opt = tf.keras.optimizers.Adam(learning_rate=lr * 0.1)
    lr_var = opt.learning_rate  # a variable in Keras 3: assigned every step from lr_at()
    loss_fn = _loss_fn(tf)

    def lr_at(i: int, total: int) -> float:
        if i < warm:
            return lr * (0.1 + 0.9 * i / warm)
        p = min(1.0, (i - warm) / max(1, total - warm))
        return lr * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * p)))

    @tf.function(reduce_retracing=True)
    def step(xb, yb, wb):
        xb = tf.cast(xb, tf.float32)[..., None] / 255.0
        yb = tf.cast(yb, tf.float32) / 255.0
        with tf.GradientTape() as tape:
            logits = net(xb, training=True)
            loss = loss_fn(yb, logits, wb)
        grads = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables))
        return loss

    rng = np.random.default_rng(seed)
    # Mirror images only where the letterboxed frame fills the input width, so the zero
    # padding stays at the bottom/right as at run time (a mirrored QR code is still one to find).
    hw = data.get("frame_hw")
    flippable = (np.ones(n, bool) if hw is None else
                 (hw[:, 1] * INPUT_H >= hw[:, 0] * INPUT_W))
    t0 = time.monotonic()
    history = []
    losses = []
    fitted = None
    i = 0
    while i < total_steps:
        if i % steps_per_epoch == 0:
            order = rng.permutation(n)
        s = i % steps_per_epoch
        idx = np.sort(order[s * batch : (s + 1) * batch])
        lr_var.assign(lr_at(i, total_steps))
        xb, yb = x_all[idx], y_all[idx]
        flip = flippable[idx] & (rng.random(len(idx)) < 0.5)
        if flip.any():
            xb, yb = xb.copy(), yb.copy()
            xb[flip] = xb[flip][:, :, ::-1]
            yb[flip] = yb[flip][:, :, ::-1]
        losses.append(float(step(xb, yb, cell_weights(yb[..., 0], small_code_weight))))
        i += 1
        if i == 5:
            t5 = time.monotonic()  # after tracing: the probe measures steady-state speed
        if time_budget_s is not None and i == PROBE_STEPS and fitted is None and total_steps > 2 * PROBE_STEPS:
            # Fit the schedule to the time budget once, early, from the measured speed: the
            # cosine then still anneals fully on a slow or shared machine, and the step
            # count is recorded so `--max-steps N` reproduces the run exactly.
            rate = (i - 5) / (time.monotonic() - t5)
            fitted = int(PROBE_STEPS + 0.92 * rate * (time_budget_s - (time.monotonic() - t0)))
            if fitted < total_steps:
                log.warning("time budget: %d of %d planned steps fit (%.2f steps/s)", fitted, total_steps, rate)
                total_steps = max(fitted, 2 * PROBE_STEPS)
        if i % steps_per_epoch == 0 or i == total_steps:
            history.append(float(np.mean(losses)))
            losses = []
            log.info("step %d/%d loss %.4f lr %.5f (%.0f s)", i, total_steps, history[-1],
                     float(lr_var.numpy()), time.monotonic() - t0)
    done = i
    stopped_early = total_steps < planned
    weights = qmodel.folded_weights(net)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "weights.npz", **{f"{k}/w": v[0] for k, v in weights.items()},
             **{f"{k}/b": v[1] for k, v in weights.items()})
    summary = {"epochs": epochs, "steps": done, "planned_steps": planned, "batch": batch, "lr": lr,
               "train_frames": n, "loss_history": history, "seconds": round(time.monotonic() - t0, 1),
               "stopped_early": stopped_early, "seed": seed, "small_code_weight": small_code_weight}
    (out_dir / "train.json").write_text(json.dumps(summary, indent=1))
    return summary


def load_weights(out_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with np.load(Path(out_dir) / "weights.npz") as z:
        names = sorted({k.split("/")[0] for k in z.files})
        return {n: (z[f"{n}/w"], z[f"{n}/b"]) for n in names}
