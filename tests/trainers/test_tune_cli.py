"""adt-tune (`trainers/tune_lambda.py`): bad input before training; a search that writes its table,
plot and best configuration and resumes without retraining."""

import csv
import json
import math
import os

import pytest

from adt_tf import tuning
from adt_tf.training.config import override
from adt_tf.training.record import RunRecord
from tests.adt_tf.tuning.helpers import toy_images, trial_files
from tests.helpers import run_command, write_npz_dataset


def test_cli_rejects_bad_input_before_training(tmp_path):
    proc = run_command("adt-tune", "--tuner=annealing", f"--directory={tmp_path}/t", "--epochs=1")
    assert proc.returncode == 2
    assert ("adt-tune: error: --tuner=annealing: value should be one of "
            "<random|bayesian|hyperband|grid>") in proc.stderr
    assert not os.path.exists(os.path.join(tmp_path, "t"))


@pytest.mark.parametrize(("flag", "spelling"), [
    ("--val_examples=64", "--validation_examples=N"),
    ("--val_pgd_steps=2", "--validation_attack=pgd<steps>"),
])
def test_cli_refuses_the_removed_validation_flags_naming_their_new_spelling(tmp_path, flag,
                                                                            spelling):
    proc = run_command("adt-tune", flag, f"--directory={tmp_path}/t", "--epochs=1")
    assert proc.returncode == 2
    name = flag.split("=")[0]
    assert f"adt-tune: error: {name} was removed; use {spelling}" in proc.stderr
    assert not os.path.exists(os.path.join(tmp_path, "t"))


@pytest.mark.slow
def test_cli_search_writes_table_plot_best_and_resumes_without_retraining(tmp_path):
    import matplotlib.image

    x, y = toy_images(176)
    data_dir = write_npz_dataset(tmp_path / "data", (x[:160], y[:160]), (x[160:], y[160:]))
    args = [f"--dataset=npz:{data_dir}", "--method=adt_exp", "--tuner=grid",
            "--lambda_values=1,0", "--max_trials=3", "--epochs=1", "--validation_examples=64",
            "--validation_attack=pgd2", "--epsilon=0.03", "--model_params=width=4",
            "--batch_size=8",
            "--lr=0.05", "--method_params=inner_steps=2,mc_samples=1", "--verbose=0",
            f"--directory={tmp_path}/tune", "--project_name=lam"]
    out = run_command("adt-tune", *args, check=True).stdout
    project = tmp_path / "tune" / "lam"
    assert "2 trial(s), 2 trained by this run" in out
    assert "| trial | status | lambda | clean acc | robust acc | mean entropy | epoch |" in out

    rows = json.load(open(project / "trials.json"))
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    lambdas = [r["entropy_weight"] for r in rows]
    assert lambdas == [0.0, 1.0]  # the grid, in increasing order
    for r in rows:
        assert 0 <= r["val_robust_accuracy"] <= r["val_clean_accuracy"] <= 1
        assert math.isfinite(r["entropy"])
    with open(project / "trials.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [float(r["val_robust_accuracy"]) for r in csv_rows] == [
        r["val_robust_accuracy"] for r in rows]
    assert (project / "trials.md").read_text().startswith("| trial | status | lambda |")

    image = matplotlib.image.imread(project / "search.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.01  # something was drawn

    best = json.load(open(project / "best_hyperparameters.json"))
    top = max(r["val_robust_accuracy"] for r in rows)
    assert best["val_robust_accuracy"] == top
    assert best["trial_id"] in [r["trial_id"] for r in rows if r["val_robust_accuracy"] == top]
    if rows[0]["val_robust_accuracy"] != rows[1]["val_robust_accuracy"]:  # no tie to break
        assert best["trial_id"] == max(rows, key=lambda r: r["val_robust_accuracy"])["trial_id"]
    best_row = next(r for r in rows if r["trial_id"] == best["trial_id"])
    assert best["method_params"]["entropy_weight"] == best_row["entropy_weight"]
    assert best["method_params"]["inner_steps"] == 2  # the fixed flags are kept
    assert f"Best trial {best['trial_id']}" in out
    for r in rows:  # each trial's run, recorded as adt-train records one
        record = json.load(open(project / f"trial_{r['trial_id']}" / "config.json"))
        assert record["method"]["params"]["entropy_weight"] == r["entropy_weight"]
        assert record["method"]["params"]["inner_steps"] == 2
        assert record["validation"]["examples"] == 64
        assert len(record["resolved"]["validation_indices"]) == 64

    # Resume in this process (a second interpreter start costs more than the search).


    before = trial_files(project)
    assert len(before) == 2
    saved = json.load(open(project / "search_config.json"))
    config = override(RunRecord.from_dict(saved["run"]).config,
                      {"run.workdir": "", "run.verbose": 0})
    assert (config.validation.examples, config.validation.attack) == (64, "pgd2")
    kwargs = dict(tuner_kind="grid", max_trials=3, executions_per_trial=1,
                  directory=str(tmp_path / "tune"), project_name="lam", overwrite=False,
                  space=tuning.SearchSpace(**saved["search"]["space"]), tune_knobs=())
    result = tuning.tune(config, **kwargs)
    assert result["trained"] == []
    assert trial_files(project) == before  # no trial folder added or rewritten
    assert result["best"]["trial_id"] == best["trial_id"]

    with pytest.raises(ValueError, match=r"other settings \(.*run\.seed: 0 -> 3"):
        tuning.tune(override(config, {"run.seed": 3}), **kwargs)


@pytest.mark.parametrize("timeout", ["nan", "-5", "0", "inf"])
def test_a_bad_oracle_timeout_exits_2_naming_the_flag(tmp_path, timeout):
    """nan waited forever and -5 exited 3 ("restart the chief")."""
    proc = run_command("adt-tune", "--tuning_role=chief", "--oracle_address=127.0.0.1:0",
                       f"--oracle_timeout={timeout}", f"--directory={tmp_path}/t")
    assert proc.returncode == 2, proc.stderr
    assert "--oracle_timeout must be a finite number of seconds > 0" in proc.stderr


@pytest.mark.slow
def test_a_chief_on_a_port_in_use_exits_2_naming_the_address(tmp_path):
    """Another chief (gRPC reuses ports, so both would serve) or another program on the
    port: exit 2 naming --oracle_address (it was a RuntimeError traceback, exit 1)."""
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        proc = run_command("adt-tune", "--tuning_role=chief", f"--oracle_address=127.0.0.1:{port}",
                           f"--directory={tmp_path}/t", "--epochs=1")
    finally:
        holder.close()
    assert proc.returncode == 2, proc.stderr
    assert f"--oracle_address=127.0.0.1:{port}: port {port} is in use" in proc.stderr
