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
