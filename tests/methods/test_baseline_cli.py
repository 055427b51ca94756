"""The baselines' hyperparameters are adt-train flags named like their constructor arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from absl import flags
from absl.testing import flagsaver

from adt_tf.training import method_param_names
from trainers import train

BASELINES = ["pgd_at", "fgsm_at", "fast_at", "alp", "trades", "feascatter"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("method", BASELINES)
def test_every_constructor_argument_is_a_flag(method):
    for name in method_param_names(method):
        assert name in flags.FLAGS, f"--{name} missing for {method}"


@pytest.mark.parametrize(("argv", "method", "expected"), [
    (["--trades_beta=1.0", "--attack_steps=3"], "trades",
     {"trades_beta": 1.0, "attack_steps": 3, "attack_step_size": 0.007, "init_std": 0.001}),
    (["--outer_loss=trades", "--trades_beta=1"], "adt_exp",
     {"outer_loss": "trades", "trades_beta": 1.0, "inner_steps": 7}),
    ([], "adt_exp", {"outer_loss": "ce", "trades_beta": 6.0}),
    (["--random_epsilon", "--adv_weight=0.5"], "fgsm_at",
     {"random_epsilon": True, "adv_weight": 0.5, "adv_fraction": 0.5}),
    ([], "fast_at", {"attack_step_size": None}),
    (["--attack_step_size=0.01"], "pgd_at", {"attack_step_size": 0.01, "attack_steps": 10}),
    (["--alp_weight=1"], "alp", {"alp_weight": 1.0, "attack_step_size": 2 / 255}),
    (["--sinkhorn_iterations=20", "--label_smoothing=0.1"], "feascatter",
     {"sinkhorn_iterations": 20, "label_smoothing": 0.1, "attack_steps": 1,
      "sinkhorn_reg": 0.01}),
])
def test_flags_reach_the_method_and_unset_ones_take_its_defaults(argv, method, expected):
    with flagsaver.flagsaver():
        flags.FLAGS(["adt-train", f"--method={method}", *argv])
        params = train.method_params_from_flags(method)
    for key, value in expected.items():
        assert params[key] == value, key
    assert set(params) == set(method_param_names(method))


@pytest.mark.slow
def test_cli_trains_trades_end_to_end(tmp_path):
    workdir = str(tmp_path / "trades")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    args = ["--method=trades", "--trades_beta=1.0", "--attack_steps=2", f"--workdir={workdir}",
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
