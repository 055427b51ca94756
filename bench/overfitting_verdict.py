"""bench.overfitting's verdict: each method's best - last AutoAttack gap against the seed
spread and the sampling error, the methods' gaps against AT_PGD's, what EMA changes, and
which method ends best at its best checkpoint, in words, whichever way they come out.

Every run is scored on the same test inputs, so every difference the verdict tests is a
paired one: its sampling error comes from the per-input differences (`bench.kit.stats.
paired_se`), averaged over a method's seeds input by input, so that the seeds' correlation
through the shared inputs is counted, not assumed away. A run's per-input results are its
`robust` bits (0/1 strings, `bench.overfitting.robust_bits`); where a run lacks them the
verdict falls back to the unpaired bound of a difference of two runs (binomial, p = 0.25).
"""

from __future__ import annotations

import numpy as np

from bench.kit.stats import apart, binomial_se, paired_se
from bench.kit.variants import variant


def _label(key: str) -> str:
    return variant(key).label


def runs_of(found: dict, key: str, ema: bool) -> dict[int, dict]:
    """`key`'s finished runs with (or without) EMA, by seed."""
    return {s: r for (k, s, e), r in found.items() if k == key and e == ema}


def gap_of(run: dict) -> float:
    """The run's best - last AutoAttack accuracy, in points."""
    return 100 * (run["best"]["autoattack"] - run["last"]["autoattack"])


def gaps_of(found: dict, key: str, ema: bool) -> dict[int, float]:
    """Best - last AutoAttack accuracy, in points, per seed."""
    return {s: gap_of(r) for s, r in runs_of(found, key, ema).items()}


def robust(run: dict, checkpoint: str) -> np.ndarray | None:
    """The run's per-input robustness (0/1 floats) at 'best' or 'last'; None without."""
    bits = run.get("robust", {}).get(checkpoint)
    return None if not bits else (np.frombuffer(bits.encode(), np.uint8) == ord("1")
                                  ).astype(np.float64)


def mean_robust(runs: list[dict], checkpoint: str) -> np.ndarray | None:
    """The runs' per-input robustness at `checkpoint`, averaged over the runs input by input;
    None when a run lacks it or the runs were scored on different numbers of inputs."""
    vectors = [robust(r, checkpoint) for r in runs]
    if not vectors or any(v is None for v in vectors) or len({v.size for v in vectors}) > 1:
        return None
    return np.mean(vectors, axis=0)


def _error(*terms) -> float | None:
    """paired_se of sum(sign * vector) over (sign, vector) terms; None if a vector is None or
    the sizes differ."""
    if any(v is None for _, v in terms) or len({v.size for _, v in terms}) > 1:
        return None
    return paired_se(sum(sign * v for sign, v in terms))


def gap_error(runs: list[dict]) -> float | None:
    """The sampling error (points) of the runs' mean best - last gap."""
    return _error((1, mean_robust(runs, "best")), (-1, mean_robust(runs, "last")))


def gap_difference_error(a: list[dict], b: list[dict]) -> float | None:
    """The sampling error (points) of the difference of two sets of runs' mean gaps."""
    return _error((1, mean_robust(a, "best")), (-1, mean_robust(a, "last")),
                  (-1, mean_robust(b, "best")), (1, mean_robust(b, "last")))


def best_error(a: list[dict], b: list[dict]) -> float | None:
    """The sampling error (points) of the difference of two sets of runs' mean AutoAttack
    accuracy at their best checkpoints."""
    return _error((1, mean_robust(a, "best")), (-1, mean_robust(b, "best")))


def _method_line(key: str, g: list[float], error: float | None, se: float) -> tuple[str, bool]:
    """The method's gap in words, and whether it is robust overfitting: every seed's gap
    above 0 and the mean above twice the error (with one seed: no spread to speak of)."""
    mean = float(np.mean(g))
    if error is None:
        threshold = 2 * se
        test = f"twice the error of a difference of two runs, 2 x {se:.1f} points, unpaired"
    else:
        threshold = 2 * error
        test = (f"twice its paired sampling error, 2 x {error:.1f} points, from the inputs "
                "robust at only one of the two checkpoints")
    overfits = min(g) > 0 and mean > threshold
    seeds = ", ".join(f"{v:+.1f}" for v in g)
    what = "robust overfitting" if overfits else "no robust overfitting"
    if len(g) > 1:
        line = (f"{_label(key)}: best - last AutoAttack {mean:+.1f} points (seeds {seeds}): "
                f"{what} beyond the seed spread and the sampling error (the test: every "
                f"seed's gap above 0 and their mean above {test})")
    else:
        line = (f"{_label(key)}: best - last AutoAttack {mean:+.1f} points (one seed, no "
                f"spread yet): {what} beyond the sampling error (the test: its gap above "
                f"{test})")
    if max(g) < 0 and mean < -threshold:
        line += ("; its best checkpoint scores below its last beyond that error: the "
                 "validation split chose epochs that AutoAttack rates lower")
    return line, overfits


def _compare_gaps(found: dict, key: str, base: str, gaps: dict, overfits: dict,
                  se: float) -> str:
    diff = float(np.mean(gaps[key]) - np.mean(gaps[base]))
    head = f"{_label(key)} against {_label(base)}: the gap differs by {diff:+.1f} points"
    if min(len(gaps[key]), len(gaps[base])) < 2:
        return (f"{head}; not enough seeds to compare ({len(gaps[key])} and "
                f"{len(gaps[base])}: a comparison needs two each).")
    paired = gap_difference_error(list(runs_of(found, key, False).values()),
                                  list(runs_of(found, base, False).values()))
    error = se if paired is None else paired
    bound = f"2 x {error:.1f} points, {'unpaired' if paired is None else 'paired'}"
    if not apart(gaps[key], gaps[base], error):
        return f"{head}, within the seed spread and twice the sampling error ({bound})."
    larger, smaller = (key, base) if diff > 0 else (base, key)
    if overfits[larger]:
        return (f"{head}, so {_label(key)} overfits {'less' if diff < 0 else 'more'} than "
                f"{_label(base)} beyond the seed spread and twice the sampling error "
                f"({bound}).")
    below = (f" ({_label(smaller)}'s best checkpoints score below its last)"
             if np.mean(gaps[smaller]) < 0 else "")
    return (f"{head}, beyond the seed spread and twice the sampling error ({bound}); but the "
            f"larger gap, {_label(larger)}'s, is not itself robust overfitting beyond its "
            f"error, so this shows no difference in robust overfitting{below}.")


def diverged_at(a: dict, b: dict) -> int | None:
    """The first epoch (counted from 1) at which two runs' training accuracy differs, or None
    if it is the same at every epoch both have (or either lacks it). The training accuracy is
    the raw weights' own on their training batches, which EMA does not change: an EMA run and
    the raw run of its seed trained on one machine agree at every epoch (AT_PGD's do, to the
    last digit); a run on another machine or library build, where a fixed seed rounds
    differently, parts from it within an epoch or two and follows its own trajectory."""
    for epoch, (x, y) in enumerate(zip(a.get("history", []), b.get("history", [])), 1):
        if "accuracy" not in x or "accuracy" not in y:
            return None
        if x["accuracy"] != y["accuracy"]:
            return epoch
    return None


def _side(d: float, error: float) -> str:
    """Where a paired difference of d points lies against twice its paired error."""
    return f"{'beyond' if abs(d) > 2 * error else 'within'} twice their paired error"


def _own_raw(e: dict) -> str:
    """An EMA run's last checkpoint against its own raw weights at the last epoch (the
    trajectory it averaged), where they were scored; "" otherwise."""
    raw = e.get("raw_last")
    if raw is None:
        return ""
    d = 100 * (e["last"]["autoattack"] - raw["autoattack"])
    text = (f"; against its own raw weights at the last epoch (the trajectory it averaged, "
            f"{100 * raw['autoattack']:.1f}%) EMA's last differs by {d:+.1f} points")
    error = _error((1, robust(e, "last")), (-1, robust(e, "raw_last")))
    if error is not None:
        text += f", {_side(d, error)} (2 x {error:.1f})"
    return text


def _own_gap(gap: float, own: float | None, overfits: bool | None) -> str:
    """What an EMA run's own gap says when its raw run is another trajectory: averaged
    weights that overfit beyond their own error show that EMA does not remove the gap,
    whatever the raw run did; a gap within the error shows nothing without the raw run."""
    if overfits and own is not None and gap > 2 * own:
        return (". Its own gap is above twice its paired error: the averaged weights overfit "
                "robustly themselves, so EMA does not remove the gap here.")
    return "."


def _ema_line(found: dict, key: str, seed: int, overfits: dict) -> str:
    e = found[(key, seed, True)]
    gap = gap_of(e)
    own = gap_error([e])
    line = f"{_label(key)} with EMA (seed {seed}): best - last {gap:+.1f} points"
    if own is not None:
        side = "above" if gap > 2 * own else "below" if gap < -2 * own else "within"
        line += f", {side} twice its paired error (2 x {own:.1f})"
    r = found.get((key, seed, False))
    if r is None:
        return line + _own_raw(e) + "."
    raw = gap_of(r)
    line += (f"; without it {raw:+.1f}. AutoAttack of the last checkpoint "
             f"{100 * e['last']['autoattack']:.1f}% with EMA against "
             f"{100 * r['last']['autoattack']:.1f}% without, of the best "
             f"{100 * e['best']['autoattack']:.1f}% against {100 * r['best']['autoattack']:.1f}%")
    last = _error((1, robust(e, "last")), (-1, robust(r, "last")))
    if last is not None:
        d = 100 * (e["last"]["autoattack"] - r["last"]["autoattack"])
        line += (f" (the last checkpoints differ by {d:+.1f} points, "
                 f"{_side(d, last)}, 2 x {last:.1f})")
    line += _own_raw(e)
    split = diverged_at(e, r)
    if split is not None:
        seeds = [100 * x["last"]["autoattack"] for x in runs_of(found, key, False).values()]
        return line + (f". But its training left the raw seed-{seed} run's path at epoch "
                       f"{split} (their training accuracy differs from there on: trained on "
                       "another machine or library build, where the same seed rounds "
                       "differently), so these differences mix EMA with a second trajectory "
                       f"of the seed: no conclusion on EMA from the raw seed-{seed} run (the "
                       f"raw seeds' last checkpoints: {min(seeds):.1f}-{max(seeds):.1f}%)"
                       + ("; the comparison with its own raw weights is on one trajectory"
                          if "raw_last" in e else "") + _own_gap(gap, own, overfits.get(key)))
    versus = gap_difference_error([e], [r])
    if key not in overfits or versus is None:
        return line + "."
    if not overfits[key]:
        return line + (". The raw runs show no robust overfitting beyond their error: no gap "
                       "for EMA to remove.")
    if raw - gap > 2 * versus:
        return line + (f". EMA's gap is smaller than the raw run's beyond twice their paired "
                       f"error (2 x {versus:.1f})" + (
                           ", and not above its own: EMA removes the gap here."
                           if own is not None and gap <= 2 * own else
                           ", though still above its own: EMA reduces the gap here."))
    return line + (f". EMA's gap is not smaller than the raw run's beyond twice their paired "
                   f"error (2 x {versus:.1f}): EMA does not remove the gap here.")


def _ranking(found: dict, keys: list[str], se: float) -> str:
    best = {k: [100 * r["best"]["autoattack"] for _, r in sorted(runs_of(found, k, False).items())]
            for k in keys}
    ranked = sorted(best, key=lambda k: -float(np.mean(best[k])))
    top, second = ranked[:2]
    lead = float(np.mean(best[top]) - np.mean(best[second]))
    paired = best_error(list(runs_of(found, top, False).values()),
                        list(runs_of(found, second, False).values()))
    error = se if paired is None else paired
    bound = f"2 x {error:.1f} points, {'unpaired' if paired is None else 'paired'}"
    if min(len(best[top]), len(best[second])) < 2:
        head, judged = "Highest so far at its best checkpoint", (
            f"not yet comparable ({len(best[top])} and {len(best[second])} seeds: a "
            f"comparison needs two each; sampling error {bound})")
    elif apart(best[top], best[second], error):
        head, judged = "Best at its best checkpoint", (
            f"beyond the seed spread and twice the sampling error ({bound})")
    else:
        head, judged = "Highest mean at its best checkpoint (none is shown best)", (
            f"within the seed spread and twice the sampling error ({bound})")
    return (f"{head}: {_label(top)}, AutoAttack {np.mean(best[top]):.1f}% (seeds "
            f"{', '.join(f'{v:.1f}' for v in best[top])}), {lead:.1f} points above "
            f"{_label(second)}, {judged}. Order: "
            + " > ".join(f"{_label(k)} {np.mean(best[k]):.1f}%" for k in ranked) + ".")


def verdict(found: dict, methods: list[str], n: int) -> str:
    """The verdict, one statement per line, from the finished runs `found`
    ({(key, seed, ema): summary}) of `methods` (the first, AT_PGD, the one the others are
    compared with), each scored on the same n test inputs."""
    if not found:
        return "No run has finished yet."
    se = binomial_se(0.25, n) * np.sqrt(2)  # points, of a difference of two runs, unpaired
    parts, gaps, overfits = [], {}, {}
    for key in methods:
        g = list(gaps_of(found, key, False).values())
        if g:
            gaps[key] = g
            line, overfits[key] = _method_line(
                key, g, gap_error(list(runs_of(found, key, False).values())), se)
            parts.append(line)
    if len(gaps) > 1:
        base, *others = gaps
        parts += [_compare_gaps(found, key, base, gaps, overfits, se) for key in others]
    for key in methods:
        parts += [_ema_line(found, key, seed, overfits)
                  for seed in sorted(runs_of(found, key, True))]
    if len(gaps) > 1:
        parts.append(_ranking(found, list(gaps), se))
    return "\n".join(f"- {p}" for p in parts) if parts else "No non-EMA run has finished yet."


__all__ = ["best_error", "diverged_at", "gap_difference_error", "gap_error", "gap_of",
           "gaps_of", "mean_robust", "robust", "runs_of", "verdict"]
