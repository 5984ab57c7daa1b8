"""Tracking and de-duplication of codes moving along a conveyor (pure logic, no I/O).

A label passes under the camera in many frames; the plant wants one result per label.
A *track* is one physical label: a new sighting joins an existing track when it carries
the same payload (raw bytes, not the lossy text) and its centre is where the label could
have moved since it was last seen. Otherwise it starts a new track, which is what gets
reported.

When to report: on first sight. That is the lowest latency a PLC can get (a diverter
gate downstream has a fixed distance to act in), and a label that is read once and then
lost under glare is still reported. The track keeps counting afterwards (`frames`,
`last_seen`), so status and logs show how well each label was read, but the result that
was already delivered is not re-sent.

A track ends when its label has not been seen for `window_s`: the same payload seen
again after that is a new label (or the same one presented again) and is reported
again. A label that sits still under the camera (stopped belt) is reported once, not
once per window: a stopped line must not flood the PLC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edge_runtime.code import Code
from edge_runtime.roi import cut_by_edge

DIRECTIONS = ("any", "+x", "-x", "+y", "-y")
_UNIT = {"+x": (1.0, 0.0), "-x": (-1.0, 0.0), "+y": (0.0, 1.0), "-y": (0.0, -1.0)}
# With a known direction a label may jitter backwards this fraction of max_distance_px
# (detector corners wobble by a few pixels) but not more: upstream = a different label.
_BACKTRACK = 0.25
# A safety cap: a frame full of garbage reads must not grow memory without bound.
MAX_TRACKS = 4096
# A hard (unread) label gets retries in its first RETRY_TRIES frames, then on every
# RETRY_EVERY-th frame only (see NoreadTracker.resting_quads).
RETRY_TRIES = 6
RETRY_EVERY = 3
# Symbols whose error correction is too weak to trust one sighting: Micro QR M1 only
# detects errors, and zxing-cpp read a Micro QR "8832" out of label print 4 times in a
# 100,000-frame soak. Reported once seen in a second frame (one frame later on a belt).
CONFIRM_FORMATS = ("MicroQRCode", "RMQRCode")


@dataclass
class Track:
    """One physical label as seen over consecutive frames."""

    tid: int
    raw: bytes
    center: tuple[float, float]
    first_seen: float
    last_seen: float
    first_frame: int
    last_frame: int
    frames: int = 1
    code: Code | None = field(default=None, repr=False)
    confirmed: bool = True  # a weak symbology's track is reported once seen twice


class Tracker:
    """Turns per-frame reads into new labels.

    `update(codes, ts, frame_index)` returns the (code, track) pairs that started a new
    track in this frame, i.e. the ones to report. Timestamps are the frame's own capture
    time (seconds), so the logic is the same for a live camera and a replayed video.
    """

    def __init__(self, window_s: float = 2.0, max_distance_px: float = 200.0, direction: str = "any") -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        self.window_s = float(window_s)
        self.max_distance_px = float(max_distance_px)
        self.direction = direction
        self._tracks: list[Track] = []
        self._next_tid = 1

    @property
    def tracks(self) -> list[Track]:
        return list(self._tracks)

    def reset(self) -> None:
        """Forget every label (a new trigger window is a new item)."""
        self._tracks.clear()

    def forget(self, track: Track) -> None:
        """Forget one label whose result was not accepted: it is new again when next seen."""
        self._tracks = [t for t in self._tracks if t.tid != track.tid]

    def update(self, codes: list[Code], ts: float, frame_index: int) -> list[tuple[Code, Track]]:
        self._expire(ts)
        matched: set[int] = set()
        new: list[tuple[Code, Track]] = []
        for code in codes:
            track = self._match(code, frame_index, matched)
            if track is not None:
                matched.add(track.tid)
                track.center = code.center
                track.last_seen = max(track.last_seen, ts)
                if frame_index != track.last_frame:
                    track.frames += 1
                track.last_frame = frame_index
                if not track.confirmed and track.frames >= 2:
                    track.confirmed = True
                    new.append((code, track))
                continue
            track = Track(
                tid=self._next_tid,
                raw=bytes(code.raw),
                center=code.center,
                first_seen=ts,
                last_seen=ts,
                first_frame=frame_index,
                last_frame=frame_index,
                code=code,
                confirmed=code.format not in CONFIRM_FORMATS,
            )
            self._next_tid += 1
            matched.add(track.tid)
            self._tracks.append(track)
            if track.confirmed:
                new.append((code, track))
        if len(self._tracks) > MAX_TRACKS:
            # Oldest-seen first out; they would have expired soonest anyway.
            self._tracks.sort(key=lambda t: t.last_seen)
            del self._tracks[: len(self._tracks) - MAX_TRACKS]
        return new

    def _expire(self, ts: float) -> None:
        self._tracks = [t for t in self._tracks if ts - t.last_seen <= self.window_s]

    def _match(self, code: Code, frame_index: int, taken: set[int]) -> Track | None:
        best, best_d = None, math.inf
        for t in self._tracks:
            if t.tid in taken or t.raw != code.raw:
                continue
            d = self._distance(t, code, frame_index)
            if d is not None and d < best_d:
                best, best_d = t, d
        return best

    def _distance(self, t: Track, code: Code, frame_index: int) -> float | None:
        """Distance moved if `code` can be the label of track `t`, else None.

        The allowance grows with the number of frames since the label was last seen, so a
        label missed for a few frames (glare, motion blur) still joins its track.
        """
        gap = max(1, frame_index - t.last_frame)
        limit = self.max_distance_px * gap
        (x0, y0), (x1, y1) = t.center, code.center
        dx, dy = x1 - x0, y1 - y0
        if self.direction == "any":
            d = math.hypot(dx, dy)
            return d if d <= limit else None
        ux, uy = _UNIT[self.direction]
        along = dx * ux + dy * uy
        across = abs(dx * uy - dy * ux)
        # Along the belt a label may move any distance forward (fast belts move far per
        # frame); sideways it stays within the allowance, backwards only by jitter.
        if across > limit or along < -self.max_distance_px * _BACKTRACK:
            return None
        return math.hypot(dx, dy)


@dataclass
class NoreadTrack:
    """A detected label followed while it crosses the view: read or not yet read."""

    tid: int
    center: tuple[float, float]
    corners: list
    first_seen: float
    last_seen: float
    first_frame: int
    last_frame: int
    frames: int = 1
    read: bool = False
    image: object = field(default=None, repr=False)  # last crop, kept only when noread images are saved
    raw: bytes | None = None  # the payload once read: a read of another payload is another label
    velocity: tuple[float, float] | None = None  # px per frame, once seen in two frames
    size: float = 0.0  # the code's extent in px, for the match radius
    reason: str | None = None  # why it is not read (noread_reason), judged on its first sighting


class NoreadTracker:
    """Turns per-frame detections into one noread per label that left the view unread.

    A hard label is often unreadable in some frames and read in others; reporting a
    noread per frame would flood the PLC with false alarms. So a noread is reported when
    its label *leaves the view* (unseen for `window_s`) without ever having been read, and
    only if it was seen in at least `min_frames` frames (one frame of a detector false
    positive is not a label). This is what line scanners call a no-read: one per item that
    passed without a read.

    Every label is followed, read or not: each frame's detections (unread quads and reads)
    are matched one to one to the tracks, nearest first, around where each track's own
    motion puts it now. The radius stays about the code's size once a track's velocity is
    known: a radius that grew with the frames since a track was last seen let an old,
    read label's track swallow the next label, which then left no result at all.
    """

    def __init__(self, window_s: float = 2.0, max_distance_px: float = 200.0, min_frames: int = 2) -> None:
        self.window_s = float(window_s)
        self.max_distance_px = float(max_distance_px)
        self.min_frames = int(min_frames)
        self._tracks: list[NoreadTrack] = []
        self._next_tid = 1

    @property
    def tracks(self) -> list[NoreadTrack]:
        return list(self._tracks)

    def update(self, noreads: list[Code], reads: list[Code], ts: float, frame_index: int) -> list[NoreadTrack]:
        """Feed one frame; returns the tracks whose label left the view unread."""
        dets = [(c, False) for c in noreads] + [(c, True) for c in reads]
        pairs = []
        for ti, t in enumerate(self._tracks):
            gap = max(1, frame_index - t.last_frame)
            px, py = self._predict(t, gap)
            for di, (c, is_read) in enumerate(dets):
                if is_read and t.raw is not None and t.raw != bytes(c.raw):
                    continue
                cx, cy = c.center
                d = math.hypot(cx - px, cy - py)
                if d <= self._radius(t, _extent(c.corners), gap):
                    pairs.append((d, ti, di))
        pairs.sort(key=lambda p: p[0])
        used_t: set[int] = set()
        used_d: set[int] = set()
        for _d, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            self._join(self._tracks[ti], *dets[di], ts, frame_index)
        for di, (c, is_read) in enumerate(dets):
            if di not in used_d:
                self._tracks.append(NoreadTrack(
                    self._next_tid, c.center, list(c.corners), ts, ts, frame_index, frame_index,
                    read=is_read, raw=bytes(c.raw) if is_read else None, size=_extent(c.corners)))
                self._next_tid += 1
        gone = [t for t in self._tracks if ts - t.last_seen > self.window_s]
        self._tracks = [t for t in self._tracks if ts - t.last_seen <= self.window_s][-MAX_TRACKS:]
        return [t for t in gone if not t.read and t.frames >= self.min_frames]

    def flush(self) -> list[NoreadTrack]:
        """At shutdown or end of source: labels still in view that were never read."""
        out = [t for t in self._tracks if not t.read and t.frames >= self.min_frames]
        self._tracks.clear()
        return out

    def read_quads(self, frame_index: int, max_gap: int = 3) -> list[list[tuple[float, float]]]:
        """Where labels already read should be in frame `frame_index` (their last corners
        moved by their own velocity): the reader spends nothing more on them."""
        out = []
        for t in self._tracks:
            gap = frame_index - t.last_frame
            if not t.read or not t.corners or gap > max_gap:
                continue
            dx, dy = (t.velocity[0] * gap, t.velocity[1] * gap) if t.velocity is not None else (0.0, 0.0)
            out.append([(x + dx, y + dy) for x, y in t.corners])
        return out

    @staticmethod
    def _resting(t: NoreadTrack, frame_index: int, tries: int, every: int) -> bool:
        """An unread label past `tries` frames of retries, between its every-`every`-th tries."""
        return t.frames >= tries and (frame_index - t.first_frame) % every != 0

    def resting_quads(self, frame_index: int, tries: int = RETRY_TRIES, every: int = RETRY_EVERY) -> list[list[tuple[float, float]]]:
        """Unread labels that had `tries` frames of retries: from then on they are tried
        on every `every`-th frame only. A label that resisted six full sweeps rarely reads
        in the next frame (its damage or glare travels with it), and each sweep costs a
        frame's budget; it is still tried as it crosses, and ends in a noread if never read."""
        out = []
        for t in self._tracks:
            gap = frame_index - t.last_frame
            if t.read or gap > every or not self._resting(t, frame_index, tries, every):
                continue
            dx, dy = (t.velocity[0] * gap, t.velocity[1] * gap) if t.velocity is not None else (0.0, 0.0)
            out.append([(x + dx, y + dy) for x, y in t.corners])
        return out

    def retry_due(self, frame_index: int, shape: tuple[int, ...], tries: int = RETRY_TRIES, every: int = RETRY_EVERY) -> bool:
        """Is an unread label wholly in view (`shape`: the frame's) due for retries in this
        frame (not resting, see `resting_quads`)? The reader's detector must then not rest:
        without its quad the label gets none, and a resting rhythm of its own could miss
        every try. A label cut by the frame's edge gets no retries and wakes nothing."""
        for t in self._tracks:
            gap = frame_index - t.last_frame
            if t.read or gap > every or not t.corners or cut_by_edge(t.corners, shape):
                continue
            if not self._resting(t, frame_index, tries, every):
                return True
        return False

    @staticmethod
    def _predict(t: NoreadTrack, gap: int) -> tuple[float, float]:
        if t.velocity is None:
            return t.center
        return (t.center[0] + t.velocity[0] * gap, t.center[1] + t.velocity[1] * gap)

    def _radius(self, t: NoreadTrack, size: float, gap: int) -> float:
        if t.velocity is None:
            # Seen once: it may have moved up to max_distance_px a frame; a few missed frames
            # are allowed, not a whole window's worth.
            return self.max_distance_px * min(gap, 3)
        # Predicted: off by the code's own jitter (partly out of view, detector vs decoder
        # corners) and a little speed change per frame.
        speed = math.hypot(*t.velocity)
        return 0.6 * max(size, t.size, 8.0) + 0.15 * speed * gap

    @staticmethod
    def _join(t: NoreadTrack, code: Code, is_read: bool, ts: float, frame_index: int) -> None:
        gap = max(1, frame_index - t.last_frame)
        (x0, y0), (x1, y1) = t.center, code.center
        v = ((x1 - x0) / gap, (y1 - y0) / gap)
        if frame_index != t.last_frame:
            t.velocity = v if t.velocity is None else (0.5 * (t.velocity[0] + v[0]), 0.5 * (t.velocity[1] + v[1]))
            t.frames += 1
        t.center, t.corners, t.last_seen = code.center, list(code.corners), max(t.last_seen, ts)
        t.last_frame = frame_index
        t.size = _extent(code.corners) or t.size
        if is_read:
            t.read = True
            t.raw = bytes(code.raw)


def _extent(corners: list) -> float:
    if not corners:
        return 0.0
    xs = [p[0] for p in corners]
    ys = [p[1] for p in corners]
    return max(max(xs) - min(xs), max(ys) - min(ys))
