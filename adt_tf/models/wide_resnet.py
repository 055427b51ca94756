"""Wide residual networks (Zagoruyko & Komodakis, 2016), as used for CIFAR robustness."""

from __future__ import annotations

import keras

from adt_tf import validation
from adt_tf.models.common import PENULTIMATE, inputs_and_normalization, logits_head

# PyTorch's BatchNorm momentum 0.1 is Keras's 0.9; epsilon as in PyTorch.
BN = {"momentum": 0.9, "epsilon": 1e-5}


def _preact_block(x, filters: int, stride: int, name: str):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity or 1x1-conv shortcut."""
    act = keras.layers.ReLU(name=f"{name}_relu1")(keras.layers.BatchNormalization(
        **BN, name=f"{name}_bn1")(x))
    if x.shape[-1] != filters or stride != 1:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                       kernel_initializer="he_normal", name=f"{name}_short")(act)
    else:
        shortcut = x
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name=f"{name}_conv1")(act)
    y = keras.layers.BatchNormalization(**BN, name=f"{name}_bn2")(y)
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name=f"{name}_conv2")(y)
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])


def wide_resnet(input_shape=(32, 32, 3), num_classes: int = 10, *, depth: int = 28,
                width: int = 10, mean=None, std=None, name: str | None = None) -> keras.Model:
    """WRN-depth-width: three groups of (depth - 4) / 6 pre-activation blocks.

    Args:
        input_shape: (H, W, C) of images in [0, 1].
        num_classes: number of logits.
        depth: 6n + 4 (28 for WRN-28-10, 34 for WRN-34-10, 10 or 16 for CPU-sized runs).
        width: widening factor k; the groups have 16k, 32k, 64k channels.
        mean, std: per-channel normalisation inside the model.

    Returns:
        A functional Keras model returning logits; "penultimate" is the pooled feature.
    """
    depth = validation.check_positive_int(depth, "depth", minimum=10)
    width = validation.check_positive_int(width, "width")
    if (depth - 4) % 6:
        raise ValueError(f"depth must be 6n + 4 (e.g. 10, 16, 28, 34), got {depth}.")
    blocks = (depth - 4) // 6
    inputs, x = inputs_and_normalization(input_shape, mean, std)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name="stem")(x)
    for g, (filters, stride) in enumerate(((16 * width, 1), (32 * width, 2), (64 * width, 2))):
        for b in range(blocks):
            x = _preact_block(x, filters, stride if b == 0 else 1, name=f"g{g + 1}b{b + 1}")
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(**BN, name="final_bn")(x))
    x = keras.layers.GlobalAveragePooling2D(name=PENULTIMATE)(x)
    return keras.Model(inputs, logits_head(x, num_classes), name=name or f"wrn_{depth}_{width}")


def preact_resnet18(input_shape=(32, 32, 3), num_classes: int = 10, *, width: int = 64,
                    mean=None, std=None, name: str = "preact_resnet18") -> keras.Model:
    """PreAct ResNet-18 (He et al., 2016): four stages of two blocks, width w, 2w, 4w, 8w.

    Args:
        width: channels of the first stage (64 in the original; 16 gives a CPU-sized net).
    """
    width = validation.check_positive_int(width, "width")
    inputs, x = inputs_and_normalization(input_shape, mean, std)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name="stem")(x)
    for s, mult in enumerate((1, 2, 4, 8)):
        for b in range(2):
            stride = 2 if (s > 0 and b == 0) else 1
            x = _preact_block(x, width * mult, stride, name=f"s{s + 1}b{b + 1}")
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(**BN, name="final_bn")(x))
    x = keras.layers.GlobalAveragePooling2D(name=PENULTIMATE)(x)
    return keras.Model(inputs, logits_head(x, num_classes), name=name)
