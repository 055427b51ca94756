import keras
import numpy as np
import pytest

from adt_tf.models import MODELS, PENULTIMATE, build_model, feature_extractor


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
