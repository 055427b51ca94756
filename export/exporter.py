"""`export_classifier`: a Keras classifier -> a verified, versioned SavedModel for TF Serving.

Layout written (the one TF Serving watches: numbered version folders under the model folder):

    <export_base>/
      models.config                      ModelServerConfig listing every exported model
      <model_name>/
        <version>/
          saved_model.pb  variables/     the serving signatures (see export/signatures.py)
          assets.extra/tf_serving_warmup_requests
          model_card.json                what the model is, how robust, how it was trained

Atomicity: everything is written to a hidden temporary folder beside the version folders
(`.tmp-<pid>-<version>-XXXX`, a name TF Serving ignores; a killed export's is removed by the
next), verified there, and renamed to
`<version>` at the end, so a server never sees a partial or unverified export; on any failure
the temporary folder is removed and no version folder appears. An existing version is never
overwritten.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from adt_tf.artifacts import serving_contract as names
from adt_tf.core import checks
from adt_tf.core.files import write_json
from export import serving_config, sources, verify, warmup
from export.signatures import ServingModule

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
NUM_IMAGES = 8


def check_model_name(model_name: str) -> str:
    if not isinstance(model_name, str) or not _NAME.match(model_name):
        raise ValueError(f"model_name must be letters, digits, '_', '-' or '.' (not starting "
                         f"with '.' or '-'), got {model_name!r}.")
    return model_name


def existing_versions(model_dir: str) -> list[int]:
    """The numbered version folders of a model folder, sorted (finished or not: a new
    version never reuses a number)."""
    return names.version_folders(model_dir)


def next_version(model_dir: str) -> int:
    """One more than the highest existing version; 1 for a new model."""
    versions = existing_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def _software() -> dict[str, str]:
    import adt_tf

    return {"adt_tf": adt_tf.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__}


def build_model_card(model_name: str, version: int, spec, model_card: dict | None,
                     images_source: str) -> dict[str, Any]:
    """The user's fields (dataset, epsilon, method, accuracies, config...) plus the export's."""
    card: dict[str, Any] = dict(model_card or {})
    card.update({
        "model_name": model_name,
        "version": version,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "input": {"shape": list(spec.input_shape), "dtype": "float32", "range": [0.0, 1.0],
                  "layout": "NHWC"},
        "num_classes": spec.num_classes,
        "class_names": None if spec.class_names is None else list(spec.class_names),
        "signatures": {
            names.DEFAULT_SIGNATURE: "images float32 [N, H, W, C] in [0, 1] (validated)",
            names.BYTES_SIGNATURE: "image_bytes string [N]: PNG/JPEG files, decoded and "
                                   "resized in the graph",
            names.PREDICT_SIGNATURE: "images float32 of any shape, rejected with a clear "
                                     "message unless [N, H, W, C] in [0, 1]",
            "outputs": list(names.OUTPUTS if spec.class_names else names.OUTPUTS[:3]),
        },
        "warmup_and_verification_images": images_source,
        "software": _software(),
    })
    return card


def check_returns_logits(classifier: keras.Model, images: np.ndarray) -> None:
    """Refuses a classifier whose outputs on real images are probabilities (non-negative
    rows summing to 1: a final softmax): the export applies the softmax itself, and would
    serve softmax(softmax(.)), a flattened distribution."""
    with tf.device("/CPU:0"):
        out = np.asarray(classifier(tf.constant(images), training=False), np.float64)
    if out.size and (out >= 0).all() and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3):
        raise ValueError("The classifier returns probabilities (its outputs on real images "
                         "are non-negative and sum to 1: it ends with a softmax), but an "
                         "export serves the softmax of logits: remove the final softmax and "
                         "export the logits.")


def _probabilities(classifier: keras.Model, images: np.ndarray) -> np.ndarray:
    """The Keras reference for the verification, computed on the CPU like the check."""
    with tf.device("/CPU:0"):
        logits = classifier(tf.constant(images), training=False)
        return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1).numpy()


def _write_json(path: str, value: Any) -> None:
    write_json(path, value, default=str)


def export_classifier(classifier: keras.Model, export_base: str, model_name: str,
                      version: int | None = None, class_names: Sequence[str] | None = None,
                      model_card: dict | None = None, *, images: np.ndarray | None = None,
                      images_source: str | None = None, verify_export: bool = True,
                      serving_root: str = serving_config.DEFAULT_SERVING_ROOT) -> str:
    """Exports a classifier as `<export_base>/<model_name>/<version>/` for TF Serving.

    Args:
        classifier: a Keras model, float32 images [N, H, W, C] in [0, 1] -> logits. Only it
            is exported (never a training wrapper).
        export_base: the folder holding one subfolder per model and `models.config`.
        model_name: the served model's name.
        version: a positive integer; None takes the next free one (1 for a new model).
        class_names: names of the classes (adds the `class_names` output), or None.
        model_card: fields for `model_card.json` (dataset, epsilon, method, accuracies, the
            training config); the export adds its own (shape, classes, signatures, versions).
        images: real images float32 [n, H, W, C] in [0, 1] for the warm-up requests and the
            verification; None takes the first test images of the bundled CIFAR-10 sample,
            fitted to the model's shape.
        images_source: where `images` come from, for the model card.
        verify_export: reload the export in a fresh process and compare it with the
            classifier before it is published (see export/verify.py).
        serving_root: the folder the server sees as the export base (`base_path` of
            models.config is `<serving_root>/<model_name>`); "/models" in TF Serving's
            Docker container.

    Returns:
        The path of the new version folder. `model_card.json` there holds the verification
        result (`verification.max_abs_diff`, the largest difference in probability between
        the export and the classifier).

    Raises:
        ValueError: a bad argument or classifier; FileExistsError: the version exists;
        export.verify.VerificationError: the export does not match the classifier.

    Example:
        path = export_classifier(classifier, "exports", "adt_cifar10",
                                 class_names=CIFAR10_CLASSES,
                                 model_card={"dataset": "cifar10", "epsilon": 8 / 255})
    """
    check_model_name(model_name)
    if version is not None and (isinstance(version, bool) or not isinstance(
            version, (int, np.integer)) or version < 1):
        raise ValueError(f"version must be a positive integer, got {version!r}.")
    module = ServingModule(classifier, class_names)
    spec = module.spec
    if images is None:
        images, images_source = sources.real_images(spec.input_shape, NUM_IMAGES)
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != spec.input_shape or len(images) == 0:
        raise ValueError(f"images must be a non-empty batch of shape [n, "
                         f"{', '.join(map(str, spec.input_shape))}], got {images.shape}.")
    check_returns_logits(classifier, images)

    model_dir = os.path.join(export_base, model_name)
    checks.check_writable_dir(model_dir, "--export_dir (its model folder)")
    version = next_version(model_dir) if version is None else int(version)
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"{target} already exists; versions are never overwritten. "
                              f"Choose another --version (next free: {next_version(model_dir)})"
                              " or leave it unset.")

    verify.remove_stale_folders(model_dir, ".tmp-")  # what a killed export left
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-{version}-", dir=model_dir)
    # mkdtemp makes the folder private (0700); a published version is readable by a server
    # running as another user, like any folder made under the user's umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    pending = None
    try:
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        warmup.write_warmup(tmp, warmup.warmup_records(model_name, images[:4]))
        card = build_model_card(model_name, version, spec, model_card,
                                images_source or "given by the caller")
        card_path = os.path.join(tmp, names.MODEL_CARD)
        _write_json(card_path, card)
        if verify_export:
            card["verification"] = verify.verify_export(
                tmp, images, _probabilities(classifier, images), spec.class_names is not None)
            _write_json(card_path, card)
        # models.config is prepared before anything is published (a malformed or unwritable
        # one fails the export with no version in place), under the folder's lock from its
        # read to its rename (a concurrent export's entry is never lost).
        with serving_config.models_config_lock(export_base):
            pending = serving_config.prepare_models_config(export_base, model_name,
                                                           serving_root)
            if os.path.exists(target):  # another exporter got there first
                raise FileExistsError(f"{target} appeared during the export; nothing was "
                                      "overwritten.")
            os.rename(tmp, target)
            try:
                serving_config.commit_models_config(pending)
            except BaseException:
                os.rename(target, tmp)  # take the version back: all of the export or none
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if pending is not None and os.path.exists(pending):
            os.remove(pending)
        raise
    return target


__all__ = ["NUM_IMAGES", "build_model_card", "check_model_name", "check_returns_logits",
           "existing_versions",
           "export_classifier", "next_version"]
