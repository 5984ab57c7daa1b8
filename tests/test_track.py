"""Tracker: one result per physical label, matched by payload bytes and position."""

from __future__ import annotations

import pytest

from edge_runtime.code import Code
from edge_runtime.track import MAX_TRACKS, Tracker


def code(raw: bytes, x: float, y: float = 100.0, size: float = 40.0) -> Code:
    h = size / 2
    return Code(text=raw.decode("latin-1"), raw=raw,
                corners=[(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h)])


def run(tracker: Tracker, frames: list[list[Code]], fps: float = 30.0, start: int = 0) -> list[list[bytes]]:
    out = []
    for i, codes in enumerate(frames):
        new = tracker.update(codes, (start + i) / fps, start + i)
        out.append([c.raw for c, _ in new])
    return out


def test_a_label_moving_across_is_reported_once_on_first_sight():
    t = Tracker(window_s=2.0, max_distance_px=200)
    frames = [[code(b"A", 50 + 20 * i)] for i in range(40)]
    got = run(t, frames)
    assert got[0] == [b"A"]
    assert all(g == [] for g in got[1:])
    (track,) = t.tracks
    assert track.frames == 40 and track.first_frame == 0 and track.last_frame == 39
    assert track.last_seen == pytest.approx(39 / 30)


def test_missed_frames_do_not_split_a_track_and_the_allowance_grows_with_the_gap():
    t = Tracker(window_s=2.0, max_distance_px=50)
    # Seen at frame 0, lost for 5 frames (glare), seen again 240 px further: 6 frames * 50 px allowed.
    assert run(t, [[code(b"A", 100)], [], [], [], [], [], [code(b"A", 340)]]) == [[b"A"], [], [], [], [], [], []]


def test_same_payload_far_away_in_the_same_frame_is_a_second_label():
    t = Tracker(max_distance_px=100)
    got = run(t, [[code(b"A", 100)], [code(b"A", 110), code(b"A", 900)]])
    assert got == [[b"A"], [b"A"]]
    assert len(t.tracks) == 2


def test_jump_beyond_max_distance_is_a_new_label():
    t = Tracker(max_distance_px=100)
    assert run(t, [[code(b"A", 100)], [code(b"A", 350)]]) == [[b"A"], [b"A"]]


def test_match_is_by_raw_bytes_not_text():
    t = Tracker()
    a = Code(text="?", raw=b"\xff\x01", corners=[(0, 0), (10, 0), (10, 10), (0, 10)])
    b = Code(text="?", raw=b"\xff\x02", corners=[(0, 0), (10, 0), (10, 10), (0, 10)])
    new = t.update([a, b], 0.0, 0)
    assert [c.raw for c, _ in new] == [b"\xff\x01", b"\xff\x02"]


def test_reported_again_after_window_without_sightings_but_not_while_continuously_seen():
    t = Tracker(window_s=1.0, max_distance_px=200)
    # Seen still for 3 s (stopped belt): once.
    still = [t.update([code(b"A", 100)], i / 10, i) for i in range(30)]
    assert sum(len(n) for n in still) == 1
    # Gone for 1.5 s (> window), then back: a new report.
    assert len(t.update([code(b"A", 100)], 2.9 + 1.5, 45)) == 1


def test_within_window_a_code_returning_is_not_reported_again():
    t = Tracker(window_s=2.0, max_distance_px=200)
    assert len(t.update([code(b"A", 100)], 0.0, 0)) == 1
    assert t.update([code(b"A", 120)], 1.0, 30) == []


def test_direction_allows_long_forward_steps_and_rejects_going_back():
    t = Tracker(window_s=2.0, max_distance_px=50, direction="+x")
    assert len(t.update([code(b"A", 100)], 0.0, 0)) == 1
    assert t.update([code(b"A", 400)], 0.033, 1) == []  # 300 px forward in one frame: same label
    assert t.update([code(b"A", 395)], 0.066, 2) == []  # 5 px back: jitter
    assert len(t.update([code(b"A", 100)], 0.1, 3)) == 1  # 295 px upstream: a new label
    assert len(t.update([code(b"A", 700, y=300)], 0.133, 4)) == 1  # 200 px sideways: a new label


def test_reset_forgets_everything():
    t = Tracker()
    t.update([code(b"A", 100)], 0.0, 0)
    t.reset()
    assert len(t.update([code(b"A", 100)], 0.01, 1)) == 1


def test_tracks_are_bounded():
    t = Tracker(window_s=100.0)
    for i in range(MAX_TRACKS + 50):
        t.update([code(f"L{i}".encode(), 10)], i * 0.001, i)
    assert len(t.tracks) == MAX_TRACKS


def test_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="direction"):
        Tracker(direction="left")


def test_a_micro_qr_read_is_reported_only_once_seen_in_a_second_frame():
    """Repro (soak, 100,000 frames): zxing-cpp read a Micro QR "8832" out of label print in
    one frame, 4 times; a weak symbology needs a second sighting."""
    from edge_runtime.code import Code
    from edge_runtime.track import Tracker

    t = Tracker(window_s=1.0, max_distance_px=100)
    ghost = Code(text="8832", raw=b"8832", format="MicroQRCode", corners=[(0, 0), (30, 0), (30, 30), (0, 30)])
    assert t.update([ghost], 0.0, 0) == []
    assert t.update([], 0.5, 15) == [] and t.update([], 2.0, 60) == []  # never seen again: never reported
    real = Code(text="M1", raw=b"M1", format="MicroQRCode", corners=[(100, 0), (130, 0), (130, 30), (100, 30)])
    assert t.update([real], 3.0, 90) == []
    moved = Code(text="M1", raw=b"M1", format="MicroQRCode", corners=[(120, 0), (150, 0), (150, 30), (120, 30)])
    (code, track), = t.update([moved], 3.03, 91)
    assert track.frames == 2 and t.update([moved], 3.06, 92) == []  # reported once
