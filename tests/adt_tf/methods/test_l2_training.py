"""Training under an L2 ball: every method takes norm="l2" (the same classes, the
threat a parameter), their training inputs stay in the L2 ball, the step-size defaults follow
the norm, a method without an L2 form would refuse it; the run records the norm and a
workdir written before the norm existed still resumes."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.methods import get_method
from adt_tf.training.config import RunConfig
from adt_tf.training.run import run_training
from tests.helpers import (
    CHEAP_PARAMS,
    ce_loss,
    flat_record,
    make_tiny_images,
    run_command,
    slow_cases,
    tiny_classifier,
)

EPS = 0.5


_SMALL_GENERATOR = {"generator_width": 4, "generator_blocks": 1}
_L2_PARAMS = dict(CHEAP_PARAMS, adt_imp_am=_SMALL_GENERATOR)


@pytest.mark.parametrize("method", slow_cases(
    ["pgd_at", "trades", "adt_exp", "adt_exp_am", "adt_imp_am", "alp", "fast_at", "fgsm_at",
     "feascatter"], {"adt_exp_am", "adt_imp_am"}))
def test_l2_methods_train_on_inputs_inside_the_l2_ball(method):
    keras.utils.set_random_seed(0)
    x, y = make_tiny_images(32)
    params = _L2_PARAMS.get(method, {})
    trainer = get_method(method)(tiny_classifier(), epsilon=EPS, norm="l2", seed=1, **params)
    x_train, _ = trainer.perturb(tf.constant(x), tf.constant(y))
    norms = np.linalg.norm((x_train.numpy() - x).reshape(len(x), -1), axis=1)
    assert norms.max() <= EPS * (1 + 1e-5) and x_train.numpy().min() >= 0
    if method != "adt_imp_am":  # its untrained generator's small output stays near 0
        assert norms.max() > EPS / 4  # the ball is used, not just its centre
    assert norms.max() > np.abs(x_train.numpy() - x).max() * 2  # an L2, not an L-inf, shape
    trainer.compile(optimizer=keras.optimizers.SGD(0.05), loss=ce_loss())
    history = trainer.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(trainer))
    assert again.norm == "l2" and again.epsilon == EPS


def test_step_size_defaults_follow_the_norm_and_a_linf_only_method_refuses_l2():
    pgd_at, trades, alp = get_method("pgd_at"), get_method("trades"), get_method("alp")
    assert pgd_at(tiny_classifier(), epsilon=EPS, norm="l2").attack_step_size == EPS / 4
    assert pgd_at(tiny_classifier(), epsilon=8 / 255).attack_step_size == pytest.approx(2 / 255)
    assert trades(tiny_classifier(), epsilon=EPS, norm="l2").attack_step_size == EPS / 4
    assert trades(tiny_classifier(), epsilon=8 / 255).attack_step_size == 0.007
    assert alp(tiny_classifier(), epsilon=EPS, norm="l2").attack_step_size == EPS / 4
    assert alp(tiny_classifier(), epsilon=8 / 255).attack_step_size == pytest.approx(2 / 255)
    assert get_method("fast_at")(tiny_classifier(), epsilon=EPS, norm="l2").step_size == \
        1.25 * EPS

    class LinfOnly(pgd_at):
        NORMS = ("linf",)

    with pytest.raises(ValueError, match=r"LinfOnly has no l2 version: it is defined for the "
                                         r"L-infinity ball only \(--norm=linf\)"):
        LinfOnly(tiny_classifier(), epsilon=EPS, norm="l2")
    with pytest.raises(ValueError, match="did you mean 8/255"):
        pgd_at(tiny_classifier(), epsilon=8.0)  # the L-infinity check is unchanged
    assert pgd_at(tiny_classifier(), epsilon=2.0, norm="l2").epsilon == 2.0


@pytest.mark.slow
def test_an_l2_run_reports_its_norm_and_an_older_workdir_resumes(tmp_path):
    tiny = dict(max_train_examples=32, batch_size=16, model_params={"width": 4},
                eval_examples=16, verbose=0, lr=0.01, method="pgd_at",
                method_params={"attack_steps": 2, "attack_step_size": 0.125})
    report = run_training(RunConfig.from_flags(workdir=str(tmp_path / "l2"), epochs=1,
                                               norm="l2", **tiny))
    assert report["norm"] == "l2" and report["epsilon"] == 0.5  # the sample's L2 default
    assert "PGD-20 (L2)" in report["attack"]
    # A run written before `norm` existed (a flat version-1 config.json without the key)
    # resumes.
    old = str(tmp_path / "old")
    run_training(RunConfig.from_flags(workdir=old, epochs=1, **dict(
        tiny, method_params={"attack_steps": 2, "attack_step_size": 2 / 255})))
    path = os.path.join(old, "config.json")
    json.dump(flat_record(json.load(open(path)), drop=("norm",)), open(path, "w"))
    again = run_training(RunConfig.from_flags(workdir=old, epochs=2, **dict(
        tiny, method_params={"attack_steps": 2, "attack_step_size": 2 / 255})))
    assert again["epochs"] == 2 and again["norm"] == "linf"


@pytest.mark.slow
def test_cli_records_the_norm_s_step_size(tmp_path):

    workdir = tmp_path / "run"
    run_command("adt-train", f"--workdir={workdir}", "--method=pgd_at", "--norm=l2", "--epochs=1",
                "--max_train_examples=32", "--batch_size=16", "--model_params=width=4",
                "--eval_examples=16", "--method_params=attack_steps=2", "--verbose=0", check=True)
    config = json.load(open(workdir / "config.json"))
    assert config["threat"]["norm"] == "l2"
    assert config["method"]["params"]["attack_step_size"] == 0.125
