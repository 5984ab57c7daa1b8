"""`edge-runtime bench decode`: read rate, false reads and time per frame, decoder by decoder.

Every decoder (a column) sees the same synthetic frames, category by category, so the
table says where the Reader earns its extra milliseconds over a plain library call.

Adding a column: `register("my-pipeline", lambda: MyPipeline().read)`.
A factory returns a function `frame (BGR uint8) -> list of reads`, where a read is any
object with `.raw` (bytes) and `.corners` (4 (x, y) points) -- `Code` already is one
(and its `.stage` is tallied). A factory that cannot run here raises `Unavailable` and
its column is left out with a note. Reader variants: `register(name, reader_column(...))`
with Reader keywords, so `--deadline-ms` reaches them too.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.synth.frames import CATEGORIES, make_frame

DecodeFn = Callable[[np.ndarray], list]
DECODERS: dict[str, Callable[[], DecodeFn]] = {}
DEFAULT_DECODERS = ["reader", "zxing", "pyzbar", "opencv"]


class Unavailable(RuntimeError):
    """This decoder cannot run on this machine (library or model missing)."""


def register(name: str, factory: Callable[[], DecodeFn]) -> None:
    """Offer a decoder/pipeline as a bench column under `name`."""
    DECODERS[name] = factory


@dataclass
class Read:
    raw: bytes
    corners: list[tuple[float, float]]


# --- the columns -----------------------------------------------------------------------

def reader_column(**options) -> Callable[..., DecodeFn]:
    """A column running `Reader(**options)`; bench-wide Reader options (deadline) are merged in."""

    def factory(**overrides) -> DecodeFn:
        from edge_runtime import Reader

        try:
            return Reader(**{**options, **overrides}).read
        except Exception as exc:  # a missing model or runtime: leave the column out
            raise Unavailable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc

    factory.reader_options = True  # type: ignore[attr-defined]
    return factory


def _zxing() -> DecodeFn:
    """zxing-cpp as a user would call it: QR family, library defaults."""
    import zxingcpp

    formats = [zxingcpp.BarcodeFormat.QRCode, zxingcpp.BarcodeFormat.MicroQRCode, zxingcpp.BarcodeFormat.RMQRCode]
    try:
        zxingcpp.read_barcodes(np.zeros((8, 8), np.uint8), formats=formats)
    except TypeError:  # zxing-cpp < 2.3 wants the | combination
        f = formats[0]
        for x in formats[1:]:
            f = f | x
        formats = f

    def run(frame: np.ndarray) -> list[Read]:
        out = []
        for b in zxingcpp.read_barcodes(frame, formats=formats):
            p = b.position
            pts = (p.top_left, p.top_right, p.bottom_right, p.bottom_left)
            out.append(Read(bytes(b.bytes), [(float(q.x), float(q.y)) for q in pts]))
        return out

    return run


def _pyzbar() -> DecodeFn:
    try:
        from pyzbar import pyzbar
    except (ImportError, OSError) as exc:
        raise Unavailable(f"pyzbar/libzbar0 missing ({exc})") from exc

    def run(frame: np.ndarray) -> list[Read]:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        out = []
        for r in pyzbar.decode(gray, symbols=[pyzbar.ZBarSymbol.QRCODE]):
            out.append(Read(bytes(r.data), [(float(q.x), float(q.y)) for q in r.polygon]))
        return out

    return run


def _opencv() -> DecodeFn:
    factory = getattr(cv2, "QRCodeDetectorAruco", None) or cv2.QRCodeDetector
    det = factory()

    def run(frame: np.ndarray) -> list[Read]:
        try:
            ok, texts, points, _ = det.detectAndDecodeMulti(frame)
        except cv2.error:
            return []
        if not ok or points is None:
            return []
        # OpenCV returns text only; the bytes a user gets from it are that text as UTF-8.
        return [
            Read(t.encode("utf-8", "surrogateescape"), [(float(x), float(y)) for x, y in q])
            for t, q in zip(texts, points)
            if t
        ]

    return run


register("reader", reader_column())
register("zxing", _zxing)
register("pyzbar", _pyzbar)
register("opencv", _opencv)
# Not in the default run: they need a shipped model, or isolate what the detector adds.
register("reader (no detector)", reader_column(detector="none"))
register("reader+tflite", reader_column(detector="tflite"))
register("reader+ncnn", reader_column(detector="ncnn"))


# --- scoring ---------------------------------------------------------------------------

@dataclass
class FrameScore:
    present: int = 0
    read: int = 0
    false: list[bytes] = field(default_factory=list)  # bytes not in the frame at all
    mangled: int = 0  # of those: a frame payload re-encoded (binary/Shift-JIS read as Latin-1)
    misplaced: int = 0  # right bytes, centre outside that code's polygon
    stages: dict[str, int] = field(default_factory=dict)  # reads counted, by the Reader's stage
    matched: set[int] = field(default_factory=set)  # indices of the truths read


def _center(corners: Sequence[Sequence[float]]) -> tuple[float, float]:
    pts = np.asarray(corners, dtype=np.float64).reshape(-1, 2)
    return float(pts[:, 0].mean()), float(pts[:, 1].mean())


def _inside(pt: tuple[float, float], poly: Sequence[Sequence[float]], tol: float = 2.0) -> bool:
    contour = np.asarray(poly, dtype=np.float32).reshape(-1, 1, 2)
    return cv2.pointPolygonTest(contour, (float(pt[0]), float(pt[1])), True) >= -tol


def _same_payload(raw: bytes, payload: bytes) -> bool:
    """Exact bytes, or the same text delivered as UTF-8 (ZBar transcodes Shift-JIS).

    A binary payload (neither UTF-8 nor Shift-JIS) must come back byte for byte: a
    decoder that "transcodes" it hands the PLC bytes no label ever carried.
    """
    if raw == payload:
        return True
    for enc in ("utf-8", "shift_jis"):
        try:
            return payload.decode(enc) == raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return False


def _mangled(raw: bytes, payload: bytes) -> bool:
    """True if `raw` is `payload` decoded with a wrong charset and re-encoded as UTF-8.

    Tells "read the right code, delivered the wrong bytes" (a charset bug one can fix)
    from a phantom read of a code that is not there.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    for enc in ("latin-1", "cp1252", "shift_jis", "utf-8"):
        try:
            decoded = payload.decode(enc)
        except UnicodeDecodeError:
            continue
        # OpenCV hands back a C string: a binary payload ends at its first NUL.
        if text in (decoded, decoded.split("\x00")[0]):
            return True
    return False


def score_frame(reads: Iterable, truths: list[dict]) -> FrameScore:
    """Match reads to truths: same payload and the read's centre inside the truth's polygon.

    A code read twice counts once. Bytes that are in no truth of the frame are a false
    read -- the one outcome worse than a no-read on a line, reported separately.
    """
    s = FrameScore(present=len(truths))
    matched: set[int] = set()
    for r in reads:
        raw = bytes(r.raw)
        same = [i for i, t in enumerate(truths) if _same_payload(raw, t["payload"])]
        if not same:
            s.false.append(raw)
            s.mangled += any(_mangled(raw, t["payload"]) for t in truths)
            continue
        c = _center(r.corners) if len(r.corners) else None
        hit = next((i for i in same if c is not None and _inside(c, truths[i]["corners"])), None)
        if hit is None:
            s.misplaced += 1
        elif hit not in matched:
            matched.add(hit)
            stage = getattr(r, "stage", None)
            if stage:
                s.stages[stage] = s.stages.get(stage, 0) + 1
    s.read = len(matched)
    s.matched = matched
    return s


# --- running ---------------------------------------------------------------------------

@dataclass
class _Cell:
    present: int = 0
    read: int = 0
    false: int = 0
    mangled: int = 0
    misplaced: int = 0
    stages: dict[str, int] = field(default_factory=dict)
    times_ms: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # print quality scores of the reads (Reader columns)

    def add(self, s: FrameScore, ms: float) -> None:
        self.present += s.present
        self.read += s.read
        self.false += len(s.false)
        self.mangled += s.mangled
        self.misplaced += s.misplaced
        for k, v in s.stages.items():
            self.stages[k] = self.stages.get(k, 0) + v
        self.times_ms.append(ms)

    def summary(self) -> dict:
        t = np.asarray(self.times_ms) if self.times_ms else np.zeros(1)
        return {
            "codes": self.present,
            "read": self.read,
            "rate": round(100.0 * self.read / self.present, 1) if self.present else 0.0,
            "false_reads": self.false,
            "false_mangled": self.mangled,
            "misplaced": self.misplaced,
            "stages": dict(sorted(self.stages.items())),
            "p50_ms": round(float(np.percentile(t, 50)), 2),
            "p99_ms": round(float(np.percentile(t, 99)), 2),
            # The worst frame: a deadline is a promise about every frame, not the 99th.
            "max_ms": round(float(t.max()), 2),
            "mean_ms": round(float(t.mean()), 2),
            **self._grade(),
        }

    def _grade(self) -> dict:
        if not self.scores:
            return {}
        from edge_runtime.quality import letter

        mean = float(np.mean(self.scores))
        return {"mean_score": round(mean, 2), "mean_grade": letter(mean), "graded": len(self.scores)}


def _grade_reads(frame: np.ndarray, reads: list, *cells: _Cell) -> None:
    """Print quality of a Reader column's reads (Code objects), outside the timed call:
    the bench's grade column says how the synthetic damage looks to edge_runtime.quality."""
    from edge_runtime.code import Code
    from edge_runtime.quality import attach_quality

    codes = [r for r in reads if isinstance(r, Code) and r.kind == "read"]
    if not codes:
        return
    attach_quality(frame, codes)
    for c in codes:
        if c.quality is not None:
            for cell in cells:
                cell.scores.append(c.quality["score"])


def load_decoders(
    names: Sequence[str], reader_options: dict | None = None
) -> tuple[dict[str, DecodeFn], dict[str, str]]:
    """Instantiate the named columns; unknown names are a user error, unavailable ones a note."""
    from edge_runtime.cli import UserError

    unknown = [n for n in names if n not in DECODERS]
    if unknown:
        raise UserError(f"unknown decoder {unknown[0]!r} for --decoders; choose from {', '.join(DECODERS)}")
    fns, skipped = {}, {}
    for n in names:
        fac = DECODERS[n]
        try:
            fns[n] = fac(**(reader_options or {})) if getattr(fac, "reader_options", False) else fac()
        except Unavailable as exc:
            skipped[n] = str(exc)
    if not fns:
        why = "; ".join(f"{n}: {w}" for n, w in skipped.items())
        raise UserError(f"none of the --decoders can run here ({why})")
    return fns, skipped


def run_bench(
    seed: int = 0,
    per_category: int = 20,
    decoders: Sequence[str] = DEFAULT_DECODERS,
    categories: Sequence[str] = CATEGORIES,
    progress: Callable[[str], None] | None = None,
    reader_options: dict | None = None,
    on_miss: Callable[[str, int, np.ndarray], None] | None = None,
) -> dict:
    """Run every decoder on the same frames; return the result as a JSON-ready dict.

    `on_miss(category, index, frame)` is called for frames where the first column
    missed a code or read a false one -- the frames worth looking at.
    """
    fns, skipped = load_decoders(decoders, reader_options)
    misses: dict[str, dict[str, list[int]]] = {d: {} for d in fns}
    # Codes read by at least one column: how far from "readable in principle" the best is.
    union = {c: [0, 0] for c in categories}
    unread: list[dict] = []
    cells = {c: {d: _Cell() for d in fns} for c in categories}
    overall = {d: _Cell() for d in fns}
    false_reads: list[dict] = []
    warmed = False
    t_start = time.perf_counter()
    for cat in categories:
        t_cat = time.perf_counter()
        for i in range(per_category):
            frame, truths = make_frame(cat, seed, i)
            if not warmed:  # first-call costs (imports, allocations) are not per-frame costs
                for fn in fns.values():
                    fn(frame)
                warmed = True
            # Decoders take turns on each frame, so a burst of load on this shared
            # machine hits all columns alike rather than one category of one column.
            anyone: set[int] = set()
            for name, fn in fns.items():
                t0 = time.perf_counter()
                reads = fn(frame)
                ms = (time.perf_counter() - t0) * 1000.0
                _grade_reads(frame, reads, cells[cat][name], overall[name])
                s = score_frame(reads, truths)
                cells[cat][name].add(s, ms)
                overall[name].add(s, ms)
                if s.read < s.present or s.false:
                    misses[name].setdefault(cat, []).append(i)
                    if on_miss and name == next(iter(fns)):
                        on_miss(cat, i, frame)
                anyone |= s.matched
            union[cat][0] += len(anyone)
            union[cat][1] += len(truths)
            for k, t in enumerate(truths):
                if k not in anyone:
                    unread.append({"category": cat, "frame": i, "payload_b64": base64.b64encode(t["payload"]).decode()})
                for raw in s.false:
                    false_reads.append(
                        {
                            "decoder": name,
                            "category": cat,
                            "frame": i,
                            "bytes_b64": base64.b64encode(raw).decode(),
                            "mangled": any(_mangled(raw, t["payload"]) for t in truths),
                        }
                    )
        if progress:
            progress(f"{cat}: {per_category} frames in {time.perf_counter() - t_cat:.1f} s")
    return {
        "seed": seed,
        "per_category": per_category,
        "frame_size": [1280, 720],
        "decoders": list(fns),
        "skipped": skipped,
        "categories": {c: {d: cells[c][d].summary() for d in fns} for c in categories},
        "overall": {d: overall[d].summary() for d in fns},
        "false_reads": false_reads,
        # Frame indices with a missed code or a false read: make_frame(category, seed, i) rebuilds one.
        "misses": misses,
        "any_column": {c: round(100.0 * r / n, 1) if n else 0.0 for c, (r, n) in union.items()},
        "unread_by_all": unread,
        "reader_options": reader_options or {},
        "elapsed_s": round(time.perf_counter() - t_start, 1),
    }


def to_markdown(result: dict) -> str:
    decs = result["decoders"]
    # One grade column: the first column whose reads were graded (the Reader's).
    graded = next((d for d in decs if "mean_score" in result["overall"].get(d, {})), None)
    gcol = f" {graded} mean grade |" if graded else ""
    head = "| category | codes | " + " | ".join(f"{d} % | {d} p50 ms | {d} p99 ms | {d} max ms" for d in decs) + " |" + gcol
    sep = "|---|---:|" + "---:|---:|---:|---:|" * len(decs) + ("---:|" if graded else "")
    rows = [head, sep]

    def row(name: str, cell: dict) -> str:
        codes = next(iter(cell.values()))["codes"] if cell else 0
        parts = [
            f"{cell[d]['rate']:.1f} | {cell[d]['p50_ms']:.1f} | {cell[d]['p99_ms']:.1f} | {cell[d].get('max_ms', 0.0):.1f}"
            for d in decs
        ]
        g = ""
        if graded:
            c = cell.get(graded, {})
            g = f" {c['mean_grade']} ({c['mean_score']:.1f}) |" if "mean_score" in c else " - |"
        return f"| {name} | {codes} | " + " | ".join(parts) + " |" + g

    for cat, cell in result["categories"].items():
        rows.append(row(cat, cell))
    rows.append(row("**overall**", result["overall"]))
    lines = [
        f"# Decode bench (seed {result['seed']}, {result['per_category']} frames per category, 1280x720)",
        "",
        *rows,
        "",
        "False reads (bytes present in no code of the frame; mangled = a payload of the frame "
        "re-encoded with the wrong charset): "
        + ", ".join(
            f"{d} {result['overall'][d]['false_reads']} ({result['overall'][d]['false_mangled']} mangled)" for d in decs
        ),
        "Misplaced reads (right bytes, centre outside the code): "
        + ", ".join(f"{d} {result['overall'][d]['misplaced']}" for d in decs),
    ]
    if "any_column" in result:
        lines.append(
            "Read by at least one column: " + ", ".join(f"{c} {r:.0f}%" for c, r in result["any_column"].items())
        )
    for d in decs:
        st = result["overall"][d].get("stages")
        if st:
            lines.append(f"{d} reads by stage: " + ", ".join(f"{k} {v}" for k, v in st.items()))
    for d, why in result.get("skipped", {}).items():
        lines.append(f"Not run: {d} ({why})")
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, out: Path) -> list[Path]:
    from edge_runtime.bench.chart import plot_rates

    out.mkdir(parents=True, exist_ok=True)
    md, js, png = out / "bench-decode.md", out / "bench-decode.json", out / "bench-decode.png"
    md.write_text(to_markdown(result), encoding="utf-8")
    js.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    plot_rates(result, png)
    return [md, js, png]


# --- CLI -------------------------------------------------------------------------------

def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "decode",
        help="read rate, false reads and ms/frame per decoder on synthetic frames",
        description="Run each decoder on the same seeded synthetic 1280x720 frames, category by category.",
    )
    p.add_argument("--seed", type=int, default=0, help="frame generator seed (default 0)")
    p.add_argument("--per-category", type=int, default=20, metavar="N", help="frames per category (default 20)")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="output directory (default ./bench-out)")
    p.add_argument(
        "--decoders",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"columns to run (default: {' '.join(DEFAULT_DECODERS)}; available: {', '.join(DECODERS)})",
    )
    p.add_argument("--categories", nargs="+", default=None, metavar="CAT", help=f"subset of: {' '.join(CATEGORIES)}")
    p.add_argument(
        "--deadline-ms", type=float, default=None, help="per-frame deadline for the Reader columns (default: none)"
    )
    p.add_argument("--detector-threads", type=int, default=None,
                   help="threads for the detector's model call in the Reader columns (default 1)")
    p.add_argument(
        "--save-misses",
        action="store_true",
        help="also write frames the first column missed to OUT/misses/CATEGORY-INDEX.png",
    )
    p.set_defaults(func=_main)


def _split(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [v for item in values for v in item.split(",") if v]


def _main(args) -> int:
    from edge_runtime.cli import UserError

    if args.per_category < 1:
        raise UserError("--per-category must be at least 1")
    cats = _split(args.categories) or list(CATEGORIES)
    bad = [c for c in cats if c not in CATEGORIES]
    if bad:
        raise UserError(f"unknown category {bad[0]!r} for --categories; choose from {', '.join(CATEGORIES)}")
    if args.deadline_ms is not None and args.deadline_ms <= 0:
        raise UserError("--deadline-ms must be above 0")
    if args.detector_threads is not None and args.detector_threads < 1:
        raise UserError("--detector-threads must be at least 1")
    reader_options = {}
    if args.deadline_ms is not None:
        reader_options["deadline_ms"] = args.deadline_ms
    if args.detector_threads is not None:
        reader_options["threads"] = args.detector_threads
    on_miss = None
    if args.save_misses:
        miss_dir = args.out / "misses"
        try:
            miss_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot write results to {args.out}: {exc.strerror or exc}") from exc

        def on_miss(cat: str, i: int, frame: np.ndarray) -> None:
            cv2.imwrite(str(miss_dir / f"{cat}-{i:03d}.png"), frame)

    result = run_bench(
        seed=args.seed,
        per_category=args.per_category,
        decoders=_split(args.decoders) or DEFAULT_DECODERS,
        categories=cats,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
        reader_options=reader_options or None,
        on_miss=on_miss,
    )
    try:
        paths = write_outputs(result, args.out)
    except OSError as exc:
        raise UserError(f"cannot write results to {args.out}: {exc.strerror or exc}") from exc
    print(to_markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


__all__ = ["register", "reader_column", "Unavailable", "Read", "score_frame", "run_bench", "to_markdown", "DECODERS"]
