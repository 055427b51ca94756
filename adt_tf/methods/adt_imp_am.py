"""ADT_IMP-AM: an implicit adversarial distribution given by a generator fed with noise."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from adt_tf.adt.generators import EntropyEncoder, ImplicitGenerator
from adt_tf.core import checks
from adt_tf.methods.amortized_base import AdversarySample, AmortizedAdversarialTrainer
from adt_tf.numerics.optimizers import TorchAdam
from adt_tf.threat import EVERY_NORM


@keras.saving.register_keras_serializable(package="adt_tf")
class ADTImpAM(AmortizedAdversarialTrainer):
    """Adversarial Distributional Training with implicit, amortised distributions (ADT_IMP-AM).

    The perturbation is delta = epsilon tanh(g_phi(features, z)) with noise
    z ~ U(-1, 1)^z_dim; its density is unknown, so its entropy is replaced by a variational
    lower bound: an encoder q_psi(z | delta) learns to recover z, and the generator is
    penalised while the bound is below a margin.

    Mathematical details:
        With nll = -mean_{batch, j} log q_psi(z_j | delta) (per latent dimension),
            generator objective  J = L(f_theta(x_adv), y) - lambda relu(nll - tau),
        the generator and the encoder ascend J (the encoder only through the penalty, i.e.
        it descends nll while the penalty is active) and the classifier descends L, in one
        joint step (see `AmortizedAdversarialTrainer`). Since
        H(delta) >= I(z; delta) >= H(z) + E[log q(z | delta)], the tracked `entropy` is the
        per-dimension bound log 2 - nll (H(U(-1, 1)) = log 2 per dimension).
        The encoder reads delta / epsilon = tanh(u).
        Under `norm="l2"` (beyond the paper) the generator's output u is mapped onto the ball
        radially instead, delta = epsilon tanh(||u||) u / ||u|| (`adt_tf.threat.Ball.onto`);
        the encoder then reads that delta / epsilon, and nothing else changes.

    Args:
        classifier: a functional Keras model returning logits.
        epsilon: the budget, the radius of the ball of `norm` (8/255 L-infinity, 0.5 L2
            for CIFAR-10).
        norm: "linf" (the paper's) or "l2".
        entropy_weight: lambda >= 0 (1.0).
        generator_width, generator_blocks, generator_lr, generator_decay_steps: as for
            `ADTExpAM`.
        z_dim: noise dimension (64).
        tau: the margin tau >= 0 on nll (0.9).
        encoder_lr: the encoder Adam's learning rate (2e-4; betas (0.9, 0.999), epsilon 1e-8).
        encoder_width: first-layer channels of the encoder (32, the reference's).
        seed: integer seed of the method's randomness.

    Attributes:
        generator: the `ImplicitGenerator`; encoder: the `EntropyEncoder`;
        `generator_optimizer` and `encoder_optimizer` are created by `compile`.

    Metrics (besides loss and the compiled ones, on x_adv): `entropy` (the bound
    log 2 - nll) and `generator_objective` (J).

    Example:
        >>> trainer = ADTImpAM(build_model("wrn_28_10", (32, 32, 3), 10), z_dim=64, tau=0.9)
        >>> trainer.compile(  # the reference's SGD: coupled weight decay, x0.1 from epoch 75
        ...     optimizer=make_optimizer(0.1, momentum=0.9, weight_decay=2e-4,
        ...                              decay_epochs=(75,), steps_per_epoch=782),
        ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...     metrics=["accuracy"])
        >>> trainer.fit(train_ds, epochs=76)

    Reference:
        Dong et al., "Adversarial Distributional Training for Robust Deep Learning",
        NeurIPS 2020, Sec. 3.3 (ADT_IMP-AM).
    """

    NORMS = EVERY_NORM

    def __init__(self, classifier, epsilon=8 / 255, entropy_weight=1.0, generator_width=256,
                 generator_blocks=3, generator_lr=2e-4, generator_decay_steps=0, z_dim=64,
                 tau=0.9, encoder_lr=2e-4, encoder_width=32, outer_loss="ce", trades_beta=6.0,
                 seed=None, **kwargs):
        self.z_dim = checks.check_positive_int(z_dim, "z_dim")
        self.tau = checks.check_non_negative(tau, "tau")
        self.encoder_lr = checks.check_positive(encoder_lr, "encoder_lr")
        self.encoder_width = checks.check_positive_int(encoder_width, "encoder_width")
        super().__init__(classifier, epsilon=epsilon, entropy_weight=entropy_weight,
                         generator_width=generator_width, generator_blocks=generator_blocks,
                         generator_lr=generator_lr,
                         generator_decay_steps=generator_decay_steps, outer_loss=outer_loss,
                         trades_beta=trades_beta, seed=seed, **kwargs)
        self.encoder_optimizer = None

    adversary_optimizer_names = ("generator_optimizer", "encoder_optimizer")

    def build_adversary(self):
        self.generator = ImplicitGenerator(
            self.image_shape, z_dim=self.z_dim, width=self.generator_width,
            num_blocks=self.generator_blocks, name="generator")
        self.encoder = EntropyEncoder(self.image_shape, z_dim=self.z_dim,
                                      width=self.encoder_width, name="encoder")

    def adversary_networks(self):
        return {"generator": self.generator, "encoder": self.encoder}

    def compile(self, *args, encoder_optimizer=None, **kwargs):
        """As `AmortizedAdversarialTrainer.compile`, plus the encoder's Adam(encoder_lr)
        (or `encoder_optimizer`)."""
        super().compile(*args, **kwargs)
        if encoder_optimizer is None:
            encoder_optimizer = TorchAdam(self.encoder_lr, epsilon=self.adam_epsilon,
                                          name="encoder_optimizer")
        self.encoder_optimizer = self._prepare_optimizer(encoder_optimizer, self.encoder)

    def adversary_parts(self):
        return super().adversary_parts() + [
            (self.encoder_optimizer, self.encoder.trainable_variables)]

    def sample_adversary(self, x, features, seed, training):
        batch = tf.shape(x)[0]
        z = self.noise_source.uniform([batch, self.z_dim], seed, -1.0, 1.0, tf.float32)
        # tanh per coordinate (L-infinity) or the radial map onto the unit L2 ball
        direction = self.threat.onto(self.generator([features, z], training=training), 1.0)
        x_adv = self.threat.clip(x + tf.cast(self.epsilon * direction, x.dtype))
        mean, raw_variance = self.encoder(direction, training=training)
        nll = -tf.reduce_mean(EntropyEncoder.log_prob(z, mean, raw_variance))
        penalty = tf.nn.relu(nll - self.tau)
        return AdversarySample(x_adv=x_adv, regularizer=-self.entropy_weight * penalty,
                               entropy=math.log(2.0) - nll)

    def get_config(self):
        config = super().get_config()
        config.update({
            "z_dim": self.z_dim,
            "tau": self.tau,
            "encoder_lr": self.encoder_lr,
            "encoder_width": self.encoder_width,
        })
        return config
