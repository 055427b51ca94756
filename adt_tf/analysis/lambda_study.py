"""The entropy weight lambda against robustness and entropy (paper Fig. 5).

Two sources of points: trained models with known lambdas (each evaluated here: clean
accuracy, robust accuracy under each attack, and the entropy of the adversarial
distribution that ADT's inner problem at that lambda fits against the model), or a table of
tuner trials (CSV or JSON with a lambda column, accuracies and the mean entropy).

Example:
    >>> points = evaluate_lambda_models([model, other_model], [0.0, 0.01], x_test, y_test,
    ...                                 8 / 255)
    >>> points = read_trial_table("tuning/trials.csv")

Reference:
    Dong, Deng, Pang, Zhu, Su. "Adversarial Distributional Training for Robust Deep Learning",
    NeurIPS 2020, Sec. 5.3 and Fig. 5.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from adt_tf.adt.inner_maximization import explicit_inner_maximization
from adt_tf.attacks import get_attack
from adt_tf.core import checks
from adt_tf.data import as_unit_float
from adt_tf.evaluation import correct_under_attack

LAMBDA_COLUMNS = ("lambda", "entropy_weight")
CLEAN_COLUMNS = ("clean_accuracy", "val_clean_accuracy", "clean acc", "clean")
ENTROPY_COLUMNS = ("entropy", "mean_entropy", "mean entropy")
SKIP_COLUMNS = ("trial_id", "status", "best_epoch", "epochs", "label", "model")


@dataclasses.dataclass
class LambdaPoint:
    """One model (or trial) of a lambda study.

    Attributes:
        lam: the entropy weight lambda.
        clean_accuracy: accuracy on clean inputs (None if unknown).
        robust_accuracy: attack name -> accuracy under it (an input counts only if it is
            also classified correctly when clean).
        entropy: the mean per-dimension entropy estimate (None if unknown).
        label: where the point comes from (a model path or a trial id).
    """

    lam: float
    clean_accuracy: float | None
    robust_accuracy: dict[str, float]
    entropy: float | None
    label: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"lambda": self.lam, "clean_accuracy": self.clean_accuracy,
                "robust_accuracy": self.robust_accuracy, "entropy": self.entropy,
                "label": self.label}


def _number(value) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "n/a", "nan",
                                                                              "none")):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _find(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def points_from_rows(rows: Sequence[dict[str, Any]], where: str = "table") -> list[LambdaPoint]:
    """Lambda points from table rows (dicts), e.g. the tuner's trials.

    Columns: lambda (or entropy_weight); a clean accuracy (clean_accuracy,
    val_clean_accuracy); the entropy (entropy, mean_entropy); every other numeric column
    whose name contains "robust" or ends in "accuracy" is a robust accuracy under the attack
    it names. Rows whose `status` is given and is not COMPLETED, or without a lambda, are
    skipped.
    """
    if not rows:
        raise ValueError(f"{where} holds no rows; expected columns lambda, clean accuracy, "
                         "robust accuracy, entropy.")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lam_col = _find(columns, LAMBDA_COLUMNS)
    if lam_col is None:
        raise ValueError(f"{where} has no lambda column (one of {', '.join(LAMBDA_COLUMNS)}); "
                         f"found {columns}.")
    clean_col = _find(columns, CLEAN_COLUMNS)
    entropy_col = _find(columns, ENTROPY_COLUMNS)
    robust_cols = [c for c in columns if c not in (lam_col, clean_col, entropy_col)
                   and c.lower() not in SKIP_COLUMNS
                   and ("robust" in c.lower() or c.lower().endswith("accuracy"))]
    if not robust_cols:
        raise ValueError(f"{where} has no robust-accuracy column (a name containing 'robust' "
                         f"or ending in 'accuracy'); found {columns}.")
    points = []
    for i, row in enumerate(rows):
        status = str(row.get("status") or "COMPLETED").upper()
        lam = _number(row.get(lam_col))
        if lam is None or not status.endswith("COMPLETED"):
            continue
        robust = {c: v for c in robust_cols if (v := _number(row.get(c))) is not None}
        points.append(LambdaPoint(lam=lam, clean_accuracy=_number(row.get(clean_col)),
                                  robust_accuracy=robust,
                                  entropy=_number(row.get(entropy_col)),
                                  label=str(row.get("trial_id", i))))
    if not points:
        raise ValueError(f"{where} has no completed row with a lambda value.")
    return points


def read_trial_table(path: str) -> list[LambdaPoint]:
    """Lambda points from a CSV or JSON table (a list of row objects), see `points_from_rows`."""
    if not os.path.isfile(path):
        raise ValueError(f"Trial table {path!r} does not exist; expected a .csv or .json file "
                         "with columns lambda, clean accuracy, robust accuracy, entropy.")
    if path.endswith(".json"):
        with open(path) as f:
            rows = json.load(f)
        if isinstance(rows, dict):  # {"trials": [...]} or similar
            rows = next((v for v in rows.values() if isinstance(v, list)), [])
    elif path.endswith(".csv"):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        raise ValueError(f"Trial table {path!r}: expected a .csv or .json file.")
    return points_from_rows(rows, where=path)


def distribution_entropy(classifier, x, y, epsilon: float, entropy_weight: float, *,
                         steps: int = 20, mc_samples: int = 10, batch_size: int = 64,
                         seed: int = 0) -> float:
    """The mean per-dimension entropy of the distributions ADT's inner problem fits.

    For each input, ADT_EXP's inner maximisation at this lambda (T steps, k samples, Adam
    lr 0.3, betas 0) runs against the fixed classifier; the result is its entropy estimate
    at the last step, averaged over the inputs.
    """
    run = tf.function(lambda xb, yb, sb: explicit_inner_maximization(
        classifier, xb, yb, threat=epsilon, entropy_weight=entropy_weight, steps=steps,
        samples=mc_samples, lr=0.3, beta1=0.0, beta2=0.0, seed=sb).entropy,
        reduce_retracing=True)
    total = 0.0
    for start in range(0, len(x), batch_size):
        xb = tf.constant(x[start:start + batch_size], tf.float32)
        yb = tf.constant(y[start:start + batch_size], tf.int32)
        total += float(run(xb, yb, tf.constant([seed, start], tf.int32))) * len(yb)
    return total / len(x)


def _attack_fn(name: str, epsilon: float, seed: int):
    attack = get_attack(name)
    takes_seed = "seed" in inspect.signature(attack).parameters

    def run(model, xb, yb):
        if takes_seed:
            return attack(model, xb, yb, epsilon, seed=seed)
        return attack(model, xb, yb, epsilon)

    return run


def evaluate_lambda_models(classifiers: Sequence[keras.Model], lambdas: Sequence[float], x, y,
                           epsilon: float, *, attacks: Sequence[str] = ("fgsm", "pgd"),
                           entropy_steps: int = 20, entropy_mc_samples: int = 10,
                           batch_size: int = 64, labels: Sequence[str] | None = None,
                           seed: int = 0, verbose: bool = True) -> list[LambdaPoint]:
    """Evaluates trained models, one lambda each: accuracies and the fitted entropy.

    Args:
        classifiers: logits models.
        lambdas: the entropy weight each was trained with (>= 0).
        x, y: evaluation inputs (float in [0, 1] or uint8) and labels.
        epsilon: L-infinity budget.
        attacks: names in the attack registry, each run with its defaults (pgd: PGD-20).
        entropy_steps, entropy_mc_samples: T and k of the entropy's inner maximisation.
        batch_size: inputs per batch. labels: a name per model. seed: attack seed.
        verbose: progress bars.

    Returns:
        One `LambdaPoint` per model.
    """
    if len(classifiers) != len(lambdas):
        raise ValueError(f"Got {len(classifiers)} models but {len(lambdas)} lambdas; give one "
                         "lambda per model.")
    checks.check_positive_int(len(classifiers), "the number of models")
    lambdas = [checks.check_non_negative(lam, "lambda") for lam in lambdas]
    epsilon = checks.check_epsilon(epsilon)
    x = as_unit_float(x)
    y = np.asarray(y).astype(np.int32)
    checks.check_positive_int(len(x), "the number of inputs N")
    attack_fns = {name: _attack_fn(name, epsilon, seed) for name in attacks}
    labels = list(labels) if labels is not None else [f"model {i}" for i in
                                                      range(len(classifiers))]
    points = []
    for classifier, lam, label in zip(classifiers, lambdas, labels):
        if verbose:
            print(f"lambda = {lam:g} ({label})")
        clean = correct_under_attack(classifier, x, y, None, batch_size=batch_size,
                                     verbose=verbose, label="clean")
        robust = {}
        for name, fn in attack_fns.items():
            correct = correct_under_attack(classifier, x, y, fn, batch_size=batch_size,
                                           verbose=verbose, label=name)
            robust[name] = float((correct & clean).mean())
        entropy = distribution_entropy(classifier, x, y, epsilon, lam, steps=entropy_steps,
                                       mc_samples=entropy_mc_samples, batch_size=batch_size,
                                       seed=seed)
        points.append(LambdaPoint(lam=lam, clean_accuracy=float(clean.mean()),
                                  robust_accuracy=robust, entropy=entropy, label=label))
    return points


__all__ = ["LambdaPoint", "distribution_entropy", "evaluate_lambda_models", "points_from_rows",
           "read_trial_table"]
