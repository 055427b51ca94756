"""The staged evaluation: the whole battery on one model, each attack only where it can still
change the answer, resumable attack by attack.

- Stage 1, on every input: clean, then FGSM, PGD-20, PGD-100, MIM-20, C&W, transfer PGD-20
  and MIM-20, EXP, EXP-AM, IMP-AM and APGD-CE, each on every clean-correct input (its own
  accuracy is reported).
- Stage 2, AutoAttack's way: APGD-T and FAB-T on the inputs still robust after stage 1.
- Stage 3: the attacks whose cost is per input (FeaAttack and SPSA as the ADT authors ran them
  and in the evaluation's stronger variants, Square), on the inputs still robust after stages
  1 and 2 among the first `subset_examples`; the robust accuracy of the whole suite is the
  per-example worst case on that subset.

Under L2 each stage keeps the attacks that have an L2 version (FeaAttack and SPSA have none).
Every attack's per-example results go to the cache `adt_tf.evaluation.cache` keeps, so a
killed evaluation resumes at the attack it was running. `bench.robustness` runs this on each
trained model of its table; a summary records each attack's code version
(`attack_code_versions`), so that a summary made before an attack changed is redone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Stage 1: each attack on every clean-correct input (its own accuracy is measured).
MAIN_ATTACKS = ("fgsm", "pgd20", "pgd100", "mim20", "cw30", "transfer_pgd20", "transfer_mim20",
                "exp", "exp_am", "imp_am", "apgd_ce")
#: Stage 2, AutoAttack's way: only on the inputs still robust after stage 1.
LATE_ATTACKS = ("apgd_t", "fab_t")
#: Stage 3, the attacks whose cost is per input: on the inputs still robust after stages 1
#: and 2 among the first `subset_examples`.
SUBSET_ATTACKS = ("fea", "fea_distinct", "spsa", "spsa512", "square")
ALL_ATTACKS = MAIN_ATTACKS + LATE_ATTACKS + SUBSET_ATTACKS


def stage_attacks(norm: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The three stages' attacks under `norm`: all of them for L-infinity; under L2 those
    with an L2 version (FeaAttack and SPSA have none)."""
    if norm == "linf":
        return MAIN_ATTACKS, LATE_ATTACKS, SUBSET_ATTACKS
    from adt_tf.attacks import attacks_for
    from adt_tf.evaluation.suites import CATALOGUE

    def keep(names):
        return tuple(n for n in names if CATALOGUE[n].attack in attacks_for(norm))

    return keep(MAIN_ATTACKS), keep(LATE_ATTACKS), keep(SUBSET_ATTACKS)


def all_attacks(norm: str) -> tuple[str, ...]:
    main, late, subset = stage_attacks(norm)
    return main + late + subset


def attack_code_versions(norm: str = "linf") -> dict[str, str]:
    """The code version of each attack of the stages (`adt_tf.evaluation.cache.code_version`)."""
    from adt_tf.attacks import get_attack
    from adt_tf.evaluation.cache import code_version
    from adt_tf.evaluation.suites import CATALOGUE

    return {name: code_version(get_attack(CATALOGUE[name].attack))
            for name in all_attacks(norm)}


def summary_is_current(summary: dict | None, norm: str = "linf") -> bool:
    """Whether a summary holds every attack of the stages, each run with the attack's present
    code (a summary that lacks an attack added later, or made with an attack changed since,
    is to be redone; what is still valid comes back from the cache)."""
    return (summary is not None and all(a in summary["attacks"] for a in all_attacks(norm))
            and summary.get("attack_code") == attack_code_versions(norm))


def wall_seconds(result) -> float:
    """An evaluation's time over all sittings: the wall time of the last call, which took
    cached attacks from the cache, plus the time those attacks took when they ran."""
    return result.seconds + result.cached_seconds


def evaluate_staged(classifier, x: np.ndarray, y: np.ndarray, *, norm: str,
                    subset_examples: int, save_dir: str, model_name: str, source_model=None,
                    **common) -> tuple[Any, dict, int]:
    """Runs the three stages on (x, y); each stage's result is saved under `save_dir` (main,
    late, subset). `common` goes to every `adt_tf.evaluation.evaluate` call (threat,
    batch_size, seed, cache_dir, model_id, dataset, verbose, FeaAttack's pools). Returns
    (stage 1's EvaluationResult, {"late"/"subset": (EvaluationResult or None when no input
    was left, attack names, indices of the inputs it ran on)}, the subset's size)."""
    from adt_tf.evaluation.runner import evaluate

    main_attacks, late_attacks, subset_attacks = stage_attacks(norm)
    main = evaluate(classifier, x, y, suite=",".join(main_attacks), per_attack="all",
                    source_model=source_model, model_name=model_name, **common)
    main.save(save_dir, stem="main")
    robust = main.per_example["robust"].copy()
    stages = {}
    m = min(subset_examples, len(x))
    for stem, names, limit in (("late", late_attacks, len(x)), ("subset", subset_attacks, m)):
        idx = np.flatnonzero(robust[:limit])
        result = None
        if len(idx):
            result = evaluate(classifier, x[idx], y[idx], suite=",".join(names),
                              per_attack="remaining", sanity_checks=False,
                              model_name=model_name, **common)
            result.save(save_dir, stem=stem)
            robust[idx] &= result.per_example["robust"]
        stages[stem] = (result, names, idx)
    return main, stages, m


def summarize_stages(main, stages: dict, m: int, seed: int) -> dict[str, Any]:
    """The numbers of a staged evaluation (`evaluate_staged`'s return values): clean accuracy,
    the robust accuracy after stage 1, after stage 2 (all inputs and the subset), after every
    stage (the subset), each attack's accuracy or count of broken inputs, warnings, time."""
    from adt_tf.evaluation.suites import CATALOGUE

    n = main.num_examples
    robust = main.per_example["robust"].copy()
    attacks: dict[str, Any] = {}
    for a in main.attacks:
        attacks[a.name] = {"label": a.label, "accuracy": a.accuracy, "skipped": a.skipped,
                           "seconds": a.seconds, "params": a.params, "inputs": n}
    warnings, seconds = list(main.warnings), wall_seconds(main)
    after_late = None
    for stem in ("late", "subset"):
        result, names, idx = stages[stem]
        if result is not None:
            robust[idx] &= result.per_example["robust"]
            warnings += result.warnings
            seconds += wall_seconds(result)
        by_name = {a.name: a for a in result.attacks} if result is not None else {}
        for name in names:
            a = by_name.get(name)
            spec = CATALOGUE[name]
            attacks[name] = {
                "label": a.label if a else spec.display_label, "accuracy": None,
                "skipped": a.skipped if a else None, "attacked": a.num_attacked if a else 0,
                "broken": a.num_broken if a else 0, "seconds": a.seconds if a else 0.0,
                "params": a.params if a else dict(spec.params, epsilon=main.epsilon, seed=seed),
                "inputs": n if stem == "late" else m, "stage": stem}
        if stem == "late":
            after_late = robust.copy()
    return {
        "num_examples": n, "subset_examples": m, "clean": main.clean_accuracy,
        "a_rob_stage1": main.robust_accuracy,
        "a_rob_main": float(after_late.mean()),
        "a_rob_main_on_subset": float(after_late[:m].mean()),
        "a_rob_subset": float(robust[:m].mean()),
        "attacks": attacks, "warnings": warnings, "eval_seconds": seconds,
        "environment": main.environment,
    }


__all__ = ["ALL_ATTACKS", "LATE_ATTACKS", "MAIN_ATTACKS", "SUBSET_ATTACKS", "all_attacks",
           "attack_code_versions", "evaluate_staged", "stage_attacks", "summarize_stages",
           "summary_is_current", "wall_seconds"]
