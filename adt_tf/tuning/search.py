"""One search, start to end: check (or resume) its settings, run keras-tuner (in this process,
or as the chief or a worker of a distributed search), and write the table of trials, the plot
and the best hyperparameters. `adt-tune` is this function behind flags."""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

from adt_tf import data as data_lib
from adt_tf.core import checks
from adt_tf.core.files import write_json
from adt_tf.training.record import RESUMABLE, RunRecord, describe_differences, differences
from adt_tf.tuning import distributed, report
from adt_tf.tuning.hypermodel import TUNERS, MethodHyperModel, build_tuner
from adt_tf.tuning.space import knobs_to_search

#: The search's own settings that may change when it is resumed.
RESUMABLE_CHANGES = ("max_trials",)
#: The run's settings that may change when a search is resumed: those a run may change on
#: resume but its epochs (a trial's length), and the machine it runs on.
RUN_RESUMABLE = tuple(p for p in RESUMABLE if p != "optim.epochs") + ("compute.strategy",)


def _check_resume(path: str, run: RunRecord, search: dict) -> None:
    """Refuses to resume a search that was made with other settings, naming the fields that
    changed (the run's by `adt_tf.training.record.differences`, as adt-train decides)."""
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            old = json.load(f)
        old_run = RunRecord.from_dict(old["run"], path)
        old_search = old["search"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a readable search record ({err}); use another "
                         "--project_name or --overwrite.") from err
    new_search = json.loads(json.dumps(search))
    changed = describe_differences(differences(old_run, run, RUN_RESUMABLE))
    search_diff = [f"{k}: {old_search.get(k)!r} -> {v!r}" for k, v in new_search.items()
                   if k not in RESUMABLE_CHANGES and old_search.get(k) != v]
    details = ", ".join(p for p in (changed, *search_diff) if p)
    if details:
        raise ValueError(f"{os.path.dirname(path)} holds a search with other settings "
                         f"({details}); use another --project_name, --overwrite, or the same "
                         "settings to resume it.")


def tune(config, *, tuner_kind: str, max_trials: int, executions_per_trial: int,
         directory: str, project_name: str, overwrite: bool, space, tune_knobs,
         hyperband_factor: int = 3,
         oracle_timeout: float = distributed.DEFAULT_TIMEOUT) -> dict:
    """Runs (or resumes) the search and writes its tables, plot and best hyperparameters.

    In a distributed search (`adt_tf.tuning.distributed`: this process's keras-tuner
    variables, or adt-tune's --tuning_role) the chief serves the oracle until the last worker
    is done and then writes the files; a worker trains the trials it is given and writes
    none of them.

    `oracle_timeout` bounds every wait for a peer in a distributed search: a worker's call to
    the chief (then grpc.RpcError; adt-tune exits 3) and the chief's wait for a call from any
    worker (`distributed.WorkerWatch`: the chief ends with exit 3).

    Returns a summary: the role, paths, the rows of the table, the best trial and the trials
    this call trained (a worker's: those it started; its rows and paths are empty).
    """
    role = distributed.current_role()
    if role.is_worker and overwrite:
        raise ValueError("--overwrite on a worker would delete the search the chief holds; "
                         "start the chief with --overwrite instead.")
    checks.check_choice(tuner_kind, "tuner", TUNERS)
    checks.check_positive_int(max_trials, "max_trials")
    checks.check_positive_int(executions_per_trial, "executions_per_trial")
    config.validate()
    knobs_to_search(config.method.name, tune_knobs)  # unknown knob -> ValueError
    if config.compute.strategy not in ("default", "mirrored"):
        raise ValueError(f"--strategy={config.compute.strategy}: a search trains its trials "
                         "with --strategy=default or mirrored (several machines: "
                         "--tuning_role, docs/tuning.md).")

    project_dir = checks.check_writable_dir(os.path.join(directory, project_name),
                                            "--directory (its --project_name folder)")
    splits = data_lib.load(config.data.dataset, config.data.data_dir,
                           config.data.max_train_examples)
    hypermodel = MethodHyperModel(config, splits, space=space, tune=tune_knobs)
    search = {"tuner": tuner_kind, "max_trials": max_trials,
              "executions_per_trial": executions_per_trial,
              "space": dataclasses.asdict(space), "tune": list(tune_knobs),
              "hyperband_factor": hyperband_factor}
    settings = {"run": hypermodel.record.to_dict(), "search": search}
    settings_path = os.path.join(project_dir, "search_config.json")
    if not overwrite:
        _check_resume(settings_path, hypermodel.record, search)  # a worker too
    config = hypermodel.config
    strategy = (tf.distribute.MirroredStrategy() if config.compute.strategy == "mirrored"
                else None)
    tuner = build_tuner(
        tuner_kind, hypermodel, max_trials=max_trials,
        executions_per_trial=executions_per_trial, directory=directory,
        project_name=project_name, overwrite=overwrite, hyperband_factor=hyperband_factor,
        strategy=strategy)
    if role.is_worker:  # its oracle is the chief's, over gRPC
        distributed.set_client_timeout(oracle_timeout)
        started = len(distributed.trials_started(project_dir).get(role.tuner_id, []))
        print(f"Worker {role.tuner_id}: asking the chief at {role.address} for trials.")
        tuner.search(epochs=config.optim.epochs, verbose=config.run.verbose)
        mine = distributed.trials_started(project_dir).get(role.tuner_id, [])[started:]
        return {"role": role, "project_dir": project_dir, "paths": {}, "rows": [],
                "best": None, "trained": mine, "hypermodel": hypermodel}
    before = {t: s.status for t, s in tuner.oracle.trials.items()}
    write_json(settings_path, settings)
    if before:
        print(f"Resuming {project_dir}: {len(before)} trial(s) there already.")
    watch = None
    if role.kind == "chief":
        print(f"Chief: serving the oracle on {role.address}; the workers train the trials.")
        watch = distributed.WorkerWatch(tuner.oracle, oracle_timeout).start()
    try:
        tuner.search(epochs=config.optim.epochs, verbose=config.run.verbose)
    finally:
        if watch is not None:
            watch.stop()

    trained = sorted(t for t, s in tuner.oracle.trials.items()
                     if t not in before or before[t] != s.status)
    rows = report.trial_rows(tuner.oracle)
    paths = report.write_tables(rows, project_dir)
    knob = hypermodel.knobs[0] if hypermodel.knobs else None
    paths["png"] = report.plot_trials(
        rows, knob, os.path.join(project_dir, "search.png"),
        title=f"{config.method.name} on {config.data.dataset}: validation "
              f"PGD-{hypermodel.val_pgd_steps}")
    row = report.best_row(rows)
    best = None
    if row is not None:
        trial = tuner.oracle.trials[row["trial_id"]]
        best = {
            "trial_id": row["trial_id"],
            "hyperparameters": {k: v for k, v in trial.hyperparameters.values.items()
                                if not k.startswith("tuner/")},
            "method": config.method.name,
            "method_params": hypermodel.method_params(trial.hyperparameters),
            **{k: row[k] for k in report.METRIC_COLUMNS},
            "best_epoch": row["best_epoch"],
            "objective": f"validation accuracy under PGD-{hypermodel.val_pgd_steps} "
                         f"({hypermodel.threat.norm}, epsilon {hypermodel.threat.epsilon:.5g}, "
                         f"step epsilon/4, random start), {config.validation.examples} "
                         "held-out training examples (a seeded, class-stratified draw, "
                         "as adt-train's --validation_examples)",
        }
        paths["best"] = os.path.join(project_dir, "best_hyperparameters.json")
        write_json(paths["best"], best)
    return {"role": role, "project_dir": project_dir, "paths": paths, "rows": rows,
            "best": best, "trained": trained, "hypermodel": hypermodel}


__all__ = ["RESUMABLE_CHANGES", "RUN_RESUMABLE", "tune"]
