"""The rule that sends a device back to its previous model: after a switch, the new model's read
rate over its first N items (reads / (reads + noreads)) is compared with the previous model's
rate over its last N items; more than X points below, and the device switches back on its own.

Why items and not time: a triggered line may see ten items an hour, a conveyor ten a second;
N items is the same evidence on both. Why a baseline from the same device: devices on different
lines read differently; the question is whether this line reads worse than it did.

A switch with too little history (fewer than MIN_BASELINE items on the previous model, e.g. a
fresh device that gets the bundle on its first connect) has no baseline: it is not judged, and
the status says so.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

MIN_BASELINE = 50


@dataclass
class Verdict:
    fall_back: bool
    rate: float
    baseline: float
    items: int


class RateMonitor:
    def __init__(self, items: int, points: float) -> None:
        self.n = int(items)
        self.points = float(points)
        self.recent: collections.deque[bool] = collections.deque(maxlen=self.n)  # the running model's last N
        self.baseline: float | None = None
        self.baseline_items = 0
        self.judging = False
        self.reads = 0
        self.items = 0

    def switched(self, judge: bool = True) -> None:
        """A new model runs from now on. judge=False: a step back, not to be judged again."""
        self.baseline_items = len(self.recent)
        self.baseline = (sum(self.recent) / self.baseline_items) if self.baseline_items else None
        self.judging = judge and self.baseline_items >= min(MIN_BASELINE, self.n)
        self.recent.clear()
        self.reads = self.items = 0

    def resume(self, baseline: float, baseline_items: int) -> None:
        """A judgement still open when the device stopped: judged again from its first item,
        against the baseline it had (the previous model's items are gone with the restart)."""
        self.baseline, self.baseline_items = baseline, baseline_items
        self.judging, self.reads, self.items = True, 0, 0

    def record(self, read: bool) -> Verdict | None:
        """Count one item; a Verdict once, when the N-th item after a judged switch is in."""
        self.recent.append(read)
        if not self.judging:
            return None
        self.items += 1
        self.reads += read
        if self.items < self.n:
            return None
        self.judging = False
        rate = self.reads / self.items
        base = float(self.baseline or 0.0)
        return Verdict(rate < base - self.points / 100.0, rate, base, self.items)

    def state(self) -> dict:
        if self.judging:
            return {"judging": True, "items": self.items, "of": self.n,
                    "rate": round(self.reads / self.items, 4) if self.items else None,
                    "baseline": round(self.baseline or 0.0, 4), "baseline_items": self.baseline_items}
        return {"judging": False}
