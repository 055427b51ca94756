"""The one check every benchmark makes before it reuses a finished run.

A benchmark keeps a finished training (and its evaluation) and skips it on a rerun. That is
only right when the run in the folder is the run asked for: an explicit `--workdir` that holds
a run of another norm, method, seed, recipe or precision would otherwise be "kept" and
tabulated as the requested one. Each run folder records its resolved settings in
`config.json` (written by `adt_tf.training.run_training`); `check_recorded_run` compares them
with the `TrainConfig` the benchmark would train and refuses any difference, naming the field
and both values.
"""

from __future__ import annotations

import dataclasses
import json
import os

#: Settings that do not make another run: where it lives and how much it prints.
IGNORED = ("workdir", "verbose")


class RunMismatchError(ValueError):
    """A run folder holds a run with other settings than the ones asked for."""


def check_recorded_run(run_dir: str, expected, benchmark: str) -> None:
    """Raises `RunMismatchError` if `run_dir/config.json` records other settings than
    `expected` (an `adt_tf.training.TrainConfig`). A folder without config.json (an
    evaluation restored from a committed table, or nothing yet) passes.

    Args:
        run_dir: the run's folder.
        expected: the config the benchmark would train into it.
        benchmark: its name, for the message (e.g. "bench.robustness").
    """
    from adt_tf.training import recorded_config

    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return
    try:
        recorded = recorded_config(path)
    except ValueError as err:
        raise RunMismatchError(f"{benchmark}: {err}") from err
    check_recorded_config(recorded, expected, f"{benchmark}: {run_dir} holds",
                          "use another --workdir, or move that folder aside to train it again.")


def check_recorded_config(recorded: dict, expected, where: str, remedy: str) -> None:
    """Raises `RunMismatchError` if the recorded settings of a run (config.json's dict, also
    kept in a benchmark's results JSON) differ from `expected` (a `TrainConfig`) in any field
    but `IGNORED`; the message is "<where> another run than the one asked for (<field> is
    <recorded> there, <expected> asked for; ...); <remedy>"."""
    wanted = json.loads(json.dumps(dataclasses.asdict(expected)))
    diff = [(k, recorded.get(k), v) for k, v in wanted.items()
            if k not in IGNORED and recorded.get(k) != v]
    if diff:
        details = "; ".join(f"{k} is {old!r} there, {new!r} asked for" for k, old, new in diff)
        raise RunMismatchError(f"{where} another run than the one asked for ({details}); "
                               f"{remedy}")


__all__ = ["IGNORED", "RunMismatchError", "check_recorded_config", "check_recorded_run"]
