"""No-read events: a label the detector saw that left the view unread is one noread."""

import json
import subprocess
import sys

import cv2
import numpy as np

from edge_runtime.code import Code
from edge_runtime.service.noread_store import NoreadStore
from edge_runtime.track import NoreadTracker
from qrgen import qr_matrix


def quad(x, y, s=100):
    return [(x, y), (x + s, y), (x + s, y + s), (x, y + s)]


def unread(x, y):
    return Code(text="", raw=b"", corners=quad(x, y), kind="noread", stage="noread")


def read(x, y, text="LOT-1"):
    return Code(text=text, raw=text.encode(), corners=quad(x, y))


def test_one_noread_per_label_when_it_leaves_unread():
    t = NoreadTracker(window_s=0.5, max_distance_px=80)
    for i in range(6):  # moving 40 px per frame, never read
        assert t.update([unread(100 + 40 * i, 200)], [], ts=i * 0.033, frame_index=i) == []
    assert t.update([], [], ts=0.3, frame_index=9) == []  # not gone long enough yet
    (gone,) = t.update([], [], ts=1.0, frame_index=30)
    assert gone.frames == 6 and gone.corners == quad(300, 200) and not gone.read


def test_a_label_read_in_a_later_frame_is_no_noread():
    t = NoreadTracker(window_s=0.2, max_distance_px=80)
    t.update([unread(100, 200)], [], 0.0, 0)
    t.update([unread(140, 200)], [], 0.033, 1)
    t.update([], [read(180, 200)], 0.066, 2)  # the deblur sweep got it in the third frame
    assert t.update([], [], 1.0, 30) == []


def test_a_single_frame_detection_is_not_a_label_and_two_labels_stay_apart():
    t = NoreadTracker(window_s=0.2, max_distance_px=80)
    t.update([unread(100, 100)], [], 0.0, 0)  # one-frame false positive
    for i in range(3):
        t.update([unread(600 + 10 * i, 400), unread(900 + 10 * i, 400)], [], 0.1 + 0.03 * i, 1 + i)
    gone = t.update([], [], 2.0, 60)
    assert sorted(g.corners[0][0] for g in gone) == [620, 920]


def test_flush_reports_labels_still_in_view():
    t = NoreadTracker(window_s=5)
    t.update([unread(10, 10)], [], 0.0, 0)
    t.update([unread(12, 10)], [], 0.03, 1)
    assert len(t.flush()) == 1 and t.tracks == []


def test_store_is_bounded_by_count_and_size(tmp_path):
    store = NoreadStore(str(tmp_path / "nr"), keep=3, max_mb=10)
    img = np.random.default_rng(0).integers(0, 256, (300, 300), dtype=np.uint8)
    for rid in range(1, 6):
        assert store.save(rid, NoreadStore.crop(img, quad(50, 50))) is not None
    assert sorted(p.name for p in (tmp_path / "nr").iterdir()) == [
        "noread-000000000003.png", "noread-000000000004.png", "noread-000000000005.png"]
    small = NoreadStore(str(tmp_path / "small"), keep=100, max_mb=0.1)
    for rid in range(1, 8):
        small.save(rid, img)  # ~90 kB of noise each: only the newest fits in 100 kB
    left = sorted(p.name for p in (tmp_path / "small").iterdir())
    assert left and left[-1] == "noread-000000000007.png" and len(left) <= 2


def scrambled_label() -> np.ndarray:
    """A real QR whose data modules are noise: a detector sees a code, no decoder reads it."""
    m = qr_matrix("UNREADABLE-LABEL-0001", error="l")
    n, q = m.shape[0], 4
    keep = np.zeros(m.shape, bool)
    for y, x in [(q, q), (q, n - q - 8), (n - q - 8, q)]:
        keep[y : y + 8, x : x + 8] = True
    inner = np.zeros(m.shape, bool)
    inner[q : n - q, q : n - q] = True
    mask = inner & ~keep
    m[mask] = np.random.default_rng(0).integers(0, 2, int(mask.sum()))
    return cv2.resize(((1 - m) * 255).astype(np.uint8), None, fx=5, fy=5, interpolation=cv2.INTER_NEAREST)


def test_service_emits_a_noread_with_corners_and_saves_its_image(tmp_path):
    label = scrambled_label()
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(8):
        f = np.full((720, 1280), 190, np.uint8)
        if i < 5:  # the label crosses the view in five frames, then the belt is empty
            x = 200 + 60 * i
            f[200 : 200 + label.shape[0], x : x + label.shape[1]] = label
        cv2.imwrite(str(frames / f"f{i:02d}.png"), f)
    out = tmp_path / "results.jsonl"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
device_id = "t"
state_dir = "{tmp_path / 'state'}"
[reader]
detector = "tflite"
noread_dir = "{tmp_path / 'noreads'}"
[source]
kind = "folder"
path = "{frames}"
fps = 10
[dedup]
window_s = 0.15
[[sinks]]
kind = "jsonl"
path = "{out}"
""")
    p = subprocess.run([sys.executable, "-m", "edge_runtime", "run", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["noread"], rows
    r = rows[0]
    import jsonschema
    from pathlib import Path

    schema = json.loads((Path(__file__).parents[1] / "edge_runtime" / "data" / "result.schema.json").read_text())
    jsonschema.validate(r, schema)
    assert r["text"] is None and r["stage"] == "detected" and len(r["corners"]) == 4 and r["frames"] >= 2
    xs = [c[0] for c in r["corners"]]
    assert 400 < min(xs) < max(xs) < 600  # where the label was last seen (frame 4: x = 440..)
    (png,) = (tmp_path / "noreads").iterdir()
    assert png.name == f"noread-{r['id']:012d}.png" and cv2.imread(str(png)) is not None


def test_a_read_label_gone_from_view_does_not_swallow_the_next_unread_one():
    """Repro (bench line, labels 19, 34, 62...): the radius grew with the frames since a track
    was last seen, so the track of a label read earlier took the next, unreadable label's
    detections, which then left no result at all."""
    t = NoreadTracker(window_s=2.0, max_distance_px=200)
    for f in range(11):  # label A crossing at 20 px a frame: detected unread first, then read
        x = 100 + 20 * f
        t.update([unread(x, 300)] if f < 4 else [], [read(x, 300, "LOT-A")] if f >= 4 else [], f / 30, f)
    gone = []
    for f in range(25, 45):  # label B enters behind it: detected in every frame, never read
        gone += t.update([unread(100 + 20 * (f - 25), 300)], [], f / 30, f)
    gone += t.update([], [], 5.0, 150)
    assert len(gone) == 1 and gone[0].frames == 20 and gone[0].first_frame == 25


def test_two_labels_in_one_frame_are_matched_one_to_one():
    t = NoreadTracker(window_s=0.5, max_distance_px=200)
    for f in range(5):  # two unread labels 150 px apart, both moving right
        t.update([unread(100 + 20 * f, 300), unread(250 + 20 * f, 300)], [], f / 30, f)
    assert len(t.tracks) == 2 and all(tr.frames == 5 for tr in t.tracks)
    gone = t.update([], [], 2.0, 60)
    assert len(gone) == 2


def test_a_read_of_another_payload_is_another_label():
    t = NoreadTracker(window_s=0.5, max_distance_px=200)
    t.update([], [read(100, 300, "LOT-A")], 0.0, 0)
    t.update([], [read(105, 300, "LOT-B")], 0.033, 1)
    assert len(t.tracks) == 2


def test_read_labels_are_predicted_where_they_will_be_and_unread_ones_are_not_offered():
    t = NoreadTracker(window_s=1.0, max_distance_px=200)
    for f in range(3):
        t.update([unread(500 + 20 * f, 100)], [read(100 + 20 * f, 300, "LOT-A")], f / 30, f)
    (q,) = t.read_quads(4)  # two frames after the last sighting, 20 px a frame
    assert q[0] == (100 + 20 * 2 + 40, 300)
    assert t.read_quads(10) == []  # not seen for too long: no promise where it is


def test_retry_due_wakes_the_detector_for_unread_labels_in_view_but_not_for_resting_or_cut_ones():
    t = NoreadTracker(window_s=1.0, max_distance_px=200)
    shape = (720, 1280, 3)
    assert not t.retry_due(0, shape)  # nothing tracked
    t.update([], [read(300, 300, "LOT-A")], 0.0, 0)
    assert not t.retry_due(1, shape)  # read labels need nothing
    t.update([unread(600, 300)], [], 1 / 30, 1)
    assert t.retry_due(2, shape)  # a new unread label: every frame until its sixth
    for f in range(2, 8):
        t.update([unread(600 + 20 * (f - 1), 300)], [], f / 30, f)
    # Hard (six frames of tries): due on every third frame only, like resting_quads.
    due = [t.retry_due(f, shape) for f in range(8, 11)]
    resting = [bool(t.resting_quads(f)) for f in range(8, 11)]
    assert sum(due) == 1 and [not r for r in resting] == due
    assert not t.retry_due(20, shape)  # not seen for a while: left the view
    edge = NoreadTracker(window_s=1.0, max_distance_px=200)
    edge.update([unread(2, 300)], [], 0.0, 0)  # cut by the frame's left edge: no retries anyway
    assert not edge.retry_due(1, shape)
