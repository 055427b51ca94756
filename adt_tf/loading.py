"""Loading a classifier to evaluate: a Keras file, or a SavedModel export (its signature)."""

from __future__ import annotations

import hashlib
import os

import keras
import tensorflow as tf

SIGNATURE = "serving_default"
LOGITS = "logits"


class SavedModelClassifier:
    """A SavedModel's serving signature used as a classifier: `model(x, training=False)`.

    The export of this project defines `serving_default` taking float32 images in [0, 1] and
    returning, among others, `logits`; those are what attacks need (not `probabilities`).
    A signature with a single output (e.g. from `keras.Model.export`) is used as it is.
    Gradients flow through the signature, so white-box attacks work on it; FeaAttack does not
    (no penultimate layer is exposed).

    Args:
        path: a SavedModel directory (with saved_model.pb).
        signature: the signature to call.
        output: the output holding the logits.
    """

    def __init__(self, path: str, signature: str = SIGNATURE, output: str = LOGITS):
        try:
            self._loaded = tf.saved_model.load(path)
        except Exception as err:  # corrupt or foreign files all end the same way
            raise ValueError(f"Could not load the SavedModel at {path}: "
                             f"{type(err).__name__}: {err}") from err
        signatures = dict(self._loaded.signatures)
        if signature not in signatures:
            raise ValueError(f"The SavedModel at {path} has no signature {signature!r}; it has "
                             f"{', '.join(sorted(signatures)) or 'none'}.")
        self._fn = signatures[signature]
        _, inputs = self._fn.structured_input_signature
        if len(inputs) != 1:
            raise ValueError(f"Signature {signature!r} of {path} takes {len(inputs)} inputs "
                             f"({', '.join(sorted(inputs))}); an image classifier takes one.")
        self._input, spec = next(iter(inputs.items()))
        outputs = self._fn.structured_outputs
        if output in outputs:
            self._output = output
        elif len(outputs) == 1:
            self._output = next(iter(outputs))
        else:
            raise ValueError(f"Signature {signature!r} of {path} has no output {output!r}; it "
                             f"has {', '.join(sorted(outputs))}. Attacks need logits.")
        self._dtype = spec.dtype
        self.image_shape = tuple(spec.shape[1:])
        self.name = os.path.basename(os.path.normpath(path))
        self.path = path

    def __call__(self, x, training: bool = False):
        del training  # a serving signature always runs in inference mode
        return self._fn(**{self._input: tf.cast(x, self._dtype)})[self._output]


def savedmodel_dir(path: str) -> str | None:
    """The SavedModel folder at `path`, or its highest numbered version folder, or None."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = [d for d in os.listdir(path) if d.isdigit()
                and os.path.exists(os.path.join(path, d, "saved_model.pb"))]
    return os.path.join(path, max(versions, key=int)) if versions else None


def load_classifier(path: str):
    """A classifier from a `.keras`/`.h5` file or a SavedModel export folder.

    Raises:
        ValueError: the path does not exist or does not hold a loadable classifier.
    """
    if not path or not os.path.exists(path):
        raise ValueError(f"Model path {path!r} does not exist; expected a .keras file or a "
                         "SavedModel export folder.")
    if os.path.isdir(path):
        found = savedmodel_dir(path)
        if found is None:
            raise ValueError(f"{path} is a folder without saved_model.pb (nor numbered version "
                             "folders holding one); expected a SavedModel export or a .keras "
                             "file.")
        return SavedModelClassifier(found)
    if not path.endswith((".keras", ".h5")):
        raise ValueError(f"Cannot tell the format of {path}; expected a .keras (or .h5) file "
                         "or a SavedModel folder.")
    import adt_tf.methods  # noqa: F401  (registers the package's serialisable classes)

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:  # corrupt, truncated or foreign files all end the same way
        raise ValueError(f"Could not load the Keras model {path}: {type(err).__name__}: "
                         f"{err}") from err


def file_id(path: str) -> str:
    """A hash of a model file, or of every file in a model folder (the evaluation cache key)."""
    digest = hashlib.sha256()
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                digest.update(os.path.relpath(full, path).encode())
                with open(full, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
    else:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


__all__ = ["SavedModelClassifier", "file_id", "load_classifier", "savedmodel_dir"]
