"""`edge-runtime bench board`: what this board sustains, and the reader settings to use on it.

For users on their own board (Raspberry Pi 4/5, RK3588, ...), after installing: runs the real
service on the demo conveyor (degradations on, frames paced like a camera) at rising frame
rates, for each detector runtime and number of detector threads, and finds per setting the
highest rate where

  - no label went by without a result (0 silent misses, no duplicates, no false reads),
  - the reader's per-frame p99 stays inside the deadline (the frame period at that rate),
  - the loop kept up with the camera (frames dropped <= 1 %).

It prints one row per run (reads, misses, reader ms p50/p99, the per-stage ms: detector,
direct pass, retries; CPU per frame) and the recommendation for `[reader]`: the setting that
sustains the target rate (the config's camera fps, else 30) with the best read rate and the
most headroom, and the `deadline_ms` for that rate. Timings of an emulated or shared machine
mean little: run it on the board itself, with nothing else busy.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

RATES = (10.0, 15.0, 20.0, 30.0, 45.0, 60.0)
DETECTORS = ("tflite", "ncnn", "none")
THREADS = (1, 2)
MAX_DROPPED = 0.01  # a share of the frames: a scheduler hiccup is not "cannot keep up"
FRAMES = 180
WARMUP = 10  # first frames of a run, not timed: the model's first call, the budget still learning
PX_PER_FRAME = 20.0  # the demo belt at 30 fps (600 px/s): at every rate the frames look alike


def add_parser(sub) -> None:  # noqa: ANN001 - argparse's private _SubParsersAction
    p = sub.add_parser(
        "board",
        help="find the frame rate this board sustains and the reader settings for it",
        description="Runs the service on the demo conveyor at rising frame rates (paced like a camera) "
        "for each detector and number of detector threads; reports the highest rate each sustains "
        "(0 silent misses, reader p99 inside the deadline, no dropped frames) with per-stage times, "
        "and recommends detector, detector_threads and deadline_ms for this board. Takes a few minutes.",
    )
    p.add_argument("--config", "-c", metavar="FILE",
                   help="take [reader] (decoders, blur, ...) and the camera's fps and size from this config")
    p.add_argument("--target-fps", type=float, default=None,
                   help="the line's camera rate to recommend for (default: the config's source fps, else 30)")
    p.add_argument("--rates", default=",".join(f"{r:g}" for r in RATES),
                   help="frame rates to try, rising (default %(default)s)")
    p.add_argument("--detectors", default=",".join(DETECTORS),
                   help="detectors to try (default %(default)s; a runtime not installed is skipped)")
    p.add_argument("--threads", default=",".join(str(t) for t in THREADS),
                   help="detector_threads values to try (default %(default)s)")
    p.add_argument("--frames", type=int, default=FRAMES,
                   help="frames per run (default %(default)s: about %(default)s/15 labels)")
    p.add_argument("--seed", type=int, default=0, help="conveyor seed (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", metavar="FILE", help="also write the JSON report to FILE")
    p.set_defaults(func=cmd_board)


def _floats(text: str, what: str) -> list[float]:
    from edge_runtime.cli import UserError

    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--{what} must be numbers separated by commas, e.g. 10,20,30") from None
    if not vals or any(not (0 < v <= 1000) for v in vals):
        raise UserError(f"--{what}: each value must be above 0 and at most 1000")
    return vals


def cmd_board(args: argparse.Namespace) -> int:
    from edge_runtime.cli import UserError

    reader_opts: dict[str, Any] = {}
    size = (1280, 720)
    target = args.target_fps
    if args.config:
        from edge_runtime import config as config_mod

        cfg = config_mod.load(args.config)  # ConfigError: one line, exit 2
        reader_opts = {k: v for k, v in cfg["reader"].items()
                       if k not in ("detector", "detector_threads", "deadline_ms", "noread_dir")}
        src = cfg["source"]
        if src.get("width") and src.get("height"):
            size = (int(src["width"]), int(src["height"]))
        if target is None and src.get("fps"):
            target = float(src["fps"])
    target = 30.0 if target is None else target
    if not (0 < target <= 1000):
        raise UserError("--target-fps must be above 0 and at most 1000")
    if not (WARMUP + 20 <= args.frames <= 1_000_000):
        raise UserError(f"--frames must be {WARMUP + 20} to 1000000")
    rates = sorted(_floats(args.rates, "rates"))
    threads = [int(t) for t in _floats(args.threads, "threads")]
    if any(t < 1 or t > 16 for t in threads):
        raise UserError("--threads: each value must be 1 to 16")
    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    bad = [d for d in detectors if d not in DETECTORS]
    if bad or not detectors:
        raise UserError(f"--detectors: choose from {', '.join(DETECTORS)}")

    report = run_board(rates=rates, detectors=detectors, threads=threads, frames=args.frames,
                       seed=args.seed, target_fps=target, size=size, reader_opts=reader_opts,
                       progress=None if args.json else _progress)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text if args.json else summary(report))
    rec = report["recommendation"]
    return 0 if rec and rec["sustained"] else 1


def available_detectors(wanted: list[str]) -> tuple[list[str], dict[str, str]]:
    """The wanted detectors whose runtime and model load here; why the others do not."""
    from edge_runtime import detect as detectors

    ok, skipped = [], {}
    for d in wanted:
        if d == "none":
            ok.append(d)
            continue
        try:
            choice = detectors.choose(d)
        except Exception as exc:  # noqa: BLE001 - a missing runtime is reported, not fatal
            skipped[d] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            continue
        if choice.detector is None:
            skipped[d] = choice.fallback or "not available"
        else:
            ok.append(d)
    return ok, skipped


def run_board(*, rates: list[float], detectors: list[str], threads: list[int], frames: int = FRAMES,
              seed: int = 0, target_fps: float = 30.0, size: tuple[int, int] = (1280, 720),
              reader_opts: dict | None = None, progress: Any = None) -> dict:
    """Every setting at rising rates, stopping at its first failed rate; returns the report."""
    usable, skipped = available_detectors(detectors)
    t0 = time.monotonic()
    runs: list[dict] = []
    settings: list[dict] = []
    for det in usable:
        # Threads drive the detector's model call only: without a detector one run says it all.
        for th in (threads if det != "none" else threads[:1]):
            best = None
            for fps in rates:
                r = run_rate(fps, detector=det, threads=th, frames=frames, seed=seed, size=size,
                             reader_opts=reader_opts or {})
                runs.append(r)
                if progress:
                    progress(r)
                if not r["sustained"]:
                    break
                best = r
            settings.append({"detector": det, "detector_threads": th,
                             "max_fps": best["fps"] if best else 0.0,
                             "at_max": _brief(best) if best else None})
    rec = recommend(settings, runs, target_fps)
    return {"target_fps": target_fps, "size": f"{size[0]}x{size[1]}", "frames_per_run": frames,
            "rates": rates, "skipped": skipped, "runs": runs, "settings": settings,
            "recommendation": rec, "wall_s": round(time.monotonic() - t0, 1), "machine": _machine()}


def _brief(r: dict) -> dict:
    return {k: r[k] for k in ("fps", "read_rate", "reader_ms", "stages_ms", "service_cpu_ms_per_frame")}


def recommend(settings: list[dict], runs: list[dict], target_fps: float) -> dict | None:
    """The setting for a line at `target_fps`: among those that sustained it, the best read
    rate at that rate, then the most headroom (lowest p99 / deadline), then fewer threads;
    when none does, the one that sustains the highest rate, with the rate to set the camera to."""
    if not settings:
        return None
    by = {(r["detector"], r["detector_threads"], r["fps"]): r for r in runs}

    def at_target(s: dict) -> dict | None:
        # The run at the highest tried rate <= the target that this setting sustained.
        ok = [r for (d, t, f), r in by.items()
              if d == s["detector"] and t == s["detector_threads"] and f <= target_fps and r["sustained"]]
        return max(ok, key=lambda r: r["fps"]) if ok else None

    fit = [(s, at_target(s)) for s in settings if s["max_fps"] >= target_fps]
    fit = [(s, r) for s, r in fit if r is not None]
    if fit:
        s, r = max(fit, key=lambda sr: (sr[1]["read_rate"], -sr[1]["reader_ms"]["p99"] / sr[1]["deadline_ms"],
                                        -sr[0]["detector_threads"]))
        fps, why, sustained = target_fps, f"sustains {target_fps:g} fps", True
    elif any(s["max_fps"] > 0 for s in settings):
        s = max(settings, key=lambda s: (s["max_fps"], (s["at_max"] or {}).get("read_rate", 0.0),
                                         -s["detector_threads"]))
        r = by[(s["detector"], s["detector_threads"], s["max_fps"])]
        fps, sustained = s["max_fps"], True
        why = (f"nothing tried sustains {target_fps:g} fps here; this sustains {fps:g} fps: "
               f"set the camera to {fps:g} fps or slow the belt")
    else:
        # Not even the lowest rate: the closest miss, so the user sees what to change.
        low = min(r["fps"] for r in runs)
        r = min((r for r in runs if r["fps"] == low),
                key=lambda r: (r["silent_misses"] + r["duplicates"] + r["false_reads"],
                               r["reader_ms"]["p99"] / r["deadline_ms"], r["detector_threads"]))
        s = next(x for x in settings if (x["detector"], x["detector_threads"]) == (r["detector"], r["detector_threads"]))
        fps, sustained = low, False
        why = (f"NOT sustained: nothing tried sustains even {low:g} fps here (closest: {r['silent_misses']} silent "
               f"misses, reader p99 {r['reader_ms']['p99']} ms for a {r['deadline_ms']} ms deadline); try a lower "
               "rate or camera resolution, or a board with more cores")
    return {"detector": s["detector"], "detector_threads": s["detector_threads"],
            "deadline_ms": deadline_for(fps, r), "fps": fps, "max_fps": s["max_fps"],
            "read_rate": r["read_rate"], "reader_p99_ms": r["reader_ms"]["p99"], "sustained": sustained,
            "why": why}


def deadline_for(fps: float, run: dict) -> float:
    """The frame period less what the service spends per frame besides the reader (tracking,
    sinks, capture hand-off), so the loop as a whole keeps the camera's pace."""
    period = 1000.0 / fps
    other = max(1.0, run["service_cpu_ms_per_frame"] - run["reader_cpu_ms_mean"])
    return float(max(1, math.floor(period - other)))


class _StageTimes:
    """Wraps the reader's budget: the time of each step, summed per frame and stage."""

    def __init__(self, budget: Any) -> None:
        self.budget = budget
        self.frame: dict[str, float] = {}
        self.frames: list[dict[str, float]] = []
        self._lock = threading.Lock()
        inner = budget.timed

        def timed(key, fn, **kw):  # noqa: ANN001, ANN202
            t0 = time.perf_counter()
            try:
                return inner(key, fn, **kw)
            finally:
                ms = (time.perf_counter() - t0) * 1000.0
                stage = key[0] if isinstance(key, tuple) and key and key[0] in ("detect", "direct") else "retries"
                with self._lock:
                    self.frame[stage] = self.frame.get(stage, 0.0) + ms

        budget.timed = timed

    def end_frame(self) -> None:
        with self._lock:
            self.frames.append(self.frame)
            self.frame = {}

    def report(self) -> dict:
        from edge_runtime.bench.line import _dist

        out = {}
        for stage in ("detect", "direct", "retries"):
            out[stage] = _dist([f.get(stage, 0.0) for f in self.frames[WARMUP:]])
        return out


def run_rate(fps: float, *, detector: str, threads: int, frames: int = FRAMES, seed: int = 0,
             size: tuple[int, int] = (1280, 720), reader_opts: dict | None = None) -> dict:
    """One run of the service at `fps`, paced like a camera, deadline = the frame period. The
    belt runs `PX_PER_FRAME` per frame whatever the rate (a faster line, not a slower shutter), so
    every rate shows the reader the same kind of frames and only the pace changes."""
    from edge_runtime import config as config_mod
    from edge_runtime.bench.line import _dist, _Recorder, _TimedReader, audit
    from edge_runtime.service.loop import Service

    deadline = round(1000.0 / fps, 1)
    work = Path(tempfile.mkdtemp(prefix="edge-runtime-board-"))
    ledger = work / "results.jsonl"
    doc = {
        "device_id": "board-bench",
        "state_dir": str(work / "state"),
        "reader": {**(reader_opts or {}), "deadline_ms": deadline, "detector": detector,
                   "detector_threads": int(threads)},
        "source": {"kind": "synthetic", "frames": frames, "seed": int(seed), "realtime": True,
                   "width": int(size[0]), "height": int(size[1]), "fps": float(fps), "degradations": True,
                   "speed_px_s": PX_PER_FRAME * fps, "labels_per_s": 2.0 * fps / 30.0},
        # The tracker's window is wall time: scaled so that it spans as many frames as the
        # demo's 2 s at 30 fps (at 10 fps a label is in view 3x as long, and a 2 s gap in its
        # sightings would be a second result that the same frames at 30 fps never give).
        "dedup": {"window_s": 2.0 * 30.0 / fps},
        "log": {"level": "error"},
        "sinks": [{"kind": "jsonl", "name": "ledger", "path": str(ledger)}],
    }
    cfg = config_mod.from_dict(doc, "<bench board>")
    holder: dict[str, Any] = {}

    class _StagedReader(_TimedReader):
        def read(self, frame, **kw):  # noqa: ANN001, ANN201
            try:
                return super().read(frame, **kw)
            finally:
                holder["stages"].end_frame()

    class BoardService(Service):
        def _open_source(self) -> None:
            super()._open_source()
            self.source = holder["source"] = _Recorder(self.source)

        def _make_reader(self, c):  # noqa: ANN001, ANN202
            inner = super()._make_reader(c)
            holder["stages"] = _StageTimes(inner.budget)
            reader = holder["reader"] = _StagedReader(inner)
            return reader

    import time as _t

    svc = BoardService(cfg)
    cpu0 = _t.process_time()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            svc.run(install_signals=False)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    t = threading.Thread(target=run, name="board-bench", daemon=True)
    t.start()
    t.join()
    cpu = _t.process_time() - cpu0
    results = [json.loads(x) for x in ledger.read_text().splitlines() if x.strip()] if ledger.exists() else []
    shutil.rmtree(work, ignore_errors=True)
    if errors:
        raise errors[0]
    src, rd = holder["source"], holder["reader"]
    r = audit(results, src.book, px_per_frame=PX_PER_FRAME)
    n = max(src.frames, 1)
    expected = (_t.monotonic() - src.first_ts) * fps if src.first_ts is not None else frames
    dropped = max(0, int(round(expected - src.frames)) - 1)
    ms = _dist(rd.ms[WARMUP:])
    r.update({
        "fps": fps, "detector": detector, "detector_threads": threads, "deadline_ms": deadline,
        "frames": src.frames, "frames_dropped": dropped,
        "reader_ms": ms, "stages_ms": holder["stages"].report(),
        "reader_cpu_ms_mean": round(sum(rd.cpu_ms) / len(rd.cpu_ms), 2) if rd.cpu_ms else 0.0,
        "service_cpu_ms_per_frame": round((cpu - src.synth_cpu) * 1000.0 / n, 2),
    })
    r["sustained"] = bool(r["silent_misses"] == 0 and r["duplicates"] == 0 and r["false_reads"] == 0
                          and ms["p99"] <= deadline and dropped <= MAX_DROPPED * max(frames, 1))
    for k in ("silent_labels", "duplicate_labels"):
        r.pop(k, None)
    return r


def _machine() -> dict:
    import os
    import platform

    model = ""
    for p in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            model = Path(p).read_text().strip("\0\n ")
            break
        except OSError:
            continue
    return {"arch": platform.machine(), "cores": os.cpu_count(), "model": model or platform.processor() or ""}


def _row(r: dict) -> str:
    s, ms = r["stages_ms"], r["reader_ms"]
    return (f"{r['detector']:>6} {r['detector_threads']:>2} {r['fps']:>5g} {r['deadline_ms']:>6.1f} "
            f"{r['labels']:>4} {r['reads']:>4} {r['noreads']:>3} {r['silent_misses']:>4} {r['frames_dropped']:>4} "
            f"{ms['p50']:>6.1f} {ms['p99']:>6.1f}  {s['detect']['p50']:>5.1f} {s['direct']['p50']:>5.1f} "
            f"{s['retries']['p99']:>6.1f} {r['service_cpu_ms_per_frame']:>6.1f}  {'ok' if r['sustained'] else 'FAIL'}")


HEADER = ("   det th   fps  dl_ms lbls read nord miss drop r_p50  r_p99  det50 dir50 ret_p99 cpu/fr  ")


def _progress(r: dict) -> None:
    if not getattr(_progress, "started", False):
        print(HEADER, flush=True)
        _progress.started = True  # type: ignore[attr-defined]
    print(_row(r), flush=True)


def summary(rep: dict) -> str:
    m = rep["machine"]
    lines = [f"bench board: {m['arch']}, {m['cores']} cores{', ' + m['model'] if m['model'] else ''}; "
             f"{rep['size']} demo conveyor, {rep['frames_per_run']} frames per run, {rep['wall_s']:g} s in all"]
    for d, why in rep["skipped"].items():
        lines.append(f"skipped detector {d}: {why}")
    lines.append("highest rate sustained (0 silent misses, reader p99 <= deadline = frame period, no dropped frames):")
    for s in rep["settings"]:
        a = s["at_max"]
        extra = (f": read rate {100 * a['read_rate']:.1f} %, reader p99 {a['reader_ms']['p99']} ms, "
                 f"detector p50 {a['stages_ms']['detect']['p50']} ms, CPU {a['service_cpu_ms_per_frame']} ms/frame"
                 if a else "")
        lines.append(f"  detector {s['detector']:<6} detector_threads {s['detector_threads']}: "
                     f"{s['max_fps']:g} fps{extra}")
    rec = rep["recommendation"]
    if rec:
        lines.append(f"recommended for {rep['target_fps']:g} fps ({rec['why']}):")
        lines.append(f'  [reader] detector = "{rec["detector"]}", detector_threads = {rec["detector_threads"]}, '
                     f"deadline_ms = {rec['deadline_ms']:g}")
    else:
        lines.append("no detector could be loaded: nothing to recommend")
    return "\n".join(lines)
