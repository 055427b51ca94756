"""Training under tf.distribute.MirroredStrategy on two logical CPU devices (conftest)."""

import keras
import numpy as np
import tensorflow as tf

from adt_tf.methods import ADTExp, StandardTraining
from tests.helpers import ce_loss, make_tiny_images, tiny_classifier


def one_step_weights(strategy, init_weights, x, y):
    with strategy.scope():
        # No BatchNorm, no dropout: a replica's step depends on its examples only.
        trainer = StandardTraining(tiny_classifier(dropout=0.0))
        trainer.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9), loss=ce_loss())
        trainer(x[:1])
        trainer.classifier.set_weights(init_weights)
    trainer.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    return trainer.classifier.get_weights()


def test_mirrored_step_equals_single_device_step(two_device_strategy):
    x, y = make_tiny_images(32)
    init = tiny_classifier(dropout=0.0).get_weights()
    single = one_step_weights(tf.distribute.get_strategy(), init, x, y)
    mirrored = one_step_weights(two_device_strategy, init, x, y)
    assert two_device_strategy.num_replicas_in_sync == 2
    moved = max(np.abs(a - b).max() for a, b in zip(single, init))
    assert moved > 1e-3  # the step really changed the weights
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_adt_exp_loss_falls_under_mirrored_strategy(two_device_strategy):
    x, y = make_tiny_images(64)
    with two_device_strategy.scope():
        trainer = ADTExp(tiny_classifier(width=8, dense_units=32), inner_steps=3, mc_samples=2,
                         seed=0)
        trainer.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=ce_loss(),
                        metrics=["accuracy"])
    history = trainer.fit(x, y, batch_size=32, epochs=6, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]
    assert np.all(np.isfinite(history["entropy"]))
