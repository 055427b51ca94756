"""`adt_tf.numerics.optimizers.averaged_weights`: the weight average swapped in for validation
and the best checkpoint."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest

from adt_tf.numerics.optimizers import make_optimizer
from adt_tf.training.callbacks import read_best
from adt_tf.training.config import RunConfig
from adt_tf.training.run import run_training
from tests.helpers import tiny_run

TINY = tiny_run(max_train_examples=192, batch_size=32, eval_examples=32, lr=0.05)


def test_the_weight_average_is_the_numpy_average_of_the_steps():
    """Keras's optimiser EMA (--ema_decay): after each step avg <- d avg + (1 - d) w, the
    first step's average the weights themselves; finalize writes it into the model."""
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    decay = 0.7
    model.compile(optimizer=make_optimizer(0.1, momentum=0.9, weight_decay=2e-4,
                                           ema_decay=decay), loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 2)).astype(
        np.float32)
    average = None
    for _ in range(5):
        model.train_on_batch(x, y)
        weights = [w.numpy().astype(np.float64) for w in model.trainable_variables]
        average = weights if average is None else [decay * a + (1 - decay) * w
                                                   for a, w in zip(average, weights)]
    trained = [w.numpy() for w in model.trainable_variables]
    model.optimizer.finalize_variable_values(model.trainable_variables)
    for got, want, current in zip(model.trainable_variables, average, trained):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
        assert np.abs(want - current).max() > 1e-4  # the average is not the last weights


@pytest.mark.slow
def test_validation_and_the_best_checkpoint_see_the_average_and_training_goes_on(tmp_path):
    """Inside `averaged_weights` the model holds the optimiser's average (what validation
    scores and best.keras saves); after it, the weights being trained again. An EMA run
    records its decay and writes the average into classifier.keras."""
    from adt_tf.numerics.optimizers import averaged_weights

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer=make_optimizer(0.1, momentum=0.9, weight_decay=0.0,
                                           ema_decay=0.5), loss="mse")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 2)).astype(
        np.float32)
    for _ in range(3):
        model.train_on_batch(x, y)
    raw = [w.numpy() for w in model.trainable_variables]
    averages = [a.numpy() for a in model.optimizer._model_variables_moving_average]
    with averaged_weights(model):
        for w, a in zip(model.trainable_variables, averages):
            np.testing.assert_array_equal(w.numpy(), a)
    for w, r in zip(model.trainable_variables, raw):
        np.testing.assert_array_equal(w.numpy(), r)
    assert any(np.abs(r - a).max() > 1e-4 for r, a in zip(raw, averages))
    for method, params in (("standard", {}), ("adt_exp_am", {"generator_width": 2,
                                                           "generator_blocks": 1})):
        # an amortised method: its generator has an optimiser of its own, not averaged
        workdir = str(tmp_path / method)
        run_training(RunConfig.from_flags(workdir=workdir, epochs=2, validation_examples=40,
                                          ema_decay=0.9, **dict(TINY, method=method,
                                                                method_params=params)))
        recorded = json.load(open(os.path.join(workdir, "config.json")))
        assert recorded["validation"]["ema_decay"] == 0.9
        assert np.isfinite(read_best(workdir)["val_robust_accuracy"])
