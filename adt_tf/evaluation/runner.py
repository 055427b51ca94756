"""Robustness evaluation: run a suite of attacks, take the per-example worst case, report.

(About 430 lines: the one loop every evaluation goes through, with the input preparation and
the sanity-check calls it needs; the report, cache, suites and checks are their own modules.)

`evaluate` is the library entry point (the `adt-evaluate` command line wraps it);
`correct_under_attack` is the batch loop it shares with the training report.

Per-attack accuracy and the worst case. Robust accuracy (paper Eq. 12) counts an input only if
it is classified correctly clean and under every attack of the suite. How each attack's own
number is measured is the `per_attack` mode, recorded in the result:

- "all": every attack runs on every clean-correct input, so each attack's accuracy is its own,
  and the worst case is the per-example AND of all of them (the paper's tables).
- "remaining": each attack runs only on the inputs still robust after the earlier ones
  (AutoAttack's way, far cheaper for a long suite); an attack's own accuracy is then not
  measured (reported as None), only the worst case after it.

Misclassified clean inputs are never attacked: they count as broken by every attack.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

import adt_tf
from adt_tf.adt.generators import classifier_image_shape
from adt_tf.attacks import get_attack
from adt_tf.core import checks
from adt_tf.core.precision import for_evaluation
from adt_tf.data import as_unit_float
from adt_tf.evaluation import sanity
from adt_tf.evaluation.cache import (
    array_id,
    cache_file,
    code_version,
    load_cached,
    store,
    weights_id,
)
from adt_tf.evaluation.generator_fit import fit_amortized_adversary
from adt_tf.evaluation.report import AttackResult, EvaluationResult
from adt_tf.evaluation.suites import DEFAULT_PER_ATTACK, AttackSpec, resolve_suite
from adt_tf.models.common import PENULTIMATE
from adt_tf.threat import Ball, LinfBall, as_threat

PER_ATTACK_MODES = ("all", "remaining")


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int):
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        yield start, tf.constant(as_unit_float(xb)), tf.constant(y[start:start + batch_size],
                                                              tf.int32)


def _on_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def predict_labels(classifier, x: tf.Tensor) -> np.ndarray:
    return np.argmax(np.asarray(classifier(x, training=False)), axis=-1)


def correct_under_attack(classifier, x: np.ndarray, y: np.ndarray,
                         attack: Callable | None, *, batch_size: int = 256,
                         jit_compile: bool = False, verbose: bool = True,
                         label: str = "attack", seed: int | None = None) -> np.ndarray:
    """Per-example correctness (bool [N]) of the classifier on attack(classifier, x, y).

    Args:
        classifier: logits model.
        x: images, uint8 (scaled to [0, 1] here) or float in [0, 1]; y: integer labels.
        attack: a function (classifier, x, y) -> x_adv, or None for clean inputs; with
            `seed` set, (classifier, x, y, seed) -> x_adv. It is traced once with tf.function
            (XLA if `jit_compile`).
        batch_size: inputs per batch.
        verbose: show a progress bar.
        seed: if given, each batch gets its own stateless seed [seed, index of its first
            input], passed as the attack's fourth argument.
    """
    if attack is None:
        def run(xb, yb, sb):
            return xb
    elif seed is None:
        run = tf.function(lambda xb, yb, sb: attack(classifier, xb, yb),
                          jit_compile=jit_compile, reduce_retracing=True)
    else:
        run = tf.function(lambda xb, yb, sb: attack(classifier, xb, yb, sb),
                          jit_compile=jit_compile, reduce_retracing=True)
    correct = np.zeros(len(x), dtype=bool)
    # One line at the end when the output is not a terminal (a file or a pipe).
    bar = keras.utils.Progbar(len(x), unit_name="input",
                              verbose=1 if _on_terminal() else 2) if verbose else None
    for start, xb, yb in _batches(x, y, batch_size):
        batch_seed = tf.constant([0 if seed is None else seed, start], tf.int32)
        x_adv = run(xb, yb, batch_seed)
        correct[start:start + len(yb)] = predict_labels(classifier, x_adv) == yb.numpy()
        if bar is not None:
            # The share of the inputs given (for an attack: those attacked) still correct.
            bar.add(len(yb), values=[(label + ("_accuracy" if attack is None else "_survived"),
                                      float(correct[:start + len(yb)].mean()))])
    return correct


# ---------------------------------------------------------------------------- inputs
def input_shape_of(classifier) -> tuple | None:
    """The (H, W, C) a classifier expects, when it says (Keras models and our wrappers)."""
    shape = getattr(classifier, "image_shape", None)
    if shape is None:
        try:
            shape = tuple(classifier.inputs[0].shape[1:])
        except (AttributeError, IndexError, TypeError, ValueError):
            return None
    return tuple(shape)


def prepare_inputs(classifier, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Float32 images in [0, 1] and int labels, checked against the classifier (ValueError)."""
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    if x.ndim != 4:
        raise ValueError(f"Images must have shape [N, H, W, C], got {x.shape}.")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"Need as many labels as images (and at least one), got {len(x)} "
                         f"images and {len(y)} labels.")
    expected = input_shape_of(classifier)
    if expected is not None and all(d is not None for d in expected) and \
            tuple(x.shape[1:]) != tuple(expected):
        raise ValueError(f"The data's images have shape {tuple(x.shape[1:])} but the model "
                         f"expects {tuple(expected)}; pick the dataset the model was trained "
                         "on.")
    x = as_unit_float(x)
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"Images must lie in [0, 1] (or be uint8), got values in "
                         f"[{x.min():.3g}, {x.max():.3g}].")
    try:
        logits = np.asarray(classifier(tf.constant(x[:1]), training=False))
    except Exception as err:  # any failure of the model on one input ends the same way
        raise ValueError(f"The model cannot classify one input of shape {x.shape[1:]}: "
                         f"{type(err).__name__}: {err}") from err
    num_classes = logits.shape[-1]
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"Labels must lie in [0, {num_classes}) for this model's "
                         f"{num_classes} outputs, got values in [{y.min()}, {y.max()}].")
    return x, y.astype(np.int32)


# ---------------------------------------------------------------------------- running
def _skip_reason(spec: AttackSpec, classifier, source_model) -> str | None:
    if "source_model" in spec.needs and source_model is None:
        return "no source model given"
    if "adversary" in spec.needs:
        try:
            classifier_image_shape(classifier)
        except (AttributeError, ValueError):
            return "needs a Keras classifier whose input height and width divide by 4"
    if "penultimate" in spec.needs:
        try:
            classifier.get_layer(PENULTIMATE)
        except (AttributeError, ValueError):
            return f"the model exposes no '{PENULTIMATE}' layer"
    return None


def _attack_fn(spec: AttackSpec, classifier, threat: Ball, source_model, pool,
               train_pool, seed: int, verbose: bool):
    fn = get_attack(spec.attack)
    extra = {}
    if "adversary" in spec.needs:
        fit = {k: v for k, v in spec.params.items() if k.startswith(("train_", "generator_"))
               or k == "entropy_weight"}
        extra["adversary"] = fit_amortized_adversary(
            classifier, *train_pool, threat, kind=spec.attack, seed=seed,
            verbose=verbose, **fit)
    if "source_model" in spec.needs:
        extra["source"] = source_model
    if "target_pool" in spec.needs:
        extra["target_images"], extra["target_labels"] = pool

    def attack(model, xb, yb, seed):
        return fn(model, xb, yb, threat, seed=seed, **spec.params, **extra)

    return attack


def environment() -> dict:
    """Versions and the machine, recorded with every result."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"adt_tf": adt_tf.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(),
            "gpus": [d.name for d in tf.config.list_logical_devices("GPU")]}


def evaluate(classifier, x, y, threat: Ball | float, *, suite: str = "quick",
             overrides: dict | None = None, per_attack: str | None = None,
             batch_size: int = 256, seed: int = 0, source_model=None, target_pool=None,
             train_pool=None,
             cache_dir: str | None = None, model_id: str | None = None,
             model_name: str = "classifier", dataset: str = "arrays",
             sanity_checks: bool = True, sanity_inputs: int = 100, jit_compile: bool = False,
             compute_dtype: str = "float32", verbose: int = 1) -> EvaluationResult:
    """Runs a suite of attacks and returns clean, per-attack and worst-case accuracy.

    Args:
        classifier: logits model (a Keras model, or any callable(x, training=False) -> logits).
        x: images [N, H, W, C], uint8 or float in [0, 1]; y: integer labels [N].
        threat: the threat model, a ball of `adt_tf.threat` (`LinfBall(8 / 255)`, the
            paper's; `L2Ball(0.5)` takes the attacks of `attacks_for("l2")` only: the suites
            "quick" and "paper_l2"), or a number, the radius of an L-infinity ball.
        suite: "quick", "paper", "autoattack", "full", "paper_l2", or a comma-separated list of
            catalogue names (see `adt_tf.evaluation.suites`).
        overrides: {attack name: {parameter: value}}, e.g. {"fea": {"num_targets": 20}}.
        per_attack: "all" or "remaining" (see the module docstring); default per suite.
        batch_size: inputs per attack batch.
        seed: seed of every attack (each batch folds in its position).
        source_model: the source of the transfer attacks (skipped without one).
        target_pool: (images, labels) FeaAttack draws targets from (adt-evaluate passes the
            whole test split, as the ADT authors' script draws from it); default the
            evaluation inputs themselves.
        train_pool: (images, labels) the EXP-AM / IMP-AM generators train on (the dataset's
            training split in adt-evaluate); default the evaluation inputs themselves.
        cache_dir: if set, each attack's per-example results are stored there and reused by a
            later call with the same model, data and settings (resumable evaluations).
        model_id: identifies the model in the cache key besides the hash of its weights
            (which is always part of the key when the model has Keras weights; a model
            without them, e.g. a SavedModel signature, needs a model_id such as a hash of its
            files).
        model_name, dataset: how the report names them.
        sanity_checks: run the checks of `adt_tf.evaluation.sanity` and put their warnings
            in the report.
        sanity_inputs: inputs used by the checks (the first ones).
        jit_compile: compile attacks with XLA.
        compute_dtype: "float32" (default: a model trained under a mixed policy is attacked
            in float32, `adt_tf.core.precision.for_evaluation`, since a low-precision forward can
            blunt gradient attacks) or "policy" (as saved: the deployed low-precision model).
            The result records what the attacked model computed in.
        verbose: 0 silent, 1 progress bars.

    Returns:
        An `EvaluationResult`.
    """
    started = time.perf_counter()
    classifier, dtype = for_evaluation(classifier, compute_dtype)
    threat = as_threat(threat)
    epsilon, norm = threat.epsilon, threat.norm
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    specs = resolve_suite(suite, overrides, threat)
    per_attack = per_attack or DEFAULT_PER_ATTACK.get(suite, "remaining")
    checks.check_choice(per_attack, "per_attack mode", PER_ATTACK_MODES)
    x, y = prepare_inputs(classifier, x, y)
    if source_model is not None:
        try:
            prepare_inputs(source_model, x, y)
        except ValueError as err:
            raise ValueError(f"--source_model: {err}") from None
    target_pool = (x, y) if target_pool is None else prepare_inputs(classifier, *target_pool)
    train_pool = (x, y) if train_pool is None else prepare_inputs(classifier, *train_pool)
    key_base = None
    if cache_dir is not None:
        weights = weights_id(classifier)
        if model_id is None and weights is None:
            raise ValueError("A cache_dir needs a model_id for this model (it has no Keras "
                             "weights to hash).")
        key_base = {"model": model_id, "weights": weights, "data": array_id(x, y),
                    "epsilon": epsilon, "seed": seed, "batch_size": batch_size,
                    "per_attack": per_attack,
                    "source": weights_id(source_model) if source_model is not None else None,
                    "pool": array_id(*target_pool), "train_pool": array_id(*train_pool)}
        if norm != LinfBall.norm:  # L-infinity keys stay those of earlier versions
            key_base["norm"] = norm
        if dtype != "float32":  # the same weights attacked in low precision are another model
            key_base["compute_dtype"] = dtype

    def run_on(spec: AttackSpec, idx: np.ndarray, show: bool) -> np.ndarray:
        """Per-input correctness after `spec` on the inputs `idx`."""
        attack = _attack_fn(spec, classifier, threat, source_model, target_pool, train_pool,
                            seed, show)
        return correct_under_attack(classifier, x[idx], y[idx], attack, batch_size=batch_size,
                                    jit_compile=jit_compile, verbose=show, label=spec.name,
                                    seed=seed)

    clean = correct_under_attack(classifier, x, y, None, batch_size=batch_size,
                                 verbose=bool(verbose), label="clean")
    robust = clean.copy()
    per_example = {"clean": clean}
    ran_on: dict[str, np.ndarray] = {}
    results = []
    for spec in specs:
        params = dict(spec.params, epsilon=epsilon, seed=seed)
        if norm != LinfBall.norm:
            params["norm"] = norm
        result = AttackResult(name=spec.name, label=spec.display_label, attack=spec.attack,
                              kind=spec.kind, params=params,
                              evaluated_on="clean_correct" if per_attack == "all"
                              else "still_robust")
        reason = _skip_reason(spec, classifier, source_model)
        if reason:
            result.skipped = reason
            results.append(result)
            continue
        mask = (clean if per_attack == "all" else robust).copy()
        path = cache_file(cache_dir, spec.name, dict(
            key_base, spec=spec.to_dict(), code=code_version(get_attack(spec.attack)))) \
            if cache_dir else None
        cached = load_cached(path, mask) if path else None
        if cached is not None:
            correct, seconds = cached
            result.cached = True
        else:
            if verbose:
                print(f"{spec.display_label}: attacking {int(mask.sum())} of {len(x)} inputs "
                      f"(the {'clean-correct' if per_attack == 'all' else 'still robust'} "
                      f"ones; {spec.name}_survived is the share of them still correct)")
            t0 = time.perf_counter()
            idx = np.flatnonzero(mask)
            correct = np.zeros(len(x), bool)
            if len(idx):
                correct[idx] = run_on(spec, idx, bool(verbose))
            seconds = time.perf_counter() - t0
            if path:
                store(path, correct, mask, seconds)
        robust &= correct
        per_example[spec.name] = correct
        ran_on[spec.name] = mask
        result.num_attacked = int(mask.sum())
        result.num_broken = int((mask & ~correct).sum())
        result.accuracy = float(correct.mean()) if per_attack == "all" else None
        result.robust_after = float(robust.mean())
        result.seconds = float(seconds)
        results.append(result)
    per_example["robust"] = robust

    warnings, sanity_results = [], {"skipped": True}
    if sanity_checks:
        warnings, sanity_results = run_sanity_checks(
            classifier, x[:sanity_inputs], y[:sanity_inputs], threat, seed=seed)
        run_attack = {spec.name: (lambda idx, spec=spec: run_on(spec, idx, False))
                      for spec in specs}
        correct_view, ran_view = follow_up_black_box(results, per_example, ran_on, clean,
                                                     run_attack)
        warnings += sanity.check_black_box(results, correct_view, ran_view, clean)
    return EvaluationResult(
        model=model_name, dataset=dataset, num_examples=len(x), epsilon=epsilon, norm=norm,
        suite=suite,
        per_attack=per_attack, seed=seed, batch_size=batch_size,
        clean_accuracy=float(clean.mean()), robust_accuracy=float(robust.mean()),
        attacks=results, warnings=warnings, sanity=sanity_results,
        seconds=time.perf_counter() - started, environment=environment(),
        per_example=per_example, compute_dtype=dtype)


def follow_up_black_box(results, per_example: dict, ran_on: dict, clean: np.ndarray,
                        run_attack: dict, black_box_kinds=sanity.BLACK_BOX_KINDS):
    """Completes what the black-box check needs in "remaining" mode.

    An input a black-box attack broke is never given to the attacks after it, so whether the
    gradient attacks would have broken it too is unknown. Here every gradient attack (kind
    "white-box") of the suite that did not run on such an input (and no attack broke before)
    runs on it now. The robustness numbers do not change (those inputs are broken already);
    only the views the check reads do.

    Args:
        results: the suite's `AttackResult`s; per_example: each attack's correctness;
        ran_on: the inputs each attack ran on; clean: the clean-correct inputs;
        run_attack: {attack name: f(indices) -> correct [len(indices)]}.

    Returns:
        (correct, ran_on) with the follow-up runs merged in (copies).
    """
    correct = {k: v.copy() for k, v in per_example.items()}
    ran = {k: v.copy() for k, v in ran_on.items()}
    done = [r for r in results if not r.skipped]
    black = [r for r in done if r.kind in black_box_kinds]
    if not black:
        return correct, ran
    others_broken = np.zeros_like(clean)
    for r in done:
        if r.kind not in black_box_kinds:
            others_broken |= ran[r.name] & ~correct[r.name]
    black_broken = np.zeros_like(clean)
    for r in black:
        black_broken |= ran[r.name] & ~correct[r.name]
    for r in done:
        if r.kind != "white-box":
            continue
        need = clean & black_broken & ~others_broken & ~ran[r.name]
        idx = np.flatnonzero(need)
        if len(idx):
            correct[r.name][idx] = run_attack[r.name](idx)
            ran[r.name] |= need
            others_broken |= need & ~correct[r.name]
    return correct, ran


def run_sanity_checks(classifier, x, y, threat: Ball | float, seed: int = 0):
    """The model-side checks of `adt_tf.evaluation.sanity` on a few inputs:
    (warnings, measurements)."""
    x_t = tf.constant(x, tf.float32)
    warnings = sanity.check_logits(np.asarray(classifier(x_t, training=False)))
    grad_warnings, grads = sanity.check_gradients(classifier, x_t, y, threat, seed=seed)
    random_warnings, diff = sanity.check_randomness(classifier, x_t)
    sweep = sanity.epsilon_sweep(classifier, x_t, y, threat, seed=seed)
    unbounded = sanity.unbounded_accuracy(classifier, x_t, y)
    warnings += grad_warnings + random_warnings + sanity.check_epsilon_sweep(sweep) \
        + sanity.check_unbounded(unbounded)
    return warnings, {"gradients": grads, "max_logit_difference_between_passes": diff,
                      "epsilon_sweep": sweep, "unbounded": unbounded}


__all__ = ["PER_ATTACK_MODES", "correct_under_attack", "environment",
           "evaluate", "follow_up_black_box", "input_shape_of", "predict_labels",
           "prepare_inputs", "run_sanity_checks"]
