"""The reader: enhance + detect + decode, usable without the service.

`Reader().read(frame)` returns every code it can find, trying the cheap thing first
(zxing-cpp on the whole frame, ~1 ms) and spending more only when that read nothing:
other binarizers, contrast and upscaling retries, then OpenCV and ZBar, each an
independent finder search that reads codes the others miss. Retries stop at the frame
deadline so one hard frame never makes the line late.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import numpy as np

from edge_runtime import decode as decoders
from edge_runtime import detect as detectors
from edge_runtime import roi
from edge_runtime.code import Code
from edge_runtime.enhance import deblur, glare, ops

log = logging.getLogger(__name__)

# Above this many pixels upscaling the whole frame costs more than it finds: codes in
# such frames are already many pixels per module.
_UPSCALE_MAX_PIXELS = 1_400_000
# OpenCV and ZBar slow down sharply on phone-camera frames; a copy at this size
# keeps them near 30 ms and codes in such photos are large.
_FALLBACK_MAX_SIDE = 1600
# An attempt never measured is run anyway, once, after being skipped this many times: see
# Reader._timed.
_PROBE_AFTER_SKIPS = 8


class Reader:
    """Read QR codes from frames.

    Options (keywords, all optional):
      decoders     backends to use, in order (default zxing, opencv, zbar; missing ones skipped)
      detector     auto | tflite | ncnn | none: the INT8 model that finds codes (auto: if shipped)
      deadline_ms  stop retrying after this long per frame (None: try everything)
      retries      False to do one zxing-cpp pass only
      blur_angle   direction of motion blur in degrees (0 = along x, the conveyor), None = estimate
      blur_lengths smear lengths in px to try first (e.g. speed x exposure), estimated when empty
      noread_score a detection this confident that nothing could read becomes a noread
      model        detector model version ("" = the newest that passes its checks)
      keep         the running detector, kept if the wanted model version is refused (reload)
    """

    def __init__(
        self,
        decoders_: Iterable[str] = ("zxing", "opencv", "zbar"),
        *,
        detector: str = "auto",
        deadline_ms: float | None = None,
        retries: bool = True,
        blur_angle: float | None = None,
        blur_lengths: Iterable[float] = (),
        noread_score: float = 0.6,
        **detector_options,
    ) -> None:
        loaded = {n: decoders.load(n) for n in decoders_}
        self.decoders = {n: d for n, d in loaded.items() if d is not None}
        if not self.decoders:
            raise RuntimeError("no decoder backend could be loaded (install zxing-cpp, opencv or libzbar0)")
        # A model version that passes its sha256 check and self-test; which one and why
        # another was refused is reported (service status, `edge-runtime models`).
        choice = detectors.choose(detector, **detector_options)
        self.detector = choice.detector
        self.model_version: str | None = choice.version
        self.model_fallback: str | None = choice.fallback
        self.deadline_ms = deadline_ms
        self.retries = retries
        self.blur_angle = blur_angle
        self.blur_lengths = [float(x) for x in blur_lengths]
        self.noread_score = noread_score
        self._cost: dict = {}  # attempt -> ms it usually takes here (for the deadline)
        self._unmeasured_skips: dict = {}  # attempt -> times skipped before it was ever measured

    @property
    def available(self) -> list[str]:
        return list(self.decoders)

    def read(self, frame: np.ndarray, *, noreads: bool = False) -> list[Code]:
        """Codes in `frame` (BGR or gray uint8). With `noreads`, also one Code of
        kind "noread" per detected code that nothing could read (needs a detector)."""
        t0 = time.perf_counter()
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:  # checked before cvtColor, which fails with a C++ assertion instead
            raise ValueError(f"frame must be uint8, got {frame.dtype}")
        gray = ops.to_gray(frame)
        if gray.size == 0:
            return []
        found: list[Code] = []
        primary = next(iter(self.decoders))
        _merge(found, self._run(primary, gray), "direct")
        missed: list = []
        if self.detector is not None:
            dets = self.detector.detect(gray)
            missed = [d for d in dets if not any(roi.contains(d.corners, c.center) for c in found)]
            for det in sorted(missed, key=lambda d: -d.score):
                if self._late(t0):
                    break
                _merge(found, self._read_roi(gray, det, t0), None)
            missed = [d for d in missed if not any(roi.contains(d.corners, c.center) for c in found)]
        if not found and self.retries:
            # Nothing read at all (the detector, if any, missed it or its ROIs failed):
            # the whole-frame cascade, so a detector never makes the reader read less.
            for key, (stage, attempt) in enumerate(self._attempts(gray)):
                codes = self._timed(("frame", gray.shape, key), attempt, t0)
                if codes is None:
                    continue
                _merge(found, codes, stage)
                if found:
                    break
        elapsed = (time.perf_counter() - t0) * 1000.0
        for c in found:
            c.elapsed_ms = elapsed
        if noreads:
            for d in missed:
                if d.score >= self.noread_score and not any(roi.contains(d.corners, c.center) for c in found):
                    found.append(Code(text="", raw=b"", corners=list(d.corners), stage="noread", kind="noread", elapsed_ms=elapsed))
        return found

    def _read_roi(self, gray: np.ndarray, det, t0: float) -> list[Code]:
        """Decode one detected code: rectified full-resolution crop, then enhancements in
        the order of their expected benefit, until one reads or the deadline passes."""
        crop, h_inv = roi.rectify(gray, det.corners)
        for key, (stage, name, make) in enumerate(self._roi_attempts(crop)):
            dec = self.decoders.get(name)
            if dec is None:
                continue
            codes = self._timed(("roi", key), lambda: dec.decode(make(), fast=True), t0)
            if codes:
                for c in codes:
                    c.corners = roi.map_points(h_inv, c.corners)
                    c.stage = stage
                return codes
        return []

    def _roi_attempts(self, crop: np.ndarray):
        z = "zxing"
        yield "roi", z, lambda: crop
        yield "enhanced", z, lambda: ops.stretch(crop)
        yield "enhanced", z, lambda: ops.local_normalize(crop)
        yield "enhanced", z, lambda: glare.suppress(crop)
        yield "fallback", "zbar", lambda: crop
        yield "enhanced", z, lambda: ops.clahe(crop)
        yield "enhanced", z, lambda: ops.sharpen(crop, amount=2.0)
        angle = self.blur_angle if self.blur_angle is not None else deblur.blur_direction(crop)
        lengths = list(self.blur_lengths)
        est = deblur.blur_length(crop, angle)
        if est is not None:
            lengths.append(est)
        for extra in (6.0, 9.0, 12.0, 4.0, 15.0):
            if all(abs(extra - x) > 1.5 for x in lengths):
                lengths.append(extra)
        for n in lengths:
            yield "enhanced", z, lambda n=n: deblur.wiener(crop, n, angle)
        yield "fallback", "opencv", lambda: crop

    def _timed(self, key, attempt, t0: float):
        """Run `attempt` unless its usual cost would overrun the deadline (None = skipped).

        Checking only whether the deadline has passed would let a 60 ms OpenCV pass start
        at 30 ms and finish far too late; each attempt's cost is learned as it runs (per
        frame size). An attempt not yet measured is assumed to take half the budget, so
        it is first tried on a frame where the earlier work was quick. On a slow CPU no frame
        is that quick (a 16 ms detector and a 4 ms first pass leave 13 of 33 ms), and an
        attempt that is never run is never measured: after a few skips it is run once where
        the frame still has time left, and from then on its measured cost decides."""
        if self.deadline_ms is not None:
            spent = (time.perf_counter() - t0) * 1000.0
            cost = self._cost.get(key)
            if spent + (0.5 * self.deadline_ms if cost is None else cost) > self.deadline_ms:
                if cost is not None or spent >= self.deadline_ms:
                    return None
                skips = self._unmeasured_skips.get(key, 0)
                if skips < _PROBE_AFTER_SKIPS:
                    self._unmeasured_skips[key] = skips + 1
                    return None
        a = time.perf_counter()
        codes = attempt()
        ms = (time.perf_counter() - a) * 1000.0
        # A slowly decaying maximum: spikes are remembered (they are what overruns a
        # deadline) and forgotten over a few dozen frames.
        self._cost[key] = max(ms, 0.95 * self._cost.get(key, 0.0))
        return codes

    def _late(self, t0: float) -> bool:
        return self.deadline_ms is not None and (time.perf_counter() - t0) * 1000.0 >= self.deadline_ms

    def _run(self, name: str, gray: np.ndarray, scale: float = 1.0, **kw) -> list[Code]:
        dec = self.decoders.get(name)
        if dec is None:
            return []
        codes = dec.decode(gray, **kw)
        if scale != 1.0:
            for c in codes:
                c.corners = [(x / scale, y / scale) for x, y in c.corners]
        return codes

    def _attempts(self, gray: np.ndarray) -> Iterable[tuple[str, Callable[[], list[Code]]]]:
        """Whole-frame retries, best rescues per millisecond first (measured on the bench
        frames zxing-cpp alone misses: a second binarizer ~1 ms, 2x upscale ~9 ms, strong
        unsharp mask ~8 ms, CLAHE, contrast stretch, illumination normalisation; then the
        independent finders of ZBar (~40 ms) and OpenCV (~45 ms), then ZBar upscaled)."""
        z = "zxing"
        small_frame = gray.size <= _UPSCALE_MAX_PIXELS
        if z in self.decoders:
            yield "enhanced", lambda: self._run(z, gray, binarizer="GlobalHistogram")
            if small_frame:
                yield "enhanced", lambda: self._run(z, ops.upscale(gray, 2.0), 2.0, fast=True)
            yield "enhanced", lambda: self._run(z, ops.sharpen(gray, amount=2.0))
        if "zbar" in self.decoders and small_frame and min(gray.shape) >= 64:
            # ZBar's scanlines see through glare that breaks zxing's binarizer; at half
            # resolution it costs ~5 ms instead of ~22 and keeps most of those rescues.
            yield "fallback", lambda: self._run("zbar", _half(gray), 0.5)
        if z in self.decoders:
            yield "enhanced", lambda: self._run(z, ops.clahe(gray))
            yield "enhanced", lambda: self._run(z, ops.stretch(gray))
            yield "enhanced", lambda: self._run(z, ops.local_normalize(gray))
        small, s = _shrink(gray, _FALLBACK_MAX_SIDE)
        for name in ("zbar", "opencv"):
            if name in self.decoders:
                yield "fallback", lambda name=name: self._run(name, small, s)
        if "zbar" in self.decoders and small_frame:
            yield "fallback", lambda: self._run("zbar", ops.upscale(gray, 2.0), 2.0)
        if "zbar" in self.decoders and s != 1.0:
            yield "fallback", lambda: self._run("zbar", gray)


def _half(gray: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(gray, (gray.shape[1] // 2, gray.shape[0] // 2), interpolation=cv2.INTER_AREA)


def _shrink(gray: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    side = max(gray.shape)
    if side <= max_side:
        return gray, 1.0
    s = max_side / side
    import cv2

    # Explicit size, at least 1 px: a 1x5000 line-scan frame would round to 0 rows and assert.
    return cv2.resize(gray, (max(1, round(gray.shape[1] * s)), max(1, round(gray.shape[0] * s))), interpolation=cv2.INTER_AREA), s


def _merge(found: list[Code], new: list[Code], stage: str | None) -> None:
    """Add codes not already found: the same payload at the same place is one code."""
    for c in new:
        if any(c.raw == f.raw and _near(c, f) for f in found):
            continue
        if stage is not None:
            c.stage = stage
        found.append(c)


def _near(a: Code, b: Code) -> bool:
    (ax, ay), (bx, by) = a.center, b.center
    size = max(_span(a), _span(b), 1.0)
    return abs(ax - bx) < size and abs(ay - by) < size


def _span(c: Code) -> float:
    if not c.corners:
        return 0.0
    xs = [p[0] for p in c.corners]
    return max(xs) - min(xs)
