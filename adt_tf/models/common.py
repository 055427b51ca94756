"""Pieces shared by the classifier builders."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from adt_tf.core import checks

PENULTIMATE = "penultimate"
"""Name of the layer whose output is the penultimate feature vector (used by FeaAttack)."""


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}.")
    return shape  # type: ignore[return-value]


def inputs_and_normalization(input_shape, mean=None, std=None):
    """The Input of a classifier and, if mean/std are given, its normalisation layer.

    Pixels arrive in [0, 1]; (x - mean) / std happens inside the model, so attacks, the
    epsilon-ball and the exported signature all work in pixel space.

    Returns:
        (inputs, x) where x is the normalised tensor fed to the body.
    """
    shape = check_input_shape(input_shape)
    inputs = keras.Input(shape=shape, name="images")
    if mean is None and std is None:
        return inputs, inputs
    channels = shape[-1]
    mean = np.broadcast_to(np.asarray(0.0 if mean is None else mean, np.float32), (channels,))
    std = np.broadcast_to(np.asarray(1.0 if std is None else std, np.float32), (channels,))
    if np.any(std <= 0):
        raise ValueError(f"std must be > 0 in every channel, got {std.tolist()}.")
    layer = keras.layers.Normalization(mean=mean.tolist(), variance=(std**2).tolist(),
                                       name="normalize")
    return inputs, layer(inputs)


def logits_head(features, num_classes: int, kernel_initializer="glorot_uniform",
                bias_initializer="zeros"):
    """The final dense layer; `features` must already come from the PENULTIMATE layer.
    The initialisers default to Keras's (a builder following a reference passes its own)."""
    num_classes = checks.check_positive_int(num_classes, "num_classes", minimum=2)
    return keras.layers.Dense(num_classes, name="logits", dtype="float32",
                              kernel_initializer=kernel_initializer,
                              bias_initializer=bias_initializer)(features)
