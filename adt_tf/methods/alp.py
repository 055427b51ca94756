"""ALP: adversarial logit pairing (Kannan, Kurakin, Goodfellow 2018)."""

from __future__ import annotations

import keras
import tensorflow as tf

from adt_tf.core import checks
from adt_tf.methods.base import FloorPass
from adt_tf.methods.pgd_at import PGDAT
from adt_tf.numerics.losses import batch_mean, logit_pairing_penalty


@keras.saving.register_keras_serializable(package="adt_tf")
class ALP(PGDAT):
    """Adversarial logit pairing: PGD training on clean and adversarial inputs, logits paired.

    Mathematical details:
        min_theta E_(x,y) [ 1/2 CE(f(x), y) + 1/2 CE(f(x_adv), y)
                            + lambda_alp * (1/C) ||f(x) - f(x_adv)||_2^2 ],

        x_adv the PGD example of `PGDAT` (random start, `attack_steps` steps of
        `attack_step_size`, classifier in inference mode, the last iterate). The
        cross-entropies are the compiled loss (the 50/50 clean/adversarial mixture of the
        paper); the penalty is the mean squared logit difference
        (`adt_tf.numerics.losses.logit_pairing_penalty`: `tf.losses.mean_squared_error` of the
        authors' code, the mean over the B x C logits). As the authors' `train.py`
        (tensorflow/models research/adversarial_logit_pairing), f(x) and f(x_adv) are one
        training-mode forward of the joined batch [x; x_adv] split in two: BatchNorm
        normalises with the statistics of the mixed 2B batch and its running statistics
        move once per step. docs/methods.md lists what else their code does (a targeted
        least-likely-class PGD, label smoothing 0.1).

    Args:
        classifier: a Keras model returning logits.
        epsilon: the budget, the radius of the ball of `norm` (8/255 L-infinity for CIFAR).
        norm: "linf" (the paper's) or "l2" (PGD-L2 examples, beyond the paper).
        attack_steps: PGD iterations (10).
        attack_step_size: PGD step (None: 2/255 for L-infinity, epsilon / 4 for L2, as
            `PGDAT`).
        alp_weight: lambda_alp >= 0 (0.5, the weight of Kannan et al. and of the CIFAR-10
            comparisons of the ADT authors' group).
        seed: integer seed of the random starts.

    Metrics: `loss` and the compiled metrics (on the adversarial logits).

    Example:
        >>> trainer = ALP(build_model("wrn_28_10", (32, 32, 3), 10), alp_weight=0.5)

    Reference:
        Kannan, Kurakin, Goodfellow, "Adversarial Logit Pairing", arXiv:1803.06373, 2018.
    """

    def __init__(self, classifier, epsilon=8 / 255, attack_steps=10, attack_step_size=None,
                 alp_weight=0.5, seed=None, **kwargs):
        super().__init__(classifier, epsilon=epsilon, attack_steps=attack_steps,
                         attack_step_size=attack_step_size, seed=seed, **kwargs)
        self.alp_weight = checks.check_non_negative(alp_weight, "alp_weight")

    def outer_loss(self, x, x_train, y, sample_weight):
        # One forward of the joined batch, as the reference's model_fn(concat([images,
        # adv_examples]), is_training=True).
        clean_logits, adv_logits = tf.split(
            self(tf.concat([x, x_train], axis=0), training=True), 2)
        clean = self.compute_loss(x=x, y=y, y_pred=clean_logits, sample_weight=sample_weight,
                                  training=True)
        adv = self.compute_loss(x=x_train, y=y, y_pred=adv_logits, sample_weight=sample_weight,
                                training=True)
        pairing = batch_mean(logit_pairing_penalty(clean_logits, adv_logits), sample_weight)
        loss = 0.5 * (clean + adv) + self.alp_weight * pairing
        return loss, adv_logits

    def floor_passes(self):
        # the outer update differentiates f(x) and f(x_adv): a training pass over 2B
        return [FloorPass("input_gradient", 1, self.attack_steps), FloorPass("train", 2, 1)]

    def get_config(self):
        config = super().get_config()
        config["alp_weight"] = self.alp_weight
        return config
