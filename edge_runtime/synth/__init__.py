"""Seeded synthetic frames with ground truth: the decode bench, the tests and the demo source.

- `qr`: real QR codes (segno) warped onto a frame, anti-aliased, with their corners.
- `degrade`: pure functions for what a line camera does (blur, glare, noise, damage...).
- `background`: belts, cardboard, printed text and 1-D barcodes as distractors.
- `frames`: the bench categories (`make_bench_set`, `make_frame`).
- `conveyor`: `SyntheticConveyor`, labels moving across a belt at 30 fps.

Submodules are imported on use, so `import edge_runtime.synth.degrade` costs no segno.
"""

from __future__ import annotations

__all__ = ["make_bench_set", "make_frame", "SyntheticConveyor", "CATEGORIES"]


def __getattr__(name: str):
    if name in ("make_bench_set", "make_frame", "CATEGORIES"):
        from edge_runtime.synth import frames

        return getattr(frames, name)
    if name == "SyntheticConveyor":
        from edge_runtime.synth.conveyor import SyntheticConveyor

        return SyntheticConveyor
    raise AttributeError(name)
