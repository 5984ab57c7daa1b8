"""`edge-runtime bench decode`: scoring (reads, false reads) and the CLI end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.bench import decode as bench
from edge_runtime.bench.decode import Read, register, run_bench, score_frame, to_markdown
from edge_runtime.synth.frames import CATEGORIES

REPO = Path(__file__).resolve().parent.parent
SQUARE = [[100, 100], [200, 100], [200, 200], [100, 200]]
OTHER = [[400, 100], [500, 100], [500, 200], [400, 200]]


def _r(raw: bytes, corners, stage: str | None = None):
    r = Read(raw, [tuple(p) for p in corners])
    if stage:
        r.stage = stage  # like a Code from the Reader
    return r


# --- scoring -------------------------------------------------------------------------------

def test_right_bytes_in_the_right_place_is_a_read():
    truths = [{"payload": b"LOT-1", "corners": SQUARE}, {"payload": b"LOT-2", "corners": OTHER}]
    s = score_frame([_r(b"LOT-1", SQUARE, "direct"), _r(b"LOT-1", SQUARE)], truths)
    assert (s.present, s.read, s.false, s.misplaced) == (2, 1, [], 0)  # duplicate counts once
    assert s.stages == {"direct": 1}


def test_wrong_bytes_are_a_false_read():
    truths = [{"payload": b"LOT-1", "corners": SQUARE}]
    s = score_frame([_r(b"LOT-7", SQUARE)], truths)
    assert s.read == 0 and s.false == [b"LOT-7"] and s.mangled == 0


def test_right_bytes_at_another_codes_place_is_misplaced_not_read():
    truths = [{"payload": b"LOT-1", "corners": SQUARE}, {"payload": b"LOT-2", "corners": OTHER}]
    s = score_frame([_r(b"LOT-1", OTHER)], truths)
    assert s.read == 0 and s.misplaced == 1 and not s.false


def test_binary_payload_reencoded_is_a_mangled_false_read():
    payload = b"\x95\x94\xffA"
    truths = [{"payload": payload, "corners": SQUARE}]
    latin1_as_utf8 = payload.decode("latin-1").encode("utf-8")
    s = score_frame([_r(latin1_as_utf8, SQUARE)], truths)
    assert s.read == 0 and len(s.false) == 1 and s.mangled == 1


def test_binary_payload_cut_at_nul_is_mangled_not_phantom():
    truths = [{"payload": b"\x17P\x00\x97q", "corners": SQUARE}]
    s = score_frame([_r(b"\x17P", SQUARE), _r(b"\x17Q", SQUARE)], truths)
    assert len(s.false) == 2 and s.mangled == 1


def test_shift_jis_delivered_as_the_same_text_counts():
    payload = "品番:A-1".encode("shift_jis")
    truths = [{"payload": payload, "corners": SQUARE}]
    assert score_frame([_r("品番:A-1".encode("utf-8"), SQUARE)], truths).read == 1
    # ...but the same bytes mis-decoded as Latin-1 are not that text.
    wrong = payload.decode("latin-1").encode("utf-8")
    s = score_frame([_r(wrong, SQUARE)], truths)
    assert s.read == 0 and s.mangled == 1


# --- a new column --------------------------------------------------------------------------

def test_a_registered_column_is_run_and_its_false_reads_reported():
    def liar():
        return lambda frame: [Read(b"NOT-ON-ANY-LABEL", [(0, 0), (9, 0), (9, 9), (0, 9)])]

    register("liar", liar)
    try:
        result = run_bench(seed=0, per_category=1, decoders=["zxing", "liar"], categories=["nominal"])
    finally:
        bench.DECODERS.pop("liar")
    assert result["decoders"] == ["zxing", "liar"]
    assert result["overall"]["liar"]["false_reads"] == 1 and result["overall"]["liar"]["rate"] == 0.0
    assert result["overall"]["zxing"]["rate"] == 100.0 and result["overall"]["zxing"]["false_reads"] == 0
    assert result["false_reads"][0]["decoder"] == "liar"
    assert result["any_column"] == {"nominal": 100.0} and result["unread_by_all"] == []
    md = to_markdown(result)
    assert "liar %" in md and "liar 1 (0 mangled)" in md


def test_an_unavailable_column_is_left_out_with_a_note():
    def missing():
        raise bench.Unavailable("model not shipped")

    register("needs-model", missing)
    try:
        result = run_bench(seed=0, per_category=1, decoders=["zxing", "needs-model"], categories=["nominal"])
    finally:
        bench.DECODERS.pop("needs-model")
    assert result["decoders"] == ["zxing"]
    assert "Not run: needs-model (model not shipped)" in to_markdown(result)


# --- CLI end to end ------------------------------------------------------------------------

def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime", "bench", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )


def test_bench_decode_cli_writes_table_json_and_chart(tmp_path):
    out = tmp_path / "bo"
    p = _cli("decode", "--per-category", 2, "--seed", 1, "--out", out)
    assert p.returncode == 0, p.stderr
    md = (out / "bench-decode.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| category | codes | reader % |")
    assert [r.split("|")[1].strip() for r in rows[1:]] == [*CATEGORIES, "**overall**"]
    assert rows[0] in p.stdout and "wrote " in p.stdout
    data = json.loads((out / "bench-decode.json").read_text())
    assert data["seed"] == 1 and data["per_category"] == 2
    assert data["decoders"] == ["reader", "zxing", "pyzbar", "opencv"]
    assert set(data["categories"]) == set(CATEGORIES)
    for cat, cells in data["categories"].items():
        for name, c in cells.items():
            assert 0.0 <= c["rate"] <= 100.0 and c["codes"] >= 2
            assert 0.0 < c["p50_ms"] <= c["p99_ms"]
    # On nominal frames the project's reader reads everything; zxing-cpp is its first pass.
    assert data["categories"]["nominal"]["reader"]["rate"] == 100.0
    assert data["overall"]["reader"]["rate"] >= data["overall"]["zxing"]["rate"]
    png = (out / "bench-decode.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_bench_decode_rejects_unknown_decoder_in_one_line(tmp_path):
    p = _cli("decode", "--per-category", 1, "--decoders", "reader,nosuch", "--out", tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [p.stderr.strip()]
    assert "nosuch" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "bench-decode.json").exists()


def test_bench_without_a_benchmark_prints_help():
    p = _cli(timeout=60)
    assert p.returncode == 2
    assert "decode" in p.stdout


@pytest.mark.parametrize("bad", [["--per-category", "0"], ["--categories", "nominal", "sideways"],
                                 ["--detector-threads", "0"]])
def test_bench_decode_bad_options(tmp_path, bad):
    p = _cli("decode", *bad, "--out", tmp_path, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "edge-runtime: error:" in p.stderr


def test_bench_decode_detector_threads_reach_the_reader_column(tmp_path):
    p = _cli("decode", "--per-category", 1, "--categories", "nominal", "--decoders", "reader+ncnn",
             "--detector-threads", 2, "--deadline-ms", 33, "--out", tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    data = json.loads((tmp_path / "bench-decode.json").read_text())
    assert data["reader_options"] == {"deadline_ms": 33.0, "threads": 2}
    assert data["categories"]["nominal"]["reader+ncnn"]["rate"] == 100.0


def test_reader_options_reach_reader_columns_and_misses_are_listed():
    seen = {}

    def fake_reader(**options):
        seen.update(options)
        return lambda frame: []  # reads nothing: every frame is a miss

    fake_reader.reader_options = True
    register("fake-reader", fake_reader)
    missed = []
    try:
        result = run_bench(
            seed=0, per_category=2, decoders=["fake-reader", "zxing"], categories=["nominal"],
            reader_options={"deadline_ms": 25.0}, on_miss=lambda cat, i, frame: missed.append((cat, i, frame.shape)),
        )
    finally:
        bench.DECODERS.pop("fake-reader")
    assert seen == {"deadline_ms": 25.0}
    assert result["misses"]["fake-reader"] == {"nominal": [0, 1]} and result["misses"]["zxing"] == {}
    single = run_bench(seed=0, per_category=1, decoders=["zxing"], categories=["small"])
    assert single["any_column"]["small"] == single["overall"]["zxing"]["rate"]
    assert missed == [("nominal", 0, (720, 1280, 3)), ("nominal", 1, (720, 1280, 3))]


def test_bench_decode_save_misses_and_no_runnable_decoder(tmp_path):
    p = _cli("decode", "--per-category", 1, "--categories", "blur", "--decoders", "opencv",
             "--save-misses", "--out", tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    data = json.loads((tmp_path / "bench-decode.json").read_text())
    saved = sorted(x.name for x in (tmp_path / "misses").iterdir())
    assert saved == [f"blur-{i:03d}.png" for i in data["misses"]["opencv"].get("blur", [])]
    assert saved  # OpenCV alone reads no blur frame of seed 0 (0% in the default run)
    p = _cli("decode", "--per-category", 1, "--decoders", "reader+ncnn", "--out", tmp_path / "x", timeout=120)
    if p.returncode == 0:  # a shipped NCNN model: the column simply runs
        assert "reader+ncnn %" in p.stdout
    else:
        assert p.returncode == 2 and "none of the --decoders can run here" in p.stderr and "Traceback" not in p.stderr
