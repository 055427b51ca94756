"""ADT_EXP: adversarial distributional training with an explicit per-example distribution."""

from __future__ import annotations

import keras
import tensorflow as tf

from adt_tf.adt.families import GaussianFamily, default_factor_lr, unused_settings
from adt_tf.adt.inner_maximization import (
    check_inner_gradients,
    explicit_inner_maximization,
    sample_inputs,
)
from adt_tf.core import checks
from adt_tf.methods.base import AdversarialTrainer, FloorPass
from adt_tf.numerics.losses import check_outer_loss, kl_divergence, trades_outer_loss
from adt_tf.threat import EVERY_NORM


@keras.saving.register_keras_serializable(package="adt_tf")
class ADTExp(AdversarialTrainer):
    """Adversarial Distributional Training with explicit adversarial distributions (ADT_EXP).

    For each training input the inner problem fits a distribution p(delta) on the
    epsilon-ball, delta = epsilon * tanh(u), u ~ N(mu, diag(softplus(v)^2)), maximising the
    expected loss plus lambda times its entropy; the classifier then descends the loss on one
    fresh sample per example.

    Mathematical details:
        min_theta E_(x,y) [ max_p  E_{delta ~ p} L(f_theta(x + delta), y) + lambda H(p) ].

        Inner: T steps of Adam(lr, beta1, beta2) ascent on (mu, v) from mu = v = 0, with a
        k-sample Monte Carlo estimate per step (one batched pass of k*B inputs, classifier in
        inference mode); H is estimated by the per-dimension mean of -log p (paper Eq. 11),
        the scale the reference code uses and that lambda = 0.01 is calibrated to. As in the
        authors' code, each step's gradient is summed over the k samples and the gradients
        are never zeroed between steps (step t follows the running sum of steps 1..t;
        `inner_gradients='fresh'` is the non-default variant with one gradient per step).
        Outer: CE(f(clip(x + delta)), y) with delta a fresh sample, classifier in training mode.

        With `outer_loss='trades'` (ADT with the TRADES loss, paper Sec. 5.4) L becomes
        CE(f(x), y) + beta * KL(f(x) || f(x + delta)) in both problems: the inner one
        maximises E_p[beta * KL(f(x) || f(x + delta))] + lambda H(p) (the clean
        cross-entropy does not depend on p; f(x) in inference mode, fixed), and the outer
        one is `adt_tf.numerics.losses.trades_outer_loss` (compiled CE on f(x) plus beta times the
        batch-mean KL; the TRADES reference's three training-mode passes f(x), f(x + delta),
        f(x)).

    Args:
        classifier: a Keras model returning logits.
        epsilon: the budget (8/255 L-infinity for CIFAR; 0.5 for L2, where the distribution
            is the radial one of `adt_tf.threat.bijectors.RadialTanh`).
        entropy_weight: lambda >= 0 (0.01).
        inner_steps: T >= 1 (7).
        mc_samples: k >= 1 Monte Carlo samples per inner step (5).
        inner_lr: the inner Adam's learning rate (0.3).
        inner_beta1, inner_beta2: the inner Adam's betas (0, 0: a near-sign step).
        inner_gradients: 'accumulate' (the reference: gradients summed over the inner steps,
            never zeroed) or 'fresh' (each step its own gradient; a named variant, not the
            paper's algorithm).
        outer_loss: 'ce' (the paper's main setting) or 'trades' (Sec. 5.4).
        trades_beta: beta >= 0 of the TRADES loss (6.0; the paper reports 1 and 6); unused
            with 'ce'.
        family: the Gaussian base of the distribution (`adt_tf.adt.families`): 'diag' (the
            paper's, the default), 'lowrank' (diag(sigma^2) + U U^T) or 'matrix_normal'
            (the image as an H x WC matrix, row and column factors); beyond the paper.
        rank: R of 'lowrank' (8). rows: the matrix-normal reshaping's rows (0: H).
        factor_lr: the inner Adam's step for the extra factors (their own scale; None: the
            family's default, chosen by the sweeps of docs/methods.md). factor_init: the std of the
            factors' initial entries (0: the diagonal distribution at the start).
        inner_branches: split each inner step's k*B batch into this many independent
            passes that TensorFlow runs side by side (1: one pass). A speed setting for
            CPUs whose cores the small convolutions of one pass leave idle (see
            docs/performance.md); same result up to float rounding.
        seed: integer seed of the method's randomness.

    Metrics (besides loss and the compiled ones): `entropy` (the mean per-dimension entropy
    estimate at the last inner step) and `inner_objective` (the inner objective there).

    Example:
        >>> trainer = ADTExp(build_model("wrn_28_10", (32, 32, 3), 10), epsilon=8 / 255)
        >>> trainer.compile(  # the reference's SGD: coupled weight decay, x0.1 from epoch 75
        ...     optimizer=make_optimizer(0.1, momentum=0.9, weight_decay=2e-4,
        ...                              decay_epochs=(75,), steps_per_epoch=782),
        ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...     metrics=["accuracy"])
        >>> trainer.fit(train_ds, epochs=76)

    Reference:
        Dong et al., "Adversarial Distributional Training for Robust Deep Learning",
        NeurIPS 2020, Sec. 3.1 (ADT_EXP).
    """

    aux_metrics = ("entropy", "inner_objective")

    NORMS = EVERY_NORM

    def __init__(self, classifier, epsilon=8 / 255, entropy_weight=0.01, inner_steps=7,
                 mc_samples=5, inner_lr=0.3, inner_beta1=0.0, inner_beta2=0.0,
                 outer_loss="ce", trades_beta=6.0, inner_branches=1,
                 inner_gradients="accumulate", family="diag", rank=8, rows=0,
                 factor_lr=None, factor_init=0.0, seed=None, **kwargs):
        super().__init__(classifier, epsilon=epsilon, seed=seed, **kwargs)
        self.family = GaussianFamily(family, rank=rank, rows=rows, factor_lr=factor_lr,
                                     factor_init=factor_init)
        self.entropy_weight = checks.check_non_negative(entropy_weight, "entropy_weight")
        self.inner_steps = checks.check_positive_int(inner_steps, "inner_steps")
        self.mc_samples = checks.check_positive_int(mc_samples, "mc_samples")
        self.inner_lr = checks.check_positive(inner_lr, "inner_lr")
        self.inner_beta1 = checks.check_in_range(inner_beta1, "inner_beta1", 0.0, 0.999999)
        self.inner_beta2 = checks.check_in_range(inner_beta2, "inner_beta2", 0.0, 0.999999)
        # Stored under another name: `outer_loss` is the trainer's hook method.
        self.outer_loss_name = check_outer_loss(outer_loss)
        self.trades_beta = checks.check_non_negative(trades_beta, "trades_beta")
        self.inner_branches = checks.check_positive_int(inner_branches, "inner_branches")
        self.inner_gradients = check_inner_gradients(inner_gradients)

    @classmethod
    def argument_defaults(cls, threat, arguments):
        # The family's own factor step, as the sweeps chose it (docs/methods.md).
        return {**super().argument_defaults(threat, arguments),
                "factor_lr": default_factor_lr(arguments.get("family") or "diag")}

    @classmethod
    def inert_arguments(cls, arguments):
        # The family's settings it does not read (a diagonal run has no factors).
        return unused_settings(arguments.get("family") or "diag")

    def check_input_shape(self, shape):
        self.family.check(shape)

    def _inner_loss_fn(self, x):
        """The inner per-example loss: None (cross-entropy) or beta * KL(f(x) || f(x'))."""
        if self.outer_loss_name == "ce":
            return None
        clean_logits = tf.stop_gradient(self.classifier(x, training=False))
        tiled = tf.tile(clean_logits, [self.mc_samples, 1])
        beta = self.trades_beta

        def kl_loss(logits, _labels):
            return beta * kl_divergence(tiled, logits)

        return kl_loss

    def perturb(self, x, y):
        seed = self.next_seed()
        result = explicit_inner_maximization(
            self.classifier, x, y, threat=self.threat,
            entropy_weight=self.entropy_weight,
            steps=self.inner_steps, samples=self.mc_samples, lr=self.inner_lr,
            beta1=self.inner_beta1, beta2=self.inner_beta2, seed=seed,
            loss_fn=self._inner_loss_fn(x), branches=self.inner_branches,
            gradients=self.inner_gradients, noise=self.noise_source, family=self.family)
        # One fresh sample per example feeds the outer update.
        dist = result.distribution(self.threat, self.family)
        final_seed = tf.random.experimental.stateless_fold_in(seed, -1)
        x_adv, _ = sample_inputs(x, dist, 1, final_seed, self.noise_source)
        return x_adv, {"entropy": result.entropy, "inner_objective": result.objective}

    def outer_loss(self, x, x_train, y, sample_weight):
        if self.outer_loss_name == "trades":
            return trades_outer_loss(self, x, x_train, y, sample_weight, self.trades_beta)
        return super().outer_loss(x, x_train, y, sample_weight)

    def floor_passes(self):
        # T steps over the k samples of each input, then the outer update (over 3B with the
        # TRADES loss: its reference's three forwards).
        outer = 3 if self.outer_loss_name == "trades" else 1
        return [FloorPass("input_gradient", self.mc_samples, self.inner_steps),
                FloorPass("train", outer, 1)]

    def get_config(self):
        config = super().get_config()
        config.update({
            "entropy_weight": self.entropy_weight,
            "inner_steps": self.inner_steps,
            "mc_samples": self.mc_samples,
            "inner_lr": self.inner_lr,
            "inner_branches": self.inner_branches,
            "inner_gradients": self.inner_gradients,
            "inner_beta1": self.inner_beta1,
            "inner_beta2": self.inner_beta2,
            "outer_loss": self.outer_loss_name,
            "trades_beta": self.trades_beta,
            "family": self.family.name,
            "rank": self.family.rank,
            "rows": self.family.rows,
            "factor_lr": self.family.factor_lr,
            "factor_init": self.family.factor_init,
        })
        return config
