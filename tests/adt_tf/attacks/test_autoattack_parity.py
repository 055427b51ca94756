"""Our APGD and Square against AutoAttack's standard version (fra31/auto-attack).

APGD is deterministic given its start, so a NumPy transcription of the loop of AutoAttack's
`APGDAttack.attack_single_run` (L-infinity; written here from its semantics) on a small MLP
with a hand-written gradient must give our step sizes and best losses exactly; its start
(L-infinity and L2) is transcribed too and fed our draw. Square is
random: its schedule, its query count, the square's size and position range are checked
instead. Every registered attack also runs on non-square images (12x8 and 8x12).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.attacks import ATTACKS, square
from adt_tf.attacks.apgd import _apgd_run, checkpoints
from adt_tf.attacks.square import square_fraction, square_window
from adt_tf.evaluation import fit_amortized_adversary
from adt_tf.models.common import PENULTIMATE
from adt_tf.numerics.losses import per_example_ce
from adt_tf.threat import L2Ball, LinfBall
from tests.helpers import SAMPLE, attack_settings, ce_loss

EPS = 8 / 255


# ----------------------------------------------------------------------------- APGD
class MLP:
    """logits = tanh(x W1 + b1) W2 + b2 on flattened inputs, in float64, with its CE input
    gradient written out (the reference side never touches TensorFlow)."""

    def __init__(self, dim, hidden=16, classes=5, seed=0):
        rng = np.random.default_rng(seed)
        self.w1 = rng.normal(0, 10.0 / np.sqrt(dim), (dim, hidden))  # curved enough to halve
        self.b1 = rng.normal(0, 0.1, hidden)
        self.w2 = rng.normal(0, 1.0, (hidden, classes))
        self.b2 = rng.normal(0, 0.1, classes)

    def __call__(self, x, training=False):  # the TensorFlow side
        flat = tf.reshape(x, [tf.shape(x)[0], -1])
        return tf.tanh(flat @ self.w1 + self.b1) @ self.w2 + self.b2

    def loss_grad(self, x, y):  # the NumPy side: per-example CE and its input gradient
        flat = x.reshape(len(x), -1)
        h = np.tanh(flat @ self.w1 + self.b1)
        z = h @ self.w2 + self.b2
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        loss = -np.log(p[np.arange(len(y)), y])
        dz = p.copy()
        dz[np.arange(len(y)), y] -= 1.0
        dflat = ((dz @ self.w2.T) * (1.0 - h ** 2)) @ self.w1.T
        return loss, dflat.reshape(x.shape)


def reference_apgd(model, x, y, x0, eps, n_iter, rho=0.75):
    """AutoAttack's L-infinity APGD single run, step by step: returns (the step sizes of the
    last iteration, the best loss)."""
    proj = lambda v: np.clip(np.clip(v, x - eps, x + eps), 0.0, 1.0)  # noqa: E731
    k = max(int(0.22 * n_iter), 1)
    shortest, shrink = max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
    x_adv = np.clip(x0, 0.0, 1.0)
    loss, grad = model.loss_grad(x_adv, y)
    x_best, grad_best, loss_best = x_adv.copy(), grad.copy(), loss.copy()
    history = np.zeros((n_iter, len(x)))  # read at index -1 by the first check, as theirs
    step = np.full((len(x), 1, 1, 1), 2.0 * eps)
    x_old, counter = x_adv.copy(), 0
    best_at_check, reduced_at_check = loss_best.copy(), np.ones(len(x))
    for i in range(n_iter):
        used = step.copy()  # a check after the last iteration changes no iterate: not compared
        momentum = x_adv - x_old
        x_old = x_adv.copy()
        a = 0.75 if i > 0 else 1.0
        z = proj(x_adv + step * np.sign(grad))
        x_adv = proj(x_adv + (z - x_adv) * a + momentum * (1 - a))
        loss, grad = model.loss_grad(x_adv, y)
        history[i] = loss
        better = loss > loss_best
        x_best[better], grad_best[better], loss_best[better] = (
            x_adv[better], grad[better], loss[better])
        counter += 1
        if counter == k:
            rises = sum((history[i - c] > history[i - c - 1]).astype(float) for c in range(k))
            halve = (rises <= k * rho) | ((1 - reduced_at_check) * (best_at_check >= loss_best)
                                          > 0)
            reduced_at_check, best_at_check = halve.astype(float), loss_best.copy()
            step[halve] /= 2.0
            x_adv[halve], grad[halve] = x_best[halve], grad_best[halve]
            k = max(k - shrink, shortest)
            counter = 0
    return used.reshape(-1), loss_best


def reference_start(x, t, eps, norm):
    """AutoAttack's start in `attack_single_run`: x + eps * normalize(t), clamped to [0, 1];
    `normalize` divides each example by its largest |t_i| (Linf; t = 2 rand - 1) or its L2
    norm (L2; t = randn), plus 1e-12."""
    flat = t.reshape(len(t), -1)
    size = np.abs(flat).max(1) if norm == "linf" else np.sqrt((flat ** 2).sum(1))
    return np.clip(x + eps * t / (size.reshape(-1, 1, 1, 1) + 1e-12), 0.0, 1.0)


@pytest.mark.parametrize("ball", [LinfBall(EPS), L2Ball(0.5)], ids=["linf", "l2"])
def test_apgd_start_is_autoattacks(ball):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 1.0, (6, 5, 4, 3)).astype(np.float32)
    x[0] = 0.5  # an interior example: nothing clipped
    seed = tf.constant([7, 1])
    if ball.norm == "linf":  # our draw of t, the same seed: uniform in [-1, 1)
        t = tf.random.stateless_uniform(x.shape, seed, -1.0, 1.0).numpy()
    else:
        t = tf.random.stateless_normal(x.shape, seed).numpy()
    ours = ball.autoattack_start(tf.constant(x), seed).numpy()
    np.testing.assert_allclose(ours, reference_start(x, t, ball.epsilon, ball.norm),
                               rtol=1e-6, atol=1e-7)
    # Per example, the start reaches the ball's surface (max |delta| = eps, ||delta|| = eps).
    delta = (ours[0] - x[0]).ravel()
    size = np.abs(delta).max() if ball.norm == "linf" else np.sqrt((delta ** 2).sum())
    assert size == pytest.approx(ball.epsilon, rel=1e-5)


@pytest.mark.parametrize("n_iter", [100, 37, 10])
def test_apgd_iterates_match_autoattack(n_iter):
    rng = np.random.default_rng(n_iter)
    x = rng.uniform(0.2, 0.8, (12, 4, 4, 3))
    y = rng.integers(0, 5, 12).astype(np.int32)
    model = MLP(48, seed=n_iter)
    x0 = np.clip(x + rng.uniform(-EPS, EPS, x.shape), 0, 1)
    ref_step, ref_best = reference_apgd(model, x, y, x0, EPS, n_iter)
    _, _, best, step = _apgd_run(model, tf.constant(x), tf.constant(y), LinfBall(EPS),
                                 per_example_ce, n_iter, 0.75, 0.75, tf.constant(x0))
    # Equal up to float32 rounding (our step size and per-example loss are float32).
    np.testing.assert_allclose(step.numpy(), ref_step, rtol=1e-6)
    np.testing.assert_allclose(best.numpy(), ref_best, rtol=1e-6)
    assert len(set(np.round(ref_step / EPS, 6))) > 1, "no example ever halved its step"


class RowCounter(keras.Model):
    """A classifier that counts the input rows it is called on (in graphs and loops too)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.rows = tf.Variable(0, dtype=tf.int64, trainable=False)

    def call(self, x, training=False):
        self.rows.assign_add(tf.cast(tf.shape(x)[0], tf.int64))
        return self.inner(x, training=training)


@pytest.mark.slow
def test_apgd_t_runs_later_targets_only_on_the_inputs_still_robust():
    """AutoAttack runs each further target on the inputs not broken yet. Ours: the same
    robust inputs and, for them, the same points as every target on the whole batch (the
    starts are drawn for the whole batch), at a lower count of classifier rows."""
    from adt_tf.attacks.apgd import _merge, apgd_targeted
    from adt_tf.attacks.common import target_classes
    from adt_tf.core.noise import as_seed, fold
    from adt_tf.numerics.losses import targeted_dlr_loss
    from tests.helpers import trained_tiny_classifier

    model, x, y = trained_tiny_classifier()
    x, y = tf.constant(x[:48]), tf.constant(y[:48])
    ball, steps, num_targets = LinfBall(4 / 255), 10, 4
    counter = RowCounter(model)
    x_adv = tf.function(lambda: apgd_targeted(counter, x, y, ball, steps=steps,
                                              num_targets=num_targets, seed=5))()
    rows = int(counter.rows.numpy())
    # The reference: every target on every input, the highest loss kept where none breaks.
    targets, _ = target_classes(model(x, training=False), num_targets, attack="t",
                                min_classes=4)
    best = None
    for t in range(num_targets):
        x0 = ball.autoattack_start(x, fold(as_seed(5), t, 0))
        out = _apgd_run(model, x, y, ball,
                        lambda z, labels, t=t: targeted_dlr_loss(z, labels, targets[:, t]),
                        steps, 0.75, 0.75, x0)[:3]
        best = out if best is None else _merge(best, out)
    broken = np.argmax(model(x_adv, training=False), -1) != y.numpy()
    np.testing.assert_array_equal(broken, best[1].numpy())
    assert 0 < broken.sum() < len(broken)
    np.testing.assert_allclose(x_adv.numpy()[~broken], best[0].numpy()[~broken], atol=1e-6)
    # Rows: one clean pass, then per target its 1 + steps passes on the inputs it ran on.
    full = len(broken) * (1 + num_targets * (steps + 1))
    assert rows < full


def test_apgd_checkpoints_are_autoattacks():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    # N = 50: intervals 11, 10, 9, 8, 7 (then 57 > 50).
    assert checkpoints(50) == [11, 21, 30, 38, 45]
    # N = 10: intervals 2, then 1 each (floor(0.03 N) and floor(0.06 N) are raised to 1).
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert checkpoints(1) == []


# ----------------------------------------------------------------------------- Square
def test_square_schedule_is_the_standard_versions():
    """Not rescaled: p halves after iterations 10, 50, 200, 500, 1000, 2000, 4000 of 5000."""
    its = (0, 10, 11, 50, 51, 200, 201, 500, 501, 1000, 1001, 2000, 2001, 4000, 4001, 4999)
    halvings = (0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)
    got = [float(square_fraction(i, 5000, 0.8)) for i in its]
    np.testing.assert_allclose(got, [0.8 / 2 ** h for h in halvings], rtol=1e-6)
    # The rescaled schedule (an option): iteration 2 of 1000 is iteration 20 of 10,000.
    assert float(square_fraction(2, 1000, 0.8, rescale_schedule=True)) == pytest.approx(0.4)
    assert float(square_fraction(2, 1000, 0.8)) == pytest.approx(0.8)


@pytest.mark.parametrize("shape", [(12, 8), (8, 12), (32, 32)])
@pytest.mark.parametrize("p", [1.0, 0.8, 0.05])
def test_square_window_lies_inside_the_image_in_autoattacks_range(shape, p):
    h, w = shape
    side = min(max(int(round(np.sqrt(p * h * w))), 1), h, w)
    tops, lefts = set(), set()
    for s in range(40):
        mask = square_window([16, h, w, 3], p, tf.constant([s, 1])).numpy()[..., 0]
        assert mask.shape == (16, h, w)
        np.testing.assert_array_equal(mask.sum(axis=(1, 2)), side * side)  # whole square inside
        tops.update(np.argmax(mask.any(axis=2), axis=1).tolist())
        lefts.update(np.argmax(mask.any(axis=1), axis=1).tolist())
    # AutoAttack draws the corner from [0, H - s) (never H - s unless the square spans H).
    assert tops == set(range(max(h - side, 1))) and lefts == set(range(max(w - side, 1)))


class Counting:
    """A classifier that never changes its mind (so Square never stops early) and counts the
    inputs it is asked about."""

    def __init__(self):
        self.calls = tf.Variable(0, dtype=tf.int64)

    def __call__(self, x, training=False):
        self.calls.assign_add(tf.cast(tf.shape(x)[0], tf.int64))
        return tf.one_hot(tf.zeros(tf.shape(x)[0], tf.int32), 3) * 5.0 \
            + 0.0 * tf.reduce_sum(x, axis=[1, 2, 3], keepdims=False)[:, None]


def test_square_queries_each_input_num_queries_plus_one_times():
    model = Counting()
    x = tf.random.uniform([4, 8, 8, 3], seed=1)
    square(model, x, tf.zeros([4], tf.int32), EPS, num_queries=30, seed=0)
    assert int(model.calls.numpy()) == 4 * 31  # the stripes, then 30 iterations


# ----------------------------------------------------------------- non-square images
def non_square_classifier(shape):
    """A small convnet (SmallCNN needs 12 x 12 at least) trained briefly on resized images."""
    with np.load(SAMPLE) as data:
        x = data["x_test"][:128].astype("float32") / 255.0
        y = data["y_test"][:128].astype("int32")
    x = tf.image.resize(x, shape[:2], antialias=True).numpy().clip(0, 1)
    keras.utils.set_random_seed(3)
    inputs = keras.Input(shape)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(32, activation="relu", name=PENULTIMATE)(h)
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    model.compile(keras.optimizers.Adam(3e-3), ce_loss())
    model.fit(x, y, epochs=8, batch_size=64, verbose=0)
    return model, x[:16], y[:16]


# Slow set: in the fast one, the batch-of-one tests and the parity tests cover odd shapes.
@pytest.fixture(scope="module", ids=["12x8", "8x12"], params=[
    pytest.param((12, 8, 3), marks=pytest.mark.slow),
    pytest.param((8, 12, 3), marks=pytest.mark.slow)])
def non_square(request):
    model, x, y = non_square_classifier(request.param)
    adversaries = {kind: fit_amortized_adversary(model, x, y, EPS, kind=kind, train_steps=2,
                                                 train_batch_size=8, generator_width=4,
                                                 generator_blocks=1, seed=1)
                   for kind in ("exp_am", "imp_am")}
    # p_init = 1 asks for a square larger than the short side: it must be capped. The source
    # of the transfer attack only needs the same input shape here.
    return model, x, y, attack_settings(adversaries, source=model,
                                        square={"num_queries": 20, "p_init": 1.0})


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_on_non_square_images(non_square, name):
    model, x, y, kwargs = non_square
    x_adv = ATTACKS[name](model, tf.constant(x), tf.constant(y), EPS, seed=4, **kwargs[name])
    x_adv = x_adv.numpy()
    assert x_adv.shape == x.shape
    assert np.abs(x_adv - x).max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
