"""A synthetic conveyor: labels with QR codes ride a belt from left to right.

It is the runtime's `synthetic` source (the demo that needs no camera) and the
tracker's test bed, so it must run at 30 fps beside the reader on a small board: every
label is rendered (and blurred, and glared) once when it enters, and a frame is then
only a scroll of a pre-rendered belt plus a few small alpha blends.

Everything follows from (seed, frame index): label i enters at frame i * fps /
labels_per_s, carries payload b"LOT-%06d" % i and looks the same in every run.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge_runtime.synth import degrade
from edge_runtime.synth.qr import QUIET, draw_code, qr_matrix

_BASE_LABEL = (260, 190)  # label size (w, h) in px at 720p


class _Label:
    """One pre-rendered label: premultiplied BGR patch, 1 - alpha, code corners in the patch.

    Both are uint8 so a frame's blend is two saturating cv2 calls, no float round trip.
    """

    __slots__ = ("label_id", "payload", "fg", "inv", "corners", "y", "w", "h")

    def __init__(self, label_id: int, payload: bytes, fg: np.ndarray, alpha: np.ndarray, corners: np.ndarray, y: int):
        self.label_id = label_id
        self.payload = payload
        self.fg = np.clip(fg + 0.5, 0, 255).astype(np.uint8)  # HxWx3, premultiplied by alpha
        self.inv = np.clip((1.0 - alpha) * 255.0 + 0.5, 0, 255).astype(np.uint8)  # HxWx3
        self.corners = corners  # 4x2 in patch coordinates
        self.y = y
        self.h, self.w = alpha.shape[:2]


class SyntheticConveyor:
    """Frames of a moving belt with labels; `next_frame()` -> (BGR uint8, truths).

    Truths are the codes entirely inside the frame:
    {"payload": bytes, "corners": [[x, y] * 4] (clockwise from the code's top-left), "label_id": int}.
    With `degradations`, labels are motion-blurred along x in proportion to speed
    (a 0.15-frame exposure), some carry a specular glare, and the sensor adds noise.
    """

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        fps: float = 30.0,
        seed: int = 0,
        speed_px_s: float = 600.0,
        labels_per_s: float = 2.0,
        degradations: bool = True,
    ) -> None:
        if width < 64 or height < 64:
            raise ValueError("conveyor frames must be at least 64x64")
        if fps <= 0 or speed_px_s < 0 or labels_per_s < 0:
            raise ValueError("fps must be > 0, speed_px_s and labels_per_s >= 0")
        self.width, self.height = int(width), int(height)
        self.fps = float(fps)
        self.seed = int(seed)
        self.speed_px_s = float(speed_px_s)
        self.labels_per_s = float(labels_per_s)
        self.degradations = bool(degradations)
        self.frame_index = 0
        self.px_per_frame = self.speed_px_s / self.fps
        # Exposure of 1/7 of the frame time (~1/200 s at 30 fps): the smear a moving label
        # leaves, ~3 px at the default speed, about half a module -- mild, as a tuned line is.
        self.blur_px = self.px_per_frame * 0.15 if degradations else 0.0
        self.frames_per_label = self.fps / self.labels_per_s if self.labels_per_s > 0 else math.inf
        # A stopped belt (speed 0) shows one label standing in the middle: a still scene.
        self.stopped = self.px_per_frame == 0
        moving = self.labels_per_s > 0 and not self.stopped
        spacing = self.px_per_frame * self.frames_per_label if moving else self.width
        scale = min(self.height / 720.0 * 1.0, 0.85 * spacing / _BASE_LABEL[0], 0.9 * self.width / _BASE_LABEL[0])
        self._scale = max(scale, 0.2)
        self._belt = self._make_belt()
        self._labels: dict[int, _Label] = {}
        rng = np.random.default_rng([self.seed, 0xB17])
        self._noise = [self._make_noise(rng) for _ in range(4)] if degradations else []

    # --- rendering once ---------------------------------------------------------------

    def _make_belt(self) -> np.ndarray:
        """A belt texture periodic in x with period = frame width, so scrolling never seams."""
        h, w = self.height, self.width
        rng = np.random.default_rng([self.seed, 0xBE17])
        white = rng.standard_normal((h, w)).astype(np.float32)
        fy = np.fft.fftfreq(h)[:, None]
        fx = np.fft.fftfreq(w)[None, :]
        lowpass = np.exp(-((fx * 40) ** 2 + (fy * 40) ** 2))
        smooth = np.real(np.fft.ifft2(np.fft.fft2(white) * lowpass)).astype(np.float32)
        smooth /= max(float(np.abs(smooth).max()), 1e-6)
        g = 52 + 14 * smooth + rng.standard_normal((h, w)).astype(np.float32) * 3.0
        # Belt splices: darker vertical seams that scroll with the belt.
        for x in range(w // 3, w, max(w // 2, 1)):
            g[:, x : x + 3] -= 12
        belt = np.repeat(np.clip(g, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        if self.blur_px > 1.0:
            k = degrade.motion_kernel(self.blur_px)
            r = k.shape[1]  # wrap-pad so the blurred belt stays periodic
            wrapped = np.pad(belt, ((0, 0), (r, r), (0, 0)), mode="wrap")
            belt = cv2.filter2D(wrapped, -1, k, borderType=cv2.BORDER_REFLECT)[:, r:-r]
        # Two periods side by side: any scroll offset is then one contiguous slice.
        return np.ascontiguousarray(np.concatenate([belt, belt], axis=1))

    def _make_noise(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        n = rng.normal(0, 2.5, (self.height, self.width, 1)).astype(np.float32)
        n = np.repeat(n, 3, axis=2)
        pos = np.clip(n, 0, 255).astype(np.uint8)
        neg = np.clip(-n, 0, 255).astype(np.uint8)
        return pos, neg

    def _label(self, i: int) -> _Label:
        lab = self._labels.get(i)
        if lab is None:
            lab = self._labels[i] = self._render_label(i)
        return lab

    def _render_label(self, i: int) -> _Label:
        rng = np.random.default_rng([self.seed, i])
        s = self._scale
        lw, lh = int(round(_BASE_LABEL[0] * s)), int(round(_BASE_LABEL[1] * s))
        payload = f"LOT-{i:06d}".encode()
        matrix = qr_matrix(payload, error=str(rng.choice(["m", "q"])))
        n = matrix.shape[0]
        paper = float(rng.uniform(215, 245))
        canvas = np.full((lh, lw, 3), paper, np.uint8)
        # Code on the left, text on the right, like a shipping label.
        module = max((lh - 2 * 10 * s) / (n + 2 * QUIET) * 1.05, 1.5) * float(rng.uniform(0.85, 1.0))
        side = n * module
        x0 = QUIET * module * 0.6 + 4 * s
        y0 = (lh - side) / 2
        quad = np.array([[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]])
        draw_code(canvas, matrix, quad, ink=float(rng.uniform(15, 40)), paper=paper)
        tx = int(x0 + side + QUIET * module * 0.5)
        fs = 0.5 * s
        ink = (30, 30, 30)
        for k, line in enumerate((f"LOT {i:06d}", f"QTY {int(rng.integers(1, 99))}", "2026-11-25", "LINE 3")):
            cv2.putText(canvas, line, (tx, int((26 + 30 * k) * s)), cv2.FONT_HERSHEY_SIMPLEX, fs, ink, 1, cv2.LINE_AA)
        if self.degradations and rng.random() < 0.25:
            # Glare on the data half of the code: lowers contrast there, spares the finders.
            c = (x0 + side * float(rng.uniform(0.55, 0.8)), y0 + side * float(rng.uniform(0.55, 0.8)))
            canvas = degrade.glare(canvas, c, (side * 0.22, side * 0.12), float(rng.uniform(0, 180)), float(rng.uniform(0.4, 0.8)))
        # Tilt the label a little on the belt, with a margin so the rotation is not clipped.
        ang = float(rng.uniform(-6, 6))
        pad = int(math.ceil(0.5 * (math.hypot(lw, lh) - min(lw, lh)))) + 2
        big = cv2.copyMakeBorder(canvas, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        alpha = np.zeros(big.shape[:2], np.float32)
        alpha[pad : pad + lh, pad : pad + lw] = 1.0
        ph, pw = big.shape[:2]
        M = cv2.getRotationMatrix2D((pw / 2.0, ph / 2.0), ang, 1.0)
        fg = cv2.warpAffine(big.astype(np.float32) * alpha[..., None], M, (pw, ph), flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(alpha, M, (pw, ph), flags=cv2.INTER_LINEAR)
        corners = cv2.transform((quad + pad).reshape(-1, 1, 2), M).reshape(-1, 2)
        if self.blur_px > 1.0:
            k = degrade.motion_kernel(self.blur_px)
            fg = cv2.filter2D(fg, -1, k, borderType=cv2.BORDER_CONSTANT)
            alpha = cv2.filter2D(alpha, -1, k, borderType=cv2.BORDER_CONSTANT)
        alpha3 = np.repeat(np.clip(alpha, 0, 1)[..., None], 3, axis=2)
        y = int(rng.integers(0, max(self.height - ph, 0) + 1)) if ph < self.height else (self.height - ph) // 2
        return _Label(i, payload, fg, alpha3, corners, y)

    # --- per frame --------------------------------------------------------------------

    def _visible_ids(self, f: int) -> range:
        if self.stopped:
            return range(0, 1)
        if not math.isfinite(self.frames_per_label):
            return range(0)
        # Label i's left edge: x = -w + (f - i * fpl) * v; visible while -w < x < width.
        wmax = _BASE_LABEL[0] * self._scale * 1.5 + 8
        v = max(self.px_per_frame, 1e-9)
        i_hi = math.floor(f / self.frames_per_label)
        i_lo = math.ceil((f - (self.width + 2 * wmax) / v) / self.frames_per_label)
        return range(max(i_lo, 0), i_hi + 1)

    def label_x(self, label_id: int, frame_index: int) -> int:
        """Left edge of a label's patch (px, may be negative) at `frame_index`."""
        lab = self._label(label_id)
        if self.stopped:
            return (self.width - lab.w) // 2
        entered = label_id * self.frames_per_label
        return int(round(-lab.w + (frame_index - entered) * self.px_per_frame))

    def frame_at(self, f: int) -> tuple[np.ndarray, list[dict]]:
        """Frame `f` (any index, no state): what next_frame() returns at that point."""
        P = self.width
        off = int(round(f * self.px_per_frame)) % P
        # frame[x] = belt[(x - off) mod P]: the belt moves right with the labels.
        start = (P - off) % P
        frame = self._belt[:, start : start + P].copy()
        truths = []
        ids = self._visible_ids(f)
        for i in ids:
            lab = self._label(i)
            x = self.label_x(i, f)
            if x >= self.width or x + lab.w <= 0:
                continue
            self._blend(frame, lab, x)
            c = lab.corners + np.array([x, lab.y])
            if c[:, 0].min() >= 0 and c[:, 0].max() <= self.width - 1 and c[:, 1].min() >= 0 and c[:, 1].max() <= self.height - 1:
                truths.append(
                    {"payload": lab.payload, "corners": [[round(float(a), 2), round(float(b), 2)] for a, b in c], "label_id": i}
                )
        for i in [k for k in self._labels if k < (ids.start if len(ids) else k + 1)]:
            del self._labels[i]  # passed the camera: free it
        if self._noise:
            pos, neg = self._noise[f % len(self._noise)]
            cv2.add(frame, pos, dst=frame)
            cv2.subtract(frame, neg, dst=frame)
        return frame, truths

    def _blend(self, frame: np.ndarray, lab: _Label, x: int) -> None:
        fx0, fx1 = max(x, 0), min(x + lab.w, self.width)
        fy0, fy1 = max(lab.y, 0), min(lab.y + lab.h, self.height)
        if fx1 <= fx0 or fy1 <= fy0:
            return
        px0, py0 = fx0 - x, fy0 - lab.y
        sl = (slice(py0, py0 + fy1 - fy0), slice(px0, px0 + fx1 - fx0))
        roi = frame[fy0:fy1, fx0:fx1]
        out = cv2.multiply(roi, lab.inv[sl], scale=1.0 / 255.0)
        roi[...] = cv2.add(out, lab.fg[sl])

    def next_frame(self) -> tuple[np.ndarray, list[dict]]:
        frame = self.frame_at(self.frame_index)
        self.frame_index += 1
        return frame
