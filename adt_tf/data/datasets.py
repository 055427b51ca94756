"""The datasets: their registry (`DatasetInfo`: shape, classes, augmentation, default
budgets), and the three sources: tfds names, local .npz folders (`npz:DIR`), the bundled
CIFAR-10 sample. Every source yields uint8 images [N, H, W, C] and integer labels [N]
(`Splits`); `adt_tf.data.pipeline` turns them into batches.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from importlib import resources

import numpy as np

from adt_tf.core import checks

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
NPZ_PREFIX = "npz:"
SAMPLE = "cifar10_sample"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the library needs to know about a dataset.

    Attributes:
        name: the name given to `load`.
        num_classes: number of labels.
        epsilon: the default L-infinity budget in the [0, 1] scale.
        augment: "crop_flip" or "none".
        class_names: names of the classes when known, else None.
        tfds_name: the tensorflow-datasets name, None for local sources.
        l2_epsilon: the default L2 budget (0.5 for CIFAR, RobustBench's L2 leaderboard; 2.0
            for MNIST), None where no usual value exists (give --epsilon).
        image_shape: (H, W, C) of its images.
    """

    name: str
    num_classes: int
    epsilon: float
    augment: str
    class_names: tuple[str, ...] | None = None
    tfds_name: str | None = None
    l2_epsilon: float | None = None
    image_shape: tuple[int, int, int] | None = None

    def default_epsilon(self, norm: str = "linf") -> float:
        """The dataset's budget for a norm ("linf" or "l2"), or a ValueError naming it."""
        if norm == "linf":
            return self.epsilon
        if norm == "l2" and self.l2_epsilon is not None:
            return self.l2_epsilon
        raise ValueError(f"Dataset {self.name!r} has no default {norm} epsilon; give "
                         "--epsilon.")


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 10, 8 / 255, "crop_flip", CIFAR10_CLASSES, "cifar10",
                           l2_epsilon=0.5, image_shape=(32, 32, 3)),
    "cifar100": DatasetInfo("cifar100", 100, 8 / 255, "crop_flip", None, "cifar100",
                            l2_epsilon=0.5, image_shape=(32, 32, 3)),
    "svhn_cropped": DatasetInfo("svhn_cropped", 10, 4 / 255, "none", tuple("0123456789"),
                                "svhn_cropped", image_shape=(32, 32, 3)),
    "mnist": DatasetInfo("mnist", 10, 0.3, "none", tuple("0123456789"), "mnist",
                         l2_epsilon=2.0, image_shape=(28, 28, 1)),
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, 0.1, "none", None, "fashion_mnist",
                                 image_shape=(28, 28, 1)),
    SAMPLE: DatasetInfo(SAMPLE, 10, 8 / 255, "crop_flip", CIFAR10_CLASSES, None,
                        l2_epsilon=0.5, image_shape=(32, 32, 3)),
}


@dataclasses.dataclass
class Splits:
    """Train and test arrays of a dataset (uint8 images, int64 labels) and its info."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: DatasetInfo

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def known_datasets() -> list[str]:
    return sorted(DATASETS) + [f"{NPZ_PREFIX}DIR"]


def dataset_info(name: str) -> DatasetInfo:
    """The info of a registered dataset or of an `npz:DIR` source (read from its files)."""
    if name.startswith(NPZ_PREFIX):
        return load(name).info
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; known: {', '.join(known_datasets())}.")
    return DATASETS[name]


def validate_arrays(x: np.ndarray, y: np.ndarray, num_classes: int, where: str) -> None:
    """Checks images are uint8 [N, H, W, C] and labels integers in [0, num_classes)."""
    if x.dtype != np.uint8:
        raise ValueError(f"{where}: images must be uint8 (0..255), got dtype {x.dtype}.")
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"{where}: images must have shape [N, H, W, C] with C in (1, 3), "
                         f"got {x.shape}.")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{where}: labels must have shape [{len(x)}], got {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{where}: labels must be integers, got dtype {y.dtype}.")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{where}: labels must lie in [0, {num_classes}), got values in "
                         f"[{y.min()}, {y.max()}].")


def _read_npz(path: str) -> dict[str, np.ndarray]:
    if not os.path.exists(path):
        raise ValueError(f"{path} does not exist; an npz: source needs train.npz and test.npz "
                         "with arrays x (uint8 N x H x W x C) and y (int labels).")
    if not os.path.isfile(path):
        raise ValueError(f"{path} is not a file; an npz: source needs train.npz and test.npz "
                         "files.")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("it holds one bare array, not named arrays x and y")
            missing = {"x", "y"} - set(data.files)
            if missing:
                raise ValueError(f"{path} lacks the arrays {sorted(missing)}; found "
                                 f"{data.files}, expected x (uint8 N x H x W x C) and y (int "
                                 "labels).")
            return {k: data[k] for k in data.files}
    except ValueError as err:
        if str(err).startswith(path):
            raise
        raise ValueError(f"{path} is not a readable .npz archive ({err}).") from err
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:  # truncated, CRC, empty
        raise ValueError(f"{path} is not a readable .npz archive ({type(err).__name__}: "
                         f"{err}); is the file complete?") from err


def _classes_from_labels(directory: str, train_y: np.ndarray, test_y: np.ndarray) -> int:
    """The class count of an npz: source without a `num_classes` array, from its labels: the
    training labels must be exactly 0..C-1 and the test labels among them, else one stray
    label would silently change the model's number of outputs."""
    if not (np.issubdtype(train_y.dtype, np.integer) and np.issubdtype(test_y.dtype,
                                                                        np.integer)):
        return int(max(train_y.max(), test_y.max())) + 1  # validate_arrays names the dtype
    present = np.unique(train_y)
    count = int(present.max()) + 1
    if present.min() < 0:
        return count  # validate_arrays names the negative labels
    missing = sorted(set(range(count)) - set(present.tolist()))
    stray = sorted(v for v in np.unique(test_y).tolist() if v >= count)
    if missing or stray:
        details = ([f"training labels skip {missing[:10]}"] if missing else []) + (
            [f"test labels {stray[:10]} never occur in training"] if stray else [])
        raise ValueError(f"{directory}: cannot tell the number of classes from the labels "
                         f"({'; '.join(details)}). Fix the labels, or state the count with an "
                         "array num_classes in train.npz.")
    return count


#: The most classes an npz: source may declare (beyond it, a typo or a unit error: the
#: classifier's last layer alone would not fit in memory).
MAX_CLASSES = 100_000


def _declared_classes(path: str, value: np.ndarray) -> int:
    """The `num_classes` array of train.npz as a count: one integer in [2, MAX_CLASSES]."""
    value = np.asarray(value)
    if value.size != 1:
        raise ValueError(f"{path}: num_classes must be one integer, got an array of shape "
                         f"{value.shape}.")
    raw = value.reshape(()).item()
    if isinstance(raw, (bytes, str)) or isinstance(raw, bool) or not isinstance(
            raw, (int, float)) or float(raw) != int(raw):
        raise ValueError(f"{path}: num_classes must be an integer, got {raw!r}.")
    count = int(raw)
    if not 2 <= count <= MAX_CLASSES:
        raise ValueError(f"{path}: num_classes must be between 2 (a classifier needs two "
                         f"classes) and {MAX_CLASSES:,}, got {count}.")
    return count


def _load_npz_dir(directory: str) -> Splits:
    train = _read_npz(os.path.join(directory, "train.npz"))
    test = _read_npz(os.path.join(directory, "test.npz"))
    for split, data, what in (("train.npz", train, "training"), ("test.npz", test, "test")):
        if len(data["x"]) == 0 or len(data["y"].ravel()) == 0:
            raise ValueError(f"{os.path.join(directory, split)} holds no {what} images.")
    if "num_classes" in train:
        num_classes = _declared_classes(os.path.join(directory, "train.npz"),
                                        train["num_classes"])
    else:
        num_classes = _classes_from_labels(directory, train["y"].ravel(), test["y"].ravel())
        if num_classes < 2:
            raise ValueError(f"{directory}: every label is {num_classes - 1}: a classifier "
                             "needs at least two classes (state num_classes in train.npz "
                             "if the data has more).")
    for split, data in (("train.npz", train), ("test.npz", test)):
        validate_arrays(data["x"], data["y"], num_classes, os.path.join(directory, split))
    if train["x"].shape[1:] != test["x"].shape[1:]:
        raise ValueError(f"{directory}: train images {train['x'].shape[1:]} and test images "
                         f"{test['x'].shape[1:]} differ in shape.")
    shape = train["x"].shape[1:]
    names = tuple(str(n) for n in train["class_names"]) if "class_names" in train else None
    if names is None and num_classes == 10 and shape == (32, 32, 3):
        names = CIFAR10_CLASSES if "cifar10" in os.path.abspath(directory) else None
    info = DatasetInfo(
        name=f"{NPZ_PREFIX}{directory}", num_classes=num_classes, epsilon=8 / 255,
        augment="crop_flip" if shape == (32, 32, 3) else "none", class_names=names,
        l2_epsilon=0.5 if shape == (32, 32, 3) else None,
        image_shape=tuple(int(d) for d in shape))
    return Splits(train["x"], train["y"].astype(np.int64), test["x"], test["y"].astype(np.int64),
                  info)


def _load_sample() -> Splits:
    ref = resources.files("adt_tf").joinpath("data_files", "cifar10_sample.npz")
    with resources.as_file(ref) as path, np.load(path) as data:
        return Splits(data["x_train"], data["y_train"], data["x_test"], data["y_test"],
                      DATASETS[SAMPLE])


def _load_tfds(info: DatasetInfo, data_dir: str | None) -> Splits:
    import tensorflow_datasets as tfds

    try:
        (x_tr, y_tr), (x_te, y_te) = tfds.as_numpy(tfds.load(
            info.tfds_name, split=["train", "test"], as_supervised=True, batch_size=-1,
            data_dir=data_dir))
    except Exception as err:  # network, missing files, checksum: all end the same way
        raise RuntimeError(
            f"Could not load {info.tfds_name!r} with tensorflow-datasets ({type(err).__name__}: "
            f"{err}). Without network access, download it elsewhere or save it as train.npz and "
            "test.npz (arrays x: uint8 N x H x W x C, y: int labels) in a folder DIR and pass "
            f"--dataset=npz:DIR; the bundled '{SAMPLE}' needs no download.") from err
    splits = Splits(x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), info)
    validate_arrays(splits.x_train, splits.y_train, info.num_classes, info.name)
    return splits


def load(name: str, data_dir: str | None = None, max_train_examples: int | None = None,
         max_test_examples: int | None = None) -> Splits:
    """Loads a dataset as NumPy arrays.

    Args:
        name: a tfds name (cifar10, cifar100, svhn_cropped, mnist, fashion_mnist), the
            bundled `cifar10_sample` (2,000 pixel-exact CIFAR-10 training images, 200 per
            class, and the first 500 test images), or `npz:DIR` for DIR/train.npz and
            DIR/test.npz with arrays x (uint8 [N, H, W, C]) and y (int labels).
        data_dir: where tfds keeps its files (tfds's default if None).
        max_train_examples: keep only the first N training examples (None keeps all).
        max_test_examples: keep only the first N test examples.

    Returns:
        A `Splits`.
    """
    if name.startswith(NPZ_PREFIX):
        splits = _load_npz_dir(name[len(NPZ_PREFIX):])
    elif name == SAMPLE:
        splits = _load_sample()
    elif name in DATASETS:
        splits = _load_tfds(DATASETS[name], data_dir)
    else:
        raise ValueError(f"Unknown dataset {name!r}; known: {', '.join(known_datasets())}.")
    if max_train_examples is not None:
        n = checks.check_positive_int(max_train_examples, "max_train_examples")
        splits.x_train, splits.y_train = splits.x_train[:n], splits.y_train[:n]
    if max_test_examples is not None:
        n = checks.check_positive_int(max_test_examples, "max_test_examples")
        splits.x_test, splits.y_test = splits.x_test[:n], splits.y_test[:n]
    return splits
