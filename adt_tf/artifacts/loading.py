"""The one loader of every command: a model argument (a `.keras` file, a training workdir, or a
SavedModel export) to a classifier, with one set of error messages."""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import zipfile
from collections.abc import Sequence

import keras
import tensorflow as tf

from adt_tf.artifacts.serving_contract import (
    DEFAULT_SIGNATURE,
    LOGITS,
    SAVED_MODEL_FILE,
    version_folders,
)
from adt_tf.training.workdir import BACKUP_DIR, BEST_FILE, CLASSIFIER_FILE

#: What a training workdir holds (written by adt-train): the last epoch's classifier and,
#: for a run with a validation split, the best epoch's
#: (`adt_tf.training.callbacks.best_checkpoint`).
CHECKPOINTS = ("last", "best")
_EXPECTED = (f"expected a .keras file, a training workdir holding {CLASSIFIER_FILE}, or a "
             "SavedModel export folder")


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

    def __init__(self, path: str, signature: str = DEFAULT_SIGNATURE, output: str = LOGITS):
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
    if os.path.exists(os.path.join(path, SAVED_MODEL_FILE)):
        return path
    versions = version_folders(path, complete=True)
    return os.path.join(path, str(versions[-1])) if versions else None


def default_checkpoint(workdir: str) -> str:
    """"best" for a training workdir whose run held out a validation split (and so keeps
    best.keras), else "last"."""
    record = workdir_record(workdir)
    held_out = record is not None and record.config.validation.examples > 0
    return "best" if held_out and os.path.isfile(os.path.join(workdir, BEST_FILE)) \
        else "last"


def workdir_record(workdir: str):
    """The `RunRecord` of a training workdir (`adt_tf.training.record`), None when it has no
    readable config.json."""
    from adt_tf.training.record import read_record, record_path

    if not os.path.isfile(record_path(workdir)):
        return None
    try:
        return read_record(workdir)
    except ValueError:
        return None


def resolve_model_path(path: str, checkpoint: str | None = None) -> str:
    """The file or folder behind a model argument: a `.keras` (or `.h5`) file, the
    `classifier.keras` (`checkpoint="last"`) or `best.keras` (`"best"`) of a training
    workdir, or a SavedModel folder (or its latest version). For a workdir, None means
    `default_checkpoint` (best when the run has a validation split).

    Raises:
        ValueError: naming the path (or `--checkpoint`), if it is none of these.
    """
    if checkpoint is not None and checkpoint not in CHECKPOINTS:
        raise ValueError(f"--checkpoint must be last or best, got {checkpoint!r}.")
    if not path or not os.path.exists(path):
        raise ValueError(f"Model path {path!r} does not exist; {_EXPECTED}.")
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, CLASSIFIER_FILE)):
        choice = checkpoint or default_checkpoint(path)
        if choice == "best":
            best = os.path.join(path, BEST_FILE)
            if not os.path.isfile(best):
                raise ValueError(f"--checkpoint=best: {path} holds no {BEST_FILE} "
                                 "(the run had no validation split: train with "
                                 "--validation_examples=N); use --checkpoint=last.")
            return best
        return os.path.join(path, CLASSIFIER_FILE)
    if checkpoint is not None:
        raise ValueError(f"--checkpoint={checkpoint} applies to a training workdir; {path} is "
                         "a model file or export (give the workdir, or drop --checkpoint).")
    if os.path.isdir(path):
        found = savedmodel_dir(path)
        if found is None:
            raise ValueError(f"{path} is a folder without {CLASSIFIER_FILE} or {SAVED_MODEL_FILE} "
                             f"(nor numbered version folders holding one); {_EXPECTED}.")
        return found
    if not path.endswith((".keras", ".h5")):
        raise ValueError(f"Cannot tell the format of {path}: it is not a .keras file; "
                         f"{_EXPECTED}.")
    return path


def _register_package_classes(path: str) -> None:
    """Imports the package modules a `.keras` file's config names, so that Keras finds the
    classes registered there (a saved training method, a model of `adt_tf.models`) without
    the loader knowing which they are."""
    try:
        with zipfile.ZipFile(path) as archive:
            text = archive.read("config.json").decode()
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError):
        return  # Keras itself reports what is wrong with the file
    for module in sorted(set(re.findall(r'"module":\s*"(adt_tf(?:\.\w+)*)"', text))):
        try:
            importlib.import_module(module)
        except ImportError:
            pass


def load_classifier(path: str, checkpoint: str | None = None):
    """The classifier behind a model argument (see `resolve_model_path`; `checkpoint` picks
    a workdir's last or best classifier).

    A `.keras` file holding a saved training method yields its bare classifier; a SavedModel
    export yields a `SavedModelClassifier` (its serving signature).

    Raises:
        ValueError: the path does not exist or does not hold a loadable classifier (the
            message names the path and the reason).
    """
    resolved = resolve_model_path(path, checkpoint)
    if os.path.isdir(resolved):
        return SavedModelClassifier(resolved)
    if resolved.endswith(".keras") and not zipfile.is_zipfile(resolved):
        raise ValueError(f"{resolved} is not a readable .keras archive (not a zip file: "
                         "truncated, damaged or another format); is the file complete?")
    _register_package_classes(resolved)
    try:
        model = keras.saving.load_model(resolved, compile=False)
    except Exception as err:  # zip, JSON, HDF5, unknown classes: one clear message for all
        raise ValueError(f"Could not load a Keras classifier from {resolved} "
                         f"({type(err).__name__}: {err}); is the file complete?") from err
    inner = getattr(model, "classifier", None)
    return inner if isinstance(inner, keras.Model) else model


def load_backup_classifier(workdir: str):
    """(classifier, epoch): the workdir's classifier with the weights of its last backed-up
    epoch (the backup written after every epoch for a resume, `backup/`: the weights
    the training itself holds). Under weight averaging (`--ema_decay`) these are the raw
    weights, where `classifier.keras` and `best.keras` hold the average.

    Keras stores each layer's variables under its class's name, numbered in the model's layer
    order (`conv2d`, `conv2d_1`, ...); each is loaded into the layer of that class and place.

    Raises:
        ValueError: no backup, or one whose layers do not match the classifier's (naming the
            file and the layer).
    """
    import re

    import h5py

    from adt_tf.training.callbacks.backup import backup_metadata, backup_weights_path

    folder = os.path.join(workdir, BACKUP_DIR)
    meta = backup_metadata(folder)
    path = backup_weights_path(folder)
    if not os.path.exists(path) or "epoch" not in meta:
        raise ValueError(f"{path}: no per-epoch backup in {workdir} (it is written during "
                         "training and left after it; a workdir copied without it has none)")
    classifier = load_classifier(os.path.join(workdir, CLASSIFIER_FILE))
    counts: dict[str, int] = {}
    with h5py.File(path, "r") as f:
        stored = f["classifier"]["layers"] if "classifier" in f else f["layers"]
        for layer in classifier.layers:
            base = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", type(layer).__name__)
            base = re.sub(r"([a-z])([A-Z])", r"\1_\2", base).lower()  # as Keras names it
            n = counts.get(base, 0)
            counts[base] = n + 1
            if not layer.weights:
                continue
            name = base if n == 0 else f"{base}_{n}"
            if name not in stored or "vars" not in stored[name]:
                raise ValueError(f"{path}: no variables for layer {layer.name!r} (as {name!r})")
            values = stored[name]["vars"]
            try:
                layer.load_own_variables({k: values[k][()] for k in values})
            except ValueError as err:
                raise ValueError(f"{path}: layer {layer.name!r} (as {name!r}): {err}") from err
    return classifier, int(meta["epoch"])


def run_record(path: str):
    """The `RunRecord` of the training run a model argument comes from (its workdir's
    config.json), None for a model outside a workdir."""
    resolved = resolve_model_path(path)
    return workdir_record(os.path.dirname(os.path.abspath(resolved)))


def entropy_weight_of(path: str) -> float | None:
    """The entropy weight lambda a model was trained with (from its run's record)."""
    record = run_record(path)
    value = None if record is None else record.config.method.params.get("entropy_weight")
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


def file_id(path: str, checkpoint: str | None = None) -> str:
    """A hash of the model a model argument names (the evaluation cache key): its resolved
    `.keras` file (`resolve_model_path`: a training workdir's `classifier.keras`, not the
    whole workdir with its logs, backups and evaluation outputs), or every file of a
    SavedModel version folder."""
    path = resolve_model_path(path, checkpoint)
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


__all__ = ["CHECKPOINTS", "SavedModelClassifier",
           "default_checkpoint", "entropy_weight_of", "file_id", "workdir_record",
           "load_backup_classifier", "load_classifier", "model_labels", "resolve_model_path",
           "run_record", "savedmodel_dir"]
