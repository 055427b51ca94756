"""adt-tune: search ADT's entropy weight lambda (and other knobs) for robust accuracy.

    adt-tune --method=adt_exp --dataset=cifar10 --model=wrn_28_10 --tuner=grid \
        --epochs=10 --val_examples=1000 --directory=tuning

Each trial trains the method on the training set minus `--val_examples` held-out examples
and is scored by PGD-k robust accuracy on them (`--val_pgd_steps`, step epsilon/4, random
start) after every epoch; the best epoch counts. The default lambdas are the paper's
{0, 0.001, 0.01, 0.1, 1.0} (Fig. 5); `--lambda_min/--lambda_max/--lambda_points_per_decade`
or `--lambda_values` change them, `--tune` adds the method's optional knobs.

All of adt-train's flags apply (model, batch size, lr, epsilon, the method's fixed
hyperparameters such as --inner_steps, ...); `--epochs` is the epochs of each trial.

Writes to <directory>/<project_name>/: keras-tuner's trials (a rerun with the same folder
continues the search and trains no finished trial again), search_config.json, trials.md /
.csv / .json (lambda, clean and robust validation accuracy, mean entropy), search.png (robust
accuracy and entropy against lambda) and best_hyperparameters.json. With --retrain_best it
then trains the best configuration on the whole training set as adt-train does (into
--workdir, default <directory>/<project_name>/best) and reports its test accuracy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys

import tensorflow as tf
from absl import app, flags, logging

from adt_tf import data as data_lib
from adt_tf import tuning, tuning_report, validation
from adt_tf.training import NonFiniteLossError, format_report, run_training
from trainers import train as train_cli  # defines adt-train's flags, which adt-tune shares

FLAGS = flags.FLAGS

flags.DEFINE_string("tuner", "grid", "Search: random, bayesian, hyperband or grid.")
flags.DEFINE_integer("max_trials", 10, "Trials in all, counting those of an earlier run that "
                     "this one resumes (grid stops when its grid is done).")
flags.DEFINE_integer("executions_per_trial", 1, "Trainings per trial (seeds seed, seed+1, "
                     "...); the objective is their mean.")
flags.DEFINE_integer("val_examples", 512, "Training examples held out as the validation split.")
flags.DEFINE_integer("val_pgd_steps", 10, "k of the PGD-k objective (step epsilon/4).")
flags.DEFINE_string("directory", "tuning", "Folder of the searches.")
flags.DEFINE_string("project_name", None, "Subfolder of this search (default: "
                    "<method>_<dataset>_<tuner>).")
flags.DEFINE_bool("overwrite", False, "Start the search afresh instead of resuming it.")
flags.DEFINE_float("lambda_min", 1e-3, "Smallest positive lambda.")
flags.DEFINE_float("lambda_max", 1.0, "Largest lambda.")
flags.DEFINE_integer("lambda_points_per_decade", 1, "Log-spaced lambdas per factor of 10.")
flags.DEFINE_bool("lambda_include_zero", True, "Add lambda = 0 as a choice.")
flags.DEFINE_list("lambda_values", None, "Explicit lambdas (instead of the range).")
flags.DEFINE_list("tune", [], "Optional knobs to search as well (e.g. inner_lr,inner_steps).")
flags.DEFINE_integer("hyperband_factor", 3, "Hyperband's reduction factor.")
flags.DEFINE_bool("retrain_best", False, "Retrain the best configuration with adt-train.")
flags.DEFINE_integer("retrain_epochs", 76, "Epochs of the retraining (the reference: 76).")

# Settings that may change when a search is resumed.
RESUMABLE_CHANGES = ("max_trials", "verbose")
# adt-train settings that do not change what a trial computes (the machine, the output, the
# retraining's test report).
TRAIN_SETTINGS_NOT_IN_SEARCH = ("workdir", "verbose", "strategy", "eval_examples")


def _project_name(config, tuner: str) -> str:
    if FLAGS.project_name:
        return FLAGS.project_name
    dataset = os.path.basename(os.path.normpath(config.dataset.split(":", 1)[-1]))
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{config.method}_{dataset}_{tuner}")


def _space() -> tuning.SearchSpace:
    values = None
    if FLAGS.lambda_values:
        try:
            values = tuple(float(v) for v in FLAGS.lambda_values)
        except ValueError:
            raise ValueError(f"lambda_values must be numbers, got {FLAGS.lambda_values}."
                             ) from None
    return tuning.SearchSpace(lambda_min=FLAGS.lambda_min, lambda_max=FLAGS.lambda_max,
                       points_per_decade=FLAGS.lambda_points_per_decade,
                       include_zero=FLAGS.lambda_include_zero, values=values)


def _check_resume(path: str, settings: dict) -> None:
    """Refuses to resume a search that was made with other settings."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        old = json.load(f)
    new = json.loads(json.dumps(settings))
    diff = sorted(k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k])
    if diff:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in diff)
        raise ValueError(f"{os.path.dirname(path)} holds a search with other settings "
                         f"({details}); use another --project_name, --overwrite, or the same "
                         "settings to resume it.")


def tune(config, *, tuner_kind: str, max_trials: int, executions_per_trial: int,
         val_examples: int, val_pgd_steps: int, directory: str, project_name: str,
         overwrite: bool, space, tune_knobs, hyperband_factor: int = 3) -> dict:
    """Runs (or resumes) the search and writes its tables, plot and best hyperparameters.

    Returns a summary: paths, the rows of the table, the best trial and how many trials
    this call trained.
    """
    validation.check_choice(tuner_kind, "tuner", tuning.TUNERS)
    validation.check_positive_int(max_trials, "max_trials")
    validation.check_positive_int(executions_per_trial, "executions_per_trial")
    validation.check_positive_int(val_examples, "val_examples")
    config.validate()
    tuning.knobs_to_search(config.method, tune_knobs)  # unknown knob -> ValueError

    project_dir = validation.check_writable_dir(os.path.join(directory, project_name),
                                                "--directory (its --project_name folder)")
    settings = {
        "train_config": {k: v for k, v in dataclasses.asdict(config).items()
                         if k not in TRAIN_SETTINGS_NOT_IN_SEARCH},
        "tuner": tuner_kind, "max_trials": max_trials,
        "executions_per_trial": executions_per_trial, "val_examples": val_examples,
        "val_pgd_steps": val_pgd_steps, "space": dataclasses.asdict(space),
        "tune": list(tune_knobs), "hyperband_factor": hyperband_factor,
        "verbose": config.verbose,
    }
    settings_path = os.path.join(project_dir, "search_config.json")
    if not overwrite:
        _check_resume(settings_path, settings)

    splits = data_lib.load(config.dataset, config.data_dir, config.max_train_examples)
    hypermodel = tuning.MethodHyperModel(config, splits, space=space, tune=tune_knobs,
                                         val_examples=val_examples,
                                         val_pgd_steps=val_pgd_steps)
    strategy = tf.distribute.MirroredStrategy() if config.strategy == "mirrored" else None
    tuner = tuning.build_tuner(
        tuner_kind, hypermodel, max_trials=max_trials,
        executions_per_trial=executions_per_trial, directory=directory,
        project_name=project_name, overwrite=overwrite, hyperband_factor=hyperband_factor,
        strategy=strategy)
    before = {t: s.status for t, s in tuner.oracle.trials.items()}
    with open(settings_path, "w") as f:
        json.dump(settings, f, indent=2)
    if before:
        print(f"Resuming {project_dir}: {len(before)} trial(s) there already.")

    tuner.search(epochs=config.epochs, verbose=config.verbose)

    trained = sorted(t for t, s in tuner.oracle.trials.items()
                     if t not in before or before[t] != s.status)
    rows = tuning_report.trial_rows(tuner.oracle)
    paths = tuning_report.write_tables(rows, project_dir)
    knob = hypermodel.knobs[0] if hypermodel.knobs else None
    paths["png"] = tuning_report.plot_trials(
        rows, knob, os.path.join(project_dir, "search.png"),
        title=f"{config.method} on {config.dataset}: validation PGD-{val_pgd_steps}")
    row = tuning_report.best_row(rows)
    best = None
    if row is not None:
        trial = tuner.oracle.trials[row["trial_id"]]
        best = {
            "trial_id": row["trial_id"],
            "hyperparameters": {k: v for k, v in trial.hyperparameters.values.items()
                                if not k.startswith("tuner/")},
            "method": config.method,
            "method_params": hypermodel.method_params(trial.hyperparameters),
            **{k: row[k] for k in tuning_report.METRIC_COLUMNS},
            "best_epoch": row["best_epoch"],
            "objective": f"validation accuracy under PGD-{val_pgd_steps} (step epsilon/4, "
                         f"random start), {val_examples} held-out training examples",
        }
        paths["best"] = os.path.join(project_dir, "best_hyperparameters.json")
        with open(paths["best"], "w") as f:
            json.dump(best, f, indent=2)
    return {"project_dir": project_dir, "paths": paths, "rows": rows, "best": best,
            "trained": trained, "hypermodel": hypermodel}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        config = train_cli.config_from_flags()
        searched = tuning.knobs_to_search(config.method, FLAGS.tune)
        for name in searched:
            if name in FLAGS and FLAGS[name].present:
                logging.warning("--%s is searched; the value given is ignored.", name)
        result = tune(
            config, tuner_kind=FLAGS.tuner, max_trials=FLAGS.max_trials,
            executions_per_trial=FLAGS.executions_per_trial, val_examples=FLAGS.val_examples,
            val_pgd_steps=FLAGS.val_pgd_steps, directory=FLAGS.directory,
            project_name=_project_name(config, FLAGS.tuner), overwrite=FLAGS.overwrite,
            space=_space(), tune_knobs=tuple(FLAGS.tune),
            hyperband_factor=FLAGS.hyperband_factor)
    except (ValueError, OSError) as err:
        logging.error("%s", err)
        print(f"adt-tune: error: {err}", file=sys.stderr)
        sys.exit(2)

    rows, best = result["rows"], result["best"]
    print(f"\nSearch {result['project_dir']}: {len(rows)} trial(s), "
          f"{len(result['trained'])} trained by this run.")
    print(tuning_report.markdown_table(rows))
    for ext in ("md", "csv", "json", "png"):
        print(f"  wrote {result['paths'][ext]}")
    if best is None:
        print("No trial completed; no best hyperparameters.")
        sys.exit(1)
    print(f"Best trial {best['trial_id']}: {json.dumps(best['hyperparameters'])} "
          f"(validation robust accuracy {100 * best[tuning.OBJECTIVE_NAME]:.2f}%, clean "
          f"{100 * best[tuning.CLEAN_NAME]:.2f}%); wrote {result['paths']['best']}")

    if FLAGS.retrain_best:
        workdir = (FLAGS.workdir if FLAGS["workdir"].present
                   else os.path.join(result["project_dir"], "best"))
        retrain = dataclasses.replace(config, workdir=workdir, epochs=FLAGS.retrain_epochs,
                                      method_params=best["method_params"])
        print(f"Retraining the best configuration for {FLAGS.retrain_epochs} epoch(s) "
              f"in {workdir}.")
        try:
            report = run_training(retrain)
        except (ValueError, NonFiniteLossError, OSError) as err:
            print(f"adt-tune: error: {err}", file=sys.stderr)
            sys.exit(2)
        print(format_report(report))


def run():
    """Console-script entry point (`adt-tune`)."""
    FLAGS.set_default("epochs", 10)
    FLAGS["epochs"].help = "Training epochs of each trial."
    FLAGS["workdir"].help = ("Where --retrain_best trains (default: "
                             "<directory>/<project_name>/best).")
    app.run(main)


if __name__ == "__main__":
    run()
