"""Decompression memory below the pixel limit (issue 15 item 7): the limit is on decoded bytes
(pixels x channels x bytes per sample, from the header), and loading the largest image the
defaults allow stays under 400 MB of RSS (a 1 GB board). Real PNG files, the real CLI in a
subprocess, the real folder source."""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from edge_runtime import imageio
from edge_runtime.capture import open_source

ROOT = Path(__file__).resolve().parents[1]
SIDE = 6300  # 39.69 MP: under the 40 MP pixel limit
PEAK_RSS_MB = 400


def write_png(path: Path, w: int, h: int, bit_depth: int, colour_type: int, pixel: bytes) -> Path:
    """A constant-colour PNG written row by row: 6300x6300 16-bit RGBA is 317 MB of pixels
    but ~300 KB on disk, and building it never holds the pixels in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + pixel * w  # filter type 0 per row
    z = zlib.compressobj(9)
    idat = bytearray()
    for _ in range(h):
        idat += z.compress(row)
    idat += z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", bytes(idat)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("big")
    return {
        # 6300 x 6300 x 4 channels x 2 bytes = 317.5 MB decoded: the file.
        "rgba16": write_png(d / "rgba16.png", SIDE, SIDE, 16, 6, b"\x00\x00" * 3 + b"\x80\x00"),
        # 6300 x 6300 x 4 x 1 = 158.8 MB: the largest kind of image the defaults let through
        # (RGBA needs the most conversion work: composite on paper, then RGB or gray).
        "rgba8": write_png(d / "rgba8.png", SIDE, SIDE, 8, 6, b"\x20\x40\x60\x80"),
    }


def peak_rss_mb(code: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run `code` in a fresh interpreter; its peak RSS as seen by a parent that has no other child."""
    parent = ("import resource, subprocess, sys\n"
              "p = subprocess.run([sys.executable, '-c', sys.argv[1]], capture_output=True, text=True)\n"
              "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr)\n"
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
              "sys.exit(p.returncode)\n")
    p = subprocess.run([sys.executable, "-c", parent, code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    *out, rss_kb = p.stdout.splitlines()
    p.stdout = "\n".join(out)
    return p, int(rss_kb) / 1024


def test_decode_cli_refuses_16bit_rgba_under_the_pixel_limit_from_its_header(images):
    code = ("import sys; from edge_runtime.cli import main\n"
            f"sys.argv = ['edge-runtime', 'decode', '--detector', 'none', {str(images['rgba16'])!r}]\n"
            "sys.exit(main())\n")
    p, rss = peak_rss_mb(code)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr[-2000:])
    assert "Traceback" not in p.stderr
    (line,) = p.stdout.splitlines()
    assert line.startswith(f"{images['rgba16']}: error: image is 6300x6300, 4 channel(s) of 16 bits = 317.5 MB decoded")
    assert "above the limit of 160 MB" in line and "raise --max-image-mb" in line
    assert rss < 150, f"refusing from the header took {rss:.0f} MB"


def test_the_decoded_size_limit_is_a_cli_option(images):
    p = subprocess.run([sys.executable, "-m", "edge_runtime", "decode", "--json", "--detector", "none",
                        "--max-image-mb", "100", str(images["rgba8"])],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "158.8 MB decoded, above the limit of 100 MB" in json.loads(p.stdout)["error"]


def test_folder_source_skips_it_with_one_line(images, tmp_path, caplog):
    (tmp_path / "1_rgba16.png").symlink_to(images["rgba16"])
    Image.new("L", (400, 300), 200).save(tmp_path / "2_small.png")  # 0.12 MB decoded
    caplog.set_level(logging.WARNING)
    src = open_source({"kind": "folder", "path": str(tmp_path)})
    assert src.read().image.shape == (300, 400)
    assert src.read() is None
    (msg,) = [r.getMessage() for r in caplog.records if "1_rgba16.png" in r.getMessage()]
    assert "317.5 MB decoded, above the limit of 160 MB" in msg and "raise max_image_mb" in msg
    assert "\n" not in msg
    # The option is the source's own: a lower limit refuses the small image too.
    src = open_source({"kind": "folder", "path": str(tmp_path), "max_image_mb": 0.1})
    assert src.read() is None


@pytest.mark.parametrize("colour", [True, False], ids=["folder-bgr", "decode-gray"])
def test_largest_image_the_defaults_allow_loads_under_400_mb(images, colour):
    code = ("from edge_runtime import imageio\n"
            f"a = imageio.load({str(images['rgba8'])!r}, colour={colour})\n"
            "print(a.shape, a.dtype, a[0, 0].tolist())\n")
    p, rss = peak_rss_mb(code)
    assert p.returncode == 0, p.stderr[-2000:]
    # 50 % alpha over white paper: 255 - (255 - v) * 128 / 255 per channel.
    assert p.stdout == ("(6300, 6300, 3) uint8 [175, 159, 143]" if colour else "(6300, 6300) uint8 156")
    print(f"peak RSS {rss:.0f} MB")
    assert rss <= PEAK_RSS_MB, f"peak RSS {rss:.0f} MB loading a 158.8 MB-decoded image"


# -- the strip-wise conversion gives what Pillow's whole-image conversion gave -----------------

def reference(path: Path, colour: bool) -> np.ndarray:
    img = ImageOps.exif_transpose(Image.open(path))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255,) * 4), img.convert("RGBA"))
    if not colour or img.mode in ("L", "1"):
        return np.asarray(img.convert("L"))
    return np.asarray(img.convert("RGB"))[:, :, ::-1]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_match_pillow(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    a = rng.integers(0, 256, (37, 53, 4), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(a, "RGBA").save(path, exif=exif)
    for colour in (True, False):
        assert np.array_equal(imageio.load(path, colour=colour), reference(path, colour))


def test_strips_cover_every_row_and_16_bit_gray_keeps_its_range(tmp_path, monkeypatch):
    monkeypatch.setattr(imageio, "_STRIP_BYTES", 1000)  # many strips, the last one partial
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (101, 33, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert np.array_equal(imageio.load(tmp_path / "rgb.png", colour=True), rgb[:, :, ::-1])
    deep = rng.integers(0, 65536, (101, 33), np.uint16)
    Image.fromarray(deep).save(tmp_path / "g16.png")
    assert np.array_equal(imageio.load_gray(tmp_path / "g16.png"), (deep >> 8).astype(np.uint8))
    # 16-bit gray is 2 bytes per pixel for the limit.
    with pytest.raises(imageio.ImageError, match=r"1 channel\(s\) of 16 bits = 0.0 MB decoded"):
        imageio.load_gray(tmp_path / "g16.png", max_image_mb=0.001)
