"""Training under tf.distribute.MirroredStrategy on two logical CPU devices (conftest).

One step of every method against one device: tests/test_replicas.py."""

import keras
import numpy as np

from adt_tf.methods import ADTExp
from tests.helpers import ce_loss, make_tiny_images, tiny_classifier


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
