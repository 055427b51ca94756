"""What the tuning tests share: toy data, a tiny configuration and hypermodel, the adt-tune
command, trial files, a callback that counts trainings."""

import os

import keras
import numpy as np

from adt_tf import data as data_lib
from adt_tf import tuning
from adt_tf.training.config import RunConfig
from tests.helpers import make_tiny_images

PAPER = tuning.PAPER_LAMBDAS


TINY_MODEL = {"width": 4, "dense_units": 16, "dropout": 0.0}


def toy_images(n):
    """Synthetic 16x16 images of 4 classes (colour means plus noise): learnable in a few
    steps, so that trials differ in accuracy."""
    x, y = make_tiny_images(n, 16, num_classes=4)
    return np.round(x * 255).astype(np.uint8), y.astype(np.int64)


def tiny_splits(n=128):
    x, y = toy_images(n)
    return data_lib.Splits(x, y, x[:8], y[:8], data_lib.DatasetInfo("toy", 4, 0.03, "none"))


def tiny_config(**kwargs):
    """A tiny run (settings named as adt-train's flags): 64 of the images held out for the
    validation, scored by PGD-2."""
    params = dict(workdir="", method="adt_exp", epochs=1, batch_size=16, lr=0.05,
                  epsilon=0.03, model_params=TINY_MODEL,
                  method_params={"inner_steps": 2, "mc_samples": 1}, verbose=0,
                  validation_examples=64, validation_attack="pgd2")
    params.update(kwargs)
    return RunConfig.from_flags(**params)


def tiny_hypermodel(**kwargs):
    return tuning.MethodHyperModel(tiny_config(), tiny_splits(), **kwargs)


def trial_files(project):
    """{trial folder: contents of its trial.json}."""
    out = {}
    for name in sorted(os.listdir(project)):
        path = os.path.join(project, name, "trial.json")
        if name.startswith("trial_") and os.path.exists(path):
            with open(path) as f:
                out[name] = f.read()
    return out


STARTS = []


class CountTrainings(keras.callbacks.Callback):
    """Counts fits in a module-level list (keras-tuner deep-copies the callbacks)."""

    def on_train_begin(self, logs=None):
        STARTS.append(1)


def kt_hyperparameters(hypermodel):
    import keras_tuner as kt

    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    return hp
