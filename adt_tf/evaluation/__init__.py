"""Robustness evaluation: named attack suites, the runner, its report, its cache, and the sanity
checks that say when a number is likely to be wrong.

- `adt_tf.evaluation.suites`: `AttackSpec`, the `CATALOGUE` of attack settings, the `SUITES`.
- `adt_tf.evaluation.runner`: `evaluate` (what `adt-evaluate` runs), `correct_under_attack`.
- `adt_tf.evaluation.report`: `EvaluationResult`, `AttackResult` (JSON, Markdown, per example).
- `adt_tf.evaluation.cache`: per-attack results keyed by weights, data, settings, attack code.
- `adt_tf.evaluation.sanity`: gradient, randomness, epsilon-sweep, unbounded, black-box checks.

Loading a model argument is `adt_tf.artifacts.loading` (shared with every other command).
"""

from adt_tf.evaluation.generator_fit import fit_amortized_adversary
from adt_tf.evaluation.report import AttackResult, EvaluationResult
from adt_tf.evaluation.runner import (
    PER_ATTACK_MODES,
    correct_under_attack,
    environment,
    evaluate,
    follow_up_black_box,
    input_shape_of,
    predict_labels,
    prepare_inputs,
    run_sanity_checks,
)
from adt_tf.evaluation.suites import (
    CATALOGUE,
    DEFAULT_PER_ATTACK,
    SUITES,
    AttackSpec,
    parse_overrides,
    resolve_suite,
)

__all__ = ["CATALOGUE", "DEFAULT_PER_ATTACK", "PER_ATTACK_MODES", "SUITES",
           "AttackResult", "AttackSpec", "EvaluationResult", "correct_under_attack",
           "environment", "evaluate", "fit_amortized_adversary", "follow_up_black_box",
           "input_shape_of", "parse_overrides", "predict_labels", "prepare_inputs",
           "resolve_suite", "run_sanity_checks"]
