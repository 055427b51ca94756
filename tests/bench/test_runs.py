"""What the benchmarks share (bench/runs.py): the data check and the recorded command."""

from __future__ import annotations

import os

from bench.kit.runs import command_line
from tests.helpers import ROOT, run_command


def test_the_recorded_command_names_no_folder_of_the_machine():
    parent = os.path.dirname(ROOT)
    line = command_line("bench.robustness", [f"--workdir={ROOT}/bench/runs/x",
                                             f"--data={parent}/shared/data/cifar10",
                                             "--seeds=0,1", "/etc/elsewhere"])
    assert line == ("python -m bench.robustness --workdir=bench/runs/x "
                    "--data=../shared/data/cifar10 --seeds=0,1 /etc/elsewhere")


def _bench(module, *args):
    return run_command(module, *args, timeout=300)


def test_a_missing_data_folder_is_one_line_and_exit_2(tmp_path):
    for module in ("bench.robustness", "bench.overfitting"):
        proc = _bench(module, f"--data={tmp_path / 'none'}", f"--workdir={tmp_path / 'w'}",
                      f"--output_dir={tmp_path / 'out'}")
        assert proc.returncode == 2, (module, proc.stderr)
        assert proc.stderr.strip().endswith("../shared/data/cifar10 beside the repository).")
        assert "no train.npz in" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_table_from_finished_runs_needs_no_training_data(tmp_path):
    proc = _bench("bench.overfitting", "--table_only", f"--data={tmp_path / 'none'}",
                  f"--workdir={tmp_path / 'w'}", f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr


def test_timing_survives_a_sitting_that_is_killed(tmp_path):
    """timing.json holds the finished epochs' time of a sitting that never returns (a kill
    in epoch 2 here), and the next sitting adds its own time to it."""
    import json

    import keras
    import pytest

    from adt_tf.training.config import RunConfig
    from bench.kit.runs import timed_training
    from tests.helpers import npz_dataset, tiny_run

    class Killed(Exception):
        pass

    def kill_in_epoch_two(epoch, logs=None):
        if epoch == 1:
            raise Killed

    data = npz_dataset(tmp_path / "data", 32, 16, size=16)
    config = RunConfig.from_flags(**tiny_run(dataset=f"npz:{data}", epochs=2,
                                             workdir=str(tmp_path / "run")))
    path = tmp_path / "run" / "timing.json"
    with pytest.raises(Killed):
        timed_training(config, monitors=(keras.callbacks.LambdaCallback(
            on_epoch_begin=kill_in_epoch_two),))
    first = json.loads(path.read_text())["train_seconds"]
    assert first > 0
    _, total = timed_training(config)  # resumes epoch 2
    assert total > first and json.loads(path.read_text())["train_seconds"] == total
