"""`adt_tf.data.split`: the stratified, seeded validation split."""

from __future__ import annotations

import numpy as np
import pytest

from adt_tf import data as data_lib


def test_the_split_is_stratified_disjoint_and_seeded():
    y = np.repeat(np.arange(10), [50, 40, 30, 30, 30, 20, 20, 20, 10, 10])
    train, val = data_lib.stratified_split(y, 52, seed=3)
    assert len(val) == 52 and len(train) == len(y) - 52
    assert not set(train) & set(val) and sorted(np.concatenate([train, val])) == list(
        range(len(y)))
    counts = np.bincount(y[val], minlength=10)
    np.testing.assert_allclose(counts, 52 * np.bincount(y) / len(y), atol=1)  # proportional
    assert np.all(counts >= 1)
    again, other = data_lib.stratified_split(y, 52, seed=3)[1], data_lib.stratified_split(
        y, 52, seed=4)[1]
    np.testing.assert_array_equal(again, val)
    assert set(other) != set(val)


@pytest.mark.parametrize("n,match", [(5, "between 10 .one per class."),
                                     (1000, r"between 10 .* and 270"),
                                     ])
def test_the_split_refuses_sizes_it_cannot_stratify(n, match):
    y = np.repeat(np.arange(10), 28)
    with pytest.raises(ValueError, match=match):
        data_lib.stratified_split(y, n, 0)
    with pytest.raises(ValueError, match="too small to stratify: class 2 has a single example"):
        data_lib.stratified_split(np.array([0, 0, 0, 1, 1, 1, 2, 3, 3, 3]), 4, 0)
