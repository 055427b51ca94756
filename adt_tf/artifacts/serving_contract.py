"""The SavedModel contract: what `adt-export` writes and what the loader, the verification and
the serving client read (kept free of heavy imports, so the client can use it without
loading Keras).

A model folder `<export_base>/<model_name>/` holds numbered version folders (TF Serving's
layout); a version is complete once it holds `saved_model.pb`.
"""

from __future__ import annotations

import os

DEFAULT_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
PREDICT_SIGNATURE = "predict"
SIGNATURES = (DEFAULT_SIGNATURE, BYTES_SIGNATURE, PREDICT_SIGNATURE)
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
LOGITS = "logits"
OUTPUTS = ("probabilities", LOGITS, "classes", "class_names")
"""Output names; `class_names` only when the classes have names."""
SAVED_MODEL_FILE = "saved_model.pb"
MODEL_CARD = "model_card.json"
MODELS_CONFIG = "models.config"


def version_folders(model_dir: str, *, complete: bool = False) -> list[int]:
    """The numbered version folders of a model folder, sorted ([] when it does not exist);
    with `complete`, only those holding a SavedModel."""
    if not os.path.isdir(model_dir):
        return []
    versions = []
    for name in os.listdir(model_dir):
        folder = os.path.join(model_dir, name)
        if name.isdigit() and os.path.isdir(folder) and (
                not complete or os.path.exists(os.path.join(folder, SAVED_MODEL_FILE))):
            versions.append(int(name))
    return sorted(versions)
