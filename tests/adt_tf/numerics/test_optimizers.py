"""The training recipe: the reference's SGD (coupled weight decay, PyTorch's momentum buffer),
its epoch-from-1 step schedule, PyTorch's Adam, and the schedule across a resume."""

from __future__ import annotations

import csv
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.numerics.optimizers import (
    CoupledSGD,
    EpochStepDecay,
    TorchAdam,
    TriangularCyclicMomentum,
    make_optimizer,
)
from adt_tf.training.config import RunConfig
from adt_tf.training.run import run_training
from tests.adt_tf.numerics.test_schedules import torch_cyclic
from tests.helpers import ce_loss, make_tiny_images, tiny_classifier, tiny_run


def torch_sgd(w, grads, lrs, momentum, wd):
    """torch.optim.SGD, written out: g += wd w; buf = m buf + g; w -= lr buf (`momentum` a
    number, or one per step as a scheduler sets the param group's before each step)."""
    w, buf = w.astype(np.float64), None
    momenta = np.broadcast_to(momentum, (len(grads),))
    for g, lr, m in zip(grads, lrs, momenta):
        g = g + wd * w
        buf = g if buf is None else m * buf + g
        w = w - lr * buf
    return w


def test_coupled_sgd_is_torch_sgd_across_a_rate_change():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((5, 3)).astype("float32")
    grads = [rng.standard_normal((5, 3)).astype("float32") for _ in range(6)]
    schedule = EpochStepDecay(0.1, (2,), 0.1, steps_per_epoch=3)  # 0.1 x3, then 0.01 x3
    var = keras.Variable(w0)
    opt = CoupledSGD(schedule, momentum=0.9, coupled_weight_decay=2e-4)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), var)])
    expected = torch_sgd(w0, grads, [0.1] * 3 + [0.01] * 3, 0.9, 2e-4)
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-6, atol=1e-7)
    # Keras's SGD with decoupled decay is another optimiser (what --weight_decay_form=
    # decoupled selects): its result differs from torch's by far more than rounding.
    other = keras.Variable(w0)
    keras_opt = make_optimizer(0.1, momentum=0.9, weight_decay=2e-4,
                               weight_decay_form="decoupled", decay_epochs=(2,),
                               steps_per_epoch=3)
    for g in grads:
        keras_opt.apply_gradients([(tf.constant(g), other)])
    assert np.abs(other.numpy() - expected).max() > 1e-4


def test_coupled_weight_decay_alone_shrinks_weights_by_lr_wd_per_step():
    var = keras.Variable(np.ones((3,), "float32"))
    opt = CoupledSGD(0.1, momentum=0.0, coupled_weight_decay=0.5)
    opt.apply_gradients([(tf.zeros(3), var)])
    np.testing.assert_allclose(var.numpy(), 1 - 0.1 * 0.5)


def test_torch_adam_matches_pytorchs_formula():
    rng = np.random.default_rng(1)
    w = rng.standard_normal(6)
    grads = [rng.standard_normal(6) * 10.0 ** -rng.integers(0, 9, 6) for _ in range(4)]
    var = keras.Variable(w.astype("float32"))
    opt = TorchAdam(2e-4, beta_1=0.5, beta_2=0.999)
    m = v = np.zeros(6)
    for t, g in enumerate(grads, start=1):
        opt.apply_gradients([(tf.constant(g, tf.float32), var)])
        m = 0.5 * m + 0.5 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - 2e-4 * (m / (1 - 0.5**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(var.numpy(), w, rtol=1e-5, atol=1e-9)






def test_cyclic_optimizer_is_torch_sgd_under_cyclic_lr():
    """make_optimizer(schedule="cyclic") against train_fgsm.py's SGD + CyclicLR, step by
    step: the rate and the momentum of each step as the scheduler sets them."""
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((4, 3)).astype("float32")
    steps_per_epoch, epochs = 3, 4
    grads = [rng.standard_normal((4, 3)).astype("float32")
             for _ in range(steps_per_epoch * epochs)]
    opt = make_optimizer(0.2, momentum=0.9, weight_decay=5e-4, schedule="cyclic",
                         epochs=epochs, steps_per_epoch=steps_per_epoch)
    var = keras.Variable(w0)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), var)])
    rates, momenta = torch_cyclic(0.2, len(grads))
    expected = torch_sgd(w0, grads, rates, momenta, 5e-4)
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, atol=1e-6)
    # A constant 0.9 (what the schedule did before) is another run.
    assert np.abs(torch_sgd(w0, grads, rates, 0.9, 5e-4) - expected).max() > 1e-3
    # The decoupled form cycles it too: Keras's update v <- m v - lr g, w <- w + v with
    # the step's momentum (no weight decay here, so only the momentum differs).
    decoupled = make_optimizer(0.2, momentum=0.9, weight_decay=0.0, schedule="cyclic",
                               epochs=epochs, steps_per_epoch=steps_per_epoch,
                               weight_decay_form="decoupled")
    other = keras.Variable(w0)
    for g in grads:
        decoupled.apply_gradients([(tf.constant(g), other)])
    w, v = w0.astype(np.float64), np.zeros_like(w0, np.float64)
    for g, lr, m in zip(grads, rates, momenta):
        v = m * v - lr * g
        w = w + v
    np.testing.assert_allclose(other.numpy(), w, rtol=1e-5, atol=1e-6)
    # The step schedule keeps the momentum a float.
    assert make_optimizer(0.1, momentum=0.9, weight_decay=2e-4).momentum == 0.9


@pytest.mark.parametrize("form", ["coupled", "decoupled"])
def test_cyclic_momentum_survives_serialization(tmp_path, form):
    opt = make_optimizer(0.2, momentum=0.9, weight_decay=5e-4, schedule="cyclic", epochs=2,
                         steps_per_epoch=5, weight_decay_form=form)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(again) is type(opt)
    assert isinstance(again.momentum, TriangularCyclicMomentum)
    assert again.momentum.get_config() == opt.momentum.get_config()
    # through a saved model, as best.keras keeps its optimiser
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer=opt, loss=ce_loss())
    model.fit(np.ones((4, 3), "float32"), np.zeros(4, "int32"), verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path).optimizer
    assert float(loaded.momentum_now()) == pytest.approx(float(opt.momentum_now()))
    assert int(loaded.iterations.numpy()) == 1 and float(opt.momentum_now()) < 0.9


def test_cyclic_runs_the_triangle_and_refuses_a_resume_with_other_epochs(tmp_path):
    workdir = str(tmp_path / "run")
    config = dict(TINY, lr_schedule="cyclic", lr=0.2)
    run_training(RunConfig.from_flags(workdir=workdir, epochs=2, **config))
    # learning_rate is logged at each epoch's first step: step 0 (rate 0), then step 2 of 4
    assert lr_per_epoch(workdir) == pytest.approx([0.0, 0.2])
    with pytest.raises(ValueError, match=r"optim\.epochs: 2 -> 3"):
        run_training(RunConfig.from_flags(workdir=workdir, epochs=3, **config))


def test_a_run_of_the_earlier_algorithms_is_not_resumed(tmp_path):
    """A config.json without an algorithm_version (a record of version 1): resuming it would
    mix two algorithms (e.g. AT_PGD's best and last iterates) in one run."""
    import json

    workdir = str(tmp_path / "run")
    run_training(RunConfig.from_flags(workdir=workdir, epochs=1, **TINY))
    path = os.path.join(workdir, "config.json")
    with open(path) as f:
        config = json.load(f)
    assert config.pop("algorithm_version") == 2
    with open(path, "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match="algorithm_version: 1 -> 2.*train it again"):
        run_training(RunConfig.from_flags(workdir=workdir, epochs=2, **TINY))


def test_bad_weight_decay_form_is_named():
    with pytest.raises(ValueError, match="weight_decay_form 'l2'"):
        make_optimizer(0.1, momentum=0.9, weight_decay=2e-4, weight_decay_form="l2")


def lr_per_epoch(workdir):
    with open(os.path.join(workdir, "history.csv")) as f:
        return [float(row["learning_rate"]) for row in csv.DictReader(f)]


TINY = tiny_run(model_params={"width": 4, "dense_units": 16}, lr=0.1)


@pytest.mark.slow
def test_resume_that_extends_epochs_across_a_boundary(tmp_path):
    """Trained for 2 epochs with the decay at epoch 3 (beyond the run), then resumed with
    --epochs=4: epochs 3 and 4 run at the decayed rate, which also shows that the optimiser's
    step count was restored (the schedule reads it). Before the rate was always a schedule,
    Keras skipped loading the optimiser here with only a warning: the step count restarted at
    0, the momentum was lost, and the rate stayed 0.1."""
    workdir = str(tmp_path / "run")
    run_training(RunConfig.from_flags(workdir=workdir, epochs=2, lr_decay_epochs=(3,), **TINY))
    assert lr_per_epoch(workdir) == pytest.approx([0.1, 0.1])
    run_training(RunConfig.from_flags(workdir=workdir, epochs=4, lr_decay_epochs=(3,), **TINY))
    assert lr_per_epoch(workdir) == pytest.approx([0.1, 0.1, 0.01, 0.01])


@pytest.mark.slow
def test_a_fixed_seed_gives_a_fixed_run(tmp_path):
    """Two identical short runs (ADT_EXP: its noise, the data order, the initialisation) give
    bit-equal weights and the same report."""
    runs = []
    for name in ("a", "b"):
        workdir = str(tmp_path / name)
        report = run_training(RunConfig.from_flags(
            workdir=workdir, method="adt_exp", epochs=2, lr_decay_epochs=(2,),
            method_params={"inner_steps": 2, "mc_samples": 2},
            **{k: v for k, v in TINY.items() if k != "method"}))
        model = keras.saving.load_model(os.path.join(workdir, "classifier.keras"))
        report = {k: v for k, v in report.items() if k != "classifier_path"}
        runs.append((model.get_weights(), report))
    for a, b in zip(runs[0][0], runs[1][0]):
        np.testing.assert_array_equal(a, b)
    assert runs[0][1] == runs[1][1]


def test_ema_warmup_equals_a_numpy_recomputation():
    """avg_1 = w_1, then avg_{t+1} = d_t avg_t + (1 - d_t) w_{t+1} with d_t = min(tau, (1 + t)
    / (10 + t)), t = the updates before (TensorFlow 1's num_updates warm-up), over 6 steps."""
    x, y = make_tiny_images(48)
    tau = 0.999
    model = tiny_classifier()
    model.compile(optimizer=make_optimizer(0.05, momentum=0.9, weight_decay=2e-4,
                                           ema_decay=tau, ema_warmup=True), loss=ce_loss())
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append([v.numpy().copy() for v in model.trainable_variables])

    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[Record()])
    assert len(seen) == 6
    average = [w.copy() for w in seen[0]]
    for t, weights in enumerate(seen[1:], start=1):
        d = min(tau, (1 + t) / (10 + t))
        average = [d * a + (1 - d) * w for a, w in zip(average, weights)]
    optimizer = model.optimizer
    index = {id(v): i for i, v in enumerate(optimizer._trainable_variables)}
    for v, want in zip(model.trainable_variables, average):
        got = optimizer._model_variables_moving_average[index[id(v)]].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # Without the warm-up (Keras's), the average would hold far more of the first weights.
    keras_average = [w.copy() for w in seen[0]]
    for weights in seen[1:]:
        keras_average = [tau * a + (1 - tau) * w for a, w in zip(keras_average, weights)]
    assert any(not np.allclose(a, b, atol=1e-4) for a, b in zip(keras_average, average))


def test_ema_warmup_needs_a_weight_average():
    with pytest.raises(ValueError, match="--ema_warmup"):
        make_optimizer(0.1, momentum=0.9, weight_decay=0.0, ema_warmup=True)
