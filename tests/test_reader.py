"""The reader core: each backend, the cascade, lossless payloads, no false reads."""

import numpy as np
import pytest
import cv2

from edge_runtime import Code, Reader
from edge_runtime import decode as decoders
from edge_runtime.budget import Attempt, Budget, Follow, FrameWork, may_start
from qrgen import on_canvas, qr_image, warp_small


@pytest.mark.parametrize("name", ["zxing", "opencv", "zbar"])
def test_each_backend_reads_a_generated_code_with_corners(name):
    dec = decoders.load(name)
    assert dec is not None, f"{name} backend failed to load"
    frame = on_canvas(qr_image("LOT-4711", module_px=5), at=(100, 200))
    codes = dec.decode(frame)
    assert [c.text for c in codes] == ["LOT-4711"]
    c = codes[0]
    assert c.raw == b"LOT-4711" and c.decoder == name and len(c.corners) == 4
    x, y = c.center
    side = qr_image("LOT-4711", module_px=5).shape[0]
    assert 200 < x < 200 + side and 100 < y < 100 + side


def test_reader_accepts_bgr_and_gray_and_reports_stage_and_time():
    gray = on_canvas(qr_image("hello", module_px=4))
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    r = Reader()
    for frame in (gray, bgr):
        codes = r.read(frame)
        assert [c.text for c in codes] == ["hello"]
        assert codes[0].stage == "direct" and codes[0].decoder == "zxing" and codes[0].elapsed_ms > 0


def test_reader_rejects_non_uint8_with_a_clear_error():
    with pytest.raises(ValueError, match="uint8"):
        Reader().read(np.zeros((10, 10), np.float32))


def test_blank_and_noise_frames_give_no_false_read():
    r = Reader()
    rng = np.random.default_rng(1)
    assert r.read(np.full((480, 640), 128, np.uint8)) == []
    for _ in range(3):
        assert r.read(rng.integers(0, 256, (480, 640), dtype=np.uint8)) == []


def test_missing_backend_is_reported_once_and_reader_carries_on(monkeypatch, caplog):
    monkeypatch.setitem(decoders.BACKENDS, "ghost", "edge_runtime.decode.not_installed:Nope")
    caplog.set_level("WARNING")
    r = Reader(("ghost", "zxing"), detector="none")
    Reader(("ghost", "zxing"), detector="none")
    assert r.available == ["zxing"]
    assert sum("ghost" in m for m in caplog.messages) == 1
    assert [c.text for c in r.read(on_canvas(qr_image("still reads")))] == ["still reads"]


def test_inverted_code_is_read():
    inv = 255 - on_canvas(qr_image("INVERTED", module_px=4), fill=255)
    assert [c.text for c in Reader().read(inv)] == ["INVERTED"]


@pytest.mark.parametrize("angle", [0, 90, 180, 33])
def test_rotations(angle):
    frame = warp_small("ROT-%d" % angle, module_px=4.0, angle=angle)
    assert [c.text for c in Reader().read(frame)] == ["ROT-%d" % angle]


def test_retries_read_codes_zxing_alone_misses():
    """Small modules: upscaling and other binarizers rescue what one zxing pass drops."""
    zx = decoders.load("zxing")
    r = Reader()
    rescued = 0
    for i, px in enumerate(np.linspace(1.3, 2.0, 12)):
        payload = f"SMALL-{i:03d}"
        frame = warp_small(payload, module_px=float(px), angle=7 * i, seed=i, error="l")
        ours = [c.text for c in r.read(frame)]
        alone = [c.text for c in zx.decode(frame)]
        assert set(alone) <= set(ours), "the reader must read everything zxing-cpp alone reads"
        assert set(ours) <= {payload}, f"false read {ours}"
        rescued += payload in ours and payload not in alone
    assert rescued >= 1


@pytest.mark.parametrize(
    "payload, kw",
    [
        ("点茗日本", {"mode": "kanji"}),
        ("日本語".encode("shift_jis"), {"mode": "byte"}),
        (bytes(range(0, 256, 3)), {"mode": "byte"}),
        ("Grüße €", {"eci": True, "encoding": "utf-8"}),
    ],
)
@pytest.mark.parametrize("backend", ["zxing", "zbar"])
def test_non_utf8_payloads_are_lossless_in_raw(payload, kw, backend):
    expected = payload.encode("shift_jis") if kw.get("mode") == "kanji" else (
        payload.encode("utf-8") if isinstance(payload, str) else payload)
    codes = decoders.load(backend).decode(qr_image(payload, module_px=4, **kw))
    assert len(codes) == 1
    assert codes[0].raw == expected
    if isinstance(payload, str):
        assert codes[0].text == payload


def test_opencv_recovers_shift_jis_bytes():
    payload = "日本語".encode("shift_jis")
    codes = decoders.load("opencv").decode(qr_image(payload, module_px=4, mode="byte"))
    assert [c.raw for c in codes] == [payload]
    assert codes[0].text == "日本語"


def test_fallback_stage_when_only_zbar_or_opencv_reads(monkeypatch):
    """Whatever a later backend reads is kept, and its stage says it was the fallback."""
    r = Reader()
    monkeypatch.setattr(r.decoders["zxing"], "decode", lambda gray, **kw: [])
    codes = r.read(on_canvas(qr_image("ONLY-FALLBACK")))
    assert [c.text for c in codes] == ["ONLY-FALLBACK"]
    assert codes[0].stage == "fallback" and codes[0].decoder in ("opencv", "zbar")


def test_deadline_stops_retries():
    r = Reader(deadline_ms=0.0)
    rng = np.random.default_rng(2)
    assert r.read(rng.integers(0, 256, (720, 1280), dtype=np.uint8)) == []


class _FakeClock:
    """perf_counter stand-in: attempts advance it by what they 'cost', so the budget logic
    is tested with injected costs and no wall-clock assertion."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t

    def spend(self, ms):
        self.t += ms / 1000.0


def test_may_start_rule_with_injected_costs():
    # measured: only if it fits in what is left, whoever runs it
    assert may_start(5.0, 6.0, 16.0, thread="caller")
    assert not may_start(7.0, 6.0, 16.0, thread="caller")
    assert not may_start(7.0, 6.0, 16.0, thread="worker")
    assert not may_start(0.1, 0.0, 16.0, thread="worker")  # the deadline has passed
    # never measured: a worker may (its late result is dropped), the caller leaves it to
    # the workers, a lone thread runs it only with half the budget left
    assert may_start(None, 2.0, 16.0, thread="worker")
    assert not may_start(None, 15.0, 16.0, thread="caller")
    assert may_start(None, 8.0, 16.0, thread="alone") and not may_start(None, 7.9, 16.0, thread="alone")
    assert may_start(1e9, 0.0, None, thread="caller")  # no deadline: everything runs


def test_attempt_whose_learned_cost_exceeds_what_is_left_is_not_started():
    clock = _FakeClock()
    b = Budget(16.0, clock=clock)
    b.costs.update({"cheap": 2.0, "slow": 9.0, "late": 3.0})
    runs = []

    def attempt(name, ms):
        def run():
            runs.append(name)
            clock.spend(ms)
            return []
        return Attempt(name, run)

    t0 = clock()
    clock.spend(8.0)  # the direct pass and the detector used half the frame
    work = FrameWork(b, t0, [[attempt("cheap", 2.0), attempt("slow", 9.0), attempt("late", 3.0)]])
    assert work.run(None, 0) == {}
    # 8 left: cheap (2) runs; slow (9) does not fit in 6; late (3) fits in 6 and runs
    assert runs == ["cheap", "late"]
    assert b.costs["slow"] == 9.0  # not run, so not re-learned either


def test_frame_work_stops_a_group_at_its_first_read_and_drops_the_fallback():
    clock = _FakeClock()
    b = Budget(None, clock=clock)
    runs = []

    def attempt(name, result):
        return Attempt(name, lambda: runs.append(name) or result)

    groups = [[attempt("a1", []), attempt("a2", ["A"]), attempt("a3", ["A3"])],
              [attempt("b1", ["B"]), attempt("b2", ["B2"])],
              [attempt("f1", []), attempt("f2", ["F"])]]
    res = FrameWork(b, clock(), groups, fallback=[2]).run(None, 0)
    assert {g: out for g, (_, out) in res.items()} == {0: ["A"], 1: ["B"]}
    # round-robin: a1, then b1, whose read drops the fallback group before f1; then a2
    assert runs == ["a1", "b1", "a2"]


def test_follow_up_attempts_run_next_in_their_group():
    clock = _FakeClock()
    b = Budget(None, clock=clock)
    runs = []
    follow = Follow([Attempt("w1", lambda: runs.append("w1") or []), Attempt("w2", lambda: runs.append("w2") or ["X"])])
    groups = [[Attempt("psf", lambda: runs.append("psf") or follow), Attempt("opencv", lambda: runs.append("opencv") or [])]]
    res = FrameWork(b, clock(), groups).run(None, 0)
    assert runs == ["psf", "w1", "w2"] and res[0][1] == ["X"]


def test_skipped_slow_attempt_is_measured_again_by_a_worker_after_a_while():
    clock = _FakeClock()
    b = Budget(16.0, clock=clock)
    b.timed("k", lambda: clock.spend(40.0))  # a spike while another process had the core
    t0 = clock()
    assert not b.allows("k", t0, thread="worker") and not b.stale("k", t0)  # just ran
    clock.spend(2500.0)
    t0 = clock()
    assert b.stale("k", t0)
    b.timed("k", lambda: clock.spend(3.0), fresh=True)
    assert b.costs["k"] == pytest.approx(3.0) and b.allows("k", t0, thread="caller")


def test_code_to_dict_is_json_ready():
    c = Code(text="x", raw=b"x", corners=[(1, 2), (3, 2), (3, 4), (1, 4)], decoder="zxing")
    d = c.to_dict()
    assert d["corners"] == [[1.0, 2.0], [3.0, 2.0], [3.0, 4.0], [1.0, 4.0]] and d["stage"] == "direct"


def test_opencv_binary_payload_with_nul_is_exact_not_truncated():
    """OpenCV's own text stops at NUL; our backend re-decodes its module grid instead."""
    payload = b"AB\x00CD\x93\xfa"
    codes = decoders.load("opencv").decode(on_canvas(qr_image(payload, module_px=4, mode="byte"), size=(300, 300), at=(20, 20)))
    assert [c.raw for c in codes] == [payload]
