"""python -m quantize {synth,train,export,calibrate,tune,evaluate,all} [--smoke] [--out DIR]

Builds the shipped QR detector from nothing: synthesize labelled frames, train, export float
and full-integer INT8 TFLite, write float and INT8 NCNN (our own calibration table and int8
weights), evaluate, and write models/ with manifest.json. Intermediate data lives in --work
(default: a temp dir per seed and mode, reused by later steps; never in git).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("quantize")

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Config:
    train_frames: int = 20000
    val_frames: int = 1200
    calib_frames: int = 256
    epochs: int = 12
    batch: int = 16
    lr: float = 3e-3
    small_code_weight: float = 3.0  # quantize/train.py cell_weights: up to 3x the loss on small codes
    train_budget_s: float = 60 * 60  # the training budget; synth and export come on top
    timing_runs: int = 100
    smoke: bool = False


SMOKE = Config(train_frames=48, val_frames=40, calib_frames=16, epochs=1, batch=8, train_budget_s=120,
               timing_runs=10, smoke=True)


def _data(cfg: Config, seed: int, work: Path, split: str):
    from quantize import dataset

    count = {"train": cfg.train_frames, "val": cfg.val_frames, "calib": cfg.calib_frames}[split]
    return dataset.load_or_build(work / "data", seed, split, count)


def step_synth(cfg, seed, work, out):
    for split in ("train", "val", "calib"):
        t = time.monotonic()
        d = _data(cfg, seed, work, split)
        log.info("synth %s: %d frames, %d codes (%.0f s)", split, len(d["x"]), len(d["quads"]), time.monotonic() - t)


def step_train(cfg, seed, work, out):
    from quantize import dataset, train

    # Weights are reused only if they were trained on this data with this recipe; anything
    # else (a changed generator, config or --max-steps) trains again.
    recipe = {"data": dataset.cache_path(work / "data", seed, "train", cfg.train_frames).name,
              "epochs": cfg.epochs, "batch": cfg.batch, "lr": cfg.lr,
              "small_code_weight": cfg.small_code_weight, "max_steps": MAX_STEPS}
    done = work / "train" / "train.json"
    if done.exists() and (work / "train" / "weights.npz").exists():
        summary = json.loads(done.read_text())
        if summary.get("recipe") == recipe:
            log.info("train: reusing %s", done.parent)
            return summary
        log.info("train: %s was trained with another recipe; training again", done.parent)
    summary = train.train(_data(cfg, seed, work, "train"), work / "train", seed=seed, epochs=cfg.epochs,
                          batch=cfg.batch, lr=cfg.lr, time_budget_s=cfg.train_budget_s, max_steps=MAX_STEPS,
                          small_code_weight=cfg.small_code_weight)
    summary["recipe"] = recipe
    done.write_text(json.dumps(summary, indent=1))
    return summary


def step_export(cfg, seed, work, out):
    from quantize import export, ncnn_int8, train

    weights = train.load_weights(work / "train")
    calib = _data(cfg, seed, work, "calib")["x"]
    out.mkdir(parents=True, exist_ok=True)
    export.write_tflite(weights, calib, out, float_dir=work / "float", seed=seed)
    result = ncnn_int8.write_ncnn(weights, calib, out, float_dir=work / "float")
    (work / "ncnn_int8_proof.json").write_text(json.dumps(result["proof"], indent=1))


step_calibrate = step_export  # calibration happens inside export for both formats


def step_tune(cfg, seed, work, out):
    from quantize import tune

    result = tune.tune(out, work / "float", _data(cfg, seed, work, "calib"))
    (work / "tune.json").write_text(json.dumps(result, indent=1))
    return result


def step_evaluate(cfg, seed, work, out):
    from quantize import evaluate

    metrics = evaluate.evaluate(out, work / "float", _data(cfg, seed, work, "val"),
                                timing_runs=cfg.timing_runs)
    for key, name in (("ncnn_int8_proof", "ncnn_int8_proof.json"), ("score_threshold_choice", "tune.json")):
        if (work / name).exists():
            metrics[key] = json.loads((work / name).read_text())
    (work / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


MAX_STEPS: int | None = None  # --max-steps: repeat a time-budget-fitted run exactly

STEPS = {"synth": step_synth, "train": step_train, "export": step_export, "calibrate": step_calibrate,
         "tune": step_tune, "evaluate": step_evaluate}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantize", description=__doc__.splitlines()[0])
    p.add_argument("step", choices=[*STEPS, "all"])
    p.add_argument("--smoke", action="store_true", help="tiny data, one epoch: proves the chain in minutes")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--out", type=Path, default=None, help="where models go (default: the repo's models/; "
                   "--smoke requires an explicit --out so it never overwrites the shipped models)")
    p.add_argument("--work", type=Path, default=None, help="cache for data and weights")
    p.add_argument("--max-steps", type=int, default=None,
                   help="train exactly this many steps (the manifest records the count a build used)")
    args = p.parse_args(argv)
    global MAX_STEPS
    MAX_STEPS = args.max_steps
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    cfg = SMOKE if args.smoke else Config()
    if args.out is None:
        if args.smoke and args.step in ("export", "calibrate", "evaluate", "all"):
            p.error("--smoke needs --out DIR (the shipped models/ is only written by a full build)")
        args.out = REPO / "models"
    import tempfile

    work = args.work or Path(tempfile.gettempdir()) / f"edge-runtime-quantize-{'smoke' if args.smoke else 'full'}-{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    steps = ["synth", "train", "export", "tune", "evaluate"] if args.step == "all" else [args.step]
    metrics = None
    summary = None
    for s in steps:
        ts = time.monotonic()
        r = STEPS[s](cfg, args.seed, work, args.out)
        if s == "train":
            summary = r
        if s == "evaluate":
            metrics = r
        log.info("step %s done in %.0f s", s, time.monotonic() - ts)
    if args.step == "all":
        from quantize import manifest_writer

        if summary is None:
            summary = json.loads((work / "train" / "train.json").read_text())
        command = "python -m quantize " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        manifest_writer.write(args.out, metrics=metrics, train=summary, config=asdict(cfg), seed=args.seed,
                              command=command, seconds=time.monotonic() - t0)
        log.info("models written to %s in %.0f s", args.out, time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
