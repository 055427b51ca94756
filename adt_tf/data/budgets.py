"""The dataset's default budget: a command's threat model from `--norm` and `--epsilon`, the
radius defaulting to the dataset's (the one place the default budget is chosen)."""

from __future__ import annotations

from adt_tf.core import checks
from adt_tf.data.datasets import DatasetInfo, dataset_info
from adt_tf.threat import THREATS, Ball, make_threat


def resolve_threat(norm: str, epsilon: float | None, dataset: str | DatasetInfo) -> Ball:
    """A command's threat model: `--norm` with `--epsilon`, or, when `epsilon` is None, with
    the dataset's budget for that norm (the one place the default budget is chosen).

    Args:
        norm: "linf" or "l2".
        epsilon: the radius, or None for the dataset's default.
        dataset: a dataset name (an `npz:DIR` one is read for its info) or its `DatasetInfo`,
            which saves reading an `npz:` source again.
    """
    checks.check_choice(norm, "norm", tuple(THREATS))
    if epsilon is None:
        info = dataset if isinstance(dataset, DatasetInfo) else dataset_info(dataset)
        epsilon = info.default_epsilon(norm)
    return make_threat(norm, epsilon)


__all__ = ["resolve_threat"]
