"""`edge-runtime bench photos` on photo-like images from a generator the project never tunes on."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "edge_runtime", "bench", "photos", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    out = tmp_path_factory.mktemp("photos")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_foreign_photos.py"), str(out), "--count", "6", "--seed", "7"],
                   check=True, timeout=120)
    return out


def test_labelled_run_compares_every_decoder(photos, tmp_path):
    p = cli(photos, "--labels", photos / "labels.json", "--rotations", "0,180", "--out", tmp_path)
    assert p.returncode == 0, p.stderr
    res = json.loads((tmp_path / "bench-photos.json").read_text())
    assert res["images"] == 12
    decs = res["decoders"]
    assert set(decs) == {"reader", "zxing", "pyzbar", "opencv"}
    for name, s in decs.items():
        assert s["codes"] == 12 and 0 <= s["read"] <= 12
    assert decs["reader"]["false_reads"] == 0
    assert decs["reader"]["read"] >= max(s["read"] for s in decs.values())
    assert "| reader |" in p.stdout


def test_false_reads_are_counted_against_labels(photos, tmp_path):
    labels = json.loads((photos / "labels.json").read_text())
    wrong = {k: ["NOT-THE-PAYLOAD"] for k in labels}
    (photos / "wrong.json").write_text(json.dumps(wrong))
    p = cli(photos, "--labels", photos / "wrong.json", "--decoders", "zxing", "--out", tmp_path)
    res = json.loads((tmp_path / "bench-photos.json").read_text())
    assert res["decoders"]["zxing"]["read"] == 0 and res["decoders"]["zxing"]["false_reads"] >= 1


def test_csv_labels_and_unlabelled_mode(photos, tmp_path):
    labels = json.loads((photos / "labels.json").read_text())
    import csv

    with open(photos / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        for k, v in labels.items():
            w.writerow([k, v[0]])
    p = cli(photos, "--labels", photos / "labels.csv", "--decoders", "zxing")
    assert p.returncode == 0 and "| zxing | 6 |" in p.stdout
    p = cli(photos, "--decoders", "zxing")
    assert p.returncode == 0 and "false reads cannot be counted" in p.stdout


def test_bad_arguments_are_one_line_errors(photos, tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    p = cli(photos, "--labels", tmp_path / "bad.json")
    assert p.returncode == 2 and "bad.json: not valid labels" in p.stderr and "Traceback" not in p.stderr
    p = cli(photos, "--rotations", "45")
    assert p.returncode == 2 and "45 is not one of" in p.stderr
