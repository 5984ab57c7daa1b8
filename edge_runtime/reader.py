"""The reader: enhance + detect + decode, usable without the service.

`Reader().read(frame)` returns every code it can find, trying the cheap thing first
(zxing-cpp on the whole frame, ~1 ms) and spending more only when that read nothing:
per detected code, enhancements, blind deblurring and an erasure decoder on the rectified
crop; on the whole frame, other binarizers, contrast and upscaling retries, then OpenCV
and ZBar, each an independent finder search that reads codes the others miss. Retries
stop at the frame deadline (`budget`) so one hard frame never makes the line late, and
run on the board's other cores too.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from edge_runtime import decode as decoders
from edge_runtime import detect as detectors
from edge_runtime import roi
from edge_runtime.budget import Attempt, Budget, Follow, FrameWork
from edge_runtime.code import Code
from edge_runtime.enhance import deblur, glare, ops, psf

try:  # the erasure decoder (issue 14 item 4); the reader works without it
    from edge_runtime.decode.grid import GridDecoder
except ImportError:  # pragma: no cover - only while that module is absent
    GridDecoder = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

# Above this many pixels upscaling the whole frame costs more than it finds: codes in
# such frames are already many pixels per module.
_UPSCALE_MAX_PIXELS = 1_400_000
# OpenCV and ZBar slow down sharply on phone-camera frames; a copy at this size
# keeps them near 30 ms and codes in such photos are large.
_FALLBACK_MAX_SIDE = 1600
# Crop sides are learned in steps of this many px: a 480 px crop costs ~9x a 160 px one,
# and one key for both would either skip small crops' retries or overrun on large ones.
_SIDE_STEP = 80
_WIDE_MARGIN = 0.5  # the second crop's margin around a detected quad, as a fraction of its side
_VIDEO_RESTS = 2  # frames the detector skips after one where everything it found was read
_DEFOCUS_SIGMAS = (3.0, 2.0)  # px in the rectified crop (160-480 px): 2-3 px of defocus on 3-8 px modules
_SWITCH_INTERVAL_S = 0.001


def default_workers() -> int:
    """Worker threads besides the caller's: one per other core the process may use (at
    least one, so a never-measured attempt is tried off the frame's critical path)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


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
      workers      threads besides the caller's for the detector and retries (default: one
                   per other core; 0 = everything on the calling thread)
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
        workers: int | None = None,
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
        self.budget = Budget(deadline_ms, prior=_scaled_cost)
        self.retries = retries
        self.blur_angle = blur_angle
        self.blur_lengths = [float(x) for x in blur_lengths]
        self.noread_score = noread_score
        self.workers = default_workers() if workers is None else max(0, int(workers))
        self._pool: ThreadPoolExecutor | None = None
        self.grid = GridDecoder() if GridDecoder is not None else None
        # cv2.QRCodeDetector objects are not re-entrant: one OpenCV attempt at a time.
        self._locks = {"opencv": threading.Lock()}
        # video: frames the model may still skip: everything it last found was read
        self._rests_left = 0
        # video: frames in a row whose detections were not used (rested, over budget, late)
        self._undetected = 0
        self._video_frames = 0

    @property
    def deadline_ms(self) -> float | None:
        return self.budget.deadline_ms

    @property
    def available(self) -> list[str]:
        return list(self.decoders)

    def close(self) -> None:
        """Stop the worker threads (they also end when the Reader is garbage-collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _executor(self) -> ThreadPoolExecutor | None:
        if self.workers and self._pool is None:
            # A thread waiting for the GIL gets it after at most this interval; Python's
            # default 5 ms is a third of a 16 ms frame, and a worker in a numpy-light
            # stretch of Python (grid sampling, the blur estimate) would hold the caller
            # past its deadline. Process-wide, so only ever lowered.
            sys.setswitchinterval(min(sys.getswitchinterval(), _SWITCH_INTERVAL_S))
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="reader")
        return self._pool

    def read(self, frame: np.ndarray, *, noreads: bool = False, video: bool = False,
             skip: Iterable = (), wake: bool = False) -> list[Code]:
        """Codes in `frame` (BGR or gray uint8). With `noreads`, also one Code of
        kind "noread" per detected code that nothing could read (needs a detector).

        `video`: the frame follows the previous one in a stream (the service's capture loop),
        which makes three savings safe that are not for unrelated images:
        - the detector rests two frames of three while everything it found was read (a
          label in view for 3 frames is still seen by it at least once); `wake` ends a rest
          (the caller has a label due for a retry in this frame);
        - after two frames in a row without its detections (rested, or too slow for what
          was left of the frame: a stall, another process on the core), the detector's
          result is waited for whatever the deadline: a label in view for 3 frames is
          always seen by it, so it leaves a read or a noread, never silence. Idle, the
          model fits in the frame and this never overruns;
        - a detected code cut by the frame's edge gets no retries: it will be whole in a
          later frame (it is still returned as a noread detection, so it stays tracked);
        - the direct pass looks for light-on-dark codes every other frame only (a detected
          code's first retry, zxing-cpp on its crop, still looks for them every frame);
        - `skip`: quads the caller needs nothing on in this frame (where labels already read
          are expected, or a hard label resting between tries): their detections get no
          retries and are not returned."""
        t0 = time.perf_counter()
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:  # checked before cvtColor, which fails with a C++ assertion instead
            raise ValueError(f"frame must be uint8, got {frame.dtype}")
        gray = ops.to_gray(frame)
        if gray.size == 0:
            return []
        pool, b = self._executor(), self.budget
        found: list[Code] = []
        dkey = ("detect", gray.shape)
        pending = None
        skip = [q for q in skip if len(q) >= 3] if video else []
        must = video and self._undetected >= 2
        rest = video and self._rests_left > 0 and not must and not wake
        self._rests_left = self._rests_left - 1 if rest else 0
        detect = self.detector is not None and not rest
        if detect and pool is not None:
            # One slow call (another process took the core) must not switch the detector off
            # for good: a cost too high for the frame is measured again every few seconds, as
            # the retries' are, or its labels would leave no noread, only silence.
            fresh = b.stale(dkey, t0)
            if fresh or must or b.allows(dkey, t0, thread="worker"):
                # The model runs beside the direct pass: both release the GIL.
                pending = pool.submit(b.timed, dkey, lambda: self.detector.detect(gray), fresh=fresh)
        primary = next(iter(self.decoders))
        kw = {}
        if video:
            self._video_frames += 1
            if primary == "zxing" and self._video_frames % 2:
                kw["invert"] = False
        # The direct pass always runs: it is the floor the reader never reads below.
        _merge(found, b.timed(("direct", gray.shape), lambda: self._run(primary, gray, **kw)), "direct")
        missed: list = []
        crops: list = []
        cut: list = []
        if detect:
            dets = self._detections(pending, gray, t0, must)
            self._undetected = 0 if dets is not None else self._undetected + 1
            dets = dets or []
            missed = [d for d in dets if not any(roi.contains(d.corners, c.center) for c in found)
                      and not any(roi.contains(q, _centre(d.corners)) for q in skip)]
            if video:
                edge = [roi.cut_by_edge(d.corners, gray.shape) for d in missed]
                cut = [d for d, e in zip(missed, edge) if e]
                missed = [d for d, e in zip(missed, edge) if not e]
                # A code cut by the edge cannot be read yet either: it rests too (it is whole
                # for dozens of frames after, each other one of them detected).
                self._rests_left = 0 if missed else _VIDEO_RESTS
            missed.sort(key=lambda d: -d.score)
            crops = [roi.rectify(gray, d.corners) for d in missed]
        elif video and self.detector is not None:
            self._undetected += 1
        groups = [list(self._roi_attempts(crop, h_inv, d.corners, gray)) for (crop, h_inv), d in zip(crops, missed)]
        fallback = []
        if not found and self.retries:
            # Nothing read at all: the whole-frame cascade too, so a detector never makes
            # the reader read less. It shares the budget with the ROIs and is dropped as
            # soon as one of them reads.
            fallback = [len(groups)]
            groups.append(list(self._attempts(gray)))
        for g, (a, codes) in sorted(FrameWork(b, t0, groups, fallback).run(pool, self.workers).items()):
            if g < len(crops):
                for c in codes:
                    c.corners = roi.map_points(crops[g][1], c.corners)
            _merge(found, codes, a.stage)
        missed = [d for d in missed + cut if not any(roi.contains(d.corners, c.center) for c in found)]
        elapsed = (time.perf_counter() - t0) * 1000.0
        for c in found:
            c.elapsed_ms = elapsed
        if noreads:
            for d in missed:
                if d.score >= self.noread_score and not any(roi.contains(d.corners, c.center) for c in found):
                    found.append(Code(text="", raw=b"", corners=list(d.corners), stage="noread", kind="noread", elapsed_ms=elapsed))
        return found

    def _detections(self, pending, gray: np.ndarray, t0: float, must: bool) -> list | None:
        """The detector's quads, or None if they would come after the deadline (the late
        result is dropped; the model's own lock keeps the next frame's call behind it).
        `must`: waited for, deadline or not."""
        b, key = self.budget, ("detect", gray.shape)
        if pending is None:
            # Without a worker the re-measurement costs this frame its deadline, once every
            # few seconds: better than a detector that never runs again.
            fresh = self.workers == 0 and b.stale(key, t0)
            if fresh or must or b.allows(key, t0):
                return b.timed(key, lambda: self.detector.detect(gray), fresh=fresh)
            return None
        left = b.remaining(t0)
        try:
            return pending.result(timeout=None if must or left == float("inf") else max(0.0, left) / 1000.0)
        except FutureTimeout:
            return None

    def _roi_attempts(self, crop: np.ndarray, h_inv: np.ndarray, quad, gray: np.ndarray) -> Iterator[Attempt]:
        """One detected code's attempts, in the order of their expected benefit; each key
        names what it does and the crop size, which is what its cost depends on."""
        side = -(-crop.shape[0] // _SIDE_STEP) * _SIDE_STEP

        def zx(name: str, stage: str, make: Callable[[], np.ndarray]) -> Attempt:
            return Attempt((name, side), lambda: self._run("zxing", make(), fast=True), stage)

        def restored(name: str, make: Callable[[], np.ndarray]) -> Attempt:
            # A deconvolved crop keeps some ringing and noise that zxing-cpp's binarizer
            # trips on and ZBar's scanlines ride over: on the foreign-photos bench ZBar read
            # 11 of 14 deblurred crops that read at all, zxing-cpp 5.
            def run() -> list[Code]:
                img = make()
                codes = self._run("zxing", img, fast=True)
                return codes or (self._run("zbar", img) if "zbar" in self.decoders else [])
            return Attempt((name, side), run, "enhanced")

        # The detector's quad is an upright box that can sit off a tilted or glared code by
        # a sixth of its size, cutting a finder's quiet zone: a crop with twice the margin
        # reads such codes for ~0.5 ms (on the bench: 3 of the 5 codes a 16 ms deadline
        # missed). Cut once, on first use, by whichever thread gets there.
        wide: list = []
        wide_side = -(-int(np.clip(roi.quad_side(quad) * (1 + 2 * _WIDE_MARGIN), 160, 480)) // _SIDE_STEP) * _SIDE_STEP

        def on_wide(name: str, read: Callable[[np.ndarray], list[Code]]) -> Attempt:
            def run() -> list[Code]:
                if not wide:
                    wcrop, wh_inv = roi.rectify(gray, quad, margin=_WIDE_MARGIN)
                    # wide crop -> frame -> crop: the caller maps corners from `crop`
                    wide.append((wcrop, np.linalg.inv(h_inv) @ wh_inv))
                wcrop, to_crop = wide[0]
                codes = read(wcrop)
                for c in codes:
                    c.corners = roi.map_points(to_crop, c.corners)
                return codes
            return Attempt((name, wide_side), run, "roi")

        def zx_wide(name: str, make: Callable[[np.ndarray], np.ndarray]) -> Attempt:
            return on_wide(name, lambda w: self._run("zxing", make(w), fast=True))

        def grid_at_zxing_corners(w: np.ndarray) -> list[Code]:
            # zxing-cpp finds the finders of a glared code it cannot decode; its corners are
            # what the erasure decoder needs (the detector's box is too rough for sampling).
            for q in self.decoders["zxing"].failed_quads(w):
                codes = self.grid.decode(w, fast=True, quad=q)
                if codes:
                    return codes
            return []

        if "zxing" in self.decoders:
            yield zx("zxing", "roi", lambda: crop)
            yield zx_wide("wide", lambda c: c)
            yield zx("stretch", "enhanced", lambda: ops.stretch(crop))
            yield zx("normalize", "enhanced", lambda: ops.local_normalize(crop))
        if "zbar" in self.decoders:
            # ZBar's scanlines read glared codes zxing's binarizer breaks on, for 1-3 ms:
            # before the slower glare suppression and erasure decoding.
            yield Attempt(("zbar", side), lambda: self._run("zbar", crop), "fallback")
        if "zxing" in self.decoders:
            yield zx_wide("wide-sharpen", lambda c: ops.sharpen(c, amount=2.0))
            yield zx("glare", "enhanced", lambda: glare.suppress(crop))
        if self.grid is not None and "zxing" in self.decoders:
            yield on_wide("grid-zx", grid_at_zxing_corners)
        if self.grid is not None:
            # Reed-Solomon with erasures reads blotted and scratched codes whose finders
            # the others still see but whose modules they cannot all trust.
            inner = roi.map_points(np.linalg.inv(h_inv), quad)
            yield Attempt(("grid", side), lambda: self.grid.decode(crop, fast=True, quad=inner), "roi")
        if "zxing" in self.decoders:
            yield zx("clahe", "enhanced", lambda: ops.clahe(crop))
            yield zx("sharpen", "enhanced", lambda: ops.sharpen(crop, amount=2.0))
            # The blur estimate is its own step (a few ms of FFTs); its candidates follow it,
            # each undone in linear light (a camera's smear) and then on the stored values
            # (a smear added after the tone curve).
            yield Attempt(("psf", side), lambda: Follow([restored("wiener", lambda n=n, a=a, g=g, lp=lp: deblur.wiener(crop, n, a, gamma=g, lowpass=lp))
                                                        for n, a in self._blur_candidates(crop, h_inv)
                                                        for g, lp in ((2.2, 0.1), (1.0, 0.2))]))
            # Defocus: no estimate of its own (a gaussian's spectrum has no zeros to find);
            # the two widths that read the foreign-photos bench's defocused codes, in crop px.
            for sigma in _DEFOCUS_SIGMAS:
                yield restored("defocus", lambda s=sigma: deblur.defocus(crop, s))
        if "opencv" in self.decoders:
            yield Attempt(("opencv", side), lambda: self._exclusive("opencv", crop), "fallback")

    def _blur_candidates(self, crop: np.ndarray, h_inv: np.ndarray) -> list[tuple[float, float]]:
        """(length, angle) smears to undo, in crop coordinates: the configured belt
        direction and speed x exposure (frame px) mapped through the rectifying warp."""
        centre = ((crop.shape[1] - 1) / 2.0, (crop.shape[0] - 1) / 2.0)
        angle = None
        if self.blur_angle is not None:
            angle = psf.frame_to_crop(h_inv, centre, 10.0, self.blur_angle)[1]
        # The warp scales every direction about alike; without a belt angle, x is as good as any.
        lengths = [psf.frame_to_crop(h_inv, centre, n, self.blur_angle or 0.0)[0] for n in self.blur_lengths]
        return psf.deblur_candidates(crop, angle_hint=angle, length_hints=lengths)

    def _exclusive(self, name: str, gray: np.ndarray, scale: float = 1.0) -> list[Code]:
        """Run a backend that is not re-entrant, or skip it if another thread is in it."""
        lock = self._locks[name]
        if not lock.acquire(blocking=False):  # waiting could overrun the deadline
            return []
        try:
            return self._run(name, gray, scale)
        finally:
            lock.release()

    def _run(self, name: str, gray: np.ndarray, scale: float = 1.0, **kw) -> list[Code]:
        dec = self.decoders.get(name)
        if dec is None:
            return []
        codes = dec.decode(gray, **kw)
        if scale != 1.0:
            for c in codes:
                c.corners = [(x / scale, y / scale) for x, y in c.corners]
        return codes

    def _attempts(self, gray: np.ndarray) -> Iterator[Attempt]:
        """Whole-frame retries, best rescues per millisecond first (measured on the bench
        frames zxing-cpp alone misses: a second binarizer ~1 ms, 2x upscale ~9 ms, strong
        unsharp mask ~8 ms, CLAHE, contrast stretch, illumination normalisation; then the
        independent finders of ZBar (~40 ms) and OpenCV (~45 ms), then ZBar upscaled).
        The big ones are single calls: the budget skips them when their learned cost does
        not fit, which on a 16 ms deadline is always, and a worker measures them once."""
        z, shape = "zxing", gray.shape

        def at(name: str, stage: str, run: Callable[[], list[Code]]) -> Attempt:
            return Attempt(("frame", name, shape), run, stage)

        small_frame = gray.size <= _UPSCALE_MAX_PIXELS
        if z in self.decoders:
            yield at("global", "enhanced", lambda: self._run(z, gray, binarizer="GlobalHistogram"))
            if small_frame:
                # In tiles: one 2x pass over the frame costs ~10 ms and cannot be stopped,
                # a tile ~3 ms, so the budget can fit some and the workers share them.
                for y, x, tile in _tiles(gray):
                    yield Attempt(("frame", "upscale-tile", tile.shape),
                                  lambda y=y, x=x, tile=tile: _shifted(self._run(z, ops.upscale(tile, 2.0), 2.0, fast=True), x, y),
                                  "enhanced")
            yield at("sharpen", "enhanced", lambda: self._run(z, ops.sharpen(gray, amount=2.0)))
        if "zbar" in self.decoders and small_frame and min(gray.shape) >= 64:
            # ZBar's scanlines see through glare that breaks zxing's binarizer; at half
            # resolution it costs ~5 ms instead of ~22 and keeps most of those rescues.
            yield at("zbar-half", "fallback", lambda: self._run("zbar", _half(gray), 0.5))
        if z in self.decoders:
            yield at("clahe", "enhanced", lambda: self._run(z, ops.clahe(gray)))
            yield at("stretch", "enhanced", lambda: self._run(z, ops.stretch(gray)))
            yield at("normalize", "enhanced", lambda: self._run(z, ops.local_normalize(gray)))
        small, s = _shrink(gray, _FALLBACK_MAX_SIDE)
        if "zbar" in self.decoders:
            yield at("zbar", "fallback", lambda: self._run("zbar", small, s))
        if "opencv" in self.decoders:
            yield at("opencv", "fallback", lambda: self._exclusive("opencv", small, s))
        if "zbar" in self.decoders and small_frame:
            yield at("zbar-up", "fallback", lambda: self._run("zbar", ops.upscale(gray, 2.0), 2.0))
        if "zbar" in self.decoders and s != 1.0:
            yield at("zbar-full", "fallback", lambda: self._run("zbar", gray))


def _scaled_cost(key, costs: dict) -> float | None:
    """A crop step's cost at a size not yet measured, from the same step at other sizes:
    the largest per-pixel cost seen, times this size's pixels, plus half again (a guess
    should err long). None for steps never measured at any size."""
    if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], int)):
        return None
    name, side = key
    per_px = [ms / (s * s) for (n, s), ms in _crop_costs(costs) if n == name]
    return 1.5 * max(per_px) * side * side if per_px else None


def _crop_costs(costs: dict):
    return [(k, v) for k, v in list(costs.items()) if isinstance(k, tuple) and len(k) == 2 and isinstance(k[1], int)]


def _tiles(gray: np.ndarray, n: int = 2, overlap: int = 96) -> list[tuple[int, int, np.ndarray]]:
    """n x n views of the frame, overlapping so that a code small enough to need
    upscaling (< ~90 px) lies whole in at least one of them."""
    h, w = gray.shape
    th, tw = min(h, -(-h // n) + overlap), min(w, -(-w // n) + overlap)
    ys = sorted({round(i * (h - th) / max(1, n - 1)) for i in range(n)})
    xs = sorted({round(i * (w - tw) / max(1, n - 1)) for i in range(n)})
    return [(y, x, gray[y : y + th, x : x + tw]) for y in ys for x in xs]


def _shifted(codes: list[Code], dx: int, dy: int) -> list[Code]:
    for c in codes:
        c.corners = [(px + dx, py + dy) for px, py in c.corners]
    return codes


def _centre(quad) -> tuple[float, float]:
    return (sum(p[0] for p in quad) / len(quad), sum(p[1] for p in quad) / len(quad))


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
