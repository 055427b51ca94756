"""Amortised adversaries of ADT_EXP-AM and ADT_IMP-AM: the reference's generator and encoder.

A generator maps the features of a batch (the image and two input gradients, 3C channels) to
the perturbation's parameters in one forward pass, replacing ADT_EXP's per-example inner loop.
All three networks are functional Keras models subclassed in the keras-hub style: built in
`__init__`, described by `get_config()`, saved and reloaded with `model.save(path)` /
`keras.saving.load_model(path)` on their own (the evaluation reuses them as attacks).

The architectures are those of the authors' code (../shared/DESIGN.md Sec. 4; exact numbers
in tests/data/adt_reference.npz): the generator is their `ResnetGenerator(zero_pad=True)`,
every layer at full image resolution (no down- or up-sampling), and the encoder their
`Encoder` (valid-padded convolutions, LeakyReLU 0.01). Layer names follow the reference's
PyTorch module names with "." replaced by "_" (`model.3.conv_block.0` is the layer
`model_3_conv_block_0`), so its weights map one to one.

Reference: Dong, Deng, Pang, Zhu, Su. "Adversarial Distributional Training for Robust Deep
Learning", NeurIPS 2020, Sec. 3.2-3.3.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from adt_tf.core import checks
from adt_tf.numerics.initializers import fan_out_normal, pix2pix_normal, torch_default_uniform

# The reference's initialisations (`adt_tf.numerics.initializers`): the generator's convolutions and
# noise-branch Linear layers N(0, 0.02), its BatchNorm scales N(1, 0.02) (`define_G`'s
# init_weights); the encoder's convolutions N(0, 2 / (k^2 c_out)), BatchNorm scales 1, its
# Linear weights PyTorch's default U(+-1/sqrt(fan_in)) (`Encoder.__init__`); every bias 0.
# PyTorch's BatchNorm defaults (running-average momentum 0.1, epsilon 1e-5) in Keras terms.
_BN = {"momentum": 0.9, "epsilon": 1e-5}
#: The encoder's valid convolutions need at least this height and width (20 -> 16 -> 7 -> 4 ->
#: 1); smaller perturbations are zero-padded to it.
ENCODER_MIN_SIZE = 20


def check_image_shape(image_shape, name: str = "image_shape") -> tuple[int, int, int]:
    """Checks an (H, W, C) image shape of positive integers."""
    message = f"{name} must be (height, width, channels), got {image_shape!r}."
    try:
        shape = tuple(int(d) for d in image_shape)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(message)
    return shape


def _conv(filters, kernel, name, strides=1, padding="same", dtype=None, initializer=None):
    """A bias-free convolution (no convolution of the reference has a bias); weights
    N(0, 0.02) as the generator's unless `initializer` says otherwise."""
    return keras.layers.Conv2D(
        filters, kernel, strides=strides, padding=padding, use_bias=False, dtype=dtype,
        kernel_initializer=initializer or pix2pix_normal(), name=name)


def _bn(name, gamma_initializer=None):
    """BatchNorm; built under a strategy of several replicas it uses the statistics of the
    *global* batch (`synchronized=True`), so that the generator normalises a replica's
    examples as one device normalises the whole batch, as the single-device reference does.
    On one replica it keeps Keras's two-pass moments: the synchronised path computes the
    variance as E[x^2] - E[x]^2, which rounds worse (seen in tests/test_reference_parity.py).
    Scales N(1, 0.02) as the generator's unless `gamma_initializer` says otherwise; shifts 0."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return keras.layers.BatchNormalization(
        gamma_initializer=gamma_initializer or pix2pix_normal(1.0), name=name,
        synchronized=replicas > 1, **_BN)


def _dense(units, name, kernel_initializer, activation=None, dtype=None):
    """A Dense layer with the given kernel initialisation and a zero bias (the reference
    sets every Linear bias of the generator and the encoder to 0)."""
    return keras.layers.Dense(units, activation=activation,
                              kernel_initializer=kernel_initializer, bias_initializer="zeros",
                              dtype=dtype, name=name)


def _residual_block(x, in_width: int, out_width: int, name: str):
    """conv3x3 - BN - ReLU - conv3x3 - BN, plus a shortcut (the input, or conv1x1 - BN where
    the widths differ), then ReLU of the sum (the reference's `ResnetBlock`)."""
    h = _conv(out_width, 3, f"{name}_conv_block_0")(x)
    h = keras.layers.ReLU(name=f"{name}_conv_block_2")(_bn(f"{name}_conv_block_1")(h))
    h = _bn(f"{name}_conv_block_4")(_conv(out_width, 3, f"{name}_conv_block_3")(h))
    shortcut = x
    if in_width != out_width:
        shortcut = _bn(f"{name}_short_cut_1")(_conv(out_width, 1, f"{name}_short_cut_0")(x))
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")(
        [shortcut, h]))


def block_widths(width: int, num_blocks: int) -> list[tuple[int, int]]:
    """(in, out) channels of each residual block: w -> 2w, 2w -> 2w (num_blocks - 2 times),
    2w -> w; the reference's three blocks for num_blocks = 3. One block is w -> w."""
    if num_blocks == 0:
        return []
    if num_blocks == 1:
        return [(width, width)]
    return ([(width, 2 * width)] + [(2 * width, 2 * width)] * (num_blocks - 2)
            + [(2 * width, width)])


def resnet_generator(x, out_channels: int, width: int, num_blocks: int):
    """The reference's full-resolution `ResnetGenerator(zero_pad=True)` on a functional x.

    conv3x3 (-> w), BN, ReLU; residual blocks (`block_widths`); conv3x3 (w -> out_channels),
    no activation. Zero "same" padding, stride 1, no bias anywhere, every layer at the
    input's resolution. The last convolution runs in float32 under mixed precision: its
    outputs parameterise a density.
    """
    x = _conv(width, 3, "model_0")(x)
    x = keras.layers.ReLU(name="model_2")(_bn("model_1")(x))
    for i, (w_in, w_out) in enumerate(block_widths(width, num_blocks)):
        x = _residual_block(x, w_in, w_out, f"model_{3 + i}")
    return _conv(out_channels, 3, f"model_{3 + num_blocks}", dtype="float32")(x)


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


def _check_sizes(width, num_blocks):
    width = checks.check_positive_int(width, "generator width")
    num_blocks = checks.check_positive_int(num_blocks, "num_blocks", minimum=0)
    return width, num_blocks


@keras.saving.register_keras_serializable(package="adt_tf")
class ExplicitGenerator(_ConfigurableModel):
    """The generator of ADT_EXP-AM: features -> (mu, v) of the explicit distribution.

    Input: [B, H, W, 3C], the concatenation of x, grad_x L(f(x), y) and grad_x L(f(x_fgsm), y).
    Outputs: `loc` (mu) and `raw_scale` (v), each [B, H, W, C] in float32, the parameters of
    `ExplicitAdversarialDistribution(loc, raw_scale, epsilon)`.

    Args:
        image_shape: (H, W, C) of the images (any size: no layer changes the resolution).
        width: base channels w (blocks w -> 2w -> 2w -> w). The reference trains with 256,
            about 10M parameters; the parameter count grows as w^2 (width 16: about 40k).
        num_blocks: residual blocks (3 in the reference).

    Mathematical details:
        (mu, v) = g_phi([x, grad_1, grad_2]); delta = epsilon tanh(u), u ~ N(mu, softplus(v)^2).
        The last 3x3 convolution (`model_6` with 3 blocks) outputs 2C channels: 0:C are mu,
        C:2C are v, as the reference's `phi`.

    Example:
        >>> g = ExplicitGenerator((32, 32, 3), width=16)
        >>> loc, raw_scale = g(tf.zeros([8, 32, 32, 9]))
        >>> loc.shape
        TensorShape([8, 32, 32, 3])

    Reference:
        Dong et al., NeurIPS 2020, Sec. 3.2 (ADT_EXP-AM); the authors' `ResnetGenerator`.
    """

    _config_keys = ("image_shape", "width", "num_blocks")

    def __init__(self, image_shape, width: int = 256, num_blocks: int = 3, **kwargs):
        image_shape = check_image_shape(image_shape)
        width, num_blocks = _check_sizes(width, num_blocks)
        height, img_width, channels = image_shape
        features = keras.Input((height, img_width, 3 * channels), name="features")
        phi = resnet_generator(features, 2 * channels, width, num_blocks)
        loc = keras.layers.Lambda(lambda p: p[..., :channels], name="loc")(phi)
        raw_scale = keras.layers.Lambda(lambda p: p[..., channels:], name="raw_scale")(phi)
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
        image_shape: (H, W, C).
        z_dim: dimension of the noise (64 in the reference).
        width: base channels of the generator (as `ExplicitGenerator`; 256 in the reference).
        num_blocks: residual blocks (3).
        projection_units: hidden units of the noise branch (256 in the reference).

    Mathematical details:
        The reference's `z_encoder`: Dense(projection_units) - ReLU - Dense(H W) - ReLU,
        reshaped row-major to one H x W map and concatenated to the features as the
        (3C + 1)-th channel; then u = generator([features, map]). The reference is written
        for 32 x 32 images (Dense 256 -> 1024, a 32 x 32 map); for another image size the
        second Dense has H * W units, so the map always covers the image at full resolution.

    Example:
        >>> g = ImplicitGenerator((32, 32, 3), z_dim=64, width=16)
        >>> u = g([tf.zeros([8, 32, 32, 9]), tf.random.uniform([8, 64], -1, 1)])

    Reference:
        Dong et al., NeurIPS 2020, Sec. 3.3 (ADT_IMP-AM).
    """

    _config_keys = ("image_shape", "z_dim", "width", "num_blocks", "projection_units")

    def __init__(self, image_shape, z_dim: int = 64, width: int = 256, num_blocks: int = 3,
                 projection_units: int = 256, **kwargs):
        image_shape = check_image_shape(image_shape)
        z_dim = checks.check_positive_int(z_dim, "z_dim")
        width, num_blocks = _check_sizes(width, num_blocks)
        projection_units = checks.check_positive_int(projection_units, "projection_units")
        height, img_width, channels = image_shape
        features = keras.Input((height, img_width, 3 * channels), name="features")
        z = keras.Input((z_dim,), name="z")
        # define_G's init_weights reaches the z_encoder's Linear layers too: N(0, 0.02).
        h = _dense(projection_units, "z_encoder_0", pix2pix_normal(), activation="relu")(z)
        h = _dense(height * img_width, "z_encoder_2", pix2pix_normal(), activation="relu")(h)
        h = keras.layers.Reshape((height, img_width, 1), name="z_map")(h)
        x = keras.layers.Concatenate(name="features_and_z")([features, h])
        u = resnet_generator(x, channels, width, num_blocks)
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
        z_dim: dimension of the noise to recover (64).
        width: channels of the first convolution (32 in the reference; then 2w, 4w, 8w).

    Mathematical details:
        The reference's `Encoder`: conv5x5 (w), conv4x4 stride 2 (2w), conv4x4 (4w),
        conv4x4 stride 2 (8w), all "valid" padding and bias-free, each followed by BatchNorm
        and LeakyReLU(0.01) (PyTorch's slope, not Keras's 0.3); average pooling; one
        Dense(2 z_dim) whose first z_dim outputs are the mean and the last z_dim the raw
        variance. On 32 x 32 inputs the last map is 4 x 4 and the reference's 4 x 4 average
        pool equals the global average used here (defined for every size). Inputs smaller
        than 20 x 20 (e.g. 16 x 16 test images) are zero-padded to 20 x 20 first, the
        smallest size the valid convolutions accept.
        `log_prob` is the reference's: per dimension,

            log q(z_j | delta) = -(z_j - m_j)^2 / (2 s_j + 1e-8) - log(s_j + 1e-8) / 2
                                 - log(2 pi) / 2,   s = softplus(raw_variance).

        Since H(delta) >= I(z; delta) >= H(z) + E[log q(z | delta)] for delta = g(z), the
        per-dimension bound is log 2 + mean_j E[log q(z_j | delta)] (H(U(-1, 1)) = log 2).

    Example:
        >>> enc = EntropyEncoder((32, 32, 3), z_dim=64)
        >>> mean, raw_variance = enc(tf.zeros([8, 32, 32, 3]))

    Reference:
        Dong et al., NeurIPS 2020, Sec. 3.3 and Appendix (the entropy lower bound).
    """

    _config_keys = ("image_shape", "z_dim", "width")

    def __init__(self, image_shape, z_dim: int = 64, width: int = 32, **kwargs):
        image_shape = check_image_shape(image_shape)
        z_dim = checks.check_positive_int(z_dim, "z_dim")
        width = checks.check_positive_int(width, "encoder width")
        height, img_width, _ = image_shape
        inputs = keras.Input(image_shape, name="normalised_delta")
        x = inputs
        pad_h, pad_w = max(0, ENCODER_MIN_SIZE - height), max(0, ENCODER_MIN_SIZE - img_width)
        if pad_h or pad_w:
            x = keras.layers.ZeroPadding2D(((pad_h // 2, pad_h - pad_h // 2),
                                            (pad_w // 2, pad_w - pad_w // 2)), name="pad")(x)
        layers = ((1, 5, 1), (2, 4, 2), (4, 4, 1), (8, 4, 2))
        for i, (mult, kernel, stride) in enumerate(layers):
            x = _conv(width * mult, kernel, f"main1_{3 * i}", strides=stride,
                      padding="valid", initializer=fan_out_normal())(x)
            x = _bn(f"main1_{3 * i + 1}", gamma_initializer="ones")(x)
            x = keras.layers.LeakyReLU(negative_slope=0.01, name=f"main1_{3 * i + 2}")(x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        out = _dense(2 * z_dim, "main2_0", torch_default_uniform(8 * width),
                     dtype="float32")(x)
        # float32 like the Dense before them: under a mixed policy a Lambda would otherwise
        # cast its output down, and log_prob would mix float32 z with a bfloat16 mean.
        mean = keras.layers.Lambda(lambda o: o[..., :z_dim], name="mean", dtype="float32")(out)
        raw_variance = keras.layers.Lambda(lambda o: o[..., z_dim:], name="raw_variance",
                                           dtype="float32")(out)
        kwargs.setdefault("name", "entropy_encoder")
        super().__init__(inputs=inputs, outputs=[mean, raw_variance], **kwargs)
        self.image_shape = image_shape
        self.z_dim = z_dim
        self.width = width

    @staticmethod
    def log_prob(z: tf.Tensor, mean: tf.Tensor, raw_variance: tf.Tensor) -> tf.Tensor:
        """log q(z | delta) of each dimension, [B, z_dim] (see the class docstring)."""
        variance = tf.math.softplus(raw_variance)
        return (-tf.square(z - mean) / (2.0 * variance + 1e-8)
                - 0.5 * tf.math.log(variance + 1e-8) - 0.5 * math.log(2.0 * math.pi))


def classifier_image_shape(classifier: keras.Model) -> tuple[int, int, int]:
    """The (H, W, C) input shape of a functional classifier (ValueError if unknown)."""
    try:
        shape = tuple(classifier.inputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError, ValueError):
        shape = None
    if shape is None or len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(
            "An amortised method needs a classifier with a known (H, W, C) input shape (a "
            f"functional model, e.g. from adt_tf.models.build_model), got {classifier.name!r} "
            f"with input shape {shape!r}."
        )
    return check_image_shape(shape, name="classifier input shape")


__all__ = ["block_widths", "check_image_shape", "classifier_image_shape", "ENCODER_MIN_SIZE",
           "EntropyEncoder", "ExplicitGenerator", "ImplicitGenerator", "resnet_generator"]
