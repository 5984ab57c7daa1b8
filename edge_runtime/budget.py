"""The frame's time budget: learned attempt costs, and a work queue that spends them.

A deadline is only kept if nothing that cannot be interrupted starts without time for it.
Every attempt (a decoder call, a deblur, a cepstrum) has a key; what it took is learned as
a slowly decaying maximum, and an attempt starts only if that cost fits in what is left of
the frame. The retries of one frame are groups (one per detected code, or one for the
whole frame) pulled round-robin, so a hard code cannot starve the others, by the calling
thread and by pool workers: zxing-cpp, OpenCV, ZBar (ctypes) and numpy's FFT release the
GIL, so threads are enough to use a board's other cores. The calling thread never waits
for a worker past the deadline; what a worker finishes later is dropped.

An attempt never measured has no cost to check. A worker may run it (its result is used if
it comes in time, and from then on its cost is known); the calling thread runs it only if
half the budget is left, the conservative guess a single-core reader has to live with.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# Decay per run of the learned maximum: a spike (another process took the core) is
# remembered for a few dozen runs, then forgotten.
_DECAY = 0.95
# The guess for an attempt never measured, as a fraction of the deadline.
_UNMEASURED_GUESS = 0.5
# An attempt skipped as too slow is measured again by a worker this often (s): a cost
# learned during a burst of load elsewhere would otherwise keep it skipped for good, since
# only runs make the learned maximum decay.
_REMEASURE_S = 2.0


@dataclass
class Attempt:
    """One uninterruptible step. `run()` returns codes (any list; empty = nothing read) or
    a `Follow` of attempts that depend on it (a blur estimate -> its deconvolutions)."""

    key: Hashable
    run: Callable[[], object]
    stage: str = "enhanced"


@dataclass
class Follow:
    attempts: list[Attempt] = field(default_factory=list)


def may_start(cost_ms: float | None, remaining_ms: float, deadline_ms: float | None, *, thread: str) -> bool:
    """Whether an attempt of learned `cost_ms` (None: never measured) may start with
    `remaining_ms` left, on `thread`: "worker", "caller" (the thread that returns the frame,
    while workers exist) or "alone" (no workers). Pure, so the rule is tested with
    injected costs."""
    if deadline_ms is None:
        return True
    if remaining_ms <= 0.0:
        return False
    if cost_ms is None:
        # A worker's late result is dropped without delaying the frame; the caller would
        # hold the frame until it ends, so it leaves such attempts to the workers, and
        # without workers runs them only with half the budget left.
        if thread == "worker":
            return True
        return thread == "alone" and _UNMEASURED_GUESS * deadline_ms <= remaining_ms
    return cost_ms <= remaining_ms


class Budget:
    """Learned costs (shared by all frames of a reader) and the clock of one deadline."""

    def __init__(
        self,
        deadline_ms: float | None,
        clock: Callable[[], float] = time.perf_counter,
        prior: Callable[[Hashable, dict], float | None] | None = None,
    ) -> None:
        """`prior(key, costs)`: a cost for a key never measured, derived from measured
        ones (e.g. the same step on a smaller crop), or None."""
        self.deadline_ms = deadline_ms
        self.clock = clock
        self.prior = prior
        self.costs: dict[Hashable, float] = {}
        self._last_run: dict[Hashable, float] = {}
        self._provisional: set[Hashable] = set()  # measured once: that run paid the warm-up
        self._lock = threading.Lock()

    def remaining(self, t0: float) -> float:
        if self.deadline_ms is None:
            return math.inf
        return self.deadline_ms - (self.clock() - t0) * 1000.0

    def cost(self, key: Hashable) -> float | None:
        c = self.costs.get(key)
        if c is None and self.prior is not None:
            c = self.prior(key, self.costs)
        return c

    def allows(self, key: Hashable, t0: float, *, thread: str = "alone") -> bool:
        if self.deadline_ms is None:
            return True
        return may_start(self.cost(key), self.remaining(t0), self.deadline_ms, thread=thread)

    def stale(self, key: Hashable, t0: float) -> bool:
        """A measured attempt too slow for what is left, not run for a while: a worker
        measures it again (its result still counts if it comes in time)."""
        if key not in self.costs or self.remaining(t0) <= 0.0:
            return False
        return self.clock() - self._last_run.get(key, -math.inf) >= _REMEASURE_S

    def timed(self, key: Hashable, fn: Callable[[], object], *, fresh: bool = False) -> object:
        a = self.clock()
        with self._lock:
            self._last_run[key] = a
        try:
            return fn()
        finally:
            self.learn(key, (self.clock() - a) * 1000.0, fresh=fresh)

    def learn(self, key: Hashable, ms: float, *, fresh: bool = False) -> None:
        """A slowly decaying maximum: spikes are remembered (they are what overruns a
        deadline) and forgotten over a few dozen runs; `fresh` (a re-measurement of a
        skipped attempt) replaces the old value, which no run has been decaying.

        The first run of a step pays one-time costs (imports, tables, allocations: 15 ms
        for the erasure decoder's first call, 2-4 ms after); the second run replaces it.
        Kept as a maximum, it would keep the step skipped at a 16 ms deadline until the
        slow re-measurement came round."""
        with self._lock:
            if key not in self.costs:
                self._provisional.add(key)
            elif key in self._provisional:
                self._provisional.discard(key)
                fresh = True
            old = 0.0 if fresh else self.costs.get(key, 0.0)
            self.costs[key] = max(ms, _DECAY * old)


class FrameWork:
    """One frame's retries: `groups` of attempts, each group done at its first read;
    the `fallback` groups are dropped as soon as any other group has read.

    Results: {group index: (attempt, codes)} for the groups read before the deadline."""

    def __init__(self, budget: Budget, t0: float, groups: Iterable[Iterable[Attempt]], fallback: Iterable[int] = ()) -> None:
        self.budget, self.t0 = budget, t0
        self.fallback = set(fallback)
        self.pending = [deque(g) for g in groups]
        n = len(self.pending)
        self.pulled = [0] * n  # round-robin: the group with the fewest attempts started goes next
        self.inflight = [0] * n
        self.results: dict[int, tuple[Attempt, object]] = {}
        self.cond = threading.Condition()
        self.closed = False
        self.active_workers = 0

    def run(self, pool: Executor | None, workers: int) -> dict[int, tuple[Attempt, object]]:
        if not self.pending:
            return {}
        if pool is not None:
            # Counted from submission, not from start: the caller must not close the frame
            # on attempts only a worker may run before the worker got to them.
            for _ in range(min(workers, sum(len(p) for p in self.pending))):
                self.active_workers += 1
                pool.submit(self._worker)
        caller = "caller" if pool is not None and workers > 0 else "alone"
        self._consume(caller)
        with self.cond:
            while self._worth_waiting():
                left = self.budget.remaining(self.t0)
                if left <= 0.0:
                    break
                self.cond.wait(None if math.isinf(left) else left / 1000.0)
                if not self.closed:
                    # A worker may have added a follow-up the calling thread can run.
                    self.cond.release()
                    try:
                        self._consume(caller)
                    finally:
                        self.cond.acquire()
            self.closed = True
            return dict(self.results)

    def _worth_waiting(self) -> bool:
        open_ = self._open()
        if any(self.inflight[g] for g in open_):
            return True
        # Attempts only a worker may start (never measured) are worth waiting for while
        # a worker is on this frame; attempts too slow for anyone are not.
        return self.active_workers > 0 and any(
            self.budget.allows(a.key, self.t0, thread="worker") for g in open_ for a in self.pending[g]
        )

    def _worker(self) -> None:
        try:
            # A pool busy with an earlier frame may reach this one after it closed: then
            # _pull gives nothing.
            self._consume("worker")
        finally:
            with self.cond:
                self.active_workers -= 1
                self.cond.notify_all()

    def _consume(self, thread: str) -> None:
        while True:
            item = self._pull(thread)
            if item is None:
                return
            g, a, fresh = item
            try:
                out = self.budget.timed(a.key, a.run, fresh=fresh)
            except Exception:  # one failing enhancement must not lose the frame's other reads
                log.exception("reader attempt %r failed", a.key)
                out = []
            with self.cond:
                self.inflight[g] -= 1
                if isinstance(out, Follow):
                    self.pending[g].extendleft(reversed(out.attempts))
                elif out and g not in self.results and not self.closed:
                    self.results[g] = (a, out)
                self.cond.notify_all()

    def _pull(self, thread: str) -> tuple[int, Attempt, bool] | None:
        with self.cond:
            if self.closed:
                return None
            # Fallback groups last: they are for what the others cannot read, and take
            # what the others cannot use (a worker with nothing else to start).
            order = sorted(self._open(), key=lambda g: (g in self.fallback, self.pulled[g]))
            for fresh in (False, True) if thread == "worker" else (False,):
                for g in order:
                    q = self.pending[g]
                    for i, a in enumerate(q):
                        if self.budget.stale(a.key, self.t0) if fresh else self.budget.allows(a.key, self.t0, thread=thread):
                            del q[i]
                            self.pulled[g] += 1
                            self.inflight[g] += 1
                            return g, a, fresh
            return None

    def _open(self) -> list[int]:
        """Groups still worth work: not read yet, and a fallback group only while no
        other group has read (it exists for frames where everything else failed)."""
        return [g for g in range(len(self.pending)) if g not in self.results and not (g in self.fallback and self.results)]
