"""Method arguments on the command line: --method_params=NAME=VALUE,... (typed from the
method's constructor), and the per-method flags of earlier versions, now refused with their
new spelling."""

from __future__ import annotations

import functools
import json
import os

import pytest
from absl import flags
from absl.testing import flagsaver

from adt_tf import data as data_lib
from adt_tf.methods import METHODS, method_arguments
from adt_tf.training.config import RunConfig
from adt_tf.training.resolve import resolve
from tests.helpers import run_command
from trainers import cli, train


@functools.cache
def _sample_splits():
    return data_lib.load(data_lib.SAMPLE, max_train_examples=64)


def parse(argv):
    """adt-train's flags parsed from `argv` into its config; a flag value the command line
    refuses is the ValueError of its message (adt-train prints it and exits 2)."""
    with flagsaver.flagsaver():
        try:
            flags.FLAGS(["adt-train", *argv])
        except flags.Error as err:
            raise ValueError(str(err)) from None
        return cli.config_from_flags()


def params_from(argv, method):
    """The method's arguments as the run records them: typed from its constructor, every
    default filled, the threat-dependent ones set from its ball (L-inf 8/255)."""
    config = parse([f"--method={method}", *argv])
    return resolve(config, _sample_splits()).config.method.params


def test_the_help_lists_every_methods_arguments_with_their_defaults():
    for method in METHODS:
        text = train.arguments_help(RunConfig.from_flags(method=method, method_params="help"))
        lines = text.splitlines()
        for name, default in method_arguments(method).items():
            shown = ("set from --norm or the other arguments" if default is None
                     else json.dumps(default))
            assert any(line.startswith(f"  {name}: ") and line.endswith(f"default {shown}")
                       for line in lines), (method, name, text)


@pytest.mark.slow
def test_method_params_help_prints_the_arguments_and_exits_0():
    proc = run_command("adt-train", "--method=trades", "--method_params=help", timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in method_arguments("trades"):
        assert f"  {name}: " in proc.stdout, name


@pytest.mark.parametrize(("argv", "method", "expected"), [
    (["--method_params=trades_beta=1.0,attack_steps=3"], "trades",
     {"trades_beta": 1.0, "attack_steps": 3, "attack_step_size": 0.007, "init_std": 0.001}),
    (["--method_params=outer_loss=trades,trades_beta=1"], "adt_exp",
     {"outer_loss": "trades", "trades_beta": 1.0, "inner_steps": 7}),
    ([], "adt_exp", {"outer_loss": "ce", "trades_beta": 6.0}),
    (["--method_params=inner_beta1=0.5"], "adt_exp", {"inner_beta1": 0.5, "inner_beta2": 0.0}),
    (["--method_params=random_epsilon=true,adv_weight=0.5"], "fgsm_at",
     {"random_epsilon": True, "adv_weight": 0.5, "adv_fraction": 0.5}),
    (["--method_params=random_epsilon=False"], "fgsm_at", {"random_epsilon": False}),
    ([], "fast_at", {"attack_step_size": None}),
    (["--method_params=attack_step_size=0.01"], "pgd_at",
     {"attack_step_size": 0.01, "attack_steps": 10}),
    (["--method_params=alp_weight=1"], "alp", {"alp_weight": 1.0, "attack_step_size": 2 / 255}),
    (["--method_params=sinkhorn_iterations=20,label_smoothing=0.1"],
     "feascatter", {"sinkhorn_iterations": 20, "label_smoothing": 0.1, "attack_steps": 1,
                    "sinkhorn_reg": 0.01}),
])
def test_method_params_reach_the_method_and_unset_ones_take_its_defaults(argv, method, expected):
    params = params_from(argv, method)
    for key, value in expected.items():
        assert params[key] == value, key
        assert type(params[key]) is type(value) or value is None, key
    assert set(params) == set(method_arguments(method))


@pytest.mark.parametrize("name", train.REMOVED_METHOD_FLAGS)
def test_each_removed_flag_is_refused_naming_its_new_spelling(name):
    method = next(m for m in METHODS if name in method_arguments(m))
    default = method_arguments(method)[name]
    text = {"outer_loss": "trades", "inner_gradients": "fresh", "perturb_mode": "inference"}
    kind = float if default is None else type(default)
    value = text[name] if kind is str else {bool: "true", int: "3", float: "0.25"}[kind]
    with pytest.raises(ValueError, match=f"--{name} was removed; use "
                                         f"--method_params={name}=VALUE instead"):
        params_from([f"--{name}={value}"], method)
    new = params_from([f"--method_params={name}={value}"], method)
    assert new[name] == (value if kind is str else json.loads(value))


def test_a_removed_flag_exits_2_with_one_error_line():
    proc = run_command("adt-train", "--entropy_weight=0.1", timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("adt-train: error: --entropy_weight was removed; use "
                                   "--method_params=entropy_weight=VALUE instead.")


def test_an_argument_given_twice_malformed_or_not_taken_is_an_error():
    with pytest.raises(ValueError, match="--tau was removed; use --method_params=tau=VALUE"):
        params_from(["--method_params=tau=0.5", "--tau=0.4"], "adt_imp_am")
    with pytest.raises(ValueError, match=r"--method_params: 'tau' must look like NAME=VALUE"):
        params_from(["--method_params=tau"], "adt_imp_am")
    with pytest.raises(ValueError, match="--method_params: tau is given twice"):
        params_from(["--method_params=tau=0.5,tau=0.6"], "adt_imp_am")
    with pytest.raises(ValueError, match="--method=standard does not take 'tau'.*it takes no "
                                         "arguments of its own"):
        params_from(["--method_params=tau=0.5"], "standard")
    with pytest.raises(ValueError, match=r"--method=adt_imp_am does not take 'taux' \(did you "
                                         r"mean tau\?\); it takes .*tau"):
        params_from(["--method_params=taux=0.5"], "adt_imp_am")


def test_a_boolean_argument_reads_only_true_false_1_0():
    assert params_from(["--method_params=random_epsilon=0"], "fgsm_at")["random_epsilon"] \
        is False
    with pytest.raises(ValueError, match="random_epsilon must be true, false, 1 or 0, got "
                                         "'yes'"):
        params_from(["--method_params=random_epsilon=yes"], "fgsm_at")


@pytest.mark.slow
def test_cli_trains_trades_end_to_end(tmp_path):
    workdir = str(tmp_path / "trades")
    args = ["--method=trades", "--method_params=trades_beta=1.0,attack_steps=2",
            f"--workdir={workdir}",
            "--epochs=1", "--max_train_examples=64", "--batch_size=32", "--model_params=width=4",
            "--eval_examples=32", "--verbose=2", "--lr=0.01"]
    proc = run_command("adt-train", *args)
    assert proc.returncode == 0, proc.stderr
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["method"]["params"]["trades_beta"] == 1.0
    assert config["method"]["params"]["attack_steps"] == 2
    assert os.path.exists(os.path.join(workdir, "classifier.keras"))


def test_cli_rejects_an_unknown_outer_loss(tmp_path):
    from adt_tf.training.run import run_training

    with pytest.raises(ValueError, match="Unknown outer loss 'hinge'"):
        run_training(RunConfig.from_flags(workdir=str(tmp_path / "w"), epochs=1,
                                          method_params={"outer_loss": "hinge"}))
