"""The weight initialisations of the reference codebases (PyTorch), as Keras initialisers.

The networks of the authors' code are initialised in three ways, and each is written here
once, so that a layer says which one it follows:

- `fan_out_normal()`: N(0, 2 / (k_h k_w c_out)), the `m.weight.data.normal_(0,
  math.sqrt(2. / n))` with n = k_h * k_w * out_channels of the WRN (`models/wideresnet.py`
  of the ADT and TRADES repositories) and of the ADT IMP-AM entropy encoder
  (`models/generator.py: Encoder`). It is He's fan-out rule, untruncated (Keras's
  `he_normal` is fan-in and truncated at two standard deviations).
- `torch_default_uniform(fan_in)`: PyTorch's default for `nn.Linear` and `nn.Conv2d`
  weights (`kaiming_uniform_(a=sqrt(5))`), U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and for their
  biases, which it draws from the same interval. Layers the references do not re-initialise
  keep it (the WRN's and the encoder's `nn.Linear` weights; every layer of Fast AT's PreAct
  ResNet-18).
- `pix2pix_normal()`: N(0, 0.02), the `init_weights(net, 'normal', 0.02)` that the ADT
  code's `define_G` applies to every convolution and `nn.Linear` of the generator (the IMP-AM
  noise branch included), biases 0; its BatchNorm scales are N(1, 0.02).

Keras computes fan-in and fan-out of a Conv2D kernel [k_h, k_w, c_in, c_out] as
k_h k_w c_in and k_h k_w c_out, and of a Dense kernel [in, out] as in and out, which are
PyTorch's too.
"""

from __future__ import annotations

import math

import keras

#: The standard deviation of `pix2pix_normal` (pix2pix / CycleGAN's init_gain).
PIX2PIX_STDDEV = 0.02


def fan_out_normal() -> keras.initializers.Initializer:
    """N(0, 2 / fan_out), untruncated (the reference WRN's and encoder's convolutions)."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out",
                                              distribution="untruncated_normal")


def torch_default_uniform(fan_in: int) -> keras.initializers.Initializer:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default weight (and bias) init of
    `nn.Linear` and `nn.Conv2d` (fan_in = in_features, or k_h k_w c_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def pix2pix_normal(mean: float = 0.0) -> keras.initializers.Initializer:
    """N(mean, 0.02^2): the ADT generator's weights (mean 0) and BatchNorm scales (mean 1)."""
    return keras.initializers.RandomNormal(mean=mean, stddev=PIX2PIX_STDDEV)


__all__ = ["PIX2PIX_STDDEV", "fan_out_normal", "pix2pix_normal", "torch_default_uniform"]
