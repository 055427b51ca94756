"""The statistics the benchmarks' tables and verdicts use: the seeds' mean and spread, a
table cell of them, the sampling error of an accuracy, and the comparisons a verdict makes
(beyond the seed spread; beyond it and twice the sampling error)."""

from __future__ import annotations

import numpy as np


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and spread (half the range: max - mean) of the seeds' values, in percent."""
    arr = 100 * np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float((arr.max() - arr.min()) / 2)


def cell(values: list[float], digits: int = 2) -> str:
    """A table cell of the seeds' accuracies (fractions): "mean ± spread" in percent, the
    value alone for one seed, "-" for none."""
    if not values:
        return "-"
    mean, spread = mean_spread(values)
    return (f"{mean:.{digits}f} ± {spread:.{digits}f}" if len(values) > 1
            else f"{mean:.{digits}f}")


def binomial_se(p: float, n: int) -> float:
    """Standard error, in percentage points, of an accuracy p measured on n inputs."""
    return 100 * float(np.sqrt(p * (1 - p) / n)) if n else float("nan")


def paired_se(differences) -> float:
    """Standard error, in percentage points, of the mean of per-input differences of two
    accuracies measured on the same n inputs (each input's difference: 1, 0 or -1 for one
    pair of models, or the mean of such over seeds): sqrt(mean(D^2) / n), the error under no
    difference (McNemar's: for one pair, sqrt(b + c) / n with b and c the inputs right under
    only one of the two). The inputs both get right or both get wrong add nothing; the
    seeds' correlation through the shared inputs is in D, not assumed away."""
    d = np.asarray(differences, dtype=np.float64)
    if not d.size:
        return float("nan")
    return 100 * float(np.sqrt(np.mean(np.square(d)) / d.size))


def compare_seeds(a: list[float], b: list[float], baseline: str) -> str:
    """`a`'s seeds (accuracies, fractions) against the `baseline`'s `b`, in words: beats,
    is below, or does not differ from it beyond the seed spread (the intervals mean ± half
    range); fewer than two seeds each is "not enough seeds to compare"."""
    if len(a) < 2 or len(b) < 2:
        return "not enough seeds to compare"
    (ma, sa), (mb, sb) = mean_spread(a), mean_spread(b)
    both = f"({ma:.2f} ± {sa:.2f} vs {mb:.2f} ± {sb:.2f})"
    if ma - sa > mb + sb:
        return f"beats {baseline} beyond the seed spread {both}"
    if ma + sa < mb - sb:
        return f"is below {baseline} beyond the seed spread {both}"
    return f"does not differ from {baseline} beyond the seed spread {both}"


def apart(a: list[float], b: list[float], se: float) -> bool:
    """Whether two sets of per-seed values (points) differ beyond the seed spread (their
    intervals mean ± half range do not overlap) and beyond twice the sampling error `se` of
    a difference of two runs."""
    (ma, sa), (mb, sb) = ((float(np.mean(v)), (max(v) - min(v)) / 2) for v in (a, b))
    return abs(ma - mb) > sa + sb and abs(ma - mb) > 2 * se


def holds(a: list[float], b: list[float]) -> str:
    """'holds' when the two seed ranges overlap, 'lower' / 'higher' when b's lies below /
    above a's, 'not enough seeds' with fewer than two each."""
    if len(a) < 2 or len(b) < 2:
        return "not enough seeds"
    if max(b) < min(a):
        return "lower"
    if min(b) > max(a):
        return "higher"
    return "holds"


__all__ = ["apart", "binomial_se", "cell", "compare_seeds", "holds", "mean_spread", "paired_se"]
