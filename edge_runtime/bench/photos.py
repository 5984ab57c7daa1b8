"""`edge-runtime bench photos`: every decoder side by side on your own labelled photos.

This is how an integrator checks us against their line before trusting us: point it at a
folder of camera images and a labels file, and it prints read rate, false reads and time
per image for this reader and for zxing-cpp, ZBar and OpenCV alone, at each rotation asked.

Labels: JSON `{"img001.jpg": ["LOT-123"], "img002.jpg": []}` or CSV rows `file,payload`
(one row per code; a file with no code may appear with an empty payload). File names are
relative to the labels file. Without labels, the union of what any decoder read is used
as the truth, so rates compare decoders but false reads cannot be told.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.bench.decode import DEFAULT_DECODERS, load_decoders
from edge_runtime.imageio import ImageError, expand, load_gray

_ROT = {0: None, 90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def load_labels(path: Path) -> dict[str, set[str]]:
    from edge_runtime.cli import UserError

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read labels ({exc.strerror or exc})") from None
    labels: dict[str, set[str]] = {}
    base = path.parent
    try:
        if path.suffix.lower() == ".json":
            for name, payloads in json.loads(text).items():
                if not isinstance(payloads, list) or not all(isinstance(p, str) for p in payloads):
                    raise UserError(f"{path}: {name!r}: expected a list of payload strings")
                labels[str((base / name).resolve())] = set(payloads)
        else:
            for row in csv.reader(text.splitlines()):
                if not row or row[0].startswith("#"):
                    continue
                key = str((base / row[0]).resolve())
                labels.setdefault(key, set())
                if len(row) > 1 and row[1]:
                    labels[key].add(row[1])
    except (json.JSONDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: not valid labels ({str(exc).splitlines()[0]})") from None
    return labels


def _texts(reads) -> set[str]:
    out = set()
    for r in reads:
        raw = bytes(r.raw)
        out.add(getattr(r, "text", None) or raw.decode("utf-8", "replace"))
    return out


def run_photos(paths: list[str], labels: dict[str, set[str]] | None, decoders, rotations, max_pixels: int) -> dict:
    fns, skipped = load_decoders(decoders)
    cells = {d: {"codes": 0, "read": 0, "false": 0, "ms": [], "direct_ratio": []} for d in fns}
    errors, images = [], 0
    for source, err in expand(paths):
        if err is None:
            try:
                gray = load_gray(source, max_pixels=max_pixels)
            except ImageError as exc:
                err = str(exc)
        if err is not None:
            errors.append({"source": source, "error": err})
            continue
        truth = None if labels is None else labels.get(str(Path(source).resolve()))
        if labels is not None and truth is None:
            continue  # not labelled: not part of the evaluation
        for rot in rotations:
            img = gray if _ROT[rot] is None else cv2.rotate(gray, _ROT[rot])
            bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            images += 1
            got, ms = {}, {}
            for name, fn in fns.items():
                t0 = time.perf_counter()
                got[name] = _texts(fn(bgr))
                ms[name] = (time.perf_counter() - t0) * 1000.0
            want = truth if truth is not None else set().union(*got.values())
            for name in fns:
                c = cells[name]
                c["codes"] += len(want)
                c["read"] += len(got[name] & want)
                c["false"] += len(got[name] - want) if truth is not None else 0
                c["ms"].append(ms[name])
                # The time we cost where zxing-cpp alone already reads everything.
                if "zxing" in got and want and want <= got["zxing"]:
                    c["direct_ratio"].append(ms[name] / max(ms["zxing"], 1e-3))
    summary = {}
    for name, c in cells.items():
        t = np.asarray(c["ms"] or [0.0])
        summary[name] = {
            "codes": c["codes"], "read": c["read"],
            "rate": round(100.0 * c["read"] / c["codes"], 1) if c["codes"] else 0.0,
            "false_reads": c["false"] if labels is not None else None,
            "p50_ms": round(float(np.percentile(t, 50)), 1), "p99_ms": round(float(np.percentile(t, 99)), 1),
            "time_vs_zxing_where_zxing_reads": round(float(np.median(c["direct_ratio"])), 2) if c["direct_ratio"] else None,
        }
    return {"images": images, "rotations": list(rotations), "labelled": labels is not None,
            "decoders": summary, "skipped": skipped, "errors": errors}


def to_markdown(res: dict) -> str:
    rows = ["| decoder | codes | read | rate % | false reads | p50 ms | p99 ms | time / zxing (where zxing reads) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in res["decoders"].items():
        fr = "n/a" if s["false_reads"] is None else s["false_reads"]
        ratio = "" if s["time_vs_zxing_where_zxing_reads"] is None else f"{s['time_vs_zxing_where_zxing_reads']:.2f}x"
        rows.append(f"| {name} | {s['codes']} | {s['read']} | {s['rate']:.1f} | {fr} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {ratio} |")
    head = f"# Photo bench: {res['images']} image views (rotations {', '.join(map(str, res['rotations']))})"
    note = "" if res["labelled"] else "\nNo labels: truth = union of all decoders' reads; false reads cannot be counted.\n"
    errs = "".join(f"\nUnreadable: {e['source']}: {e['error']}" for e in res["errors"])
    return head + "\n\n" + "\n".join(rows) + "\n" + note + errs + ("\n" if errs else "")


def run(args) -> int:
    from edge_runtime.cli import UserError

    try:
        rotations = [int(r) for r in args.rotations.split(",") if r.strip()]
    except ValueError:
        raise UserError(f"--rotations {args.rotations!r}: expected degrees like 0,90,180") from None
    bad = [r for r in rotations if r not in _ROT]
    if bad:
        raise UserError(f"--rotations: {bad[0]} is not one of 0, 90, 180, 270")
    labels = load_labels(Path(args.labels)) if args.labels else None
    res = run_photos(args.paths, labels, args.decoders.split(","), rotations, args.max_pixels)
    md = to_markdown(res)
    sys.stdout.write(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench-photos.md").write_text(md, encoding="utf-8")
        (out / "bench-photos.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("photos", help="every decoder side by side on your own (labelled) photos")
    p.add_argument("paths", nargs="+", metavar="PATH", help="images or folders")
    p.add_argument("--labels", help="JSON {file: [payload, ...]} or CSV file,payload")
    p.add_argument("--rotations", default="0", help="evaluate each image at these rotations, e.g. 0,90,180")
    p.add_argument("--decoders", default=",".join(DEFAULT_DECODERS), help="columns (default %(default)s)")
    p.add_argument("--max-pixels", type=int, default=40_000_000)
    p.add_argument("--out", help="also write bench-photos.md/.json here")
    p.set_defaults(func=run)
