"""Load image files for decoding, refusing what would hurt a small board.

Every failure is an ImageError with one line that says what is wrong with which file;
a decompression bomb is refused from its header, before a single pixel is decoded.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# 40 MP: larger than any industrial camera or phone photo we expect, and ~40 MB as gray.
DEFAULT_MAX_PIXELS = 40_000_000
# The pixel limit alone let a 39.7 MP 16-bit RGBA PNG (309 KB on disk) through, and decoding
# it peaked at 836 MB (issue 15). What costs RAM is the decoded bytes: pixels x channels x
# bytes per sample, as the file declares them. 160 MB lets a 40 MP RGBA or RGB photo through;
# with the strip-wise conversion below the load of any such image peaks under 400 MB.
DEFAULT_MAX_IMAGE_MB = 160.0
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm", ".pnm")
_STRIP_BYTES = 4 << 20  # conversion works on strips of rows of about this size (see _convert)

# We enforce our own limit (configurable, checked from the header); Pillow's own
# bomb check would warn or raise with a different message.
Image.MAX_IMAGE_PIXELS = None


class ImageError(Exception):
    """A file that cannot be decoded into an image, with a one-line reason."""


def load_gray(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS, *,
              max_image_mb: float = DEFAULT_MAX_IMAGE_MB) -> np.ndarray:
    """Read `path` as an upright 8-bit grayscale array (EXIF orientation applied)."""
    return load(path, max_pixels, colour=False, max_image_mb=max_image_mb)


def load(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS, *, colour: bool = False,
         limit_name: str = "--max-pixels", max_image_mb: float = DEFAULT_MAX_IMAGE_MB,
         mb_limit_name: str = "--max-image-mb") -> np.ndarray:
    """Read `path` upright (EXIF orientation applied) as uint8: gray, or with colour=True BGR
    for colour files (gray files stay 2-D). `limit_name` and `mb_limit_name` are what the user
    sets to raise the pixel and the decoded-size limits (a CLI flag or a config key), named in
    the refusal."""
    p = Path(path)
    if not p.exists():
        raise ImageError("no such file")
    if p.is_dir():
        raise ImageError("is a folder, not an image")
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise ImageError(f"cannot read: {exc.strerror or exc}") from None
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(p) as img:
                w, h = img.size  # from the header; no pixel decoded yet
                if w * h > max_pixels:
                    raise ImageError(
                        f"image is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,} "
                        f"(a decompression bomb or a mistake; raise {limit_name} to allow it)"
                    )
                channels, bits = _samples(img)
                mb = w * h * channels * (bits // 8) / 1e6
                if mb > max_image_mb:
                    raise ImageError(
                        f"image is {w}x{h}, {channels} channel(s) of {bits} bits = {mb:,.1f} MB decoded, "
                        f"above the limit of {max_image_mb:g} MB (a decompression bomb or a mistake; "
                        f"raise {mb_limit_name} to allow it)"
                    )
                img.load()
                orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation
                out = _convert(img, colour)
                img.close()  # frees the decoded pixels before the upright copy below
                return _upright(out, orientation)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised format)") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"corrupt or truncated image ({msg})") from None
    except Image.DecompressionBombError as exc:  # pragma: no cover - our limit comes first
        raise ImageError(str(exc)) from None


def _samples(img: Image.Image) -> tuple[int, int]:
    """(channels, bits per sample) as the file declares them, from the header.

    Pillow's mode is what it stores, which can be less than the file holds: a 16-bit RGBA PNG
    opens as "RGBA" with raw mode "RGBA;16B". The raw mode of the first tile tells the depth.
    """
    channels = len(img.getbands())
    bits = 8
    if img.mode.startswith("I;16"):
        bits = 16
    elif img.mode in ("I", "F"):
        bits = 32
    for tile in img.tile[:1]:
        raw = tile[3] if len(tile) > 3 else None
        raw = raw[0] if isinstance(raw, tuple) and raw else raw
        if isinstance(raw, str):
            m = re.search(r";(16|32)", raw)
            if m:
                bits = max(bits, int(m.group(1)))
    return channels, bits


def _convert(img: Image.Image, colour: bool) -> np.ndarray:
    """The decoded image to uint8 gray (or BGR), one strip of rows at a time.

    Converting the whole image at once made a full-size copy per step (copy, RGBA, white
    paper, composite, RGB, array): five copies of a 160 MB image. Strip by strip, the only
    full-size allocation is the output.
    """
    w, h = img.size
    deep = img.mode.startswith("I;16") or img.mode in ("I", "F")
    gray = not colour or deep or img.mode in ("L", "1")
    span = img.getextrema() if img.mode in ("I", "F") else None  # whole-image range, no copy
    out = np.empty((h, w) if gray else (h, w, 3), np.uint8)
    rows = max(1, _STRIP_BYTES // (4 * w))
    for y in range(0, h, rows):
        strip = img.crop((0, y, w, min(h, y + rows)))
        out[y:y + rows] = _strip_to_uint8(strip, gray, span)
    return out


def _strip_to_uint8(img: Image.Image, gray: bool, span: tuple | None) -> np.ndarray:
    # 16-bit and 32-bit gray (industrial TIFFs) to 8 bits, instead of clipping to white.
    if img.mode.startswith("I;16"):
        return (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
    if img.mode in ("I", "F"):
        lo, hi = float(span[0]), float(span[1])
        if hi <= lo:
            return np.zeros((img.height, img.width), np.uint8)
        return ((np.asarray(img, dtype=np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if gray:
        return np.asarray(_on_paper(img).convert("L"), dtype=np.uint8)
    return np.asarray(_on_paper(img).convert("RGB"), dtype=np.uint8)[:, :, ::-1]


# EXIF Orientation -> how to turn the stored pixels upright (as ImageOps.exif_transpose does),
# as numpy views: the one copy is made by _upright.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _upright(a: np.ndarray, orientation: object) -> np.ndarray:
    turn = _ORIENT.get(orientation) if isinstance(orientation, int) else None
    return a if turn is None else np.ascontiguousarray(turn(a))


def _on_paper(img: Image.Image) -> Image.Image:
    # A QR exported as black modules on a transparent background would turn black on
    # black if its alpha were dropped: composite over white paper first.
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba)
    return img


def natural_key(name: str) -> list:
    """'img2.png' < 'img10.png': digit runs compare as numbers, the rest case-insensitively."""
    return [(0, int(part), part) if part.isdigit() else (1, part.lower(), part) for part in re.split(r"(\d+)", name)]


def expand(paths: list[str]) -> list[tuple[str, str | None]]:
    """Files and folders -> [(source, error|None)] in natural order.

    A folder contributes its image files (recursively); a folder without any gives one
    error entry so the user sees it instead of silence.
    """
    out: list[tuple[str, str | None]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files = sorted(
                (f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS),
                key=lambda f: natural_key(str(f)),
            )
            if not files:
                out.append((raw, f"folder has no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS[:4])}, ...)"))
            out.extend((str(f), None) for f in files)
        elif not p.exists():
            out.append((raw, "no such file or folder"))
        else:
            out.append((raw, None))
    return out
