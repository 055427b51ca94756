"""The training step every method shares (adt_tf/methods/base.py): what it logs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from adt_tf import data as data_lib
from adt_tf.methods import get_method
from tests.helpers import ce_loss, tiny_classifier


@pytest.mark.parametrize("method, params", [
    ("adt_exp", {"inner_steps": 1, "mc_samples": 1}),
    ("adt_exp_am", {"generator_width": 4, "generator_blocks": 1}),
])
@pytest.mark.parametrize("known_length", [True, False])
def test_an_epochs_logged_metric_is_the_mean_of_its_batches(method, params, known_length):
    """With or without a known dataset length (a dataset that runs out ends the epoch), the
    epoch's aux metrics are the mean over its batches: the step that finds no batch must not
    count (it did: the epoch's entropy was n / (n + 1) of the mean)."""
    splits = data_lib.load("cifar10_sample", max_train_examples=128)
    ds = data_lib.make_dataset(splits.x_train, splits.y_train, 32, training=True, seed=0)
    if not known_length:
        ds = ds.filter(lambda x, y: True)  # cardinality unknown to Keras
    trainer = get_method(method)(tiny_classifier((32, 32, 3)), seed=0, **params)
    trainer.compile(optimizer=keras.optimizers.SGD(0.01), loss=ce_loss())
    batches = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batches.append(dict(logs))

    history = trainer.fit(ds, epochs=1, verbose=0, callbacks=[Record()]).history
    assert len(batches) == 4
    for name in trainer.aux_metrics:
        # Keras's batch logs are the running means: the last one is the epoch's mean.
        np.testing.assert_allclose(history[name][0], batches[-1][name], rtol=1e-6)
