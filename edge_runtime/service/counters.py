"""What a PLC or a shift supervisor asks of a reader: good reads, noreads, mismatches, the read
rate, and how well the codes are printed.

Counted from the results as they are numbered and sent (Service._number_waiting), so the
counts equal what went out. Definitions:

- reads = good_reads + mismatches: every result of kind "read" (a mismatching label was read:
  it counts for the read rate, not as good). Without [match], every read is good.
- read rate = reads / (reads + noreads), since start and over the last WINDOW items (reads and
  noreads in order); None (JSON null) until there is an item.
- quality over the last WINDOW reads that carry a `quality` (reads without one do not count):
  mean score (0..4) and its letter, worst (lowest) score and its letter; the letters are
  ISO 15415's (A >= 3.5, B >= 2.5, C >= 1.5, D >= 0.5, else F). Since start, the scores
  also fill a histogram (SCORE_BUCKETS) for Prometheus.

One thread (the loop) adds; other threads (status, scrape) read. The deques are copied
before they are walked, which is atomic under the GIL.
"""

from __future__ import annotations

from collections import deque

from edge_runtime.quality import letter

WINDOW = 1000
SCORE_BUCKETS = (0.5, 1.5, 2.5, 3.5, 4.5)


class ReadCounters:
    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.reads = 0
        self.good_reads = 0
        self.mismatches = 0
        self.noreads = 0
        self._items: deque[bool] = deque(maxlen=window)  # True = read, False = noread
        self._scores: deque[float] = deque(maxlen=window)
        # Histogram since start: counts per bucket (non-cumulative; the last is +Inf), sum.
        self.score_counts = [0] * (len(SCORE_BUCKETS) + 1)
        self.score_sum = 0.0

    def add(self, result: dict) -> None:
        if result.get("kind") == "noread":
            self.noreads += 1
            self._items.append(False)
            return
        self.reads += 1
        self._items.append(True)
        if result.get("match") is False:
            self.mismatches += 1
        else:
            self.good_reads += 1
        quality = result.get("quality")
        score = quality.get("score") if isinstance(quality, dict) else None
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            score = float(score)
            self._scores.append(score)
            self.score_sum += score
            self.score_counts[next((i for i, b in enumerate(SCORE_BUCKETS) if score <= b), len(SCORE_BUCKETS))] += 1

    def read_rate(self) -> dict[str, float | None]:
        """{"last_1000": ..., "since_start": ...} (the window's size in the first key)."""
        items = list(self._items)
        recent = sum(items) / len(items) if items else None
        total = self.reads + self.noreads
        return {f"last_{self.window}": _round(recent),
                "since_start": _round(self.reads / total if total else None)}

    def quality(self) -> dict:
        scores = list(self._scores)
        if not scores:
            return {"reads": 0, "mean_score": None, "mean_grade": None, "worst_score": None, "worst_grade": None}
        mean, worst = sum(scores) / len(scores), min(scores)
        return {"reads": len(scores), "mean_score": round(mean, 2), "mean_grade": letter(mean),
                "worst_score": round(worst, 2), "worst_grade": letter(worst)}

    def summary(self) -> dict:
        """The keys Stats.counters() adds (status, MQTT retained status, log lines)."""
        return {
            "good_reads": self.good_reads,
            "mismatches": self.mismatches,
            "read_rate": self.read_rate(),
            f"quality_last_{self.window}": self.quality(),
        }

    def histogram(self) -> tuple[list[tuple[str, int]], float]:
        """Cumulative Prometheus buckets [(le, count)...] ending with +Inf, and the sum."""
        out, acc = [], 0
        for bound, n in zip((*(f"{b:g}" for b in SCORE_BUCKETS), "+Inf"), self.score_counts):
            acc += n
            out.append((bound, acc))
        return out, self.score_sum


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)
