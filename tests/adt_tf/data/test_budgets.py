"""`adt_tf.data.budgets` and the datasets' default budgets."""

import dataclasses

import pytest

from adt_tf import data as data_lib
from adt_tf.threat import L2Ball, LinfBall


def test_resolve_threat_takes_the_given_radius_or_the_dataset_default():
    from adt_tf.data import DATASETS, resolve_threat

    default = resolve_threat("linf", None, "cifar10")
    assert isinstance(default, LinfBall) and default.epsilon == 8 / 255
    default_l2 = resolve_threat("l2", None, DATASETS["cifar10"])  # a DatasetInfo is taken too
    assert isinstance(default_l2, L2Ball) and default_l2.epsilon == 0.5
    assert resolve_threat("l2", 0.25, "cifar10").epsilon == 0.25  # the given radius wins
    with pytest.raises(ValueError, match="did you mean 8/255"):
        resolve_threat("linf", 8, "cifar10")  # a given radius is checked
    with pytest.raises(ValueError, match="norm"):
        resolve_threat("l1", None, "cifar10")  # the norm is checked before any default
    with pytest.raises(ValueError, match="no default l2 epsilon"):
        resolve_threat("l2", None, dataclasses.replace(DATASETS["cifar10"], l2_epsilon=None))


def test_default_budgets():
    expected = {"cifar10": 8 / 255, "cifar100": 8 / 255, "svhn_cropped": 4 / 255,
                "mnist": 0.3, "fashion_mnist": 0.1}
    for name, eps in expected.items():
        assert data_lib.dataset_info(name).epsilon == pytest.approx(eps)
    assert data_lib.dataset_info("svhn_cropped").augment == "none"
    assert data_lib.dataset_info("cifar10").augment == "crop_flip"
