"""Checks that warn when a robustness number is likely to be wrong (gradient masking & co.).

In the spirit of AutoAttack's checks (Croce & Hein, 2020) and of Carlini et al., "On
Evaluating Adversarial Robustness" (2019): each check returns warnings (plain sentences for
the report) and the measurements behind them. None of them changes a robustness number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from adt_tf.attacks import pgd
from adt_tf.evaluation.report import format_radius
from adt_tf.numerics.losses import dlr_loss, loss_and_grad, per_example_ce
from adt_tf.threat import Ball, LinfBall, as_threat

#: Attack kinds that read no gradient of the attacked model.
BLACK_BOX_KINDS = ("black-box", "transfer")
#: The epsilon sweep's multiples of the evaluation's epsilon.
SWEEP_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
#: PGD accuracy with an unbounded budget (epsilon = 1, the whole pixel range) above this
#: share of the inputs is flagged: no genuine model survives it (Carlini et al., Sec. 5.3).
UNBOUNDED_THRESHOLD = 0.05


def check_logits(logits: np.ndarray) -> list[str]:
    """Warns when the outputs look like probabilities (non-negative rows summing to 1)."""
    logits = np.asarray(logits, np.float64)
    sums = logits.sum(axis=-1)
    if np.all(logits >= 0) and np.allclose(sums, 1.0, atol=1e-3):
        return ["The model's outputs are non-negative and every row sums to 1: it returns "
                "probabilities, not logits. Attacks on a softmax output see vanishing "
                "gradients and overstate robustness; evaluate the pre-softmax logits."]
    return []


def check_gradients(classifier, x, y, threat: Ball | float, seed: int = 0):
    """Warns when any input has an all-zero or a non-finite gradient at APGD's start.

    AutoAttack's rule: the gradient of the DLR loss (the CE loss for fewer than 3 classes) at
    a uniform random point of the epsilon-ball, where APGD starts, on the inputs an attack
    runs on (the clean-correct ones: on a misclassified input whose label ranks third the
    DLR loss is constant); one input with a zero gradient is enough to warn. The CE gradient
    there is measured too.

    Returns:
        (warnings, {"zero": share, "zero_inputs": count, "zero_ce": share,
                    "non_finite": share, "num_inputs": n, "loss": "dlr" or "ce"})
    """
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.int32)
    logits = classifier(x, training=False)
    keep = np.flatnonzero(np.argmax(np.asarray(logits), -1) == y.numpy())
    x, y = tf.gather(x, keep), tf.gather(y, keep)
    start = as_threat(threat).random_start(x, tf.constant([seed, 0], tf.int32))
    num_classes = int(logits.shape[-1])
    loss = "dlr" if num_classes >= 3 else "ce"

    def per_input(loss_fn):
        _, grad, _ = loss_and_grad(classifier, start, y, loss_fn)
        return tf.reshape(grad, [tf.shape(grad)[0], -1]).numpy()

    if len(keep) == 0:
        return [], {"zero": 0.0, "zero_inputs": 0, "zero_ce": 0.0, "non_finite": 0.0,
                    "num_inputs": 0, "loss": loss}
    grad = per_input(dlr_loss if loss == "dlr" else per_example_ce)
    ce = per_input(per_example_ce) if loss == "dlr" else grad
    non_finite = ~np.all(np.isfinite(grad), axis=1) | ~np.all(np.isfinite(ce), axis=1)
    zero = np.all(grad == 0, axis=1) & ~non_finite
    n = len(grad)
    stats = {"zero": float(zero.mean()), "zero_inputs": int(zero.sum()),
             "zero_ce": float((np.all(ce == 0, axis=1) & ~non_finite).mean()),
             "non_finite": float(non_finite.mean()), "num_inputs": int(n), "loss": loss}
    warnings = []
    if zero.any():
        warnings.append(
            f"The input gradient of the {loss.upper()} loss at APGD's random start is exactly "
            f"zero on {int(zero.sum())} of {n} clean-correct inputs "
            f"({100 * stats['zero']:.1f}%): "
            "gradient-based attacks cannot move there (gradient masking, a "
            "non-differentiable layer, or a saturated softmax). Trust black-box attacks more "
            "than gradient ones on this model.")
    if non_finite.any():
        warnings.append(
            f"The input gradient is NaN or infinite on {int(non_finite.sum())} of {n} inputs: "
            "gradient attacks on this model are unreliable.")
    return warnings, stats


def check_randomness(classifier, x) -> tuple[list[str], float]:
    """Warns when two inference passes on the same inputs give different logits."""
    x = tf.convert_to_tensor(x, tf.float32)
    first = classifier(x, training=False).numpy()
    second = classifier(x, training=False).numpy()
    diff = float(np.max(np.abs(first - second))) if first.size else 0.0
    if diff > 1e-5:
        return ([f"Two forward passes on the same inputs differ (max logit difference "
                 f"{diff:.3g}): the model is randomised. Attack it with expectation over "
                 "transformation (average gradients over its randomness) before trusting "
                 "these numbers; each attack here sees one random draw."], diff)
    return [], diff


def epsilon_sweep(classifier, x, y, threat: Ball | float,
                  factors: Sequence[float] = SWEEP_FACTORS, steps: int = 10,
                  seed: int = 0) -> dict:
    """PGD (`steps` steps of eps/4, random start) accuracy at multiples of epsilon, in the
    evaluation's threat model (an L-infinity radius is capped at 1, the pixel range)."""
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.int32)
    threat = as_threat(threat)
    epsilons = sorted({min(threat.max_radius, f * threat.epsilon) for f in factors})
    accuracy = []
    for eps in epsilons:
        x_adv = pgd(classifier, x, y, type(threat)(eps), steps=steps, seed=seed)
        pred = np.argmax(classifier(x_adv, training=False).numpy(), axis=-1)
        accuracy.append(float(np.mean(pred == y.numpy())))
    return {"epsilons": epsilons, "accuracy": accuracy, "num_inputs": int(len(y)),
            "attack": f"PGD-{steps}", "norm": threat.norm}


def _radius(eps: float, norm: str) -> str:
    return format_radius(eps, norm) + ("" if norm == LinfBall.norm else f" ({norm})")


def unbounded_accuracy(classifier, x, y, steps: int = 20, step_size: float = 0.1) -> dict:
    """PGD accuracy with epsilon = 1 (any image is allowed), started from the clean inputs."""
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.int32)
    x_adv = pgd(classifier, x, y, 1.0, steps=steps, step_size=step_size, random_start=False)
    pred = np.argmax(classifier(x_adv, training=False).numpy(), axis=-1)
    return {"epsilon": 1.0, "accuracy": float(np.mean(pred == y.numpy())),
            "num_inputs": int(len(y)), "attack": f"PGD-{steps} (step {step_size}, from clean)"}


def check_unbounded(result: dict, threshold: float = UNBOUNDED_THRESHOLD) -> list[str]:
    """Warns when an attack allowed to change every pixel arbitrarily leaves accuracy above
    `threshold` (and at least two inputs correct)."""
    acc, n = result["accuracy"], max(result["num_inputs"], 1)
    if acc > threshold and acc * n >= 2:
        return [f"{result['attack']} with epsilon = 1 (the whole pixel range) leaves "
                f"{100 * acc:.1f}% of {n} inputs correctly classified: an attack that may "
                "change the image arbitrarily must reach 0%, so the gradients do not lead it "
                "anywhere (gradient masking?)."]
    return []


def check_epsilon_sweep(sweep: dict) -> list[str]:
    """Warns when accuracy rises with epsilon (beyond one input of noise) or does not fall."""
    acc, eps, n = sweep["accuracy"], sweep["epsilons"], max(sweep["num_inputs"], 1)
    norm = sweep.get("norm", "linf")
    tol = 1.5 / n
    warnings = []
    rises = [(eps[i], eps[i + 1]) for i in range(len(acc) - 1) if acc[i + 1] > acc[i] + tol]
    if rises:
        lo, hi = rises[0]
        warnings.append(
            f"PGD accuracy rises as epsilon grows ({_radius(lo, norm)} -> {_radius(hi, norm)}: "
            f"{', '.join(f'{100 * a:.1f}%' for a in acc)}): a larger ball contains the smaller "
            "one, so the attack is failing to optimise (gradient masking?).")
    if len(acc) > 1 and acc[0] > 0 and acc[-1] >= acc[0]:
        warnings.append(
            f"PGD accuracy does not fall from epsilon {_radius(eps[0], norm)} to "
            f"{_radius(eps[-1], norm)} ({100 * acc[0]:.1f}% -> {100 * acc[-1]:.1f}%): the attack "
            "does not use its budget (gradient masking?).")
    return warnings


def check_black_box(results, correct: dict[str, np.ndarray], ran_on: dict[str, np.ndarray],
                    clean: np.ndarray, black_box_kinds=BLACK_BOX_KINDS) -> list[str]:
    """Warns when a black-box attack beats the white-box ones.

    Args:
        results: the suite's `AttackResult`s.
        correct: per attack, whether each input was still classified correctly after it
            (on the inputs it ran on).
        ran_on: per attack, the inputs it ran on (in "remaining" mode, the ones still robust
            before it, plus any follow-up runs of the evaluation, see `evaluate`).
        clean: the clean-correct inputs.

    Two rules: (1) an attack with its own accuracy measured is a black-box one and is below
    every white-box attack's own accuracy; (2) a black-box attack broke more than 1% (and at
    least 2) of the inputs it ran on that no other attack broke, counting only inputs every
    gradient attack (kind "white-box") of the suite ran on.
    """
    ran = [r for r in results if not r.skipped]
    white = [r for r in ran if r.kind not in black_box_kinds]
    black = [r for r in ran if r.kind in black_box_kinds]
    if not white or not black:
        return []
    warnings = []
    white_acc = [r.accuracy for r in white if r.accuracy is not None]
    white_broken = np.zeros_like(clean)
    all_white_ran = clean.copy()
    for r in white:
        white_broken |= ran_on[r.name] & ~correct[r.name]
        if r.kind == "white-box":
            all_white_ran &= ran_on[r.name]
    for r in black:
        if r.accuracy is not None and white_acc and r.accuracy < min(white_acc):
            warnings.append(
                f"The black-box attack {r.label} ({100 * r.accuracy:.2f}%) is stronger than "
                f"every white-box attack (best {100 * min(white_acc):.2f}%): the gradients are "
                "probably masked, and the white-box numbers overstate robustness.")
        survivors = ran_on[r.name] & clean & ~white_broken & all_white_ran
        broken = survivors & ~correct[r.name]
        share = broken.sum() / max(survivors.sum(), 1)
        if broken.sum() >= 2 and share > 0.01:
            warnings.append(
                f"{r.label} broke {int(broken.sum())} of the {int(survivors.sum())} inputs that "
                "survived every white-box attack: gradient-based attacks miss adversarial "
                "examples that exist (gradient masking?).")
    return warnings


__all__ = ["BLACK_BOX_KINDS", "SWEEP_FACTORS", "UNBOUNDED_THRESHOLD", "check_black_box",
           "check_epsilon_sweep", "check_gradients", "check_logits", "check_randomness",
           "check_unbounded", "epsilon_sweep", "unbounded_accuracy"]
