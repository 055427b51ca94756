"""Amortised adversaries of ADT_EXP-AM and ADT_IMP-AM: image-to-image generators and the
entropy encoder.

A generator maps the features of a batch (the image and two input gradients, 3C channels) to
the perturbation's parameters in one forward pass, replacing ADT_EXP's per-example inner loop.
All three networks are functional Keras models subclassed in the keras-hub style: built in
`__init__`, described by `get_config()`, saved and reloaded with `model.save(path)` /
`keras.saving.load_model(path)` on their own (the evaluation reuses them as attacks).

Reference: Dong, Deng, Pang, Zhu, Su. "Adversarial Distributional Training for Robust Deep
Learning", NeurIPS 2020, Sec. 3.2-3.3. The trunk follows Johnson, Alahi, Fei-Fei, "Perceptual
Losses for Real-Time Style Transfer and Super-Resolution", ECCV 2016.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from adt_tf import validation

# Initialisation of image-to-image GANs (pix2pix / CycleGAN, used by the reference code):
# convolution weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02).
_CONV_INIT = {"mean": 0.0, "stddev": 0.02}
_GAMMA_INIT = {"mean": 1.0, "stddev": 0.02}
# PyTorch's BatchNorm defaults (running-average momentum 0.1, epsilon 1e-5) in Keras terms.
_BN = {"momentum": 0.9, "epsilon": 1e-5}


def check_image_shape(image_shape, name: str = "image_shape",
                      multiple: int = 4) -> tuple[int, int, int]:
    """Checks an (H, W, C) image shape whose H and W are divisible by `multiple`.

    The generator halves the resolution twice and doubles it twice, so a size that is not a
    multiple of 4 would not come back to the input's shape.
    """
    message = f"{name} must be (height, width, channels), got {image_shape!r}."
    try:
        shape = tuple(int(d) for d in image_shape)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(message)
    height, width, _ = shape
    if height % multiple or width % multiple:
        raise ValueError(
            f"{name} must have a height and width divisible by {multiple} (the generator "
            f"downsamples twice by 2), got {image_shape!r}."
        )
    return shape


def _conv(filters, kernel, strides=1, name=None, **kwargs):
    return keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False,
        kernel_initializer=keras.initializers.RandomNormal(**_CONV_INIT), name=name, **kwargs)


def _norm_relu(x, name, activation="relu"):
    x = keras.layers.BatchNormalization(
        gamma_initializer=keras.initializers.RandomNormal(**_GAMMA_INIT), name=f"{name}_bn",
        **_BN)(x)
    if activation == "leaky_relu":
        return keras.layers.LeakyReLU(0.01, name=f"{name}_act")(x)
    if activation is None:
        return x
    return keras.layers.Activation(activation, name=f"{name}_act")(x)


def resnet_trunk(x, width: int, num_blocks: int):
    """The image-to-image ResNet of Johnson et al. on a functional tensor x [B, H, W, *].

    7x7 conv (w) - two stride-2 3x3 convs (2w, 4w) - `num_blocks` residual blocks at 4w - two
    stride-2 3x3 transposed convs (2w, w), each followed by BatchNorm and ReLU; zero ("same")
    padding. Returns the [B, H, W, w] features the 7x7 output convolution (`_head`) reads.
    """
    x = _norm_relu(_conv(width, 7, name="stem")(x), "stem")
    for i, mult in enumerate((2, 4)):
        x = _norm_relu(_conv(width * mult, 3, strides=2, name=f"down{i + 1}")(x), f"down{i + 1}")
    for i in range(num_blocks):
        name = f"block{i + 1}"
        h = _norm_relu(_conv(4 * width, 3, name=f"{name}_conv1")(x), f"{name}_1")
        h = _norm_relu(_conv(4 * width, 3, name=f"{name}_conv2")(h), f"{name}_2", activation=None)
        x = keras.layers.Add(name=f"{name}_add")([x, h])
    for i, mult in enumerate((2, 1)):
        x = keras.layers.Conv2DTranspose(
            width * mult, 3, strides=2, padding="same", use_bias=False,
            kernel_initializer=keras.initializers.RandomNormal(**_CONV_INIT),
            name=f"up{i + 1}")(x)
        x = _norm_relu(x, f"up{i + 1}")
    return x


def _head(x, channels: int, name: str):
    """The 7x7 output convolution (with bias). It runs in float32 under mixed precision:
    its outputs parameterise a density."""
    return keras.layers.Conv2D(
        channels, 7, padding="same", dtype="float32",
        kernel_initializer=keras.initializers.RandomNormal(**_CONV_INIT), name=name)(x)


class _ConfigurableModel(keras.Model):
    """A functional model rebuilt from its constructor arguments (keras-hub style)."""

    _config_keys: tuple[str, ...] = ()

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable}
        config.update({key: getattr(self, key) for key in self._config_keys})
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="adt_tf")
class ExplicitGenerator(_ConfigurableModel):
    """The generator of ADT_EXP-AM: features -> (mu, v) of the explicit distribution.

    Input: [B, H, W, 3C], the concatenation of x, grad_x L(f(x), y) and grad_x L(f(x_fgsm), y).
    Outputs: `loc` (mu) and `raw_scale` (v), each [B, H, W, C] in float32, the parameters of
    `ExplicitAdversarialDistribution(loc, raw_scale, epsilon)`.

    Args:
        image_shape: (H, W, C) of the images; H and W divisible by 4.
        width: base channels w of the ResNet trunk (w, 2w, 4w; the reference uses 256, CPU
            runs far fewer).
        num_blocks: residual blocks at the lowest resolution (3 in the reference).

    Mathematical details:
        (mu, v) = g_phi([x, grad_1, grad_2]); delta = epsilon tanh(u), u ~ N(mu, softplus(v)^2).
        The last 7x7 convolution outputs 2C channels: C for mu and C for v.

    Example:
        >>> g = ExplicitGenerator((32, 32, 3), width=16)
        >>> loc, raw_scale = g(tf.zeros([8, 32, 32, 9]))
        >>> loc.shape
        TensorShape([8, 32, 32, 3])

    Reference:
        Dong et al., NeurIPS 2020, Sec. 3.2 (ADT_EXP-AM).
    """

    _config_keys = ("image_shape", "width", "num_blocks")

    def __init__(self, image_shape, width: int = 16, num_blocks: int = 3, **kwargs):
        image_shape = check_image_shape(image_shape)
        width = validation.check_positive_int(width, "generator width")
        num_blocks = validation.check_positive_int(num_blocks, "num_blocks", minimum=0)
        height, img_width, channels = image_shape
        features = keras.Input((height, img_width, 3 * channels), name="features")
        trunk = resnet_trunk(features, width, num_blocks)
        # Two C-channel heads: the same map as one 2C-channel convolution split in two.
        loc = _head(trunk, channels, "loc")
        raw_scale = _head(trunk, channels, "raw_scale")
        kwargs.setdefault("name", "explicit_generator")
        super().__init__(inputs=features, outputs=[loc, raw_scale], **kwargs)
        self.image_shape = image_shape
        self.width = width
        self.num_blocks = num_blocks


@keras.saving.register_keras_serializable(package="adt_tf")
class ImplicitGenerator(_ConfigurableModel):
    """The generator of ADT_IMP-AM: (features, z) -> pre-tanh perturbation u.

    Inputs: features [B, H, W, 3C] (as for `ExplicitGenerator`) and noise z [B, z_dim]
    (z ~ U(-1, 1)^z_dim). Output: u [B, H, W, C] in float32; the perturbation is
    delta = epsilon * tanh(u).

    Args:
        image_shape: (H, W, C); H and W divisible by 4.
        z_dim: dimension of the noise (64 in the reference).
        width: base channels of the ResNet trunk.
        num_blocks: residual blocks.
        projection_units: hidden units of the noise projection (256 in the reference).

    Mathematical details:
        The noise is projected by Dense(projection_units, relu) - Dense(H W, relu), reshaped
        to one H x W feature map and concatenated to the features as a (3C + 1)-th channel,
        as in the reference code; then u = trunk([features, proj(z)]).

    Example:
        >>> g = ImplicitGenerator((32, 32, 3), z_dim=64, width=16)
        >>> u = g([tf.zeros([8, 32, 32, 9]), tf.random.uniform([8, 64], -1, 1)])

    Reference:
        Dong et al., NeurIPS 2020, Sec. 3.3 (ADT_IMP-AM).
    """

    _config_keys = ("image_shape", "z_dim", "width", "num_blocks", "projection_units")

    def __init__(self, image_shape, z_dim: int = 64, width: int = 16, num_blocks: int = 3,
                 projection_units: int = 256, **kwargs):
        image_shape = check_image_shape(image_shape)
        z_dim = validation.check_positive_int(z_dim, "z_dim")
        width = validation.check_positive_int(width, "generator width")
        num_blocks = validation.check_positive_int(num_blocks, "num_blocks", minimum=0)
        projection_units = validation.check_positive_int(projection_units, "projection_units")
        height, img_width, channels = image_shape
        features = keras.Input((height, img_width, 3 * channels), name="features")
        z = keras.Input((z_dim,), name="z")
        h = keras.layers.Dense(projection_units, activation="relu", name="z_proj1")(z)
        h = keras.layers.Dense(height * img_width, activation="relu", name="z_proj2")(h)
        h = keras.layers.Reshape((height, img_width, 1), name="z_map")(h)
        x = keras.layers.Concatenate(name="features_and_z")([features, h])
        u = _head(resnet_trunk(x, width, num_blocks), channels, "pre_tanh")
        kwargs.setdefault("name", "implicit_generator")
        super().__init__(inputs=[features, z], outputs=u, **kwargs)
        self.image_shape = image_shape
        self.z_dim = z_dim
        self.width = width
        self.num_blocks = num_blocks
        self.projection_units = projection_units


@keras.saving.register_keras_serializable(package="adt_tf")
class EntropyEncoder(_ConfigurableModel):
    """The variational posterior q_psi(z | delta) of ADT_IMP-AM: a diagonal Gaussian.

    Input: the normalised perturbation delta / epsilon = tanh(u), [B, H, W, C].
    Outputs: `mean` and `raw_variance`, each [B, z_dim] in float32; the variance is
    softplus(raw_variance).

    Args:
        image_shape: (H, W, C) of the perturbations.
        z_dim: dimension of the noise to recover.
        width: channels of the first convolution (the reference uses 32; then 2w, 4w, 8w).

    Mathematical details:
        conv5x5(w) - conv4x4/2(2w) - conv4x4(4w) - conv4x4/2(8w), each with BatchNorm and a
        leaky ReLU, global average pooling, Dense(2 z_dim). `log_prob` gives, per dimension,

            log q(z_j | delta) = -(z_j - m_j)^2 / (2 s_j) - log(s_j) / 2 - log(2 pi) / 2,

        s = softplus(raw_variance) + 1e-6 (the floor keeps log s finite once softplus
        underflows). Since H(delta) >= I(z; delta) >= H(z) + E[log q(z | delta)] for
        delta = g(z), the per-dimension bound is log 2 + mean_j E[log q(z_j | delta)]
        (H(U(-1, 1)) = log 2).

    Example:
        >>> enc = EntropyEncoder((32, 32, 3), z_dim=64)
        >>> mean, raw_variance = enc(tf.zeros([8, 32, 32, 3]))

    Reference:
        Dong et al., NeurIPS 2020, Sec. 3.3 and Appendix (the entropy lower bound).
    """

    _config_keys = ("image_shape", "z_dim", "width")

    def __init__(self, image_shape, z_dim: int = 64, width: int = 32, **kwargs):
        image_shape = check_image_shape(image_shape, multiple=1)
        z_dim = validation.check_positive_int(z_dim, "z_dim")
        width = validation.check_positive_int(width, "encoder width")
        inputs = keras.Input(image_shape, name="normalised_delta")
        x = inputs
        for i, (mult, kernel, stride) in enumerate(((1, 5, 1), (2, 4, 2), (4, 4, 1), (8, 4, 2))):
            x = _conv(width * mult, kernel, strides=stride, name=f"conv{i + 1}")(x)
            x = _norm_relu(x, f"conv{i + 1}", activation="leaky_relu")
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        # Dense(2 z_dim) as two heads, in float32 (they parameterise a density).
        mean = keras.layers.Dense(z_dim, dtype="float32", name="mean")(x)
        raw_variance = keras.layers.Dense(z_dim, dtype="float32", name="raw_variance")(x)
        kwargs.setdefault("name", "entropy_encoder")
        super().__init__(inputs=inputs, outputs=[mean, raw_variance], **kwargs)
        self.image_shape = image_shape
        self.z_dim = z_dim
        self.width = width

    @staticmethod
    def log_prob(z: tf.Tensor, mean: tf.Tensor, raw_variance: tf.Tensor) -> tf.Tensor:
        """log q(z | delta) of each dimension, [B, z_dim] (see the class docstring)."""
        variance = tf.math.softplus(raw_variance) + 1e-6
        return (-tf.square(z - mean) / (2.0 * variance) - 0.5 * tf.math.log(variance)
                - 0.5 * math.log(2.0 * math.pi))


__all__ = ["EntropyEncoder", "ExplicitGenerator", "ImplicitGenerator", "check_image_shape",
           "resnet_trunk"]
