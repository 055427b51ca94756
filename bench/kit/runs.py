"""Run bookkeeping shared by the benchmarks: where things are, the check every benchmark
makes before it reuses a finished run, its JSON files, the restore of a committed results
JSON, timed training, and exiting on bad input.

A benchmark keeps a finished training (and its evaluation) and skips it on a rerun. That is
only right when the run in the folder is the run asked for: an explicit `--workdir` that holds
a run of another norm, method, seed, recipe or precision would otherwise be "kept" and
tabulated as the requested one. Each run folder holds its record (`config.json`, written by
`adt_tf.training.run.run_training`); `check_recorded_run` resolves the `RunConfig` the
benchmark would train and compares the two with the library's one comparison
(`adt_tf.training.record.differences`), naming each setting that differs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, NoReturn

from adt_tf.core.files import write_json as _atomic_write_json

#: The repository's root, the offline CIFAR-10 copy beside it, and where tables go.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "cifar10"))
RESULTS_DIR = os.path.join(ROOT, "bench", "results")

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




def read_json(path: str, default: Any) -> Any:
    """A benchmark's JSON file (a run's summary, timing), or `default` if there is none."""
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def write_json(path: str, data: Any) -> None:
    """Writes a benchmark's JSON atomically (two processes, one per seed, may write the same
    table: the writer's temporary is its own); NumPy values as lists."""
    _atomic_write_json(path, data,
                       default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))


def restore_summary(results_path: str, name: str, entry: dict | None, run_dir: str,
                    expected) -> bool:
    """Restores one finished run of an earlier sitting: writes `run_dir/summary.json` from
    `entry` (the run's entry in a committed results JSON, named `name` there) unless the
    entry is missing or the folder already has a summary. An entry that records its training
    configuration (`run_config`) must describe `expected` (a `RunConfig`), else
    `RunMismatchError` naming each setting that differs; an entry without one is restored as
    it is, marked (`restored_from`) so that the table can say so. Returns whether it wrote."""
    target = os.path.join(run_dir, "summary.json")
    if entry is None or os.path.exists(target):
        return False
    if "run_config" in entry:
        check_recorded_config(entry["run_config"], expected, f"{results_path}: {name} is",
                              "restore it into the recipe it was run with, or run it again.")
    os.makedirs(run_dir, exist_ok=True)
    write_json(target, dict(entry, restored_from=os.path.basename(results_path)))
    return True


def collect_summaries(run_dirs: dict[Any, str]) -> tuple[dict, list[Any]]:
    """The summary.json of each run folder of `run_dirs` (key -> folder): ({key: summary}
    for those that have one, [the keys of those that do not])."""
    found, missing = {}, []
    for key, d in run_dirs.items():
        summary = read_json(os.path.join(d, "summary.json"), None)
        if summary is None:
            missing.append(key)
        else:
            found[key] = summary
    return found, missing


def timed_training(config, monitors: tuple = ()) -> tuple[dict, float]:
    """Trains (or resumes) `config`'s run with `adt_tf.training.run.run_training(config,
    monitors)`; its training time over every sitting is kept in <workdir>/timing.json,
    written at the end of every epoch too, so that a sitting ended by a kill keeps the time of
    its finished epochs. Returns (the report, the seconds so far)."""
    import keras

    from adt_tf.training.run import run_training

    d = config.run.workdir
    path = os.path.join(d, "timing.json")
    os.makedirs(d, exist_ok=True)
    before = read_json(path, {}).get("train_seconds", 0.0)
    started = time.perf_counter()

    def record(*_):
        spent = before + time.perf_counter() - started
        write_json(path, {"train_seconds": spent})
        return spent

    clock = keras.callbacks.LambdaCallback(on_epoch_end=record)
    report = run_training(config, monitors=(*monitors, clock))
    return report, record()


def set_threads(threads: int) -> None:
    """TensorFlow's intra- and inter-op threads (`--threads`; 0 leaves TensorFlow's
    default), set before its first op."""
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def train_seconds(run_dir: str) -> float | None:
    """The training time timing.json records (None if the run was not timed)."""
    return read_json(os.path.join(run_dir, "timing.json"), {}).get("train_seconds")


def fail(benchmark: str, message: str) -> NoReturn:
    """One line, exit 2 (as the commands end on bad input)."""
    print(f"{benchmark}: error: {message}", file=sys.stderr)
    sys.exit(2)


def require_data(folder: str, benchmark: str, files: tuple[str, ...] = ("train.npz",
                                                                        "test.npz")) -> str:
    """The data folder of a benchmark, or exit 2 naming the missing file (checked after the
    flags, before any work; a table built from finished runs needs none)."""
    for name in files:
        if not os.path.isfile(os.path.join(folder, name)):
            fail(benchmark, f"--data: no {name} in {folder} (the offline CIFAR-10 copy is "
                 "../shared/data/cifar10 beside the repository).")
    return folder


def command_line(module: str, argv: list[str] | None = None) -> str:
    """The command that made a table, as it reads from the repository's root: absolute
    paths under the repository (or its parent folder) are written relative to the root, so
    a committed table names no folder of the machine that built it."""
    parts = []
    for arg in (sys.argv[1:] if argv is None else argv):
        name, sep, value = arg.partition("=")
        text = value if sep else arg
        if os.path.isabs(text) and text.startswith(os.path.dirname(ROOT) + os.sep):
            text = os.path.relpath(text, ROOT)
        parts.append(f"{name}={text}" if sep else text)
    return " ".join([f"python -m {module}", *parts])


__all__ = ["DEFAULT_DATA", "KEEP_RESUMABLE", "RESULTS_DIR", "ROOT", "RunMismatchError",
           "check_recorded_config", "check_recorded_run", "collect_summaries", "command_line",
           "fail", "read_json", "require_data", "restore_summary", "set_threads",
           "timed_training",
           "train_seconds", "write_json"]
