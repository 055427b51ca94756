"""SPSA (Uesato et al., 2018): Adam on a finite-difference gradient estimate; gradient-free."""

from __future__ import annotations

import tensorflow as tf

from adt_tf.attacks.common import batch_shape, misclassified
from adt_tf.attacks.registry import register_attack
from adt_tf.core import checks
from adt_tf.core.noise import as_seed, fold
from adt_tf.numerics.losses import margin_loss
from adt_tf.threat import Ball


@register_attack("spsa", title="SPSA", black_box=True)
def spsa(classifier, x, y, threat: Ball, *, steps: int = 100, perturbation: float = 0.001,
         lr: float = 0.01, samples: int = 128, sample_chunk: int = 32, early_stop: bool = True,
         random_start: bool = False, clip_queries: bool = False, seed=0) -> tf.Tensor:
    """L-infinity SPSA on the logit margin, with per-example early stopping.

    The defaults are the ADT authors' `spsa.py`: `samples_per_draw=256` model evaluations
    per gradient estimate, i.e. 128 directions each queried at x' + d v and x' - d v; the
    start at the clean input; the query points not clipped. The evaluation's stronger variant
    (`spsa512` in the `full` suite) spends 256 directions (512 evaluations) from a uniform
    random start.

    Args:
        classifier: logits model (called with training=False); only its outputs are used.
        x: clean inputs [B, ...] in [0, 1]; y: integer labels.
        threat: the L-infinity ball (`LinfBall`; the only one it takes).
        steps: Adam iterations (100 in the ADT paper).
        perturbation: delta, the finite-difference step (0.001).
        lr: Adam's learning rate (0.01).
        samples: random directions per gradient estimate, 2 model evaluations each (128:
            the reference's 256 evaluations; the ADT paper reports 256 to 2048 of them).
        sample_chunk: directions evaluated in one forward pass of 2 * B * sample_chunk
            inputs (memory only; the result does not depend on it).
        early_stop: stop updating an input once it is misclassified (and return that point).
        random_start: start from a uniform point of the ball instead of the clean input.
        clip_queries: clip the query points x' +- d v to [0, 1] (the reference does not; a
            model that refuses pixels outside [0, 1] needs it).
        seed: int or stateless seed tensor.

    Mathematical details:
        With l(x') = z_y(x') - max_{j != y} z_j(x') (minimised) and v_1..v_n uniform in
        {-1, +1}^D,  g = (1/n) sum_i (l(x' + d v_i) - l(x' - d v_i)) / (2 d) v_i,  then one Adam
        step (beta1 = 0.9, beta2 = 0.999, PyTorch's epsilon placement) on x' along -g,
        projected onto the ball and [0, 1]. The reference's loss, -relu(margin + 50), has
        the same gradient wherever the margin exceeds -50, which covers every query of an
        input still classified correctly.

    Example:
        >>> x_adv = spsa(model, x, y, 8 / 255, samples=512)

    Reference:
        Uesato, O'Donoghue, van den Oord, Kohli. "Adversarial Risk and the Dangers of
        Evaluating Against Weak Attacks", ICML 2018.

    Returns:
        x_adv, same shape and dtype as x.
    """
    steps = checks.check_positive_int(steps, "steps")
    perturbation = checks.check_positive(perturbation, "perturbation")
    lr = checks.check_positive(lr, "lr")
    samples = checks.check_positive_int(samples, "samples")
    chunk = min(checks.check_positive_int(sample_chunk, "sample_chunk"), samples)
    num_chunks = -(-samples // chunk)
    x = tf.convert_to_tensor(x)
    base = as_seed(seed)
    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8

    def loss(x_eval, labels):
        logits = classifier(x_eval, training=False)
        return -margin_loss(logits, labels), misclassified(logits, labels)

    y_rep = tf.tile(tf.reshape(y, [-1]), [2 * chunk])

    def estimate(x_adv, step):
        """The SPSA gradient estimate at x_adv, [B, ...]."""

        def body(c, total):
            shape = tf.concat([[chunk], tf.shape(x_adv)], axis=0)
            bits = tf.random.stateless_uniform(shape, fold(base, 1, step, c), maxval=2,
                                               dtype=tf.int32)
            v = tf.cast(2 * bits - 1, x_adv.dtype)  # [chunk, B, ...]
            points = tf.concat([x_adv[tf.newaxis] + perturbation * v,
                                x_adv[tf.newaxis] - perturbation * v], axis=0)
            if clip_queries:
                points = threat.clip(points)
            flat = tf.reshape(points, tf.concat([[-1], tf.shape(x_adv)[1:]], 0))
            values, _ = loss(flat, y_rep)
            values = tf.reshape(values, [2, chunk, -1])
            diff = (values[0] - values[1]) / (2.0 * perturbation)  # [chunk, B]
            # The last chunk may run past `samples`: weigh its extra directions by zero.
            used = tf.cast(c * chunk + tf.range(chunk) < samples, diff.dtype)
            diff = diff * used[:, tf.newaxis]
            diff = tf.reshape(diff, tf.concat([tf.shape(diff), tf.ones(tf.rank(v) - 2, tf.int32)],
                                              axis=0))
            return c + 1, total + tf.reduce_sum(diff * v, axis=0)

        _, total = tf.while_loop(lambda c, _: c < num_chunks, body,
                                 (tf.constant(0), tf.zeros_like(x_adv)),
                                 maximum_iterations=num_chunks)
        return total / float(samples)

    def step_fn(t, x_adv, m, s, done):
        grad = estimate(x_adv, t)
        m = beta1 * m + (1.0 - beta1) * grad
        s = beta2 * s + (1.0 - beta2) * tf.square(grad)
        tf_t = tf.cast(t + 1, x.dtype)
        update = lr * (m / (1.0 - beta1**tf_t)) / (tf.sqrt(s / (1.0 - beta2**tf_t)) + adam_eps)
        moved = threat.project(x_adv - update, x)
        frozen = batch_shape(done, x) if early_stop else tf.zeros_like(batch_shape(done, x))
        x_adv = tf.where(frozen, x_adv, moved)
        _, is_adv = loss(x_adv, y)
        return t + 1, x_adv, m, s, tf.logical_or(done, is_adv)

    x0 = threat.random_start(x, fold(base, 0)) if random_start else x
    _, done0 = loss(x0, y)

    def cond(t, _x, _m, _s, done):
        if not early_stop:
            return t < steps
        return tf.logical_and(t < steps, tf.logical_not(tf.reduce_all(done)))

    _, x_adv, _, _, _ = tf.while_loop(
        cond, step_fn, (tf.constant(0), x0, tf.zeros_like(x), tf.zeros_like(x), done0),
        maximum_iterations=steps)
    return x_adv
