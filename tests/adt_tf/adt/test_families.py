"""The richer Gaussian bases of ADT's explicit distribution (adt_tf/adt/families.py): exact
-log p against a dense brute force for both balls, the diagonal path at the initial factors,
the samples' covariance, gradients to every parameter, the inner loop with the extra factors,
and the bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from adt_tf.adt.distributions import ExplicitAdversarialDistribution
from adt_tf.adt.families import GaussianFamily, unused_settings
from adt_tf.adt.inner_maximization import explicit_inner_maximization
from adt_tf.core.noise import RecordedNoise
from adt_tf.threat import L2Ball, LinfBall
from tests.helpers import tiny_classifier

tfd = tfp.distributions
EVENT = (4, 4, 3)  # D = 48: the matrix-normal reshaping is 4 x 12
D = 48
BALLS = [LinfBall(8 / 255), L2Ball(0.5)]


def _params(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    loc = tf.constant(rng.normal(size=(batch,) + EVENT) * 0.5, tf.float32)
    raw = tf.constant(rng.normal(size=(batch,) + EVENT) * 0.5, tf.float32)
    return loc, raw


def _factors(family, batch=2, seed=1):
    """Factors away from the diagonal distribution (random entries, log-diagonals too)."""
    rng = np.random.default_rng(seed)
    base = family.init_factors(tf.zeros((batch,) + EVENT), tf.constant([0, 0]))
    return [tf.constant(rng.normal(size=f.shape) * 0.3, tf.float32) for f in base]


GAUSSIANS = [GaussianFamily("lowrank", rank=3), GaussianFamily("matrix_normal")]
FAMILIES = [*GAUSSIANS, GaussianFamily("coupling", rank=4)]


@pytest.mark.parametrize("ball", BALLS, ids=lambda b: b.norm)
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_neg_log_prob_equals_a_dense_brute_force(family, ball):
    """-log p(delta) from the pre-tanh u equals MultivariateNormalTriL with the family's full
    covariance, through the same bijector (float64 reference)."""
    loc, raw = _params()
    factors = _factors(family)
    dist = ExplicitAdversarialDistribution(loc, raw, ball, family, factors)
    sample = dist.sample(4, seed=tf.constant([5, 6]))
    u = tf.reshape(sample.pre_tanh, [4, 2, D])
    u64 = tf.cast(u, tf.float64)
    log_det = ball.bijector(dtype=tf.float64).forward_log_det_jacobian(u64, event_ndims=1)
    if family.name == "coupling":
        log_q = _flow_log_density_by_brute_force(family, loc, raw, factors, u64)
    else:
        scale = tf.reshape(tf.nn.softplus(raw), [2, D])
        cov = tf.cast(family.dense_covariance(scale, dist.factors, EVENT), tf.float64)
        reference = tfd.MultivariateNormalTriL(tf.cast(tf.reshape(loc, [2, D]), tf.float64),
                                               tf.linalg.cholesky(cov))
        log_q = reference.log_prob(u64)
    expected = -(log_q - log_det) / D
    np.testing.assert_allclose(sample.neg_log_prob.numpy(), expected.numpy(), rtol=1e-5,
                               atol=1e-5)


def _flow_log_density_by_brute_force(family, loc, raw, factors, u):
    """log q(u) = log N(F^-1(u); mu, sigma) - log |det dF/dz| at z = F^-1(u), the flow's
    Jacobian taken by automatic differentiation, its determinant by slogdet (float64)."""
    f64 = [tf.cast(f, tf.float64) for f in factors]
    flow = family._flow(f64, EVENT)
    z = flow.inverse(u)
    out = []
    for k in range(u.shape[0]):
        for b in range(u.shape[1]):
            zk = z[k, b]

            def forward_one(v, b=b, k=k):
                full = tf.tensor_scatter_nd_update(z[k], [[b]], v[None])
                return flow.forward(full)[b]

            with tf.GradientTape() as tape:
                tape.watch(zk)
                yk = forward_one(zk)
            _, logdet = tf.linalg.slogdet(tape.jacobian(yk, zk))
            normal = tfd.MultivariateNormalDiag(
                tf.cast(tf.reshape(loc, [2, D])[b], tf.float64),
                tf.cast(tf.reshape(tf.nn.softplus(raw), [2, D])[b], tf.float64))
            out.append(normal.log_prob(zk) - logdet)
    return tf.reshape(tf.stack(out), [u.shape[0], u.shape[1]])


@pytest.mark.parametrize("family", GAUSSIANS, ids=lambda f: f.name)
def test_the_samples_have_the_familys_covariance(family):
    loc, raw = _params(batch=1)
    factors = _factors(family, batch=1)
    dist = ExplicitAdversarialDistribution(loc, raw, LinfBall(8 / 255), family, factors)
    u = tf.reshape(dist.sample(40000, seed=tf.constant([1, 2])).pre_tanh, [40000, D]).numpy()
    want = family.dense_covariance(tf.reshape(tf.nn.softplus(raw), [1, D]), dist.factors,
                                   EVENT).numpy()[0]
    got = np.cov(u, rowvar=False)
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    np.testing.assert_allclose(u.mean(0), tf.reshape(loc, [D]).numpy(),
                               atol=0.05 * np.sqrt(np.diag(want)).max())


@pytest.mark.parametrize("ball", BALLS, ids=lambda b: b.norm)
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_at_the_initial_factors_each_family_is_the_diagonal_one(family, ball):
    """U = 0, A = B = I: the same samples and -log p as the diagonal family, on the same
    recorded draws (the low-rank family's extra z is drawn after n and multiplies U = 0)."""
    loc, raw = _params()
    draws = np.random.default_rng(3).normal(size=3 * 2 * D + 3 * 2 * family.rank)
    diag = ExplicitAdversarialDistribution(loc, raw, ball).sample(
        3, tf.constant([0, 0]), RecordedNoise(normal=draws))
    factors = family.init_factors(tf.zeros((2,) + EVENT), tf.constant([0, 0]))
    rich = ExplicitAdversarialDistribution(loc, raw, ball, family, factors).sample(
        3, tf.constant([0, 0]), RecordedNoise(normal=draws))
    np.testing.assert_array_equal(rich.delta.numpy(), diag.delta.numpy())
    np.testing.assert_allclose(rich.neg_log_prob.numpy(), diag.neg_log_prob.numpy(),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_gradients_reach_every_parameter(family):
    loc, raw = _params()
    factors = _factors(family)
    with tf.GradientTape() as tape:
        tape.watch([loc, raw, *factors])
        dist = ExplicitAdversarialDistribution(loc, raw, LinfBall(8 / 255), family, factors)
        sample = dist.sample(2, tf.constant([1, 1]))
        value = tf.reduce_sum(tf.sin(3.0 * sample.delta)) + tf.reduce_sum(sample.neg_log_prob)
    for grad in tape.gradient(value, [loc, raw, *factors]):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_the_inner_loop_fits_the_factors_and_at_their_start_is_the_diagonal_loop(family):
    """With a vanishing step for the factors (which start at the diagonal distribution) the
    inner loop's output equals the diagonal loop's up to float rounding (the families'
    log-densities are other formulas for the same numbers: 2.6e-5 apart at most here); with
    a positive step the factors move."""
    x = tf.random.stateless_uniform((4, 16, 16, 3), [1, 2])
    y = tf.constant([0, 1, 2, 3])
    model = tiny_classifier()
    common = dict(threat=LinfBall(8 / 255), entropy_weight=0.01, steps=3, samples=2, lr=0.3,
                  beta1=0.0, beta2=0.0, seed=tf.constant([4, 4]))
    diag = explicit_inner_maximization(model, x, y, **common)
    frozen = GaussianFamily(family.name, rank=family.rank, factor_lr=1e-30)
    still = explicit_inner_maximization(model, x, y, family=frozen, **common)
    np.testing.assert_allclose(still.loc.numpy(), diag.loc.numpy(), atol=1e-4)
    np.testing.assert_allclose(still.raw_scale.numpy(), diag.raw_scale.numpy(), atol=1e-4)
    np.testing.assert_allclose(float(still.objective), float(diag.objective), rtol=1e-6)
    moving = explicit_inner_maximization(model, x, y, family=GaussianFamily(
        family.name, rank=family.rank, factor_lr=0.05), **common)
    start = family.init_factors(x, tf.constant([0, 0]))
    assert any(float(tf.reduce_max(tf.abs(f - s))) > 0.01
               for f, s in zip(moving.factors, start))


def test_a_bad_family_setting_names_it():
    with pytest.raises(ValueError, match="family"):
        GaussianFamily("flow")
    with pytest.raises(ValueError, match="rank"):
        GaussianFamily("lowrank", rank=0)
    with pytest.raises(ValueError, match="rank=49"):
        GaussianFamily("lowrank", rank=49).check(EVENT)
    with pytest.raises(ValueError, match="rows=5"):
        GaussianFamily("matrix_normal", rows=5).check(EVENT)
    with pytest.raises(ValueError, match="factor_lr"):
        GaussianFamily("lowrank", factor_lr=0)


def test_the_parameter_counts():
    assert GaussianFamily("diag").parameter_count((32, 32, 3)) == 6144
    assert GaussianFamily("lowrank", rank=8).parameter_count((32, 32, 3)) == 6144 + 3072 * 8
    assert GaussianFamily("matrix_normal").parameter_count((32, 32, 3)) == (
        6144 + 32 * 32 + 32 + 96 * 96 + 96)
    assert GaussianFamily("coupling", rank=8).parameter_count((32, 32, 3)) == (
        6144 + 2 * (1536 * 8 + 8 * 2 * 1536))


@pytest.mark.parametrize("lead", [(3,), (), (2, 3)], ids=["k", "none", "two"])
@pytest.mark.parametrize("family", GAUSSIANS, ids=lambda f: f.name)
def test_the_closed_forms_are_tfps_densities(family, lead):
    """`GaussianFamily.log_prob` evaluates the low-rank density (Woodbury, a Cholesky of the
    R x R capacitance) and the matrix-normal one (two triangular solves) itself; where the
    shapes are static each equals TFP's (MultivariateNormalDiagPlusLowRankCovariance,
    MatrixNormalLinearOperator), for any number of leading sample dimensions."""
    loc, raw = _params()
    factors = _factors(family)
    flat_loc = tf.reshape(loc, [2, -1])
    scale = tf.reshape(tf.math.softplus(raw), [2, -1])
    base = family.base(flat_loc, scale, factors, EVENT)
    u = flat_loc + scale * tf.random.stateless_normal([*lead, 2, D], seed=[4, 5])
    mine = family.log_prob(base, u, flat_loc, scale, factors, EVENT)
    assert mine.shape == (*lead, 2)
    np.testing.assert_allclose(mine, base.log_prob(u), rtol=1e-5)


def test_the_matrix_normal_inner_loop_runs_with_an_unknown_batch_size():
    """A training step traces with the batch dimension unknown (the last batch may be
    smaller); TensorFlow's Kronecker solve under TFP's matrix-normal density fails there,
    the closed form does not."""
    image = (16, 16, 3)
    model = tiny_classifier(image)
    family = GaussianFamily("matrix_normal")

    @tf.function(input_signature=[tf.TensorSpec([None, *image]), tf.TensorSpec([None], tf.int32)])
    def fit(x, y):
        return explicit_inner_maximization(
            model, x, y, threat=LinfBall(8 / 255), entropy_weight=0.01, steps=2, samples=2,
            lr=0.3, beta1=0.0, beta2=0.0, seed=tf.constant([1, 2]), family=family).loc

    x = tf.random.stateless_uniform([3, *image], seed=[1, 1])
    assert fit(x, tf.constant([0, 1, 2])).shape == (3, *image)


@pytest.mark.parametrize("name", ["diag", "lowrank", "matrix_normal", "coupling"])
def test_the_settings_a_family_does_not_use_change_nothing(name):
    """`unused_settings` (what the "same run?" comparison leaves out) is true: with each of a
    family's unused settings changed, the inner loop's output is the same to the bit; a used
    one (the factor step of a factored family) changes it."""
    x = tf.random.stateless_uniform((4, 16, 16, 3), [5, 6])
    y = tf.constant([0, 1, 2, 3])
    model = tiny_classifier()
    common = dict(threat=LinfBall(8 / 255), entropy_weight=0.01, steps=2, samples=2, lr=0.3,
                  beta1=0.0, beta2=0.0, seed=tf.constant([7, 7]))
    base = dict(rank=3, rows=0, factor_lr=0.05, factor_init=0.1)
    other = dict(rank=5, rows=8, factor_lr=0.02, factor_init=0.3)

    def outputs(**settings):
        out = explicit_inner_maximization(model, x, y, family=GaussianFamily(name, **settings),
                                          **common)
        return [t.numpy() for t in (out.loc, out.raw_scale, *out.factors)]

    reference = outputs(**base)
    for setting in unused_settings(name):
        changed = outputs(**{**base, setting: other[setting]})
        assert len(changed) == len(reference)
        for a, b in zip(changed, reference):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}: {setting}")
    if "factor_lr" not in unused_settings(name):
        changed = outputs(**{**base, "factor_lr": other["factor_lr"]})
        assert not all(np.array_equal(a, b) for a, b in zip(changed, reference))
