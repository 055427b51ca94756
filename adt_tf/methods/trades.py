"""TRADES: the robustness/accuracy trade-off loss of Zhang et al. (2019)."""

from __future__ import annotations

import keras
import tensorflow as tf

from adt_tf.core import checks
from adt_tf.core.noise import DEFAULT_NOISE, NoiseSource, as_seed
from adt_tf.methods.base import AdversarialTrainer, FloorPass
from adt_tf.methods.pgd_at import resolve_step_size
from adt_tf.numerics.losses import kl_divergence, trades_outer_loss
from adt_tf.threat import EVERY_NORM, Ball, LinfBall, as_threat


def trades_perturbation(classifier, x, epsilon: float | Ball, *, steps: int = 10,
                        step_size: float = 0.007, init_std: float = 0.001, seed=0,
                        noise: NoiseSource = DEFAULT_NOISE):
    """TRADES's inner maximisation: signed-gradient ascent on KL(f(x) || f(x')) in the ball.

    Args:
        classifier: logits model (called with training=False).
        x: clean inputs [B, ...] in [0, 1].
        epsilon: an L-infinity radius or a threat model (`adt_tf.threat`).
        steps: iterations (>= 1). step_size: step (> 0).
        init_std: standard deviation of the Gaussian start (0.001; >= 0).
        seed: int or stateless seed tensor of the start.

    Mathematical details:
        x_0 = x + init_std * N(0, I) (not clipped, as the reference),
        x_{t+1} = Proj_{B(x, eps)}(x_t + a * sign(grad_x' sum_i KL(p(x_i) || p(x'_i)))),
        with p(x) = softmax(f(x)) fixed (no gradient) at the clean inputs. At x' = x the KL
        and its gradient vanish, hence the small Gaussian start.

    Returns:
        (x_adv, kl): x_adv in the ball and [0, 1]; kl the mean KL at the last iterate's
        predecessor (the value whose gradient made the last step).
    """
    ball = as_threat(epsilon)
    steps = checks.check_positive_int(steps, "steps")
    step_size = checks.check_positive(step_size, "step_size")
    init_std = checks.check_non_negative(init_std, "init_std")
    x = tf.convert_to_tensor(x)
    clean_logits = tf.stop_gradient(classifier(x, training=False))
    draw = noise.normal(tf.shape(x), as_seed(seed), dtype=x.dtype)
    # Not clipped to [0, 1], as the reference's `x_natural + 0.001 * randn`: only the first
    # gradient is taken there; every iterate after it is projected and clipped.
    start = x + tf.cast(init_std, x.dtype) * draw

    def step(i, x_adv, _):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x_adv)
            kl = kl_divergence(clean_logits, classifier(x_adv, training=False))
            total = tf.reduce_sum(kl)
        grad = tape.gradient(total, x_adv)
        x_adv = ball.project(ball.step(x_adv, grad, step_size), x)
        return i + 1, x_adv, tf.reduce_mean(kl)

    state = (tf.constant(0), start, tf.constant(0.0, tf.float32))
    _, x_adv, kl = tf.while_loop(lambda i, *_: i < steps, step, state, maximum_iterations=steps)
    return x_adv, kl


@keras.saving.register_keras_serializable(package="adt_tf")
class TRADES(AdversarialTrainer):
    """TRADES: cross-entropy on clean inputs plus beta times a KL robustness regulariser.

    Mathematical details:
        min_theta E_(x,y) [ CE(f(x), y) + beta * max_{||x' - x||_inf <= eps} KL(f(x) || f(x')) ].

        Inner: `trades_perturbation` (Gaussian start of std `init_std`, `attack_steps`
        signed steps of `attack_step_size` on the KL, classifier in inference mode).
        Outer: `adt_tf.numerics.losses.trades_outer_loss` (compiled cross-entropy on f(x) plus beta
        times the batch-mean KL; three passes in training mode, f(x), f(x_adv), f(x), in the
        reference code's order, so BatchNorm's statistics move as there).
        The reference CIFAR-10 setting is eps = 0.031, 10 steps of 0.007, beta = 6.

    Args:
        classifier: a Keras model returning logits.
        epsilon: L-infinity budget (8/255; the TRADES paper uses 0.031).
        attack_steps: inner iterations (10).
        attack_step_size: inner step (0.007; None means 0.007).
        trades_beta: beta >= 0 (6.0; 1.0 favours clean accuracy).
        init_std: std of the Gaussian start (0.001).
        seed: integer seed of the starts.

    Metrics (besides loss and the compiled ones, which see the adversarial logits):
    `inner_kl`, the mean KL(f(x) || f(x')) at the last inner step.

    Example:
        >>> trainer = TRADES(build_model("wrn_34_10", (32, 32, 3), 10), epsilon=0.031,
        ...                  trades_beta=6.0)

    Reference:
        Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, "Theoretically Principled Trade-off between
        Robustness and Accuracy", ICML 2019.
    """

    aux_metrics = ("inner_kl",)

    NORMS = EVERY_NORM

    def __init__(self, classifier, epsilon=8 / 255, attack_steps=10, attack_step_size=None,
                 trades_beta=6.0, init_std=0.001, seed=None, **kwargs):
        super().__init__(classifier, epsilon=epsilon, seed=seed, **kwargs)
        self.attack_steps = checks.check_positive_int(attack_steps, "attack_steps")
        self.attack_step_size = resolve_step_size(
            attack_step_size, self.norm_defaults(self.threat)["attack_step_size"])
        self.trades_beta = checks.check_non_negative(trades_beta, "trades_beta")
        self.init_std = checks.check_non_negative(init_std, "init_std")

    @classmethod
    def norm_defaults(cls, threat):
        # TRADES's 0.007 for L-infinity; epsilon / 4 for L2 (as AT_PGD's).
        return {"attack_step_size": 0.007 if threat.norm == LinfBall.norm
                else threat.epsilon / 4}

    def perturb(self, x, y):
        x_adv, kl = trades_perturbation(
            self.classifier, x, self.threat, steps=self.attack_steps,
            step_size=self.attack_step_size, init_std=self.init_std, seed=self.next_seed(),
            noise=self.noise_source)
        return x_adv, {"inner_kl": kl}

    def outer_loss(self, x, x_train, y, sample_weight):
        return trades_outer_loss(self, x, x_train, y, sample_weight, self.trades_beta)

    def floor_passes(self):
        # the outer update differentiates f(x), f(x_adv) and f(x) again: a training pass
        # over 3B (the reference's three forwards)
        return [FloorPass("input_gradient", 1, self.attack_steps), FloorPass("train", 3, 1)]

    def get_config(self):
        config = super().get_config()
        config.update({
            "attack_steps": self.attack_steps,
            "attack_step_size": self.attack_step_size,
            "trades_beta": self.trades_beta,
            "init_std": self.init_std,
        })
        return config
