"""`edge-runtime bench line`: the line contract, audited label by label.

The plant's contract: every label that crosses the view yields exactly one result (a
read, or a noread), delivered. This bench runs the real service (`Service`, jsonl sink)
on the synthetic conveyor with degradations and checks every result against the
conveyor's own ground truth (which label was where, in which frame):

  labels          labels whose code was entirely in view in at least MIN_FRAMES frames
  reads           labels with a read of their payload
  noreads         labels with no read but a noread at their position
  silent misses   labels with no result at all: the failure this bench exists to find
  duplicates      labels with more than one result
  false reads     reads of a payload no label carries; stray noreads match no label

Timings: the reader's wall ms per frame (p50/p99/max) and the process CPU per frame with
the synthesis of frames (the bench's own cost, not the service's) measured apart. With
--realtime, frames a camera would have dropped (the loop fell behind by a frame period).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MIN_FRAMES = 3


def add_parser(sub) -> None:  # noqa: ANN001 - argparse's private _SubParsersAction
    p = sub.add_parser(
        "line",
        help="run the service on the synthetic conveyor and audit every label against ground truth",
        description="Runs the real service on the synthetic conveyor (degradations on) and checks "
        "that every label got exactly one result: prints labels, reads, noreads, silent misses, "
        "duplicates, false reads and the reader's ms and CPU per frame. Exit 0 when there are "
        "no silent misses, duplicates or false reads.",
    )
    p.add_argument("--frames", type=int, default=3000, help="frames to run (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="conveyor seed (default %(default)s)")
    p.add_argument("--deadline-ms", type=float, default=33.0, help="reader deadline per frame (default %(default)s)")
    p.add_argument("--detector", default="auto", choices=("auto", "tflite", "ncnn", "none"),
                   help="detector (default %(default)s)")
    p.add_argument("--width", type=int, default=1280, help="frame width (default %(default)s)")
    p.add_argument("--height", type=int, default=720, help="frame height (default %(default)s)")
    p.add_argument("--labels-per-s", type=float, default=2.0, help="labels per second of belt (default %(default)s)")
    p.add_argument("--no-degradations", action="store_true", help="clean frames (no blur, glare, noise)")
    p.add_argument("--realtime", action="store_true", help="pace frames at 30 fps and count frames dropped")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", metavar="FILE", help="also write the JSON report to FILE")
    p.set_defaults(func=cmd_line)


def cmd_line(args: argparse.Namespace) -> int:
    from edge_runtime.cli import UserError

    if args.frames < 1:
        raise UserError("--frames must be at least 1")
    if not (args.deadline_ms > 0 and args.deadline_ms < 1e6):
        raise UserError("--deadline-ms must be a positive number of milliseconds")
    report = run_line(args.frames, seed=args.seed, deadline_ms=args.deadline_ms, detector=args.detector,
                      width=args.width, height=args.height, labels_per_s=args.labels_per_s,
                      degradations=not args.no_degradations, realtime=args.realtime)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text if args.json else summary(report))
    return 0 if report["ok"] else 1


class _Recorder:
    """Wraps the source: keeps each frame's ground truth and what synthesising it cost."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.book = LabelBook()
        self.frames = 0
        self.synth_cpu = 0.0
        self.first_ts: float | None = None

    def read(self, timeout: float = 1.0):  # noqa: ANN201
        c0 = time.thread_time()
        frame = self.inner.read(timeout)
        self.synth_cpu += time.thread_time() - c0
        if frame is not None:
            self.book.add(frame.index, frame.truths or [])
            self.frames += 1
            if self.first_ts is None:
                self.first_ts = time.monotonic()
        return frame

    def state(self) -> dict:
        return self.inner.state()

    def close(self) -> None:
        self.inner.close()


class _TimedReader:
    """The reader, timed per frame (wall and process CPU, worker threads included)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.ms: list[float] = []
        self.cpu_ms: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read(self, frame, **kw):  # noqa: ANN001, ANN201
        c0, t0 = time.process_time(), time.perf_counter()
        out = self.inner.read(frame, **kw)
        self.ms.append((time.perf_counter() - t0) * 1000.0)
        self.cpu_ms.append((time.process_time() - c0) * 1000.0)
        return out


def run_line(frames: int, *, seed: int = 0, deadline_ms: float = 33.0, detector: str = "auto",
             width: int = 1280, height: int = 720, labels_per_s: float = 2.0, degradations: bool = True,
             realtime: bool = False, fps: float = 30.0) -> dict:
    """Run the service over `frames` synthetic frames and audit every label; returns the report."""
    from edge_runtime import config as config_mod
    from edge_runtime.service.loop import Service

    work = Path(tempfile.mkdtemp(prefix="edge-runtime-line-"))
    ledger = work / "results.jsonl"
    doc = {
        "device_id": "line-bench",
        "state_dir": str(work / "state"),
        "reader": {"deadline_ms": float(deadline_ms), "detector": detector},
        "source": {"kind": "synthetic", "frames": int(frames), "seed": int(seed), "realtime": bool(realtime),
                   "width": int(width), "height": int(height), "labels_per_s": float(labels_per_s),
                   "degradations": bool(degradations), "fps": float(fps)},
        "log": {"level": "warning", "format": "text"},
        "sinks": [{"kind": "jsonl", "name": "ledger", "path": str(ledger)}],
    }
    cfg = config_mod.from_dict(doc, "<bench line>")
    holder: dict[str, Any] = {}

    class LineService(Service):
        def _open_source(self) -> None:
            super()._open_source()
            self.source = holder["source"] = _Recorder(self.source)

        def _make_reader(self, c):  # noqa: ANN001, ANN202
            reader = holder["reader"] = _TimedReader(super()._make_reader(c))
            return reader

    svc = LineService(cfg)
    cpu0, wall0 = time.process_time(), time.monotonic()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            svc.run(install_signals=False)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=run, name="line-bench", daemon=True)
    t.start()
    t.join()
    cpu = time.process_time() - cpu0
    results = [json.loads(x) for x in ledger.read_text().splitlines() if x.strip()] if ledger.exists() else []
    shutil.rmtree(work, ignore_errors=True)
    wall = time.monotonic() - wall0
    if errors:
        raise errors[0]
    src: _Recorder = holder["source"]
    rd: _TimedReader = holder["reader"]
    report = audit(results, src.book, px_per_frame=600.0 / fps)
    n = max(src.frames, 1)
    report.update({
        "frames": src.frames,
        "seed": seed, "deadline_ms": deadline_ms, "detector": detector,
        "detector_backend": getattr(getattr(rd.inner, "detector", None), "fmt", None),
        "degradations": degradations, "size": f"{width}x{height}",
        "reader_ms": _dist(rd.ms),
        "reader_cpu_ms_mean": round(statistics.fmean(rd.cpu_ms), 2) if rd.cpu_ms else 0.0,
        # everything the process did per frame (loop, tracker, sinks, reader), synthesis excluded
        "service_cpu_ms_per_frame": round((cpu - src.synth_cpu) * 1000.0 / n, 2),
        "synthesis_cpu_ms_per_frame": round(src.synth_cpu * 1000.0 / n, 2),
        "wall_s": round(wall, 1),
        # a frame that failed is a frame whose labels nobody looked at: named, and a failure
        "frame_errors": svc.stats.frame_errors,
    })
    report["ok"] = report["ok"] and svc.stats.frame_errors == 0
    if realtime and src.first_ts is not None:
        expected = (time.monotonic() - src.first_ts) * fps
        report["frames_dropped"] = max(0, int(round(expected - report["frames"])) - 1)
    return report


def _dist(ms: list[float]) -> dict:
    if not ms:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    s = sorted(ms)
    return {"p50": round(s[len(s) // 2], 2), "p99": round(s[min(len(s) - 1, int(len(s) * 0.99))], 2),
            "max": round(s[-1], 2)}


class LabelBook:
    """The conveyor's ground truth, compactly: per label its payload, how many frames its
    code was entirely in view, and where it was the first and the last of them. A label
    moves in a straight line along the belt, so two sightings place it in any frame, and a
    100,000-frame soak keeps a few hundred bytes per label instead of every frame's truth."""

    def __init__(self) -> None:
        self.labels: dict[int, dict] = {}
        self.last_frame = -1

    def add(self, frame: int, truths: list[dict]) -> None:
        self.last_frame = max(self.last_frame, frame)
        for t in truths:
            seen = (frame, _centre(t["corners"]), _size(t["corners"]))
            lab = self.labels.get(t["label_id"])
            if lab is None:
                self.labels[t["label_id"]] = {"payload": bytes(t["payload"]), "frames": 1, "first": seen, "last": seen}
            else:
                lab["frames"] += 1
                lab["last"] = seen


def audit(results: list[dict], truths: dict[int, list[dict]] | LabelBook, px_per_frame: float = 20.0) -> dict:
    """Match every result to a label of the ground truth (pure: unit-testable)."""
    if not isinstance(truths, LabelBook):
        book = LabelBook()
        for f in sorted(truths):
            book.add(f, truths[f])
        truths = book
    labels = truths.labels
    wanted = {i: lab for i, lab in labels.items() if lab["frames"] >= MIN_FRAMES}
    by_payload: dict[bytes, list[int]] = {}
    for i, lab in labels.items():
        by_payload.setdefault(lab["payload"], []).append(i)
    got: dict[int, list[str]] = {i: [] for i in labels}
    false_reads, stray_noreads = [], []
    for r in results:
        if r["kind"] == "read":
            ids = by_payload.get(_raw(r))
            if not ids:
                false_reads.append(r["id"])
                continue
            got[min(ids, key=lambda i: _gap(labels[i], r["frame"]))].append("read")
        else:
            i = _label_at(labels, r["frame"], _centre(r["corners"]) if r["corners"] else None, px_per_frame)
            if i is None:
                stray_noreads.append((r["id"], r["frame"]))
            else:
                got[i].append("noread")
    # A label entering as the run ends is flushed as a noread before it was ever entirely
    # in view: the run's edge, not a stray.
    stray_noreads = [rid for rid, f in stray_noreads if f < truths.last_frame - MIN_FRAMES]
    reads = [i for i in wanted if "read" in got[i]]
    noreads = [i for i in wanted if got[i] and "read" not in got[i]]
    silent = sorted(i for i in wanted if not got[i])
    dups = sorted(i for i in labels if len(got[i]) > 1)
    n = len(wanted)
    return {
        "labels": n,
        "reads": len(reads),
        "noreads": len(noreads),
        "noread_labels": sorted(noreads)[:100],  # the labels to look at (SyntheticSource label ids)
        "silent_misses": len(silent),
        "silent_labels": silent[:50],
        "duplicates": len(dups),
        "duplicate_labels": dups[:50],
        "false_reads": len(false_reads),
        "stray_noreads": len(stray_noreads),
        "read_rate": round(len(reads) / n, 4) if n else 0.0,
        "noread_reasons": _count(r.get("reason") for r in results if r["kind"] == "noread"),
        "results": len(results),
        "ok": not silent and not dups and not false_reads and not stray_noreads,
    }


def _count(values) -> dict:  # noqa: ANN001
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _raw(r: dict) -> bytes:
    import base64

    if r.get("bytes_b64"):
        return base64.b64decode(r["bytes_b64"])
    return (r.get("text") or "").encode("utf-8")


def _centre(corners: list) -> tuple[float, float]:
    return (sum(p[0] for p in corners) / len(corners), sum(p[1] for p in corners) / len(corners))


def _size(corners: list) -> float:
    xs = [p[0] for p in corners]
    return max(xs) - min(xs)


def _gap(lab: dict, frame: int) -> int:
    return min(abs(lab["first"][0] - frame), abs(lab["last"][0] - frame))


def _label_at(labels: dict[int, dict], frame: int, centre: tuple[float, float] | None,
              px_per_frame: float) -> int | None:
    """The label whose code was at `centre` in `frame` (extrapolated along the belt from the
    nearest sighting: a noread's last corners are often at the edge of the view)."""
    best, best_d = None, float("inf")
    for i, lab in labels.items():
        f, (x, y), size = min((lab["first"], lab["last"]), key=lambda s: abs(s[0] - frame))
        if abs(f - frame) > 90:
            continue
        if centre is None:
            d = abs(f - frame) * px_per_frame
        else:
            d = ((x + (frame - f) * px_per_frame - centre[0]) ** 2 + (y - centre[1]) ** 2) ** 0.5
            if d > size:
                continue
        if d < best_d:
            best, best_d = i, d
    return best


def summary(r: dict) -> str:
    ms = r["reader_ms"]
    lines = [
        f"bench line: {r['frames']} frames {r['size']} seed {r['seed']}, deadline {r['deadline_ms']:g} ms, "
        f"detector {r['detector']} ({r.get('detector_backend')}), degradations {'on' if r['degradations'] else 'off'}",
        f"labels {r['labels']}: reads {r['reads']} ({100 * r['read_rate']:.2f} %), noreads {r['noreads']}, "
        f"silent misses {r['silent_misses']}, duplicates {r['duplicates']}, false reads {r['false_reads']}, "
        f"stray noreads {r['stray_noreads']}",
        f"reader ms per frame p50 {ms['p50']} p99 {ms['p99']} max {ms['max']}; reader CPU {r['reader_cpu_ms_mean']} ms/frame; "
        f"service CPU {r['service_cpu_ms_per_frame']} ms/frame (synthesis {r['synthesis_cpu_ms_per_frame']} ms/frame apart)",
    ]
    if r.get("frame_errors"):
        lines.append(f"frame errors: {r['frame_errors']} (see the log)")
    if r.get("noread_reasons"):
        lines.append("noread reasons: " + ", ".join(f"{k} {v}" for k, v in sorted(r["noread_reasons"].items())))
    if r["silent_labels"]:
        lines.append(f"silent labels: {r['silent_labels']}")
    if r["duplicate_labels"]:
        lines.append(f"duplicate labels: {r['duplicate_labels']}")
    if "frames_dropped" in r:
        lines.append(f"frames dropped (realtime): {r['frames_dropped']}")
    lines.append("OK" if r["ok"] else "FAILED: the line contract is broken")
    return "\n".join(lines)
