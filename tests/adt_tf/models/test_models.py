import keras
import numpy as np
import pytest

from adt_tf.models import MODELS, PENULTIMATE, build_model, feature_extractor
from tests.helpers import assert_normal_init, assert_uniform_init


@pytest.mark.parametrize("name,shape,kwargs", [
    ("small_cnn", (28, 28, 1), {}),
    ("small_cnn", (32, 32, 3), {"width": 8}),
    ("small_cnn", (32, 32, 3), {"width": 8, "batch_norm": True, "dropout": 0.0}),
    ("wide_resnet", (32, 32, 3), {"depth": 10, "width": 1}),
    ("preact_resnet18", (32, 32, 3), {"width": 4}),
])
def test_builders_return_logits_and_features(name, shape, kwargs):
    model = build_model(name, shape, 7, **kwargs)
    x = np.random.default_rng(0).uniform(0, 1, (2,) + shape).astype("float32")
    logits = model(x)
    assert logits.shape == (2, 7)
    features = feature_extractor(model)(x)
    assert features.shape[0] == 2 and features.ndim == 2
    assert model.get_layer(PENULTIMATE) is not None


def test_small_cnn_batch_norm_normalises_in_training_mode():
    plain = build_model("small_cnn", (16, 16, 3), 10, width=4)
    model = build_model("small_cnn", (16, 16, 3), 10, width=4, batch_norm=True)
    names = [layer.name for layer in model.layers if "bn" in layer.name]
    assert names == ["bn1", "bn2", "bn3", "bn4"]
    assert not any("bn" in layer.name for layer in plain.layers)
    # conv without bias + BatchNorm(gamma, beta, 2 moving statistics) per convolution.
    extra = sum(3 * f for f in (4, 4, 8, 8))
    assert model.count_params() == plain.count_params() + extra
    x = np.random.default_rng(0).uniform(0, 1, (8, 16, 16, 3)).astype("float32")
    relu1 = keras.Model(model.inputs, model.get_layer("bn1").output)
    out = np.asarray(relu1(x, training=True))
    assert np.allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)  # batch statistics used
    before = [np.array(w) for w in model.get_layer("bn1").non_trainable_weights]
    model(x, training=False)
    after = [np.array(w) for w in model.get_layer("bn1").non_trainable_weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_reference_architectures_have_expected_size():
    wrn = build_model("wrn_28_10", (32, 32, 3), 10)
    # WRN-28-10 has about 36.5 M parameters (Zagoruyko & Komodakis, Table 1).
    assert 36.0e6 < wrn.count_params() < 37.0e6
    assert build_model("wrn_34_10", (32, 32, 3), 10).count_params() > wrn.count_params()
    # PreAct ResNet-18 has about 11.2 M.
    assert 11.0e6 < build_model("preact_resnet18", (32, 32, 3), 10).count_params() < 11.4e6


def test_normalisation_is_inside_the_model(tmp_path):
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    model = build_model("small_cnn", (16, 16, 3), 10, width=4, mean=mean, std=std)
    x = np.random.default_rng(0).uniform(0, 1, (3, 16, 16, 3)).astype("float32")
    normalised = model.get_layer("normalize")(x).numpy()
    np.testing.assert_allclose(normalised, (x - mean) / np.array(std), rtol=1e-4, atol=1e-5)
    path = str(tmp_path / "m.keras")
    model.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path)(x), model(x), atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown model 'resnet50'; known: .*small_cnn"):
        build_model("resnet50", (32, 32, 3), 10)
    with pytest.raises(ValueError, match="depth must be 6n \\+ 4"):
        build_model("wide_resnet", (32, 32, 3), 10, depth=12)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("small_cnn", (32, 32), 10)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("small_cnn", (32, 32, 3), 1)
    assert "wrn_28_10" in MODELS and "wrn_34_10" in MODELS


def test_wide_resnet_is_initialised_as_the_reference_wideresnet():
    """models/wideresnet.py of the ADT (and TRADES) code: every convolution N(0, 2 / (k^2
    c_out)) (fan-out, untruncated), BatchNorm scale 1 and shift 0, the Linear's weights
    PyTorch's default U(+-1/sqrt(fan_in)) and its bias 0."""
    model = build_model("wrn_16_4", (32, 32, 3), 10)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 1 + 3 * 2 * 2 + 3  # stem, two convs per block, three shortcuts
    for conv in convs:
        kh, kw, _, out = conv.kernel.shape
        assert_normal_init(conv.kernel.numpy(), np.sqrt(2.0 / (kh * kw * out)))
    for bn in (layer for layer in model.layers
               if isinstance(layer, keras.layers.BatchNormalization)):
        np.testing.assert_array_equal(bn.gamma.numpy(), 1.0)
        np.testing.assert_array_equal(bn.beta.numpy(), 0.0)
    logits = model.get_layer("logits")
    assert_uniform_init(logits.kernel.numpy(), 1.0 / np.sqrt(logits.kernel.shape[0]))
    np.testing.assert_array_equal(logits.bias.numpy(), 0.0)


def test_preact_resnet18_is_fast_ats_network_with_pytorch_default_init():
    """Fast AT's PreActResNet18: PyTorch's default init everywhere (weights and the Linear's
    bias U(+-1/sqrt(fan_in))), and the 1x1 shortcut reads the block's raw input."""
    model = build_model("preact_resnet18", (32, 32, 3), 10, width=16)
    for conv in (layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)):
        kh, kw, cin, _ = conv.kernel.shape
        assert_uniform_init(conv.kernel.numpy(), 1.0 / np.sqrt(kh * kw * cin))
    logits = model.get_layer("logits")
    bound = 1.0 / np.sqrt(logits.kernel.shape[0])
    assert_uniform_init(logits.kernel.numpy(), bound)
    assert np.abs(logits.bias.numpy()).max() <= bound and np.any(logits.bias.numpy() != 0)
    short = model.get_layer("s2b1_short")
    assert short.input is model.get_layer("s1b2_add").output  # x, not relu(bn1(x))
    wrn = build_model("wrn_10_1", (32, 32, 3), 10)
    assert wrn.get_layer("g2b1_short").input is wrn.get_layer("g2b1_relu1").output


def test_strided_convolutions_pad_every_side_as_pytorch():
    """PyTorch's padding=1 with stride 2 centres output (0, 0) on input (0, 0); Keras's
    "same" would centre it on (1, 1) (padding only bottom and right)."""
    from adt_tf.models.wide_resnet import _conv

    inputs = keras.Input((4, 4, 1))
    conv = keras.Model(inputs, _conv(1, 3, "c", True, stride=2)(inputs))
    layer = conv.get_layer("c")
    kernel = np.arange(9, dtype=np.float32).reshape(3, 3, 1, 1)
    layer.kernel.assign(kernel)
    impulse = np.zeros((1, 4, 4, 1), np.float32)
    impulse[0, 0, 0, 0] = 1.0
    out = conv(impulse).numpy()
    assert out.shape == (1, 2, 2, 1)
    assert out[0, 0, 0, 0] == kernel[1, 1, 0, 0]  # the kernel's centre sits on the impulse
