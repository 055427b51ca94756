"""Data: the datasets, the tf.data pipeline, the one validation split, the dataset's default
budget. Imports `adt_tf.core` and `adt_tf.threat` (for the budget's ball) only.

- `datasets`: `DatasetInfo` and the registry, the three sources (tfds, `npz:DIR`, the
  bundled sample), `load` -> `Splits` (uint8 images, integer labels).
- `pipeline`: `make_dataset` (batches in [0, 1], the reference's augmentation, epochs a
  function of the seed), `as_unit_float`, `channel_stats`.
- `split`: `stratified_split`, the held-out validation split.
- `budgets`: `resolve_threat`, a command's ball with the dataset's default radius.

The names below are this package's API (`from adt_tf import data as data_lib;
data_lib.load(...)`).
"""

from adt_tf.data.budgets import resolve_threat
from adt_tf.data.datasets import (
    CIFAR10_CLASSES,
    DATASETS,
    NPZ_PREFIX,
    SAMPLE,
    DatasetInfo,
    Splits,
    dataset_info,
    known_datasets,
    load,
    validate_arrays,
)
from adt_tf.data.pipeline import as_unit_float, channel_stats, make_dataset, unit_float_image
from adt_tf.data.split import stratified_split

__all__ = ["CIFAR10_CLASSES", "DATASETS", "NPZ_PREFIX", "SAMPLE", "DatasetInfo", "Splits",
           "as_unit_float", "channel_stats", "dataset_info", "known_datasets", "load",
           "make_dataset", "resolve_threat", "stratified_split", "unit_float_image",
           "validate_arrays"]
