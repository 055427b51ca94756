"""AT_FGSM: Kurakin et al.'s adversarial training on least-likely-class FGSM examples."""

from __future__ import annotations

import keras
import tensorflow as tf

from adt_tf.core import checks
from adt_tf.methods.base import AdversarialTrainer, FloorPass
from adt_tf.numerics.losses import loss_and_grad, per_example_ce
from adt_tf.threat import EVERY_NORM


@keras.saving.register_keras_serializable(package="adt_tf")
class FGSMAT(AdversarialTrainer):
    """Adversarial training at scale (AT_FGSM): "step l.l." examples mixed with clean ones.

    In each batch of m examples the first k = round(adv_fraction * m) are replaced by
    targeted one-step adversarial examples towards the least-likely class; the loss weighs
    the adversarial part by lambda = `adv_weight` (batches are shuffled by the input
    pipeline, so "the first k" is a random subset; under a distribution strategy it is the
    first k of each replica's batch).

    Mathematical details:
        y_LL = argmin_j f(x)_j,  x_adv = clip(x - eps_i * sign(grad_x CE(f(x), y_LL)), 0, 1)

        Loss = ( sum_{i in CLEAN} CE(f(x_i), y_i) + lambda * sum_{i in ADV} CE(f(x_adv_i), y_i) )
               / ((m - k) + lambda * k)

        (Kurakin et al. 2017, Sec. 3 and Algorithm 1: m = 32, k = 16, lambda = 0.3.) The
        adversarial examples use the classifier in inference mode and are labelled with
        the true class. eps_i = eps, or with `random_epsilon` a per-example draw from
        N(0, (eps/2)^2) truncated to [0, eps] (the paper's [0, 16] with sigma = 8).
        The weighting is done with sample weights on the compiled loss (cross-entropy).
        Under `norm="l2"` (beyond the paper) the step is the L2 ball's, x - eps_i g / ||g||,
        then projected.

    Args:
        classifier: a Keras model returning logits.
        epsilon: the budget, the radius of the ball of `norm` (8/255 L-infinity for CIFAR).
        norm: "linf" (the paper's) or "l2".
        adv_fraction: k / m, the fraction of each batch replaced by adversarial examples,
            in [0, 1] (0.5).
        adv_weight: lambda >= 0, the relative weight of the adversarial part (0.3).
        random_epsilon: draw eps_i per example as in the paper (False: eps_i = eps, the
            fixed budget the ADT paper's comparison uses).
        seed: integer seed (used by `random_epsilon`).

    Example:
        >>> trainer = FGSMAT(build_model("wrn_28_10", (32, 32, 3), 10), epsilon=8 / 255)

    Reference:
        Kurakin, Goodfellow, Bengio, "Adversarial Machine Learning at Scale", ICLR 2017.
    """

    NORMS = EVERY_NORM

    def __init__(self, classifier, epsilon=8 / 255, adv_fraction=0.5, adv_weight=0.3,
                 random_epsilon=False, seed=None, **kwargs):
        super().__init__(classifier, epsilon=epsilon, seed=seed, **kwargs)
        self.adv_fraction = checks.check_in_range(adv_fraction, "adv_fraction", 0.0, 1.0)
        self.adv_weight = checks.check_non_negative(adv_weight, "adv_weight")
        self.random_epsilon = bool(random_epsilon)

    def adversarial_mask(self, batch_size) -> tf.Tensor:
        """Bool [B]: which examples of a batch are replaced (the first round(frac * B))."""
        k = tf.cast(tf.round(self.adv_fraction * tf.cast(batch_size, tf.float32)), tf.int32)
        return tf.range(batch_size) < k

    def least_likely_examples(self, x, seed=None):
        """Targeted FGSM towards the least-likely class (classifier in inference mode)."""
        logits = self.classifier(x, training=False)
        target = tf.argmin(logits, axis=-1, output_type=tf.int32)
        _, grad, _ = loss_and_grad(self.classifier, x, target, per_example_ce)
        shape = tf.concat([tf.shape(x)[:1], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0)
        if self.random_epsilon:
            # A standard normal truncated to [-2, 2], folded onto [0, 2], times eps/2: the
            # normal N(0, (eps/2)^2) truncated to [0, eps].
            draw = tf.abs(self.noise_source.truncated_normal(shape, seed))
            size = tf.cast(draw * (self.epsilon / 2), x.dtype)
        else:
            size = tf.cast(self.epsilon, x.dtype)
        # Descend the target's loss: step against the gradient.
        return self.threat.project(self.threat.step(x, -grad, size), x)

    def perturb(self, x, y):
        seed = self.next_seed()
        x_adv = self.least_likely_examples(x, seed)
        mask = self.adversarial_mask(tf.shape(x)[0])
        shape = tf.concat([tf.shape(mask), tf.ones([tf.rank(x) - 1], tf.int32)], axis=0)
        return tf.where(tf.reshape(mask, shape), x_adv, x), {}

    def outer_loss(self, x, x_train, y, sample_weight):
        batch = tf.shape(x)[0]
        mask = self.adversarial_mask(batch)
        weight = tf.where(mask, self.adv_weight, 1.0)
        # Keras averages w_i * l_i over the B examples; scaling the weights by
        # B / sum_i w_i turns that into Kurakin's normalised sum.
        weight = tf.math.divide_no_nan(weight * tf.cast(batch, tf.float32), tf.reduce_sum(weight))
        if sample_weight is not None:
            weight = weight * tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
        y_pred = self(x_train, training=True)
        loss = self.compute_loss(x=x_train, y=y, y_pred=y_pred, sample_weight=weight,
                                 training=True)
        return loss, y_pred

    def floor_passes(self):
        # one FGSM gradient, one outer pass over the mixed batch
        return [FloorPass("input_gradient", 1, 1), FloorPass("train", 1, 1)]

    def get_config(self):
        config = super().get_config()
        config.update({
            "adv_fraction": self.adv_fraction,
            "adv_weight": self.adv_weight,
            "random_epsilon": self.random_epsilon,
        })
        return config
