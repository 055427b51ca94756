"""Method arguments on the command line: --method_params=NAME=VALUE,..., and the per-method
flags of earlier versions, still read with a deprecation warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from absl import flags
from absl.testing import flagsaver

from adt_tf.methods import METHODS, method_arguments
from adt_tf.threat import LinfBall
from adt_tf.training import TrainConfig, with_norm_defaults
from tests.helpers import ROOT
from trainers import train


def params_from(argv, method):
    with flagsaver.flagsaver():
        flags.FLAGS(["adt-train", f"--method={method}", *argv])
        params = train.method_params_from_flags(method)
        warnings = train.deprecated_flag_warnings()
    # What the run records: the threat-dependent defaults are set from its ball.
    params = with_norm_defaults(TrainConfig(workdir="unused", method=method,
                                            method_params=params), LinfBall(8 / 255)).method_params
    return params, warnings


def test_the_help_lists_every_methods_arguments_with_their_defaults():
    text = flags.FLAGS["method_params"].help
    for method in METHODS:
        for name, default in method_arguments(method).items():
            shown = "(by --norm)" if default is None else str(default)
            assert f"{name}={shown}" in text, (method, name)


@pytest.mark.parametrize(("argv", "method", "expected"), [
    (["--method_params=trades_beta=1.0,attack_steps=3"], "trades",
     {"trades_beta": 1.0, "attack_steps": 3, "attack_step_size": 0.007, "init_std": 0.001}),
    (["--method_params=outer_loss=trades,trades_beta=1"], "adt_exp",
     {"outer_loss": "trades", "trades_beta": 1.0, "inner_steps": 7}),
    ([], "adt_exp", {"outer_loss": "ce", "trades_beta": 6.0}),
    (["--method_params=inner_beta1=0.5"], "adt_exp", {"inner_beta1": 0.5, "inner_beta2": 0.0}),
    (["--method_params=random_epsilon=true,adv_weight=0.5"], "fgsm_at",
     {"random_epsilon": True, "adv_weight": 0.5, "adv_fraction": 0.5}),
    ([], "fast_at", {"attack_step_size": None}),
    (["--method_params=attack_step_size=0.01"], "pgd_at",
     {"attack_step_size": 0.01, "attack_steps": 10}),
    (["--method_params=alp_weight=1"], "alp", {"alp_weight": 1, "attack_step_size": 2 / 255}),
    (["--method_params=sinkhorn_iterations=20,label_smoothing=0.1"],
     "feascatter", {"sinkhorn_iterations": 20, "label_smoothing": 0.1, "attack_steps": 1,
                    "sinkhorn_reg": 0.01}),
])
def test_method_params_reach_the_method_and_unset_ones_take_its_defaults(argv, method, expected):
    params, warnings = params_from(argv, method)
    for key, value in expected.items():
        assert params[key] == value, key
    assert set(params) == set(method_arguments(method)) and warnings == []


@pytest.mark.parametrize("name", train.DEPRECATED_METHOD_FLAGS)
def test_each_deprecated_flag_still_works_and_names_its_new_spelling(name):
    method = next(m for m in METHODS if name in method_arguments(m))
    default = method_arguments(method)[name]
    text = {"outer_loss": "trades", "inner_gradients": "fresh", "perturb_mode": "inference"}
    kind = float if default is None else type(default)
    value = text[name] if kind is str else {bool: "true", int: "3", float: "0.25"}[kind]
    params, warnings = params_from([f"--{name}={value}"], method)
    assert params[name] == (value if kind is str else json.loads(value))
    assert warnings == [f"--{name} is deprecated and will be removed; use "
                        f"--method_params={name}={value} instead."]
    new, _ = params_from([f"--method_params={name}={value}"], method)
    assert new == params


def test_an_argument_given_both_ways_or_malformed_is_an_error():
    with pytest.raises(ValueError, match="tau is given twice: by --method_params and by --tau"):
        params_from(["--method_params=tau=0.5", "--tau=0.4"], "adt_imp_am")
    with pytest.raises(ValueError, match=r"--method_params: 'tau' must look like NAME=VALUE"):
        params_from(["--method_params=tau"], "adt_imp_am")
    with pytest.raises(ValueError, match="--method_params: tau is given twice"):
        params_from(["--method_params=tau=0.5,tau=0.6"], "adt_imp_am")
    with pytest.raises(ValueError, match="--method=standard does not take tau .*it takes no "
                                         "arguments of its own"):
        params_from(["--method_params=tau=0.5"], "standard")


@pytest.mark.slow
def test_cli_trains_trades_end_to_end(tmp_path):
    workdir = str(tmp_path / "trades")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    args = ["--method=trades", "--method_params=trades_beta=1.0,attack_steps=2",
            f"--workdir={workdir}",
            "--epochs=1", "--max_train_examples=64", "--batch_size=32", "--model_width=4",
            "--eval_examples=32", "--verbose=2", "--lr=0.01"]
    proc = subprocess.run([sys.executable, "-m", "trainers.train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["method_params"]["trades_beta"] == 1.0
    assert config["method_params"]["attack_steps"] == 2
    assert os.path.exists(os.path.join(workdir, "classifier.keras"))


def test_cli_rejects_an_unknown_outer_loss(tmp_path):
    from adt_tf.training import TrainConfig, run_training

    with pytest.raises(ValueError, match="Unknown outer loss 'hinge'"):
        run_training(TrainConfig(workdir=str(tmp_path / "w"), epochs=1,
                                 method_params={"outer_loss": "hinge"}))
