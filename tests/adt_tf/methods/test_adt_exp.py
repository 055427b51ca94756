import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.methods import ADTExp, StandardTraining, get_method
from tests.helpers import ce_loss, make_tiny_images, tiny_classifier


def compiled(trainer, lr=0.05, **kwargs):
    trainer.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9), loss=ce_loss(),
                    metrics=["accuracy"], **kwargs)
    return trainer


def clean_loss(classifier, x, y):
    return float(tf.reduce_mean(ce_loss()(y, classifier(x, training=False))))


@pytest.mark.slow
def test_fit_lowers_training_loss_and_reports_metrics():
    x, y = make_tiny_images(128)
    trainer = compiled(ADTExp(tiny_classifier(width=8, dense_units=32), seed=1), lr=0.05)
    before = clean_loss(trainer.classifier, x, y)
    history = trainer.fit(x, y, batch_size=32, epochs=6, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert clean_loss(trainer.classifier, x, y) < before
    for name in ("loss", "accuracy", "entropy", "inner_objective"):
        assert name in history and np.all(np.isfinite(history[name]))


def test_fit_under_xla_lowers_loss():
    x, y = make_tiny_images(32)
    trainer = compiled(ADTExp(tiny_classifier(), inner_steps=2, mc_samples=2, seed=1),
                       lr=0.1, jit_compile=True)
    history = trainer.fit(x, y, batch_size=16, epochs=4, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]


@pytest.mark.slow
def test_eager_and_tf_function_agree_under_fixed_seed():
    x, y = make_tiny_images(32)
    weights = []
    for eager in (True, False):
        keras.utils.set_random_seed(3)
        trainer = compiled(ADTExp(tiny_classifier(), inner_steps=3, mc_samples=2, seed=7),
                           run_eagerly=eager)
        trainer.fit(x, y, batch_size=16, epochs=1, verbose=0)
        weights.append(trainer.classifier.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_different_seeds_give_different_training():
    x, y = make_tiny_images(16)
    weights = []
    for seed in (1, 2):
        keras.utils.set_random_seed(3)
        trainer = compiled(ADTExp(tiny_classifier(), inner_steps=1, mc_samples=1, seed=seed))
        trainer.fit(x, y, batch_size=16, epochs=1, verbose=0)
        weights.append(trainer.classifier.get_weights()[0])
    assert not np.allclose(*weights)


def test_outer_step_uses_adversarial_inputs_inside_ball():
    x, y = make_tiny_images(16)
    trainer = ADTExp(tiny_classifier(), epsilon=4 / 255, inner_steps=2, mc_samples=2, seed=0)
    x_adv, aux = trainer.perturb(tf.constant(x), tf.constant(y))
    assert x_adv.shape == x.shape
    assert np.abs(x_adv.numpy() - x).max() <= 4 / 255 + 1e-6
    assert np.abs(x_adv.numpy() - x).max() > 1 / 255  # really perturbed
    assert set(aux) == {"entropy", "inner_objective"}


def test_config_round_trip_and_saving(tmp_path):
    trainer = ADTExp(tiny_classifier(), epsilon=0.1, entropy_weight=0.5, inner_steps=3,
                     mc_samples=4, inner_lr=0.2, inner_beta1=0.1, inner_beta2=0.2, seed=11)
    config = trainer.get_config()
    clone = ADTExp.from_config(config)
    for key in ("epsilon", "entropy_weight", "inner_steps", "mc_samples", "inner_lr",
                "inner_beta1", "inner_beta2", "seed"):
        assert getattr(clone, key) == getattr(trainer, key) == config[key]
    x, _ = make_tiny_images(4)
    trainer(x)
    path = str(tmp_path / "trainer.keras")
    trainer.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ADTExp) and loaded.entropy_weight == 0.5
    np.testing.assert_allclose(loaded(x), trainer(x), atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    ({"epsilon": 8}, "did you mean 8/255"),
    ({"epsilon": 0}, r"epsilon must be in \(0, 1\]"),
    ({"entropy_weight": -0.1}, "entropy_weight must be a finite number >= 0, got -0.1"),
    ({"inner_steps": 0}, "inner_steps must be an integer >= 1, got 0"),
    ({"mc_samples": 0}, "mc_samples must be an integer >= 1, got 0"),
    ({"inner_lr": 0}, "inner_lr must be a finite number > 0"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ADTExp(tiny_classifier(), **kwargs)


def test_registry_and_type_errors():
    assert get_method("adt_exp") is ADTExp and get_method("standard") is StandardTraining
    with pytest.raises(ValueError, match="Unknown method 'adt'; known: .*adt_exp"):
        get_method("adt")
    with pytest.raises(TypeError, match="keras.Model"):
        ADTExp("not a model")


def test_checkpoint_keeps_the_noise_stream(tmp_path):
    x, y = make_tiny_images(16)
    first = compiled(ADTExp(tiny_classifier(), inner_steps=1, mc_samples=1, seed=1))
    first.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "ckpt.weights.h5")
    first.save_weights(path)
    second = compiled(ADTExp(tiny_classifier(), inner_steps=1, mc_samples=1, seed=99))
    second(x[:1])
    second.optimizer.build(second.trainable_variables)
    second.load_weights(path)
    np.testing.assert_array_equal(second.seed_generator.state.numpy(),
                                  first.seed_generator.state.numpy())
    a, _ = first.perturb(tf.constant(x), tf.constant(y))
    b, _ = second.perturb(tf.constant(x), tf.constant(y))
    np.testing.assert_allclose(a, b, atol=1e-6)
