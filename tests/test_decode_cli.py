"""`edge-runtime decode` end to end in a subprocess: output formats, exit codes, bad input."""

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qrgen import on_canvas, qr_image


def run_decode(*args, timeout=120):
    p = subprocess.run([sys.executable, "-m", "edge_runtime", "decode", *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def save_png(path, gray):
    Image.fromarray(gray).save(path)
    return path


def bomb_png(path, w=30000, h=30000):
    """A valid PNG header announcing 900 Mpx with a few bytes of data: decoding it would
    allocate ~900 MB, so it must be refused from the header alone."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def good(tmp_path):
    return save_png(tmp_path / "good.png", on_canvas(qr_image("GOOD-1", module_px=4), size=(300, 400), at=(20, 20)))


def test_json_output_schema_and_exit_zero(good):
    rc, out, err = run_decode("--json", good)
    assert rc == 0, err
    obj = json.loads(out)
    assert obj["source"] == str(good) and isinstance(obj["elapsed_ms"], float)
    (code,) = obj["codes"]
    assert code["text"] == "GOOD-1" and code["format"] == "QRCode"
    assert code["decoder"] == "zxing" and code["stage"] == "direct" and len(code["corners"]) == 4


def test_human_output(good):
    rc, out, _ = run_decode(good)
    assert rc == 0 and out.startswith(f"{good}: 1 code") and '"GOOD-1"' in out


def test_folder_in_natural_order_and_no_code_image(tmp_path):
    for i in (10, 2, 1):
        save_png(tmp_path / f"img{i}.png", on_canvas(qr_image(f"N{i}", module_px=4), size=(300, 300), at=(30, 30)))
    save_png(tmp_path / "img3.png", np.full((100, 100), 255, np.uint8))
    rc, out, _ = run_decode("--json", tmp_path)
    rows = [json.loads(line) for line in out.splitlines()]
    assert rc == 0
    assert [r["source"].rsplit("/", 1)[1] for r in rows] == ["img1.png", "img2.png", "img3.png", "img10.png"]
    assert [[c["text"] for c in r["codes"]] for r in rows] == [["N1"], ["N2"], [], ["N10"]]


def bad_inputs(tmp_path, good):
    data = good.read_bytes()
    jpg = io.BytesIO()
    Image.open(good).convert("RGB").save(jpg, "JPEG", quality=90)
    cases = {
        "empty.png": (b"", "empty file"),
        "truncated.png": (data[: len(data) // 2], "truncated"),
        "truncated.jpg": (jpg.getvalue()[: len(jpg.getvalue()) // 3], "truncated"),
        "text.png": (b"this is not an image\n", "not an image"),
    }
    paths = {}
    for name, (content, _) in cases.items():
        (tmp_path / name).write_bytes(content)
        paths[name] = cases[name][1]
    bomb_png(tmp_path / "bomb.png")
    paths["bomb.png"] = "above the limit"
    return paths


def test_every_bad_input_is_one_line_and_the_run_goes_on(tmp_path, good):
    expected = bad_inputs(tmp_path, good)
    empty_dir = tmp_path / "nothing-here"
    empty_dir.mkdir()
    args = [tmp_path / n for n in expected] + [empty_dir, tmp_path / "missing.png", good]
    rc, out, err = run_decode("--json", *args)
    assert rc == 1
    assert "Traceback" not in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == len(args)
    by_name = {r["source"].rsplit("/", 1)[1]: r for r in rows}
    for name, needle in expected.items():
        assert needle in by_name[name]["error"], by_name[name]
        assert "\n" not in by_name[name]["error"]
    assert "no images" in by_name["nothing-here"]["error"]
    assert "no such file" in by_name["missing.png"]["error"]
    assert [c["text"] for c in by_name["good.png"]["codes"]] == ["GOOD-1"]


def test_pixel_limit_is_configurable(tmp_path, good):
    rc, out, _ = run_decode("--json", "--max-pixels", "1000", good)
    assert rc == 1 and "above the limit of 1,000" in json.loads(out)["error"]


def test_bomb_is_refused_without_decoding(tmp_path):
    """Refused from the header: the process never allocates the 900 MB of pixels."""
    import resource

    bomb = bomb_png(tmp_path / "bomb.png")
    code = ("import resource,sys;from edge_runtime.imageio import load_gray,ImageError\n"
            f"try: load_gray({str(bomb)!r})\nexcept ImageError as e: print(e)\n"
            # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking
            # process, so late in a long test session it reported pytest's own size.
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    msg, maxrss_kb = p.stdout.splitlines()
    assert "30000x30000" in msg
    assert int(maxrss_kb) < 400_000


def test_exif_orientation_is_honoured(tmp_path):
    upright = on_canvas(qr_image("EXIF-6", module_px=4), size=(300, 500), at=(10, 10), fill=255)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # as a sideways camera stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "sideways.jpg"
    stored.convert("RGB").save(path, "JPEG", quality=95, exif=exif)
    from edge_runtime.imageio import load_gray

    assert load_gray(path).shape == upright.shape
    rc, out, _ = run_decode("--json", path)
    (code,) = json.loads(out)["codes"]
    xs = [p[0] for p in code["corners"]]
    ys = [p[1] for p in code["corners"]]
    assert code["text"] == "EXIF-6" and max(xs) < 250 and max(ys) < 200  # top-left, as displayed


def test_transparent_png_reads_as_paper(tmp_path):
    code = qr_image("ALPHA", module_px=4)
    rgba = np.zeros(code.shape + (4,), np.uint8)
    rgba[..., 3] = np.where(code == 0, 255, 0)  # black modules, transparent elsewhere
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    rc, out, _ = run_decode("--json", path)
    assert rc == 0 and [c["text"] for c in json.loads(out)["codes"]] == ["ALPHA"]


def test_non_utf8_payload_carries_bytes_b64(tmp_path):
    import base64

    payload = bytes([0x93, 0xFA, 0x00, 0xFF, 0x1B, 0x5B])
    path = save_png(tmp_path / "bin.png", qr_image(payload, module_px=4, mode="byte"))
    rc, out, _ = run_decode("--json", path)
    (code,) = json.loads(out)["codes"]
    assert base64.b64decode(code["bytes_b64"]) == payload


def test_ansi_payload_is_escaped_in_human_output(tmp_path):
    path = save_png(tmp_path / "ansi.png", qr_image("\x1b[2J\x1b[31mRED", module_px=4))
    rc, out, _ = run_decode(path)
    assert "\x1b" not in out and "\\x1b[31mRED" in out


def test_human_output_prints_payload_as_is_except_controls_and_bidi(tmp_path):
    """Issue 16: a backslash is printed once (not doubled); only what would break the line or
    the terminal is escaped: control characters as \\xNN, bidi controls as \\uNNNN."""
    payload = "http\\://plant.example/\u202eLOT-1\x07\u2066end"
    path = save_png(tmp_path / "mixed.png", on_canvas(qr_image(payload, module_px=4), size=(400, 400), at=(20, 20)))
    rc, out, err = run_decode("--json", path)
    assert rc == 0 and [c["text"] for c in json.loads(out)["codes"]] == [payload], err  # the image holds it
    rc, out, err = run_decode(path)
    assert rc == 0, err
    assert '"http\\://plant.example/\\u202eLOT-1\\x07\\u2066end"' in out
    assert "\\\\" not in out
    assert not any(ch in out for ch in "\u202e\u2066\x07")
    assert out.count("\n") == 1


def test_corners_of_a_code_partly_out_of_view_are_not_clipped(tmp_path):
    """Issue 16: corners are the code's geometry, not clipped to the frame (clipping would distort
    the quadrilateral a PLC may use), and the result schema and README say so."""
    code = np.pad(qr_image("EDGE-1", module_px=8), ((40, 40), (0, 40)), constant_values=255)
    path = save_png(tmp_path / "cut.png", np.ascontiguousarray(code[:, 36:]))  # half a module out on the left
    rc, out, err = run_decode("--json", path)
    assert rc == 0, err
    (c,) = json.loads(out)["codes"]
    assert c["text"] == "EDGE-1"
    xs = [x for x, _ in c["corners"]]
    assert min(xs) < 0 and max(xs) > 100  # two corners left of the image, the shape kept
    root = Path(__file__).resolve().parent.parent
    desc = json.loads((root / "edge_runtime/data/result.schema.json").read_text())["properties"]["corners"]["description"]
    assert "Not clipped" in desc and "outside" in desc
    results = (root / "README.md").read_text().split("## Results", 1)[1].split("\n## ", 1)[0]
    assert "not clipped" in results and "outside the frame" in results


def test_unknown_detector_is_a_usage_error(good):
    rc, _, err = run_decode("--detector", "gpu", good)
    assert rc == 2 and "invalid choice" in err
