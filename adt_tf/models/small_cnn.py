"""SmallCNN: the 4-conv, 3-dense network of robust-training papers (TRADES, MNIST)."""

from __future__ import annotations

import keras

from adt_tf.core import checks
from adt_tf.models.common import (
    PENULTIMATE,
    check_input_shape,
    inputs_and_normalization,
    logits_head,
)


def small_cnn(input_shape=(28, 28, 1), num_classes: int = 10, *, width: int = 32,
              dense_units: int = 200, dropout: float = 0.5, batch_norm: bool = False,
              mean=None, std=None, name: str = "small_cnn") -> keras.Model:
    """conv(w) conv(w) pool conv(2w) conv(2w) pool dense(d) dropout dense(d) dense(classes).

    Any input size of at least 12 x 12 and any number of channels; ReLU activations, 3x3
    convolutions without padding as in TRADES's SmallCNN (w = 32, d = 200).

    Args:
        input_shape: (H, W, C) of images in [0, 1].
        num_classes: number of logits.
        width: channels of the first two convolutions (the next two have 2 * width).
        dense_units: units of the two hidden dense layers.
        dropout: dropout rate after the first dense layer (0 disables it).
        batch_norm: BatchNorm between each convolution and its ReLU (not in TRADES's
            SmallCNN). Adversarial training of the plain SmallCNN on CIFAR-10 at epsilon
            8/255 can stay at chance level for epochs (bench/README.md); BatchNorm avoids it.
        mean, std: per-channel normalisation done inside the model (None: no normalisation).

    Returns:
        A functional Keras model returning logits; its layer named "penultimate" gives the
        features before the last dense layer.
    """
    width = checks.check_positive_int(width, "width")
    dense_units = checks.check_positive_int(dense_units, "dense_units")
    dropout = checks.check_in_range(dropout, "dropout", 0.0, 1.0)
    if dropout == 1.0:
        raise ValueError("dropout must be in [0, 1) (1 drops every unit), got 1.0.")
    h, w, _ = check_input_shape(input_shape)
    if min(h, w) < 12:
        raise ValueError(f"small_cnn needs inputs of at least 12 x 12, got {input_shape!r}.")
    inputs, x = inputs_and_normalization(input_shape, mean, std)
    for i, filters in enumerate((width, width, 2 * width, 2 * width)):
        if batch_norm:
            x = keras.layers.Conv2D(filters, 3, use_bias=False, name=f"conv{i + 1}")(x)
            x = keras.layers.BatchNormalization(name=f"bn{i + 1}")(x)
            x = keras.layers.ReLU(name=f"relu{i + 1}")(x)
        else:
            x = keras.layers.Conv2D(filters, 3, activation="relu", name=f"conv{i + 1}")(x)
        if i % 2 == 1:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i // 2 + 1}")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="fc1")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(dense_units, activation="relu", name=PENULTIMATE)(x)
    return keras.Model(inputs, logits_head(x, num_classes), name=name)
