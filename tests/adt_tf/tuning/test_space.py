"""`adt_tf.tuning.space`: the default lambdas, log-spaced ranges, the knobs per method."""

import inspect

import numpy as np

from adt_tf import tuning
from adt_tf.methods import METHODS


def test_default_space_is_the_papers_lambdas_and_ranges_are_log_spaced():
    assert tuning.SearchSpace().lambdas() == tuning.PAPER_LAMBDAS
    fine = tuning.SearchSpace(lambda_min=1e-3, lambda_max=1e-1, points_per_decade=2).lambdas()
    assert fine == (0.0, 0.001, 0.00316, 0.01, 0.0316, 0.1)
    ratios = np.diff(np.log10(fine[1:]))
    np.testing.assert_allclose(ratios, 0.5, atol=0.01)  # equal steps on a log scale
    assert 0.0 not in tuning.SearchSpace(include_zero=False).lambdas()
    assert tuning.SearchSpace(values=(0.1, 0.0, 0.1)).lambdas() == (0.0, 0.1)


def test_knob_declarations_match_the_registered_methods():
    for method, (primary, optional) in tuning.METHOD_KNOBS.items():
        assert set(primary + optional) <= set(tuning.KNOBS), method
        if method in METHODS:  # a renamed primary argument must not be dropped silently
            args = inspect.signature(METHODS[method].__init__).parameters
            assert all(k in args for k in primary), (method, primary)
    assert tuning.knobs_to_search("adt_exp") == ("entropy_weight",)
    assert tuning.knobs_to_search("adt_exp", ["mc_samples", "inner_lr"]) == (
        "entropy_weight", "inner_lr", "mc_samples")
    assert tuning.knobs_to_search("standard") == ()
