"""ADT_EXP-AM: an explicit adversarial distribution amortised by a generator network."""

from __future__ import annotations

import keras
import tensorflow as tf

from adt_tf.adt.distributions import ExplicitAdversarialDistribution
from adt_tf.adt.generators import ExplicitGenerator
from adt_tf.methods.amortized_base import AdversarySample, AmortizedAdversarialTrainer
from adt_tf.threat import EVERY_NORM


@keras.saving.register_keras_serializable(package="adt_tf")
class ADTExpAM(AmortizedAdversarialTrainer):
    """Adversarial Distributional Training with amortised explicit distributions (ADT_EXP-AM).

    A generator g_phi maps each input (with two input gradients) to the parameters (mu, v) of
    ADT_EXP's explicit distribution, delta = epsilon tanh(u), u ~ N(mu, softplus(v)^2). One
    sample per example (k = 1) feeds a joint step: the classifier descends the loss on
    x_adv = clip(x + delta, 0, 1) while the generator ascends it plus lambda times the entropy.

    Mathematical details:
        min_theta max_phi E_(x,y) [ E_{delta ~ p_phi(.|x)} L(f_theta(x + delta), y)
                                    + lambda H(p_phi(.|x)) ],
        (mu, v) = g_phi([x, grad_x L(f(x), y), grad_x L(f(x_fgsm), y)]).
        H is estimated by the per-dimension mean of -log p(delta) of the sample (paper
        Eq. 11; the scale lambda = 0.01 is calibrated to), computed from the pre-tanh sample.
        The joint step (one backward pass, gradient reversal at x_adv) is described in
        `AmortizedAdversarialTrainer`. Under `norm="l2"` (beyond the paper) the distribution
        is ADT_EXP's radial one, delta = epsilon tanh(||u||) u / ||u||, with its exact
        entropy (`adt_tf.threat.bijectors.RadialTanh`), and the generator's FGSM input takes the L2
        step.

    Args:
        classifier: a functional Keras model returning logits.
        epsilon: the budget, the radius of the ball of `norm` (8/255 L-infinity, 0.5 L2
            for CIFAR-10).
        norm: "linf" (the paper's) or "l2".
        entropy_weight: lambda >= 0 (0.01).
        generator_width: base channels w of the full-resolution generator (blocks w -> 2w,
            2w -> 2w, 2w -> w). The default is the reference's 256 (about 10M parameters on
            CIFAR-10); CPU runs need a smaller width, and should say which.
        generator_blocks: residual blocks (3).
        generator_lr: the generator Adam's learning rate (2e-4, beta_1 = 0.5).
        generator_decay_steps: linear decay of that rate to 0 over this many steps; 0 keeps
            it constant (what the reference's schedule amounts to over 76 epochs).
        seed: integer seed of the method's randomness.

    Attributes:
        generator: the `ExplicitGenerator`; `generator_optimizer` is created by `compile`.

    Metrics (besides loss and the compiled ones, on x_adv): `entropy` (the per-dimension
    entropy estimate) and `generator_objective` (L + lambda H).

    Example:
        >>> trainer = ADTExpAM(build_model("wrn_28_10", (32, 32, 3), 10), epsilon=8 / 255)
        >>> # the generator's rate stays 2e-4 for the 76 epochs (the reference's linear
        >>> # decay starts after epoch 100; generator_decay_steps=0)
        >>> trainer.compile(  # the reference's SGD: coupled weight decay, x0.1 from epoch 75
        ...     optimizer=make_optimizer(0.1, momentum=0.9, weight_decay=2e-4,
        ...                              decay_epochs=(75,), steps_per_epoch=782),
        ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...     metrics=["accuracy"])
        >>> trainer.fit(train_ds, epochs=76)
        >>> trainer.generator.save("generator.keras")   # reusable as an attack

    Reference:
        Dong et al., "Adversarial Distributional Training for Robust Deep Learning",
        NeurIPS 2020, Sec. 3.2 (ADT_EXP-AM).
    """

    NORMS = EVERY_NORM

    def build_adversary(self):
        self.generator = ExplicitGenerator(
            self.image_shape, width=self.generator_width, num_blocks=self.generator_blocks,
            name="generator")

    def sample_adversary(self, x, features, seed, training):
        loc, raw_scale = self.generator(features, training=training)
        dist = ExplicitAdversarialDistribution(loc, raw_scale, self.threat)
        sample = dist.sample(1, seed, self.noise_source)
        x_adv = self.threat.clip(x + tf.cast(sample.delta[0], x.dtype))
        entropy = tf.reduce_mean(tf.cast(sample.neg_log_prob, tf.float32))
        return AdversarySample(x_adv=x_adv, regularizer=self.entropy_weight * entropy,
                               entropy=entropy)
