"""`edge-runtime decode`: read QR codes from image files or folders, models loaded once."""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time

from edge_runtime import detect
from edge_runtime.code import Code
from edge_runtime.imageio import DEFAULT_MAX_IMAGE_MB, DEFAULT_MAX_PIXELS, ImageError, expand, load_gray
from edge_runtime.textsafe import printable


def add_parser(sub) -> None:
    p = sub.add_parser("decode", help="read QR codes from images or folders of images")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--json", action="store_true", help="one JSON object per image per line")
    p.add_argument("--detector", choices=detect.CHOICES, default="auto", help="INT8 code detector (default: auto)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images (default %(default)s)")
    p.add_argument("--max-image-mb", type=float, default=DEFAULT_MAX_IMAGE_MB,
                   help="refuse images whose decoded size (pixels x channels x bytes per sample, "
                        "from the header) is larger (default %(default)s)")
    p.add_argument("--deadline-ms", type=float, default=None, help="stop retrying a hard image after this long")
    p.set_defaults(func=run)


def code_json(c: Code) -> dict:
    d = c.to_dict()
    if c.kind == "read":
        d["quality"] = c.quality  # null when the grid could not be measured
    try:
        c.raw.decode("utf-8")
    except UnicodeDecodeError:
        # text is then a best guess; the bytes are the truth, carried losslessly.
        d["bytes_b64"] = base64.b64encode(c.raw).decode("ascii")
    return d


def run(args: argparse.Namespace) -> int:
    from edge_runtime.cli import UserError
    from edge_runtime.quality import attach_quality
    from edge_runtime.reader import Reader

    try:
        reader = Reader(detector=args.detector, deadline_ms=args.deadline_ms)
    except (detect.DetectorUnavailable, RuntimeError) as exc:
        raise UserError(f"--detector {args.detector}: {exc}") from None
    failed = 0
    out = sys.stdout
    # A Namespace built by hand (tests/test_fuzz.py) may predate --max-image-mb: use its default.
    max_image_mb = getattr(args, "max_image_mb", DEFAULT_MAX_IMAGE_MB)
    for source, error in expand(args.paths):
        t0 = time.perf_counter()
        codes: list[Code] = []
        gray = None
        if error is None:
            try:
                gray = load_gray(source, max_pixels=args.max_pixels, max_image_mb=max_image_mb)
                codes = reader.read(gray)
            except ImageError as exc:
                error = str(exc)
        ms = (time.perf_counter() - t0) * 1000.0
        if args.json and codes and gray is not None:
            # Offline, so the extra ~1 ms a code is fine: every JSON read says how well it
            # was printed (edge_runtime.quality). Not counted in elapsed_ms (the read's time).
            attach_quality(gray, codes)
        if error is not None:
            failed += 1
        if args.json:
            obj = {"source": source, "error": error} if error else {
                "source": source, "codes": [code_json(c) for c in codes], "elapsed_ms": round(ms, 2)}
            out.write(json.dumps(obj, ensure_ascii=True) + "\n")
        elif error:
            out.write(f"{printable(source)}: error: {error}\n")
        elif not codes:
            out.write(f"{printable(source)}: no code ({ms:.1f} ms)\n")
        else:
            texts = "; ".join(f'"{printable(c.text, 200)}" ({c.decoder}/{c.stage})' for c in codes)
            out.write(f"{printable(source)}: {len(codes)} code{'s' if len(codes) > 1 else ''} ({ms:.1f} ms): {texts}\n")
        out.flush()
    return 1 if failed else 0
