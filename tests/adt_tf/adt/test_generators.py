"""Tests of the amortised adversaries' networks (adt_tf/adt/generators.py)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from adt_tf.adt.generators import EntropyEncoder, ExplicitGenerator, ImplicitGenerator
from tests.helpers import assert_normal_init, assert_uniform_init

SHAPES = [(32, 32, 3), (28, 28, 1)]  # CIFAR- and MNIST-shaped


@pytest.mark.parametrize("shape", SHAPES)
def test_explicit_generator_shapes_and_dtypes(shape):
    h, w, c = shape
    g = ExplicitGenerator(shape, width=4, num_blocks=1)
    features = tf.random.uniform([3, h, w, 3 * c])
    loc, raw_scale = g(features)
    assert loc.shape == (3, h, w, c) and raw_scale.shape == (3, h, w, c)
    assert loc.dtype == tf.float32 and raw_scale.dtype == tf.float32
    # Two different heads: mu and v are not the same map.
    assert not np.allclose(loc.numpy(), raw_scale.numpy())


@pytest.mark.parametrize("shape", SHAPES)
def test_implicit_generator_and_encoder_shapes(shape):
    h, w, c = shape
    g = ImplicitGenerator(shape, z_dim=5, width=4, num_blocks=1, projection_units=8)
    features = tf.random.uniform([3, h, w, 3 * c])
    z1 = tf.random.uniform([3, 5], -1, 1, seed=1)
    z2 = tf.random.uniform([3, 5], -1, 1, seed=2)
    u1 = g([features, z1], training=False)
    u2 = g([features, z2], training=False)
    assert u1.shape == (3, h, w, c) and u1.dtype == tf.float32
    # The noise reaches the output: different z, different perturbations.
    assert np.max(np.abs(u1.numpy() - u2.numpy())) > 0
    enc = EntropyEncoder(shape, z_dim=5, width=4)
    mean, raw_variance = enc(tf.tanh(u1))
    assert mean.shape == (3, 5) and raw_variance.shape == (3, 5)
    assert mean.dtype == tf.float32


def test_encoder_log_prob_is_the_references_formula():
    """The reference's log q (variance softplus(raw), 1e-8 inside the division and the log):
    against NumPy in float64, and TFP's Normal wherever the variance is not tiny."""
    z = tf.random.uniform([4, 6], -1, 1, seed=3)
    mean = tf.random.normal([4, 6], seed=4)
    raw = tf.random.normal([4, 6], seed=5) * 3.0
    zz, mm, rr = (np.asarray(t, np.float64) for t in (z, mean, raw))
    var = np.log1p(np.exp(rr))
    expected = (-(zz - mm) ** 2 / (2 * var + 1e-8) - 0.5 * np.log(var + 1e-8)
                - 0.5 * np.log(2 * np.pi))
    got = EntropyEncoder.log_prob(z, mean, raw).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    normal = tfp.distributions.Normal(mean, tf.sqrt(tf.math.softplus(raw))).log_prob(z).numpy()
    big = var > 1e-3
    np.testing.assert_allclose(got[big], normal[big], rtol=1e-4, atol=1e-4)
    # Stays finite when the variance underflows.
    assert np.all(np.isfinite(EntropyEncoder.log_prob(z, mean, tf.fill([4, 6], -200.0))))


@pytest.mark.parametrize("shape", [(30, 32, 3), (32, 18, 1), (12, 8, 3)])
def test_any_image_size_keeps_its_resolution(shape):
    """Every generator layer runs at the input's resolution (no down- or up-sampling), so any
    H x W works; the encoder zero-pads inputs below 20 x 20 for its valid convolutions."""
    h, w, c = shape
    loc, raw = ExplicitGenerator(shape, width=4)(tf.zeros([2, h, w, 3 * c]))
    assert loc.shape == (2, h, w, c) and raw.shape == (2, h, w, c)
    u = ImplicitGenerator(shape, width=4, projection_units=8)(
        [tf.zeros([2, h, w, 3 * c]), tf.zeros([2, 64])])
    assert u.shape == (2, h, w, c)
    mean, _ = EntropyEncoder(shape, width=4)(tf.zeros([2, h, w, c]))
    assert mean.shape == (2, 64)


def test_reference_architecture_sizes():
    """The reference's generator: blocks w -> 2w, 2w -> 2w, 2w -> w, no bias in any conv;
    the noise branch Dense 64 -> 256 -> H*W; the encoder's valid convolutions."""
    g = ExplicitGenerator((32, 32, 3), width=256)
    convs = [layer for layer in g.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(not layer.use_bias for layer in convs)
    # About 10M parameters at the reference width (DESIGN.md Sec. 4).
    assert 9.5e6 < g.count_params() < 10.5e6
    assert g.get_layer("model_4_conv_block_0").kernel.shape == (3, 3, 512, 512)
    assert g.get_layer("model_6").kernel.shape == (3, 3, 256, 6)
    imp = ImplicitGenerator((32, 32, 3), width=4)
    assert imp.get_layer("z_encoder_2").kernel.shape == (256, 1024)
    enc = EntropyEncoder((32, 32, 3))
    assert enc.get_layer("main1_9").kernel.shape == (4, 4, 128, 256)
    assert enc.get_layer("main1_9").output.shape[1:3] == (4, 4)  # valid padding throughout
    assert enc.get_layer("main2_0").kernel.shape == (256, 128)


def _layers(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


def test_generators_are_initialised_as_the_references_define_g():
    """define_G's init_weights(net, 'normal', 0.02) reaches every Conv and Linear of the
    generator, the IMP-AM noise branch included: weights N(0, 0.02), biases 0; BatchNorm
    scales N(1, 0.02), shifts 0."""
    imp = ImplicitGenerator((32, 32, 3), width=16)
    for conv in _layers(imp, keras.layers.Conv2D):
        assert_normal_init(conv.kernel.numpy(), 0.02)
    dense = _layers(imp, keras.layers.Dense)
    assert [d.name for d in dense] == ["z_encoder_0", "z_encoder_2"]
    for d in dense:
        assert_normal_init(d.kernel.numpy(), 0.02)
        np.testing.assert_array_equal(d.bias.numpy(), 0.0)
    norms = _layers(imp, keras.layers.BatchNormalization)
    gammas = np.concatenate([bn.gamma.numpy() for bn in norms])
    assert_normal_init(gammas, 0.02, mean=1.0)
    for bn in _layers(imp, keras.layers.BatchNormalization):
        np.testing.assert_array_equal(bn.beta.numpy(), 0.0)


def test_entropy_encoder_is_initialised_as_the_references_encoder():
    """Encoder.__init__: convolutions N(0, 2 / (k^2 c_out)), BatchNorm scale 1 and shift 0,
    the Linear's bias 0 (its weights keep PyTorch's default U(+-1/sqrt(fan_in)))."""
    enc = EntropyEncoder((32, 32, 3), z_dim=64, width=32)
    for conv in _layers(enc, keras.layers.Conv2D):
        kh, kw, _, out = conv.kernel.shape
        assert_normal_init(conv.kernel.numpy(), np.sqrt(2.0 / (kh * kw * out)))
    for bn in _layers(enc, keras.layers.BatchNormalization):
        np.testing.assert_array_equal(bn.gamma.numpy(), 1.0)
        np.testing.assert_array_equal(bn.beta.numpy(), 0.0)
    (linear,) = _layers(enc, keras.layers.Dense)
    assert_uniform_init(linear.kernel.numpy(), 1.0 / np.sqrt(linear.kernel.shape[0]))
    np.testing.assert_array_equal(linear.bias.numpy(), 0.0)


def test_bad_widths_and_z_dim_are_rejected():
    with pytest.raises(ValueError, match="width must be an integer >= 1, got 0"):
        ExplicitGenerator((16, 16, 3), width=0)
    with pytest.raises(ValueError, match="z_dim must be an integer >= 1, got 0"):
        ImplicitGenerator((16, 16, 3), z_dim=0)
    with pytest.raises(ValueError, match="width must be an integer >= 1, got 0"):
        EntropyEncoder((16, 16, 3), width=0)
    with pytest.raises(ValueError, match="height, width, channels"):
        EntropyEncoder((16, 16))


@pytest.mark.parametrize("cls", [ExplicitGenerator, ImplicitGenerator, EntropyEncoder])
def test_save_and_reload_on_their_own(cls, tmp_path):
    net = cls((16, 16, 3), width=4)
    if cls is ImplicitGenerator:
        inputs = [tf.random.uniform([2, 16, 16, 9]), tf.random.uniform([2, 64], -1, 1)]
    elif cls is ExplicitGenerator:
        inputs = tf.random.uniform([2, 16, 16, 9])
    else:
        inputs = tf.random.uniform([2, 16, 16, 3], -1, 1)
    path = str(tmp_path / "net.keras")
    net.save(path)
    again = keras.saving.load_model(path)
    assert type(again) is cls
    assert again.get_config() == net.get_config()
    for a, b in zip(tf.nest.flatten(net(inputs)), tf.nest.flatten(again(inputs))):
        np.testing.assert_array_equal(a, b)
