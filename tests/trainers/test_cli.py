"""What every command line shares (trainers/cli.py): --help that lists the command's own flags
in about a second, before TensorFlow is imported; one error line and exit 2 for a bad value;
flags generated from the run schema, each recorded; the removed flags naming their new
spelling; nothing written to the workdir on bad input; a run a benchmark started resumed by
adt-train; an adt-tune trial recorded as adt-train records the same run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from adt_tf.training import config as schema
from tests.helpers import COMMANDS, npz_dataset, run_command, run_python

#: What each command's --help must list (its own flags; adt-train's: every schema flag).
OWN = {"adt-train": ["--config", *(f"--{n}" for n in schema.flag_paths())],
       "adt-evaluate": ["--model", "--suite", "--attack_params", "--per_attack", "--out",
                        "--compute_dtype", "--checkpoint", "--epsilon"],
       "adt-tune": ["--tuner", "--lambda_values", "--max_trials", "--tuning_role",
                    "--oracle_address", "--validation_examples", "--epochs", "--config"],
       "adt-export": ["--model", "--export_dir", "--model_name", "--version", "--verify"],
       "adt-analyze": ["--model", "--analyses", "--num_samples", "--grid_size", "--lambdas"]}
#: absl's own flags and TensorFlow's start-up lines: behind --helpfull, or silenced.
INTERNALS = ["--flagfile", "--logtostderr", "--only_check_args", "--test_srcdir",
             "--xla_", "cuda", "cpu_feature_guard", "oneDNN", "InitializeLog", "cuInit"]
TINY = ["--dataset=cifar10_sample", "--max_train_examples=96", "--eval_examples=16",
        "--batch_size=32", "--epochs=1", "--model_params=width=4,dense_units=16,dropout=0",
        "--verbose=2", "--lr=0.02"]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_lists_the_commands_own_flags_and_exits_0(command):
    proc = run_command(command, "--help")
    assert proc.returncode == 0, proc.stderr
    for flag in OWN[command]:
        assert f"{flag}:" in proc.stdout or f"]{flag[2:]}:" in proc.stdout, (command, flag)
    for internal in INTERNALS:
        assert internal not in proc.stdout + proc.stderr, (command, internal)
    assert proc.stderr == ""
    assert "--helpfull" in proc.stdout


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_does_not_import_tensorflow(command):
    proc = run_command(command, "--help", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0
    imported = [line.split("|")[-1].strip() for line in proc.stderr.splitlines()]
    assert "tensorflow" not in imported and "keras" not in imported


def test_a_bad_value_is_one_line_and_exit_2():
    for args, says in ((["--epochs=abc"], "--epochs must be an integer, got 'abc'"),
                       (["--norm=l3"], "--norm must be one of linf, l2"),
                       (["--momentum=2"], "--momentum must be >= 0 and <= 1"),
                       (["--epsilon=8/0"], "--epsilon must be a number"),
                       (["stray"], "unexpected arguments")):
        proc = run_command("adt-train", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("adt-train: error:")
        assert says in proc.stderr, proc.stderr
    proc = run_command("adt-export", "--version=1.5")
    assert proc.returncode == 2 and "--version must be an integer" in proc.stderr


def test_an_error_after_tensorflow_started_is_one_line_too(tmp_path):
    workdir = tmp_path / "w"
    proc = run_command("adt-train", "--dataset=no_such_set", f"--workdir={workdir}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert "Unknown dataset 'no_such_set'" in proc.stderr
    assert not workdir.exists()
    proc = run_command("adt-evaluate", "--model=/no/such/model.keras")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("flag, says", [
    ("--entropy_weight=0.1", "--method_params=entropy_weight=VALUE"),
    ("--random_epsilon", "--method_params=random_epsilon=VALUE"),
    ("--model_batch_norm", "--model_params=batch_norm=true"),
    ("--model_width=4", "--model_params=width=VALUE"),
])
def test_a_removed_flag_exits_2_naming_its_new_spelling(flag, says):
    proc = run_command("adt-train", flag)
    assert proc.returncode == 2 and f"was removed; use {says}" in proc.stderr, proc.stderr


def test_adt_tunes_removed_flags_name_adt_trains():
    proc = run_command("adt-tune", "--val_examples=64")
    assert proc.returncode == 2 and "--validation_examples" in proc.stderr
    proc = run_command("adt-tune", "--val_pgd_steps=3")
    assert proc.returncode == 2 and "--validation_attack=pgd<steps>" in proc.stderr


@pytest.mark.parametrize("args, says", [
    (["--method=fgsm_at", "--method_params=random_epsilon=yes"],
     "random_epsilon must be true, false, 1 or 0, got 'yes'"),
    (["--method_params=entropy_weigth=0.1"], "did you mean entropy_weight"),
    pytest.param(["--method_params=inner_steps=0"], "inner_steps must be an integer >= 1",
                 marks=pytest.mark.slow),
    pytest.param(["--model_params=dropout=1"], "dropout must be in [0, 1)", marks=pytest.mark.slow),
    (["--model=preact_resnet18", "--model_params=batch_norm=true"],
     "--model=preact_resnet18 does not take 'batch_norm'"),
    pytest.param(["--method=adt_exp_am", "--method_params=awp_gamma=0.01"],
                 "does not take 'awp_gamma'", marks=pytest.mark.slow),
    pytest.param(["--method=awp_at", "--method_params=awp_gamma=-1"], "awp_gamma must be a finite",
                 marks=pytest.mark.slow),
    (["--ema_warmup"], "--ema_warmup=true applies to a weight average"),
    pytest.param(["--method=adt_exp", "--method_params=family=lowrank,rank=99999"], "rank=99999",
                 marks=pytest.mark.slow),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args, says):
    workdir = tmp_path / "w"
    proc = run_command("adt-train", *TINY, *args, f"--workdir={workdir}")
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not workdir.exists()


def test_a_bad_config_file_exits_2(tmp_path):
    path = tmp_path / "recipe.py"
    path.write_text("def get_config():\n    return 3\n")
    proc = run_command("adt-train", f"--config={path}", f"--workdir={tmp_path / 'w'}")
    assert proc.returncode == 2 and "must return an adt_tf.training.config.RunConfig" in \
        proc.stderr
    assert not (tmp_path / "w").exists()


def _non_default(path, field, kind):
    """A valid value other than the default, for every setting (and its text)."""
    special = {"data.dataset": "npz:/data/x", "model.name": "preact_resnet18",
               "model.params": {"width": "8"}, "method.name": "trades",
               "method.params": {"trades_beta": "1.0"}, "validation.attack": "pgd5",
               "threat.norm": "l2", "threat.epsilon": 0.25, "compute.strategy": "mirrored",
               "run.workdir": "/tmp/somewhere", "data.data_dir": "/tmp/tfds",
               "compute.tpu": "grpc://tpu:8470", "optim.lr_decay_epochs": (3, 9),
               "validation.ema_decay": 0.99, "validation.ema_warmup": False,
               "run.verbose": 0, "optim.lr_schedule": "cyclic",
               "optim.weight_decay_form": "decoupled", "optim.momentum": 0.5,
               "optim.lr_decay_factor": 0.5}
    if path in special:
        return special[path]
    base, _ = schema.optional_base(kind)
    default = field.default if field.default is not dataclasses.MISSING else None
    if base is bool:
        return not default
    if base is int:
        return (default or 0) + 3
    return (default or 0.1) * 0.5 if base is float else "x"


def test_every_setting_can_be_set_from_the_command_line():
    expected, argv = {}, []
    for path, field, kind in schema.schema_fields():
        value = _non_default(path, field, kind)
        expected[path] = value
        name = schema.flag_name(path, field)
        if isinstance(value, bool):
            argv.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, dict):
            argv.append(f"--{name}=" + ",".join(f"{k}={v}" for k, v in value.items()))
        elif isinstance(value, tuple):
            argv.append(f"--{name}=" + ",".join(map(str, value)))
        else:
            argv.append(f"--{name}={value}")
    script = ("import json, sys; from trainers import cli, train; "
              "cli.FLAGS(['adt-train', *sys.argv[1:]]); "
              "print(json.dumps(cli.config_from_flags().to_dict()))")
    proc = run_python(script, *argv, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    for path, value in expected.items():
        section, name = path.split(".")
        want = list(value) if isinstance(value, tuple) else value
        assert got[section][name] == want, path


def test_a_run_records_every_setting_resolved(tmp_path):
    workdir = tmp_path / "run"
    proc = run_command("adt-train", *TINY, "--method=pgd_at", "--method_params=attack_steps=1",
                       "--validation_examples=32", "--ema_decay=0.9", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((workdir / "config.json").read_text())
    assert record["schema_version"] == schema.SCHEMA_VERSION
    assert record["threat"]["epsilon"] == pytest.approx(8 / 255)
    assert record["method"]["params"] == {"attack_steps": 1,
                                          "attack_step_size": pytest.approx(2 / 255)}
    assert record["model"]["params"]["batch_norm"] is False  # the builder's default
    assert record["validation"]["seed"] == 0 and record["validation"]["ema_warmup"] is True
    assert len(record["resolved"]["validation_indices"]) == 32
    assert record["resolved"]["precision_policy"] == "float32"
    # None only where it means "not used": no tfds folder, no TPU.
    nulls = [f"{s}.{k}" for s, v in record.items() if isinstance(v, dict)
             for k, x in v.items() if x is None]
    assert sorted(nulls) == ["compute.tpu", "data.data_dir"]
    # One line per epoch into a file or a pipe; the test split's numbers named for it.
    assert "\r" not in proc.stdout
    header = (workdir / "history.csv").read_text().splitlines()[0]
    assert "val_robust_accuracy" in header and "test_" not in header


@pytest.mark.slow
def test_without_a_validation_split_the_test_numbers_are_named_test(tmp_path):
    workdir = tmp_path / "run"
    proc = run_command("adt-train", *TINY, "--method=standard", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr
    header = (workdir / "history.csv").read_text().splitlines()[0].split(",")
    assert "test_accuracy" in header and "test_loss" in header
    assert not [c for c in header if c.startswith("val_")]


@pytest.mark.slow
def test_a_run_a_benchmark_started_resumes_and_extends_with_adt_train(tmp_path):
    """bench.robustness trains epoch 1 of its CPU recipe; adt-train --config=cpu extends it
    to 2 epochs; the weights equal an uninterrupted 2-epoch adt-train run's, bit for bit."""
    data = npz_dataset(tmp_path / "data", 128, 32, "sample")
    script = (
        "import dataclasses, sys; from adt_tf.training.config import override; "
        "from bench.kit import recipes; "
        "recipe = recipes.RECIPES['cpu']; "
        "recipe = dataclasses.replace(recipe, config=override(recipe.config, "
        "{'optim.epochs': 1})); "
        "recipes.train(recipe, 'pgd_at', 0, sys.argv[1], sys.argv[2], 2)")
    bench_dir = tmp_path / "bench"
    proc = run_python(script, data, bench_dir, timeout=900)
    assert proc.returncode == 0, proc.stderr
    started = bench_dir / "pgd_at-seed0"
    common = ["--config=cpu", f"--dataset=npz:{data}", "--method=pgd_at", "--seed=0",
              "--epochs=2", "--verbose=2"]
    extended = run_command("adt-train", *common, f"--workdir={started}")
    assert extended.returncode == 0, extended.stderr
    assert "Resuming" in extended.stdout and "1 of 2 epochs already done" in extended.stdout
    whole = run_command("adt-train", *common, f"--workdir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr
    import keras

    a = keras.saving.load_model(started / "classifier.keras").get_weights()
    b = keras.saving.load_model(tmp_path / "whole" / "classifier.keras").get_weights()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_an_adt_tune_trial_is_recorded_as_adt_train_records_the_run(tmp_path):
    settings = [*TINY, "--method=adt_exp", "--validation_examples=24",
                "--validation_attack=pgd2"]
    tune = run_command("adt-tune", *settings, "--method_params=inner_steps=1,mc_samples=1",
                       "--lambda_values=0.05", "--max_trials=1", f"--directory={tmp_path / 'tune'}",
                       "--project_name=p")
    assert tune.returncode == 0, tune.stderr
    (trial_record,) = (tmp_path / "tune" / "p").glob("trial_*/config.json")
    train = run_command("adt-train", *settings,
                        "--method_params=inner_steps=1,mc_samples=1,entropy_weight=0.05",
                        f"--workdir={tmp_path / 'train'}")
    assert train.returncode == 0, train.stderr
    ours = json.loads(trial_record.read_text())
    theirs = json.loads((tmp_path / "train" / "config.json").read_text())
    for record in (ours, theirs):
        record["run"].pop("workdir")
    assert ours == theirs
    assert len(ours["resolved"]["validation_indices"]) == 24
