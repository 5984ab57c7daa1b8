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
from PIL import Image, ImageOps, UnidentifiedImageError

# 40 MP: larger than any industrial camera or phone photo we expect, and ~40 MB as gray.
DEFAULT_MAX_PIXELS = 40_000_000
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm", ".pnm")

# We enforce our own limit (configurable, checked from the header); Pillow's own
# bomb check would warn or raise with a different message.
Image.MAX_IMAGE_PIXELS = None


class ImageError(Exception):
    """A file that cannot be decoded into an image, with a one-line reason."""


def load_gray(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read `path` as an upright 8-bit grayscale array (EXIF orientation applied)."""
    return load(path, max_pixels, colour=False)


def load(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS, *, colour: bool = False,
         limit_name: str = "--max-pixels") -> np.ndarray:
    """Read `path` upright (EXIF orientation applied) as uint8: gray, or with colour=True BGR
    for colour files (gray files stay 2-D). `limit_name` is what the user sets to raise the
    pixel limit (a CLI flag or a config key), named in the refusal."""
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
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_bgr_or_gray(img) if colour else _to_gray(img)
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


def _on_paper(img: Image.Image) -> Image.Image:
    # A QR exported as black modules on a transparent background would turn black on
    # black if its alpha were dropped: composite over white paper first.
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba)
    return img


def _high_depth(img: Image.Image) -> np.ndarray | None:
    """16-bit and 32-bit gray (industrial TIFFs) to 8 bits, instead of clipping to white."""
    if img.mode.startswith("I;16"):
        return (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
    if img.mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        return np.zeros(a.shape, np.uint8) if hi <= lo else ((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return None


def _to_gray(img: Image.Image) -> np.ndarray:
    deep = _high_depth(img)
    if deep is not None:
        return np.ascontiguousarray(deep)
    return np.ascontiguousarray(np.asarray(_on_paper(img).convert("L"), dtype=np.uint8))


def _to_bgr_or_gray(img: Image.Image) -> np.ndarray:
    deep = _high_depth(img)
    if deep is not None:
        return np.ascontiguousarray(deep)
    if img.mode in ("L", "1"):
        return np.ascontiguousarray(np.asarray(img.convert("L"), dtype=np.uint8))
    rgb = np.asarray(_on_paper(img).convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


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
