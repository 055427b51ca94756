"""FeaScatter: feature-scattering adversarial training (Zhang & Wang, NeurIPS 2019)."""

from __future__ import annotations

import keras
import tensorflow as tf

from adt_tf.core import checks
from adt_tf.core.noise import DEFAULT_NOISE, NoiseSource
from adt_tf.methods.base import AdversarialTrainer, FloorPass
from adt_tf.numerics.losses import batch_mean, regularization_penalty, smoothed_cross_entropy
from adt_tf.numerics.optimal_transport import sinkhorn_distance
from adt_tf.threat import EVERY_NORM, Ball, as_threat


def feature_scattering_perturbation(classifier, x, epsilon: float | Ball, *, steps: int = 1,
                                    step_size: float | None = None, sinkhorn_reg: float = 0.01,
                                    sinkhorn_iterations: int = 100,
                                    sinkhorn_tolerance: float = 0.1, seed,
                                    noise: NoiseSource = DEFAULT_NOISE):
    """Perturbs a batch so that its logits are scattered away from the clean ones.

    Unsupervised (labels are not used) and collaborative: the distance couples the whole
    batch, so each example's perturbation depends on the others.

    Args:
        classifier: logits model (called with training=False).
        x: clean inputs [B, ...] in [0, 1].
        epsilon: an L-infinity radius or a threat model (`adt_tf.threat`; the paper's is
            L-infinity). steps: ascent steps (>= 1; the paper uses 1).
        step_size: the ball's step (signed for L-infinity, normalised for L2; None: epsilon,
            the paper's one step of size eps).
        sinkhorn_reg, sinkhorn_iterations, sinkhorn_tolerance: see
            `adt_tf.numerics.optimal_transport.sinkhorn_plan`.
        seed: stateless seed tensor of the uniform random start.
        noise: where its draw comes from (`adt_tf.core.noise`; default: the seed).

    Mathematical details:
        x_0 = clip(x + U(-eps, eps)^d, 0, 1),
        x_{t+1} = Proj_{B(x, eps)}(x_t + a * sign(grad D(f(x), f(x_t)))),
        D the Sinkhorn distance between the empirical distributions of the clean logits
        {f(x_i)} (fixed) and of the perturbed ones {f(x'_j)} under the cosine cost
        (`adt_tf.numerics.optimal_transport.sinkhorn_distance`).

    Returns:
        (x_adv, distance): x_adv in the ball and [0, 1]; distance the OT distance at the
        last step's starting point.
    """
    ball = as_threat(epsilon)
    steps = checks.check_positive_int(steps, "steps")
    size = ball.epsilon if step_size is None else checks.check_positive(
        step_size, "step_size")
    x = tf.convert_to_tensor(x)
    clean_logits = tf.stop_gradient(classifier(x, training=False))
    start = ball.random_start(x, seed, noise)

    def step(i, x_adv, _):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x_adv)
            distance = sinkhorn_distance(clean_logits, classifier(x_adv, training=False),
                                         reg=sinkhorn_reg, iterations=sinkhorn_iterations,
                                         tolerance=sinkhorn_tolerance)
        grad = tape.gradient(distance, x_adv)
        return i + 1, ball.project(ball.step(x_adv, grad, size), x), distance

    state = (tf.constant(0), start, tf.constant(0.0, tf.float32))
    _, x_adv, distance = tf.while_loop(lambda i, *_: i < steps, step, state,
                                       maximum_iterations=steps)
    return x_adv, distance


@keras.saving.register_keras_serializable(package="adt_tf")
class FeaScatter(AdversarialTrainer):
    """Feature-scattering adversarial training: OT-maximising perturbations, smoothed labels.

    Mathematical details:
        min_theta E_batch [ (1/B) sum_i CE_s(f_theta(x'_i), y_i) ],
        {x'_i} = argmax_{x' in B(x, eps)} D({f(x_i)}, {f(x'_j)}),

        D the Sinkhorn (entropic optimal transport) distance between the clean and perturbed
        logit distributions of the batch, with the cosine cost and uniform marginals
        (`feature_scattering_perturbation`: one signed step of size eps from a uniform
        random start, classifier in inference mode, as in the paper); CE_s the cross-entropy
        with label smoothing s (`adt_tf.numerics.losses.smoothed_cross_entropy`: 1 - s on the true
        class, s / (C - 1) elsewhere; s = 0.5 in the paper).

        The outer loss is this smoothed cross-entropy, not the compiled loss (which is only
        used by `evaluate`); the classifier's regularisation losses are added to it. Under a
        distribution strategy the transport couples the examples of each replica's batch.
        Under `norm="l2"` (beyond the paper) the same algorithm with the L2 ball's own
        operations (`adt_tf.threat.L2Ball`: uniform start in the ball, the step a g / ||g||,
        the exact projection).

    Args:
        classifier: a Keras model returning logits.
        epsilon: the budget, the radius of the ball of `norm` (8/255 L-infinity for CIFAR).
        norm: "linf" (the paper's) or "l2".
        attack_steps: ascent steps on D (1).
        attack_step_size: their size (None: epsilon).
        label_smoothing: s in [0, 1) (0.5).
        sinkhorn_reg: entropic regularisation of the transport (0.01).
        sinkhorn_iterations: maximum Sinkhorn iterations (100).
        sinkhorn_tolerance: early stop on the change of the dual potential (0.1, as the
            reference code; 0 runs every iteration).
        seed: integer seed of the random starts.

    Metrics (besides loss and the compiled ones, on the perturbed logits): `ot_distance`,
    the transport distance at the last ascent step.

    Example:
        >>> trainer = FeaScatter(build_model("wrn_28_10", (32, 32, 3), 10), epsilon=8 / 255)

    Reference:
        Zhang & Wang, "Defense Against Adversarial Attacks Using Feature Scattering-based
        Adversarial Training", NeurIPS 2019.
    """

    aux_metrics = ("ot_distance",)
    NORMS = EVERY_NORM

    def __init__(self, classifier, epsilon=8 / 255, attack_steps=1, attack_step_size=None,
                 label_smoothing=0.5, sinkhorn_reg=0.01, sinkhorn_iterations=100,
                 sinkhorn_tolerance=0.1, seed=None, **kwargs):
        super().__init__(classifier, epsilon=epsilon, seed=seed, **kwargs)
        self.attack_steps = checks.check_positive_int(attack_steps, "attack_steps")
        self.attack_step_size = (None if attack_step_size is None else
                                 checks.check_positive(attack_step_size, "attack_step_size"))
        self.label_smoothing = checks.check_in_range(
            label_smoothing, "label_smoothing", 0.0, 0.999999)
        self.sinkhorn_reg = checks.check_positive(sinkhorn_reg, "sinkhorn_reg")
        self.sinkhorn_iterations = checks.check_positive_int(
            sinkhorn_iterations, "sinkhorn_iterations")
        self.sinkhorn_tolerance = checks.check_non_negative(
            sinkhorn_tolerance, "sinkhorn_tolerance")

    def perturb(self, x, y):
        x_adv, distance = feature_scattering_perturbation(
            self.classifier, x, self.threat, steps=self.attack_steps,
            step_size=self.attack_step_size, sinkhorn_reg=self.sinkhorn_reg,
            sinkhorn_iterations=self.sinkhorn_iterations,
            sinkhorn_tolerance=self.sinkhorn_tolerance, seed=self.next_seed(),
            noise=self.noise_source)
        return x_adv, {"ot_distance": distance}

    def outer_loss(self, x, x_train, y, sample_weight):
        y_pred = self(x_train, training=True)
        ce = smoothed_cross_entropy(y_pred, y, self.label_smoothing)
        loss = batch_mean(ce, sample_weight) + regularization_penalty(self)
        return loss, y_pred

    def floor_passes(self):
        return [FloorPass("input_gradient", 1, self.attack_steps), FloorPass("train", 1, 1)]

    def get_config(self):
        config = super().get_config()
        config.update({
            "attack_steps": self.attack_steps,
            "attack_step_size": self.attack_step_size,
            "label_smoothing": self.label_smoothing,
            "sinkhorn_reg": self.sinkhorn_reg,
            "sinkhorn_iterations": self.sinkhorn_iterations,
            "sinkhorn_tolerance": self.sinkhorn_tolerance,
        })
        return config
