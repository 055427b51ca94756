"""Wide residual networks (Zagoruyko & Komodakis, 2016) and PreAct ResNet-18, as the
robustness codebases build and initialise them.

- `wide_resnet`: the WRN of the ADT and TRADES repositories (`models/wideresnet.py`):
  pre-activation blocks whose 1x1 shortcut reads the activated input; convolutions
  N(0, 2 / (k^2 c_out)) (fan-out, untruncated), BatchNorm 1 / 0, the logits' weights
  PyTorch's default U(+-1/sqrt(fan_in)) and bias 0.
- `preact_resnet18`: the PreAct ResNet-18 of Fast AT (locuslab/fast_adversarial,
  `CIFAR10/preact_resnet.py`): its 1x1 shortcut reads the block's raw input, and every layer
  keeps PyTorch's default initialisation (weights and the logits' bias U(+-1/sqrt(fan_in))).
"""

from __future__ import annotations

import keras

from adt_tf.core import checks
from adt_tf.models.common import PENULTIMATE, inputs_and_normalization, logits_head
from adt_tf.numerics.initializers import fan_out_normal, torch_default_uniform

# PyTorch's BatchNorm momentum 0.1 is Keras's 0.9; epsilon as in PyTorch.
BN = {"momentum": 0.9, "epsilon": 1e-5}


def _conv(filters, kernel, name, fan_out_init: bool, stride=1, padding="same"):
    """A bias-free convolution: the WRN's fan-out normal init, or PyTorch's default.

    A strided 3x3 convolution pads one pixel on every side, as PyTorch's `padding=1`
    (Keras's "same" with stride 2 on an even size pads only the bottom and right, which
    shifts the sampling grid by one pixel against the references)."""
    def make(x):
        init = (fan_out_normal() if fan_out_init
                else torch_default_uniform(kernel * kernel * x.shape[-1]))
        pad = padding
        if padding == "same" and stride > 1:
            x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
            pad = "valid"
        return keras.layers.Conv2D(filters, kernel, strides=stride, padding=pad,
                                   use_bias=False, kernel_initializer=init, name=name)(x)
    return make


def _preact_block(x, filters: int, stride: int, name: str, wrn: bool = True):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity or 1x1-conv shortcut.

    `wrn`: the WRN's block (the 1x1 shortcut reads relu(bn(x)), fan-out normal init);
    else Fast AT's PreActBlock (the 1x1 shortcut reads x, PyTorch's default init).
    """
    act = keras.layers.ReLU(name=f"{name}_relu1")(keras.layers.BatchNormalization(
        **BN, name=f"{name}_bn1")(x))
    if x.shape[-1] != filters or stride != 1:
        shortcut = _conv(filters, 1, f"{name}_short", wrn, stride, padding="valid")(
            act if wrn else x)
    else:
        shortcut = x
    y = _conv(filters, 3, f"{name}_conv1", wrn, stride)(act)
    y = keras.layers.BatchNormalization(**BN, name=f"{name}_bn2")(y)
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    y = _conv(filters, 3, f"{name}_conv2", wrn)(y)
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
    depth = checks.check_positive_int(depth, "depth", minimum=10)
    width = checks.check_positive_int(width, "width")
    if (depth - 4) % 6:
        raise ValueError(f"depth must be 6n + 4 (e.g. 10, 16, 28, 34), got {depth}.")
    blocks = (depth - 4) // 6
    inputs, x = inputs_and_normalization(input_shape, mean, std)
    x = _conv(16, 3, "stem", fan_out_init=True)(x)
    for g, (filters, stride) in enumerate(((16 * width, 1), (32 * width, 2), (64 * width, 2))):
        for b in range(blocks):
            x = _preact_block(x, filters, stride if b == 0 else 1, name=f"g{g + 1}b{b + 1}")
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(**BN, name="final_bn")(x))
    x = keras.layers.GlobalAveragePooling2D(name=PENULTIMATE)(x)
    # The reference's nn.Linear keeps PyTorch's default weights; its bias is zeroed.
    logits = logits_head(x, num_classes, kernel_initializer=torch_default_uniform(x.shape[-1]))
    return keras.Model(inputs, logits, name=name or f"wrn_{depth}_{width}")


def preact_resnet18(input_shape=(32, 32, 3), num_classes: int = 10, *, width: int = 64,
                    mean=None, std=None, name: str = "preact_resnet18") -> keras.Model:
    """PreAct ResNet-18 (He et al., 2016): four stages of two blocks, width w, 2w, 4w, 8w.

    Args:
        width: channels of the first stage (64 in the original; 16 gives a CPU-sized net).
    """
    width = checks.check_positive_int(width, "width")
    inputs, x = inputs_and_normalization(input_shape, mean, std)
    x = _conv(width, 3, "stem", fan_out_init=False)(x)
    for s, mult in enumerate((1, 2, 4, 8)):
        for b in range(2):
            stride = 2 if (s > 0 and b == 0) else 1
            x = _preact_block(x, width * mult, stride, name=f"s{s + 1}b{b + 1}", wrn=False)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(**BN, name="final_bn")(x))
    x = keras.layers.GlobalAveragePooling2D(name=PENULTIMATE)(x)
    default = torch_default_uniform(x.shape[-1])  # nn.Linear's weights and bias
    return keras.Model(inputs, logits_head(x, num_classes, kernel_initializer=default,
                                           bias_initializer=default), name=name)
