"""Finding and loading the classifiers to analyse: `.keras` files or training workdirs."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

import keras

CLASSIFIER_FILE = "classifier.keras"


def resolve_model_path(path: str) -> str:
    """The `.keras` file behind a model argument.

    Args:
        path: a `.keras` file, or a training workdir holding `classifier.keras` (what
            `adt-train` writes).

    Raises:
        ValueError: naming the path, if it is neither.
    """
    if not path or not os.path.exists(path):
        raise ValueError(f"Model path {path!r} does not exist; expected a .keras file or a "
                         f"training workdir containing {CLASSIFIER_FILE}.")
    if os.path.isdir(path):
        candidate = os.path.join(path, CLASSIFIER_FILE)
        if not os.path.isfile(candidate):
            raise ValueError(f"Model folder {path!r} holds no {CLASSIFIER_FILE}; expected a "
                             "training workdir (adt-train --workdir) or a .keras file.")
        return candidate
    if not path.endswith(".keras"):
        raise ValueError(f"Model path {path!r} is not a .keras file; expected a .keras file or "
                         f"a training workdir containing {CLASSIFIER_FILE}.")
    return path


def load_classifier(path: str) -> keras.Model:
    """Loads the classifier of a `.keras` file or a training workdir (ValueError if it cannot)."""
    resolved = resolve_model_path(path)
    import adt_tf.methods  # noqa: F401  (registers the package's serialisable classes)

    try:
        return keras.saving.load_model(resolved, compile=False)
    except Exception as err:  # truncated, corrupt or foreign files all end the same way
        raise ValueError(f"Could not load the Keras model {resolved!r}: "
                         f"{type(err).__name__}: {err}") from err


def run_config(path: str) -> dict | None:
    """The `config.json` of the training run a model comes from, if there is one."""
    resolved = resolve_model_path(path)
    config = os.path.join(os.path.dirname(os.path.abspath(resolved)), "config.json")
    if not os.path.isfile(config):
        return None
    with open(config) as f:
        return json.load(f)


def entropy_weight_of(path: str) -> float | None:
    """The entropy weight lambda a model was trained with (from its run's config.json)."""
    config = run_config(path) or {}
    value = config.get("method_params", {}).get("entropy_weight")
    return None if value is None else float(value)


def model_labels(paths: Sequence[str]) -> list[str]:
    """Short distinct names for models: the workdir's (or the file's) name, made unique and
    safe for file names."""
    labels = []
    for path in paths:
        resolved = os.path.abspath(resolve_model_path(path))
        stem = os.path.splitext(os.path.basename(resolved))[0]
        if stem == os.path.splitext(CLASSIFIER_FILE)[0]:
            stem = os.path.basename(os.path.dirname(resolved)) or stem
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "model"
        base, i = label, 2
        while label in labels:
            label, i = f"{base}_{i}", i + 1
        labels.append(label)
    return labels


__all__ = ["CLASSIFIER_FILE", "entropy_weight_of", "load_classifier", "model_labels",
           "resolve_model_path", "run_config"]
