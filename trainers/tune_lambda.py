"""adt-tune: search ADT's entropy weight lambda (and other knobs) for robust accuracy.

    adt-tune --method=adt_exp --dataset=cifar10 --model=wrn_28_10 --tuner=grid \
        --epochs=10 --val_examples=1000 --directory=tuning

Each trial trains the method on the training set minus `--val_examples` held-out examples
and is scored by PGD-k robust accuracy on them (`--val_pgd_steps`, step epsilon/4, random
start) after every epoch; the best epoch counts. The default lambdas are the paper's
{0, 0.001, 0.01, 0.1, 1.0} (Fig. 5); `--lambda_min/--lambda_max/--lambda_points_per_decade`
or `--lambda_values` change them, `--tune` adds the method's optional knobs.

All of adt-train's flags apply (model, batch size, lr, epsilon, the method's fixed
hyperparameters such as --method_params=inner_steps=5, ...); `--epochs` is the epochs of each trial.

Writes to <directory>/<project_name>/: keras-tuner's trials (a rerun with the same folder
continues the search and trains no finished trial again), search_config.json, trials.md /
.csv / .json (lambda, clean and robust validation accuracy, mean entropy), search.png (robust
accuracy and entropy against lambda) and best_hyperparameters.json. With --retrain_best it
then trains the best configuration on the whole training set as adt-train does (into
--workdir, default <directory>/<project_name>/best) and reports its test accuracy.

Distributed (keras-tuner's chief/worker mode; docs/tuning.md): the same command with
--tuning_role=chief --oracle_address=0.0.0.0:PORT on one machine and --tuning_role=worker
--oracle_address=CHIEF:PORT --tuner_id=NAME on each of the others.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys

import grpc
from absl import app, flags, logging

from adt_tf import tuning
from adt_tf.interrupts import interruptible
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
flags.DEFINE_enum("tuning_role", "single", list(tuning.distributed.ROLES),
                  "single: the whole search here; chief: serve the oracle at --oracle_address "
                  "(trains nothing; writes the table when the workers are done); worker: "
                  "train the trials the chief hands out (docs/tuning.md). keras-tuner's "
                  "KERASTUNER_* variables do the same when this is 'single'.")
flags.DEFINE_string("oracle_address", None, "The chief's HOST:PORT (chief and worker).")
flags.DEFINE_string("tuner_id", None, "A worker's ID: unique in the search, the same when it "
                    "is restarted (default: worker-<hostname>).")
flags.DEFINE_float("oracle_timeout", tuning.distributed.DEFAULT_TIMEOUT,
                   "Distributed search: the longest wait for a peer, in seconds. A worker's "
                   "call waits that long for the chief (a worker may start first), a chief "
                   "that long for a call from any worker; then the process ends with exit 3 "
                   "and says what to restart. Must exceed a trial's epoch (docs/tuning.md).")

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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    train_cli.apply_thread_flags()
    try:
        tuning.distributed.configure(FLAGS.tuning_role, FLAGS.oracle_address, FLAGS.tuner_id)
        config = train_cli.config_from_flags()
        for warning in train_cli.deprecated_flag_warnings():
            logging.warning("%s", warning)
            print(f"adt-tune: warning: {warning}", file=sys.stderr)
        searched = tuning.knobs_to_search(config.method, FLAGS.tune)
        given = train_cli.given_method_params()
        for name in searched:
            if name in given or (name in FLAGS and FLAGS[name].present):
                logging.warning("%s is searched; the value given is ignored.", name)
        with interruptible("adt-tune", f"The finished trials are kept under {FLAGS.directory}"
                           ": rerun the same command to resume the search."):
            result = tuning.tune(
                config, tuner_kind=FLAGS.tuner, max_trials=FLAGS.max_trials,
                executions_per_trial=FLAGS.executions_per_trial,
                val_examples=FLAGS.val_examples, val_pgd_steps=FLAGS.val_pgd_steps,
                directory=FLAGS.directory, project_name=_project_name(config, FLAGS.tuner),
                overwrite=FLAGS.overwrite, space=_space(), tune_knobs=tuple(FLAGS.tune),
                hyperband_factor=FLAGS.hyperband_factor, oracle_timeout=FLAGS.oracle_timeout)
    except (ValueError, OSError) as err:
        logging.error("%s", err)
        print(f"adt-tune: error: {err}", file=sys.stderr)
        sys.exit(2)
    except grpc.RpcError as err:  # a worker whose chief is gone or unreachable
        role = tuning.distributed.current_role()
        message = tuning.distributed.peer_lost_message(role, err, FLAGS.oracle_timeout)
        logging.error("%s", message)
        print(f"adt-tune: {message}", file=sys.stderr)
        sys.exit(tuning.distributed.EXIT_PEER_LOST)

    if result["role"].is_worker:
        print(f"Worker {result['role'].tuner_id} done: it started trial(s) "
              f"{', '.join(result['trained']) or 'none'}; the chief writes the table.")
        return
    rows, best = result["rows"], result["best"]
    print(f"\nSearch {result['project_dir']}: {len(rows)} trial(s), "
          f"{len(result['trained'])} trained by this run.")
    print(tuning.report.markdown_table(rows))
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
