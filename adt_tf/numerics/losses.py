"""Per-example losses: the attacks' (cross-entropy, C&W margin, DLR and its targeted form,
`loss_and_grad` for an input gradient) and the training objectives beyond cross-entropy.

The TRADES pieces (`kl_divergence`, `trades_loss`, `trades_outer_loss`) are shared by the
`TRADES` baseline and by ADT with the TRADES loss; `logit_pairing_penalty` is ALP's and
`smoothed_cross_entropy` is FeaScatter's. `batch_mean` and `regularization_penalty` reduce a
per-example loss the way Keras reduces the compiled loss, so that terms added to it are on
the same scale on one device and under a distribution strategy.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from adt_tf.core import checks

#: The losses an ADT method can be trained with (the `outer_loss` argument).
OUTER_LOSSES = ("ce", "trades")


def check_outer_loss(name: str) -> str:
    """Checks an `outer_loss` name ('ce' or 'trades'); ValueError naming it otherwise."""
    return checks.check_choice(name, "outer loss", OUTER_LOSSES)


def kl_divergence(p_logits: tf.Tensor, q_logits: tf.Tensor) -> tf.Tensor:
    """KL(softmax(p_logits) || softmax(q_logits)) of each example, in float32 (shape [B]).

    Mathematical details:
        KL(p || q) = sum_j p_j (log p_j - log q_j), with log p = log_softmax(p_logits) so that
        no probability is ever divided or logged directly (p_j = 0 contributes 0 exactly,
        because it multiplies a finite log-ratio).
    """
    log_p = tf.nn.log_softmax(tf.cast(p_logits, tf.float32), axis=-1)
    log_q = tf.nn.log_softmax(tf.cast(q_logits, tf.float32), axis=-1)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def trades_loss(clean_logits, adv_logits, y, beta: float) -> tf.Tensor:
    """The TRADES loss of each example: CE(f(x), y) + beta * KL(f(x) || f(x_adv)) (shape [B]).

    Reference:
        Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy",
        ICML 2019, Eq. (5).
    """
    ce = keras.losses.sparse_categorical_crossentropy(
        y, tf.cast(clean_logits, tf.float32), from_logits=True)
    return ce + beta * kl_divergence(clean_logits, adv_logits)


def logit_pairing_penalty(clean_logits, adv_logits) -> tf.Tensor:
    """ALP's penalty of each example: the mean squared logit difference (shape [B]).

    Mathematical details:
        (1 / C) * ||f(x) - f(x_adv)||_2^2 over the C logits, i.e. the mean squared error the
        reference implementations use (summed over the batch divided by B * C).
    """
    diff = tf.cast(clean_logits, tf.float32) - tf.cast(adv_logits, tf.float32)
    return tf.reduce_mean(tf.square(diff), axis=-1)


def smoothed_cross_entropy(logits, y, smoothing: float) -> tf.Tensor:
    """Cross-entropy with FeaScatter's label smoothing, per example (shape [B]).

    Mathematical details:
        The target puts 1 - s on the true class and s / (C - 1) on each other class (the
        smoothing of Zhang & Wang's reference code, not Keras's s / C on every class):
        L = -(1 - s) log p_y - s / (C - 1) * sum_{j != y} log p_j.
    """
    logits = tf.cast(logits, tf.float32)
    num_classes = tf.shape(logits)[-1]
    log_p = tf.nn.log_softmax(logits, axis=-1)
    onehot = tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), num_classes)
    others = tf.cast(num_classes - 1, tf.float32)
    target = (1.0 - smoothing) * onehot + smoothing / others * (1.0 - onehot)
    return -tf.reduce_sum(target * log_p, axis=-1)


def batch_mean(values: tf.Tensor, sample_weight=None) -> tf.Tensor:
    """Reduces a per-example loss [B] as Keras reduces the compiled loss.

    Mathematical details:
        sum_i w_i * l_i / B ("sum_over_batch_size"), then divided by the number of replicas
        in sync, because Keras sums the per-replica gradients of such losses.
    """
    values = tf.cast(values, tf.float32)
    if sample_weight is not None:
        values = values * tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
    mean = tf.reduce_mean(values)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return mean / replicas if replicas > 1 else mean


def regularization_penalty(model: keras.Model) -> tf.Tensor:
    """The sum of `model.losses` (weight regularisers, `add_loss`), scaled for replicas.

    Methods whose outer loss does not go through `compute_loss` add this, so that weight
    decay set on the classifier's layers still applies.
    """
    total = tf.constant(0.0, tf.float32)
    for loss in model.losses:
        total += tf.reduce_sum(tf.cast(loss, tf.float32))
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return total / replicas if replicas > 1 else total


def trades_outer_loss(trainer, x, x_adv, y, sample_weight, beta: float):
    """The TRADES outer loss of a trainer: compiled loss on f(x) plus beta * KL(f(x) || f(x_adv)).

    Three forward passes in training mode, in the TRADES reference's order
    (`trades.py: trades_loss`): f(x) for the cross-entropy, then f(x_adv) and f(x) again
    for the KL term (`criterion_kl(log_softmax(model(x_adv)), softmax(model(x_natural)))`).
    The two clean passes give the same logits (BatchNorm normalises with the batch's own
    statistics), but each updates BatchNorm's running statistics, so they move three times
    per step as in the reference; gradients flow through all three (the reference does not
    detach the KL's target). The compiled loss (cross-entropy) on the clean logits carries
    the regularisation losses; the KL term is reduced like it (`batch_mean`).

    Args:
        trainer: the `AdversarialTrainer` (its `compute_loss` and `__call__` are used).
        x: clean inputs; x_adv: perturbed inputs; y: labels; sample_weight: or None.
        beta: the weight of the KL term (>= 0).

    Returns:
        (loss, adv_logits): the adversarial logits are what the compiled metrics see.
    """
    clean_logits = trainer(x, training=True)
    adv_logits = trainer(x_adv, training=True)
    target_logits = trainer(x, training=True)
    natural = trainer.compute_loss(x=x, y=y, y_pred=clean_logits, sample_weight=sample_weight,
                                   training=True)
    robust = batch_mean(kl_divergence(target_logits, adv_logits), sample_weight)
    return natural + tf.cast(beta, natural.dtype) * tf.cast(robust, natural.dtype), adv_logits


def per_example_ce(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Cross-entropy of each example, in float32 (shape [B])."""
    return keras.losses.sparse_categorical_crossentropy(
        y, tf.cast(logits, tf.float32), from_logits=True)


def margin_loss(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """The C&W margin max_{j != y} z_j - z_y of each example (positive once misclassified)."""
    logits = tf.cast(logits, tf.float32)
    num_classes = tf.shape(logits)[-1]
    onehot = tf.one_hot(tf.cast(y, tf.int32), num_classes, dtype=logits.dtype)
    true_logit = tf.reduce_sum(onehot * logits, axis=-1)
    other = tf.reduce_max(logits - 1e9 * onehot, axis=-1)
    return other - true_logit


def _true_and_sorted(logits, y):
    logits = tf.cast(logits, tf.float32)
    onehot = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[-1], dtype=logits.dtype)
    true_logit = tf.reduce_sum(onehot * logits, axis=-1)
    best_other = tf.reduce_max(logits - 1e9 * onehot, axis=-1)
    return logits, true_logit, best_other, tf.sort(logits, axis=-1, direction="DESCENDING")


def dlr_loss(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """The Difference of Logits Ratio of each example (Croce & Hein, 2020, Eq. 4).

    Mathematical details:
        DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), pi sorting the
        logits in decreasing order. It is invariant to a shift and a rescaling of the logits,
        so it cannot be defeated by scaling them up (which saturates the softmax and zeroes
        the cross-entropy gradient). Needs at least 3 classes.
    """
    _, true_logit, best_other, ranked = _true_and_sorted(logits, y)
    return -(true_logit - best_other) / (ranked[:, 0] - ranked[:, 2] + 1e-12)


def targeted_dlr_loss(logits: tf.Tensor, y: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """The targeted DLR loss of APGD-T (Croce & Hein, 2020, Eq. 5); needs at least 4 classes.

    Mathematical details:
        -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12), t the target class.
    """
    logits, true_logit, _, ranked = _true_and_sorted(logits, y)
    target_logit = tf.gather(logits, tf.cast(target, tf.int32), batch_dims=1)
    scale = ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + 1e-12
    return -(true_logit - target_logit) / scale


ATTACK_LOSSES = {"ce": per_example_ce, "margin": margin_loss, "dlr": dlr_loss}


def get_loss(name: str):
    """The per-example loss registered under `name` ('ce', 'margin' or 'dlr')."""
    return ATTACK_LOSSES[checks.check_choice(name, "attack loss", ATTACK_LOSSES)]


def loss_and_grad(classifier, x, y, loss_fn, training: bool = False):
    """Per-example loss and its gradient w.r.t. the input (classifier in inference mode,
    unless `training`: then BatchNorm normalises with the batch's statistics and updates its
    running ones, as Fast AT's reference takes its FGSM step).

    A classifier whose output does not depend on its input through differentiable ops (a
    `tf.stop_gradient` inside it) gets a zero gradient, not None: the attack then runs and
    fails visibly, and the gradient check of the evaluation flags the model.

    Returns:
        (loss [B], grad [B, ...], logits [B, classes])
    """
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits = classifier(x, training=training)
        loss = loss_fn(logits, y)
    grad = tape.gradient(loss, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return loss, grad, logits
