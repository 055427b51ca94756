"""`adt_tf.analysis.diversity`: pairwise distances, PCA, EXP and PGD samples."""

import json

import numpy as np
import pytest

from adt_tf.analysis import (
    average_pairwise_distance,
    diversity_analysis,
    exp_samples,
    pca_project,
    pgd_samples,
)
from adt_tf.threat import L2Ball
from tests.adt_tf.analysis.helpers import EPS
from tests.helpers import make_tiny_images, tiny_classifier


def test_average_pairwise_distance_equals_direct_numpy():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(3, 5, 4, 4, 3)).astype(np.float32)
    expected = []
    for s in samples:
        flat = s.reshape(5, -1).astype(np.float64)
        d = [np.linalg.norm(flat[i] - flat[j]) for i in range(5) for j in range(i + 1, 5)]
        expected.append(np.mean(d))
    np.testing.assert_allclose(average_pairwise_distance(samples), expected, rtol=1e-10)
    # Identical samples are at distance 0 (no NaN from rounding below zero).
    same = np.repeat(samples[:, :1], 4, axis=1) + 0.3
    np.testing.assert_array_equal(average_pairwise_distance(same), 0.0)


def test_pca_equals_numpy_svd_projection():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(12, 6, 6, 2)) * np.linspace(0.1, 3, 72).reshape(6, 6, 2)
    projection, ratio = pca_project(points, 2)
    centred = points.reshape(12, -1) - points.reshape(12, -1).mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    assert projection.shape == (12, 2)
    for c in range(2):  # a principal axis is defined up to its sign
        sign = np.sign(expected[:, c] @ projection[:, c])
        np.testing.assert_allclose(projection[:, c], sign * expected[:, c], atol=1e-8)
    np.testing.assert_allclose(ratio, s[:2] ** 2 / np.sum(s**2), rtol=1e-8)


def test_pgd_and_exp_samples_stay_in_the_ball_and_differ():
    x, y = make_tiny_images(3, 16)
    model = tiny_classifier()
    for fn in (exp_samples, pgd_samples):
        kwargs = {"mc_samples": 2} if fn is exp_samples else {}
        samples = fn(model, x, y, EPS, 4, steps=2, seed=3, **kwargs).numpy()
        assert samples.shape == (4, 3, 16, 16, 3)
        assert np.abs(samples - x[None]).max() <= EPS + 1e-6
        assert samples.min() >= 0 and samples.max() <= 1
        assert np.all(average_pairwise_distance(np.swapaxes(samples, 0, 1)) > 0), fn.__name__


@pytest.mark.parametrize("family", ["lowrank", "matrix_normal"])
def test_exp_samples_of_a_richer_family_fit_its_factors_and_stay_in_the_ball(family):
    """The family reaches the fit (its factors move from their start, the identity / zero)
    and the samples (in the ball, other than the diagonal distribution's on the same seed)."""
    x, y = make_tiny_images(3, 16)
    model = tiny_classifier()
    kwargs = dict(steps=2, mc_samples=2, seed=3, rank=2, return_fit=True)
    samples, fit = exp_samples(model, x, y, EPS, 4, family=family, **kwargs)
    diag, _ = exp_samples(model, x, y, EPS, 4, **kwargs)
    samples = samples.numpy()
    assert np.abs(samples - x[None]).max() <= EPS + 1e-6
    assert samples.min() >= 0 and samples.max() <= 1
    # Every factor starts at zero (U; the triangles' entries and log-diagonals).
    assert fit.factors and max(float(np.abs(np.asarray(f)).max()) for f in fit.factors) > 0
    assert not np.allclose(samples, diag.numpy())


@pytest.mark.slow
def test_l2_samples_stay_in_the_l2_ball_and_the_analysis_takes_the_norm():
    x, y = make_tiny_images(3, 16)
    model = tiny_classifier()
    for fn in (exp_samples, pgd_samples):
        kwargs = {"mc_samples": 2} if fn is exp_samples else {}
        samples = fn(model, x, y, L2Ball(0.5), 4, steps=2, seed=3, **kwargs).numpy()
        norms = np.linalg.norm((samples - x[None]).reshape(12, -1), axis=1)
        assert norms.max() <= 0.5 * (1 + 1e-5) and samples.min() >= 0 and samples.max() <= 1
        assert norms.max() > 3 * np.abs(samples - x[None]).max()  # an L2 shape, not a box
        assert np.all(average_pairwise_distance(np.swapaxes(samples, 0, 1)) > 0), fn.__name__
    result = diversity_analysis(model, x, y, L2Ball(0.5), num_samples=3, exp_steps=2,
                                exp_mc_samples=2, pgd_steps=2, batch_size=3, num_projected=1,
                                verbose=False)
    # Two points of the ball are at most its diameter apart.
    assert np.all(result.exp_distance <= 1.0 + 1e-5) and np.all(result.pgd_distance <= 1.0)
    assert result.settings["norm"] == "l2"


def test_diversity_analysis_numbers_and_projections():
    x, y = make_tiny_images(4, 16)
    result = diversity_analysis(tiny_classifier(), x, y, EPS, num_samples=3, exp_steps=2,
                                exp_mc_samples=2, pgd_steps=2, batch_size=2, num_projected=3,
                                verbose=False)
    diameter = 2 * EPS * np.sqrt(16 * 16 * 3)  # the largest L2 distance inside the ball
    for d in (result.exp_distance, result.pgd_distance):
        assert d.shape == (4,) and np.all(d > 0) and np.all(d <= diameter)
    assert len(result.projections) == 3  # spread over two batches
    assert result.projections[0][0].shape == (3, 2) == result.projections[0][1].shape
    assert 0 <= result.exp_fooling_rate <= 1 and 0 <= result.pgd_fooling_rate <= 1
    blob = json.loads(json.dumps(result.to_json()))
    assert blob["exp_mean_distance"] == pytest.approx(result.exp_distance.mean())
    assert blob["settings"]["num_samples"] == 3
