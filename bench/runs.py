"""The one check every benchmark makes before it reuses a finished run.

A benchmark keeps a finished training (and its evaluation) and skips it on a rerun. That is
only right when the run in the folder is the run asked for: an explicit `--workdir` that holds
a run of another norm, method, seed, recipe or precision would otherwise be "kept" and
tabulated as the requested one. Each run folder holds its record (`config.json`, written by
`adt_tf.training.run.run_training`); `check_recorded_run` resolves the `RunConfig` the
benchmark would train and compares the two with the library's one comparison
(`adt_tf.training.record.differences`), naming each setting that differs.
"""

from __future__ import annotations

import os
from typing import Any

#: What may differ between a kept run and the one asked for: where it lives and how much it
#: prints (not the epochs: a benchmark's finished run of other length is another run).
KEEP_RESUMABLE = ("run.workdir", "run.verbose", "data.data_dir", "compute.intra_op_threads",
                  "compute.inter_op_threads", "compute.deterministic_ops")


class RunMismatchError(ValueError):
    """A run folder holds a run with other settings than the ones asked for."""


def check_recorded_run(run_dir: str, expected, benchmark: str) -> None:
    """Raises `RunMismatchError` if `run_dir/config.json` records another run than
    `expected` (a `RunConfig`). A folder without config.json (an evaluation restored from a
    committed table, or nothing yet) passes.

    Args:
        run_dir: the run's folder.
        expected: the config the benchmark would train into it.
        benchmark: its name, for the message (e.g. "bench.robustness").
    """
    from adt_tf.training.record import read_record, record_path

    if not os.path.exists(record_path(run_dir)):
        return
    try:
        recorded = read_record(run_dir)
    except ValueError as err:
        raise RunMismatchError(f"{benchmark}: {err}") from err
    check_recorded_config(recorded, expected, f"{benchmark}: {run_dir} holds",
                          "use another --workdir, or move that folder aside to train it again.")


def check_recorded_config(recorded: Any, expected, where: str, remedy: str) -> None:
    """Raises `RunMismatchError` if a run's record (a `RunRecord`, or its dict as config.json
    and a benchmark's results JSON keep it; the flat records of version 1 too) describes
    another run than `expected` (a `RunConfig`, resolved here against its data); the message
    is "<where> another run than the one asked for (<setting>: <recorded> -> <asked>, ...);
    <remedy>"."""
    from adt_tf.training.record import RunRecord, describe_differences, differences
    from adt_tf.training.resolve import resolve, resolve_recorded

    if not isinstance(recorded, RunRecord):
        recorded = RunRecord.from_dict(recorded, where)
    diff = differences(resolve_recorded(recorded), resolve(expected), KEEP_RESUMABLE)
    if diff:
        raise RunMismatchError(f"{where} another run than the one asked for "
                               f"({describe_differences(diff)}); {remedy}")


__all__ = ["KEEP_RESUMABLE", "RunMismatchError", "check_recorded_config", "check_recorded_run"]
