"""Datasets: tfds names, local .npz folders, the bundled CIFAR-10 sample; tf.data pipelines.

Every source yields uint8 images [N, H, W, C] and integer labels [N]; `make_dataset` turns
them into float32 batches in [0, 1] (the project's pixel convention), with the augmentation
of the ADT reference code (random crop with 4-pixel zero padding and horizontal flip for
CIFAR, none for SVHN and MNIST).
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from importlib import resources

import numpy as np
import tensorflow as tf

from adt_tf import checks

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


def stratified_split(y: np.ndarray, n: int, seed: int, flag: str = "--validation_examples"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Holds out n examples, each class in its share of the labels, by a seeded draw.

    Args:
        y: the training labels [N].
        n: examples to hold out (>= the number of classes, so each is represented; at most
            N minus the number of classes, so each keeps one to train on).
        seed: the draw's seed (the same seed and labels give the same split).
        flag: how error messages name n.

    Mathematical details:
        Class c with N_c examples gets q_c = floor(n N_c / N) places, and the n - sum q_c
        left go to the classes with the largest remainders n N_c / N - q_c (ties to the
        smaller class index); at least one place each, none a whole class. Within a class
        the q_c examples are a uniform draw (numpy's default_rng(seed) permutation).

    Returns:
        (train_indices, validation_indices), both sorted, disjoint, covering range(N).

    Raises:
        ValueError: naming `flag` and the value when n is out of range or the labels cannot
            be stratified so (a class with a single example).
    """
    y = np.asarray(y).reshape(-1)
    total = len(y)
    classes, counts = np.unique(y, return_counts=True)
    n = int(n)
    single = classes[counts < 2]
    if len(single):
        raise ValueError(f"{flag}={n}: the training set is too small to stratify: class "
                         f"{single[0]} has a single example (it cannot be both trained on and "
                         "held out).")
    if n < len(classes) or n > total - len(classes):
        raise ValueError(f"{flag} must be between {len(classes)} (one per class) and "
                         f"{total - len(classes)} (a training example left in each class) "
                         f"for these {total} training examples, got {n}.")
    exact = n * counts / total
    quota = np.floor(exact).astype(int)
    order = np.lexsort((np.arange(len(classes)), -(exact - quota)))
    quota[order[:n - quota.sum()]] += 1
    quota = np.clip(quota, 1, counts - 1)
    while quota.sum() > n:  # the clipping above can only have added places
        quota[np.argmax(np.where(quota > 1, quota - exact, -np.inf))] -= 1
    while quota.sum() < n:
        room = np.where(quota < counts - 1, exact - quota, -np.inf)
        quota[np.argmax(room)] += 1
    rng = np.random.default_rng(seed)
    held = [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota)]
    val = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(total), val)
    return train, val


def as_unit_float(x) -> np.ndarray:
    """Images as float32 in the [0, 1] scale: uint8 pixels divided by 255, any other array
    cast to float32 with its values kept (the one place this conversion is written)."""
    x = np.asarray(x)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def unit_float_image(image: tf.Tensor) -> tf.Tensor:
    """`as_unit_float` inside a tf.data pipeline: uint8 pixels as float32 in [0, 1]."""
    return tf.cast(image, tf.float32) / 255.0


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images, in the [0, 1] scale."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64) / 255.0
    return flat.mean(axis=0).tolist(), np.maximum(flat.std(axis=0), 1e-3).tolist()


def _crop_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Zero-pad by 4 pixels, crop back at a random offset, flip left-right at random."""
    shape = tf.shape(image)
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    seeds = tf.random.experimental.stateless_split(seed, 2)
    cropped = tf.image.stateless_random_crop(padded, shape, seed=seeds[0])
    return tf.image.stateless_random_flip_left_right(cropped, seed=seeds[1])


def _reshuffled_epochs(images, labels, batch_size: int, augment: str, seed: int):
    """One epoch, drawn anew on each pass: tf.data's seeded reshuffle for the order and a
    seeded random stream re-drawn on each pass for the augmentation."""
    n = int(images.shape[0])
    order = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)

    def example(index, draw):
        image = unit_float_image(tf.gather(images, index))
        if augment == "crop_flip":
            image = _crop_flip(image, tf.stack([draw, index]))
        return image, tf.gather(labels, index)

    ds = tf.data.Dataset.zip((order, draws)).map(example, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, training: bool,
                 augment: str = "none", seed: int = 0, first_epoch: int = 0,
                 num_epochs: int | None = None) -> tf.data.Dataset:
    """A tf.data pipeline of (float32 images in [0, 1], int32 labels) batches.

    For training there are two forms:
    - `num_epochs=None` (the default): one epoch, drawn anew on each pass over the dataset
      (tf.data's seeded reshuffling: `fit(ds, epochs=5)` sees five orders and five
      augmentations, the same ones in every process for the same seed);
    - `num_epochs=k`: the batches of epochs `first_epoch` .. `first_epoch + k - 1` follow
      one another (pass `steps_per_epoch` to `fit`), each epoch's order and augmentation a
      function of (`seed`, epoch number) alone, so a run resumed at epoch e sees exactly the
      batches an uninterrupted run sees from epoch e on (what `adt-train` uses).

    Args:
        x: uint8 images; y: integer labels.
        batch_size: examples per batch (an epoch's last batch may be smaller).
        training: shuffle (another order every epoch) and augment.
        augment: "crop_flip" (CIFAR) or "none"; used only when training.
        seed: seed of the order and of the augmentation.
        first_epoch, num_epochs: the epochs the training stream holds (see above).
    """
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    checks.check_choice(augment, "augmentation", ("crop_flip", "none"))
    if not training:
        ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
        ds = ds.map(lambda image, label: (unit_float_image(image), label),
                    num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    if first_epoch < 0:
        raise ValueError(f"first_epoch must be >= 0, got {first_epoch}.")
    images, labels = tf.constant(x), tf.constant(y.astype(np.int32))
    n = len(x)
    if num_epochs is None:
        if first_epoch:
            raise ValueError("first_epoch applies to a stream of epochs: give num_epochs.")
        return _reshuffled_epochs(images, labels, batch_size, augment, int(seed))
    checks.check_positive_int(num_epochs, "num_epochs")
    run_key = tf.constant([int(seed) % 2**63, 0x5EED], tf.int64)

    def epoch_batches(epoch):
        keys = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(run_key, epoch), 2)
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=keys[0])

        def example(index, position):
            image = unit_float_image(tf.gather(images, index))
            if augment == "crop_flip":
                image = _crop_flip(image, tf.random.experimental.stateless_fold_in(
                    keys[1], position))
            return image, tf.gather(labels, index)

        ds = tf.data.Dataset.from_tensor_slices((order, tf.range(n)))
        return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)

    epochs = tf.data.Dataset.range(first_epoch, first_epoch + num_epochs)
    return epochs.flat_map(epoch_batches).prefetch(tf.data.AUTOTUNE)
