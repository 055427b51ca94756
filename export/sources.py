"""What an export starts from: a saved classifier or a training workdir, and real images.

A training workdir (written by `adt-train`) holds `config.json` (the run's record: every
setting resolved, the dataset and the threat model among them), `classifier.keras` and, after
the final evaluation, `report.json` (clean and PGD-20 accuracy). A bare `.keras` file carries
no dataset: class names and images then come from `--dataset` or from the bundled CIFAR-10
sample.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from adt_tf import data as data_lib
from adt_tf.artifacts import loading
from adt_tf.training.workdir import BEST_FILE, CLASSIFIER_FILE, REPORT_FILE


@dataclasses.dataclass
class Source:
    """A loaded classifier and what its workdir says about it (None for a bare file)."""

    classifier: keras.Model
    model_path: str
    workdir: str | None = None
    record: Any = None  # the workdir's adt_tf.training.record.RunRecord
    report: dict[str, Any] | None = None

    @property
    def dataset(self) -> str | None:
        return None if self.record is None else self.record.config.data.dataset

    @property
    def data_dir(self) -> str | None:
        return None if self.record is None else self.record.config.data.data_dir


def _read_json(path: str) -> dict[str, Any] | None:
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}).") from err


def load_source(path: str, checkpoint: str | None = None) -> Source:
    """A `.keras` file or a training workdir -> `Source` (the bare classifier, loaded by
    `adt_tf.artifacts.loading`; a training method saved whole is unwrapped there).

    Raises:
        ValueError: naming the path, if it holds no Keras classifier (a SavedModel is already
            an export).
    """
    model_path = loading.resolve_model_path(path, checkpoint)
    if os.path.isdir(model_path):
        raise ValueError(f"{path} is a SavedModel export already; adt-export starts from a "
                         f".keras classifier or a training workdir holding {CLASSIFIER_FILE}.")
    classifier = loading.load_classifier(model_path)
    if os.path.isdir(path):
        return Source(classifier, model_path, path, loading.workdir_record(path),
                      _read_json(os.path.join(path, REPORT_FILE)))
    return Source(classifier, model_path)


def check_dataset_fits(dataset: str, shape, classifier) -> None:
    """Refuses `--dataset` whose images or classes are not the classifier's (its class names
    and images would be another dataset's): ValueError naming both."""
    info = data_lib.load(dataset).info if dataset.startswith(data_lib.NPZ_PREFIX) \
        else data_lib.dataset_info(dataset)
    if info.image_shape is not None and tuple(info.image_shape) != tuple(shape):
        raise ValueError(f"--dataset={dataset} has images of shape {list(info.image_shape)}; "
                         f"the classifier takes {list(shape)}. Give the dataset it was "
                         "trained on (or none).")
    outputs = int(classifier.outputs[0].shape[-1])
    if info.num_classes != outputs:
        raise ValueError(f"--dataset={dataset} has {info.num_classes} classes; the "
                         f"classifier returns {outputs} logits.")


def class_names_of(dataset: str | None) -> tuple[str, ...] | None:
    """The class names of a dataset, None when unknown (or the dataset cannot be read)."""
    if not dataset:
        return None
    try:
        return data_lib.dataset_info(dataset).class_names
    except (ValueError, OSError):
        return None


def fit_images(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 or [0, 1] images -> float32 [n, H, W, C] in [0, 1] (resized, channels adapted)."""
    x = data_lib.as_unit_float(x)
    height, width, channels = shape
    if x.shape[-1] != channels:
        if channels == 1 and x.shape[-1] == 3:
            x = tf.image.rgb_to_grayscale(x).numpy()
        elif channels == 3 and x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        else:
            x = np.resize(x.mean(axis=-1, keepdims=True), x.shape[:-1] + (channels,))
    if x.shape[1:3] != (height, width):
        x = tf.image.resize(x, (height, width), antialias=True).numpy()
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def _test_images(dataset: str, data_dir: str | None, n: int) -> np.ndarray:
    if dataset == data_lib.SAMPLE or dataset.startswith(data_lib.NPZ_PREFIX):
        return data_lib.load(dataset, max_test_examples=n).x_test
    info = data_lib.dataset_info(dataset)
    import tensorflow_datasets as tfds

    builder = tfds.builder(info.tfds_name, data_dir=data_dir)
    if not builder.is_prepared():  # never download during an export
        raise ValueError(f"{dataset} is not prepared in tensorflow-datasets' data_dir.")
    x, _ = tfds.as_numpy(builder.as_dataset(split=f"test[:{n}]", as_supervised=True,
                                            batch_size=-1))
    return x


def real_images(shape: tuple[int, int, int], n: int = 8, dataset: str | None = None,
                data_dir: str | None = None) -> tuple[np.ndarray, str]:
    """n real test images of the model's shape, float32 in [0, 1], and where they came from.

    The dataset's own test images when they can be read without a download, else the first
    test images of the bundled CIFAR-10 sample, resized and converted to the model's shape
    (real photographs either way, which is what warm-up and verification need).
    """
    if dataset:
        try:
            return fit_images(_test_images(dataset, data_dir, n), shape), f"{dataset} test split"
        except Exception:  # noqa: BLE001  (missing files, no download: fall back, said below)
            pass
    x = data_lib.load(data_lib.SAMPLE, max_test_examples=n).x_test
    return fit_images(x, shape), f"{data_lib.SAMPLE} test split, fitted to {list(shape)}"


def workdir_card(source: Source) -> dict[str, Any]:
    """Model-card fields from a workdir: dataset, norm and epsilon (the threat model), method,
    accuracies, and the run's record (read as the run resolved it, never derived again)."""
    report = source.report or {}
    record = source.record
    card: dict[str, Any] = {"source_model": os.path.abspath(source.model_path)}
    if source.workdir:
        card["workdir"] = os.path.abspath(source.workdir)
        best = os.path.basename(source.model_path) == BEST_FILE
        card["checkpoint"] = "best" if best else "last"
        if best and report.get("best"):  # the best epoch's own test accuracies
            card["best_epoch"] = report["best"]["epoch"]
            report = dict(report, clean_accuracy=report["best"]["clean_accuracy"],
                          pgd20_accuracy=report["best"]["pgd20_accuracy"])
    config = record.config if record is not None else None

    def setting(value, key):
        # The record's (resolved once); a flat record of before the schema left some unset
        # (epsilon: null), for which the run's report has the value it used.
        return value if value is not None else report.get(key)

    card["dataset"] = setting(config and config.data.dataset, "dataset")
    card["method"] = setting(config and config.method.name, "method")
    card["norm"] = setting(config and config.threat.norm, "norm")
    card["epsilon"] = setting(config and config.threat.epsilon, "epsilon")
    if card["epsilon"] is None and record is not None and card["dataset"]:
        # A flat record without a report: its epsilon was the dataset's default for the norm.
        from adt_tf.data import resolve_threat

        try:
            card["epsilon"] = resolve_threat(card["norm"] or "linf", None,
                                             card["dataset"]).epsilon
        except (ValueError, OSError):
            pass
    card["clean_accuracy"] = report.get("clean_accuracy")
    card["robust_accuracy"] = report.get("robust_accuracy", report.get("pgd20_accuracy"))
    card["robust_accuracy_attack"] = report.get("attack") if card["robust_accuracy"] is not None \
        else None
    card["evaluation"] = report or None
    if record is not None:
        training = record.to_dict()
        indices = training["resolved"].pop("validation_indices")
        training["resolved"]["validation_examples"] = len(indices)
        card["training_config"] = training
    optional = ("robust_accuracy_attack", "evaluation", "training_config")
    return {k: v for k, v in card.items() if v is not None or k not in optional}


__all__ = ["Source", "check_dataset_fits", "class_names_of", "fit_images",
           "load_source", "real_images", "workdir_card"]
