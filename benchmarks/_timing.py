"""Timing primitives: timed batches, percentiles and interleaved ratios.

Every timed loop runs with the garbage collector off and times each call on
its own with ``perf_counter_ns``, so that the percentiles describe single
operations. Ratios are always taken between batches measured next to each
other in time, because on a shared machine a figure drifts by tens of percent
within minutes while the ratio of neighbours does not.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

NS_PER_US = 1000.0


def timer_overhead_ns(samples: int = 2001) -> float:
    """The median cost of two back-to-back ``perf_counter_ns`` calls."""
    clock = time.perf_counter_ns
    diffs = []
    for _ in range(samples):
        t0 = clock()
        t1 = clock()
        diffs.append(t1 - t0)
    return float(statistics.median(diffs))


MIN_CALLS = 10


def timed_calls(
    fn: Callable[[Any], object], args: Iterable[Any], budget_s: float | None = None
) -> list[int]:
    """Call ``fn(arg)`` for each arg and return each call's time in ns.

    With ``budget_s``, stop early once that much time has passed and at least
    ``MIN_CALLS`` calls were made, so that a system whose writes wait for the
    disk (a rollback journal) cannot stretch the run to many minutes.
    """
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    stop_at = clock() + int(budget_s * 1e9) if budget_s else None
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for arg in args:
            t0 = clock()
            fn(arg)
            t1 = clock()
            append(t1 - t0)
            if stop_at is not None and t1 > stop_at and len(samples) >= MIN_CALLS:
                break
    finally:
        if was_enabled:
            gc.enable()
    return samples


def timed_once(fn: Callable[[], object]) -> int:
    """Time one call of ``fn()`` in ns, with the garbage collector off."""
    clock = time.perf_counter_ns
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = clock()
        fn()
        t1 = clock()
    finally:
        if was_enabled:
            gc.enable()
    return t1 - t0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation of sorted data."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    frac = pos - lo
    return sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac


def summary_us(samples_ns: Sequence[float]) -> dict[str, float]:
    """Median, p90, p99, mean and count of samples given in ns, in us."""
    values = sorted(samples_ns)
    if not values:
        return {"n": 0, "median": math.nan, "p90": math.nan, "p99": math.nan}
    return {
        "n": len(values),
        "median": percentile(values, 50) / NS_PER_US,
        "p90": percentile(values, 90) / NS_PER_US,
        "p99": percentile(values, 99) / NS_PER_US,
        "mean": statistics.fmean(values) / NS_PER_US,
    }


def geomean(values: Sequence[float]) -> float:
    """Geometric mean of positive values (nan when empty or not positive)."""
    good = [v for v in values if v > 0 and math.isfinite(v)]
    if not good:
        return math.nan
    return math.exp(statistics.fmean(math.log(v) for v in good))


def median_or_nan(values: Sequence[float]) -> float:
    """The median of the finite values, nan when there are none."""
    good = [v for v in values if math.isfinite(v)]
    return float(statistics.median(good)) if good else math.nan


@dataclass
class Series:
    """All batches of one subject: pooled samples and per-round ratios."""

    samples: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    figures: list[float] = field(default_factory=list)

    def result(self) -> dict[str, Any]:
        """The JSON-ready figures: percentiles, ratio median and rounds."""
        out: dict[str, Any] = summary_us(self.samples)
        out["ratio"] = median_or_nan(self.ratios)
        out["ratios"] = [round(r, 4) for r in self.ratios]
        return out


def interleave(
    reference: Callable[[], float],
    subjects: dict[str, Callable[[], float]],
    rounds: int,
) -> tuple[list[float], dict[str, list[float]]]:
    """Run ``ref, s1, ref, s2, ref, ...`` for several rounds; return ratios.

    Each callable runs one batch and returns its figure (a median time or a
    throughput). A subject's ratio for a round is its figure over the
    geometric mean of the reference batches run just before and just after
    it, so drift hits both sides alike. The subjects'
    order rotates from round to round. Returns the reference figures and,
    per subject, the list of per-round ratios.
    """
    names = list(subjects)
    ratios: dict[str, list[float]] = {name: [] for name in names}
    ref_figures: list[float] = []
    for r in range(rounds):
        shift = r % len(names) if names else 0
        order = names[shift:] + names[:shift]
        before = reference()
        ref_figures.append(before)
        for name in order:
            figure = subjects[name]()
            after = reference()
            ref_figures.append(after)
            base = geomean([before, after])
            ratios[name].append(figure / base if base > 0 else math.nan)
            before = after
    return ref_figures, ratios
