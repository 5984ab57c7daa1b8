"""Measure blind motion-blur estimation (enhance/psf.py) against the truth and today's sweep.

Cases come from tests/test_psf.py's generator (project renderer, smear of 2-4 module widths
in linear light, camera noise, rectified by the true quad). For each ROI it reports the
estimate's angle/length error and whether zxing-cpp reads the crop deblurred with
  - today's reader sweep: blur_direction + blur_length + fixed 6, 9, 12, 4, 15 px, with
    the old Wiener settings (snr 60, no roll-off) and with the current ones,
  - psf.deblur_candidates (<= 4 tries),
  - the true kernel (the ceiling for Wiener deconvolution).

    .venv/bin/python scripts/measure_psf.py [--n 60] [--seed 0] [--belt]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_psf import make_case  # noqa: E402

from edge_runtime.decode.zxing import ZxingDecoder  # noqa: E402
from edge_runtime.enhance import deblur, psf  # noqa: E402

ZX = ZxingDecoder()


def reads(img: np.ndarray, payload: str) -> bool:
    return payload in [c.text for c in ZX.decode(img, fast=True)]


def todays(crop: np.ndarray) -> list[tuple[float, float]]:
    """The reader's sweep as of issue 14 (reader._roi_attempts without configured hints)."""
    angle = deblur.blur_direction(crop)
    lengths: list[float] = []
    est = deblur.blur_length(crop, angle)
    if est is not None:
        lengths.append(est)
    for extra in (6.0, 9.0, 12.0, 4.0, 15.0):
        if all(abs(extra - x) > 1.5 for x in lengths):
            lengths.append(extra)
    return [(n, angle) for n in lengths]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--belt", action="store_true", help="smear along x +-8 deg (else any direction)")
    ap.add_argument("--tilt", type=float, default=0.0, help="label yaw/pitch up to this many deg (perspective)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    ae, le, ms = [], [], []
    cnt = {"raw": 0, "today_old_wiener": 0, "today": 0, "psf": 0, "true": 0}
    for i in range(args.n):
        c = make_case(rng, belt=args.belt, tilt=args.tilt)
        t = time.perf_counter()
        cands = psf.deblur_candidates(c.crop)
        ms.append((time.perf_counter() - t) * 1000)
        if cands:
            ae.append(psf._angle_diff(cands[0][1], c.angle))
            le.append(abs(cands[0][0] - c.length) / c.length)
        else:
            ae.append(90.0)
            le.append(1.0)
        r = {
            "raw": reads(c.crop, c.payload),
            "today_old_wiener": any(reads(deblur.wiener(c.crop, n, a, snr=60.0, lowpass=None), c.payload) for n, a in todays(c.crop)),
            "today": any(reads(deblur.wiener(c.crop, n, a), c.payload) for n, a in todays(c.crop)),
            "psf": any(reads(deblur.wiener(c.crop, n, a), c.payload) for n, a in cands),
            "true": reads(deblur.wiener(c.crop, c.length, c.angle), c.payload),
        }
        for k, v in r.items():
            cnt[k] += v
        if r["true"] and not r["psf"]:
            print(f"miss {i}: true L={c.length:.1f} a={c.angle:.1f} module={c.module_px:.1f} side={c.crop.shape[0]} cands={cands}")
    print(f"cases {args.n} ({'belt +-8 deg' if args.belt else 'any direction'}, tilt {args.tilt:g} deg), seed {args.seed}")
    print(f"angle error median {np.median(ae):.2f} deg, p90 {np.percentile(ae, 90):.1f}; length error median {100 * np.median(le):.1f} %, p90 {100 * np.percentile(le, 90):.0f} %")
    print("reads: " + ", ".join(f"{k} {v}/{args.n}" for k, v in cnt.items()))
    print(f"deblur_candidates ms per ROI: p50 {np.median(ms):.1f}, p99 {np.percentile(ms, 99):.1f}")


if __name__ == "__main__":
    main()
