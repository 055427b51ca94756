r"""adt-tune: search ADT's entropy weight lambda (and other knobs) for robust accuracy.

    adt-tune --method=adt_exp --dataset=cifar10 --model=wrn_28_10 --tuner=grid \
        --epochs=10 --validation_examples=1000 --directory=tuning

Each trial is described as an adt-train run is: every adt-train flag applies (--config,
model, batch size, lr, epsilon, the method's fixed arguments such as
--method_params=inner_steps=5, ...), --epochs is the epochs of each trial, and the trial
trains on the training set minus --validation_examples held-out images (the same seeded,
class-stratified draw adt-train holds out), scored after every epoch by --validation_attack
(PGD-k, step epsilon/4, random start) on them; the best epoch counts. Each trial's record
(what adt-train would write as config.json) is in its trial folder. The default lambdas are
the paper's {0, 0.001, 0.01, 0.1, 1.0} (Fig. 5); --lambda_min/--lambda_max/
--lambda_points_per_decade or --lambda_values change them, --tune adds the method's optional
knobs.

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

import json
import os
import re
import sys

from absl import flags

from trainers import cli
from trainers import train as train_cli  # adt-train's flags: the run schema's

COMMAND = "adt-tune"
FLAGS = flags.FLAGS
#: adt-tune's defaults for settings of the run (without --config): short trials, and the
#: validation split the search needs.
RUN_DEFAULTS = {"optim.epochs": 10, "validation.examples": 512}
#: The roles of a distributed search (adt_tf.tuning.distributed.ROLES, written out so that
#: --help needs no TensorFlow; tests/trainers/test_cli.py holds them equal).
ROLES = ("single", "chief", "worker")

flags.DEFINE_enum("tuner", "grid", ["random", "bayesian", "hyperband", "grid"], "Search: random, "
                  "bayesian, hyperband or grid.")
cli.define_flag("max_trials", 10, "Trials in all, counting those of an earlier run that this "
                "one resumes (grid stops when its grid is done).")
cli.define_flag("executions_per_trial", 1, "Trainings per trial (seeds seed, seed+1, ...); "
                "the objective is their mean.")
flags.DEFINE_string("directory", "tuning", "Folder of the searches.")
flags.DEFINE_string("project_name", None, "Subfolder of this search (default: "
                    "<method>_<dataset>_<tuner>).")
cli.define_flag("overwrite", False, "Start the search afresh instead of resuming it.")
cli.define_flag("lambda_min", 1e-3, "Smallest positive lambda.")
cli.define_flag("lambda_max", 1.0, "Largest lambda.")
cli.define_flag("lambda_points_per_decade", 1, "Log-spaced lambdas per factor of 10.")
cli.define_flag("lambda_include_zero", True, "Add lambda = 0 as a choice.")
flags.DEFINE_list("lambda_values", None, "Explicit lambdas (instead of the range).")
flags.DEFINE_list("tune", [], "Optional knobs to search as well (e.g. inner_lr,inner_steps).")
cli.define_flag("hyperband_factor", 3, "Hyperband's reduction factor.")
cli.define_flag("retrain_best", False, "Retrain the best configuration with adt-train.")
cli.define_flag("retrain_epochs", 76, "Epochs of the retraining (the reference: 76).")
flags.DEFINE_enum("tuning_role", "single", list(ROLES),
                  "single: the whole search here; chief: serve the oracle at --oracle_address "
                  "(trains nothing; writes the table when the workers are done); worker: "
                  "train the trials the chief hands out (docs/tuning.md). keras-tuner's "
                  "KERASTUNER_* variables do the same when this is 'single'.")
flags.DEFINE_string("oracle_address", None, "The chief's HOST:PORT (chief and worker).")
flags.DEFINE_string("tuner_id", None, "A worker's ID: unique in the search, the same when it "
                    "is restarted (default: worker-<hostname>).")
cli.define_flag("oracle_timeout", 3600.0,
                "Distributed search: the longest wait for a peer, in seconds. A worker's "
                "call waits that long for the chief (a worker may start first), a chief "
                "that long for a call from any worker; then the process ends with exit 3 "
                "and says what to restart. Must exceed a trial's epoch (docs/tuning.md).")
#: The search's own flags (the run's are adt-train's).
SEARCH_FLAGS = [f.name for f in FLAGS.get_flags_for_module(__name__)]
cli.define_removed_flags({"val_examples": "--validation_examples=N (adt-train's)",
                          "val_pgd_steps": "--validation_attack=pgd<steps> (adt-train's)"})


def _project_name(config, tuner: str) -> str:
    if FLAGS.project_name:
        return FLAGS.project_name
    dataset = os.path.basename(os.path.normpath(config.data.dataset.split(":", 1)[-1]))
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{config.method.name}_{dataset}_{tuner}")


def _space():
    from adt_tf import tuning

    values = None
    if FLAGS.lambda_values:
        try:
            values = tuple(float(v) for v in FLAGS.lambda_values)
        except ValueError:
            raise ValueError(f"--lambda_values must be numbers, got {FLAGS.lambda_values}."
                             ) from None
    return tuning.SearchSpace(lambda_min=FLAGS.lambda_min, lambda_max=FLAGS.lambda_max,
                              points_per_decade=FLAGS.lambda_points_per_decade,
                              include_zero=FLAGS.lambda_include_zero, values=values)


def config_from_flags():
    """The run of each trial: adt-train's config from the flags, with adt-tune's defaults
    (`RUN_DEFAULTS`) for the settings neither a --config nor a flag gives."""
    from adt_tf.training.config import flag_name, override, schema_fields

    config = cli.config_from_flags()
    if FLAGS[cli.CONFIG_FLAG].value:
        return config
    given = {path for path, field, _ in schema_fields() if FLAGS[flag_name(path, field)].present}
    return override(config, {p: v for p, v in RUN_DEFAULTS.items() if p not in given})


def main(argv):
    try:
        cli.unexpected_arguments(argv)
        config = config_from_flags()
        if FLAGS.retrain_best:  # checked now, not after the whole search
            from adt_tf.core import checks
            checks.check_positive_int(FLAGS.retrain_epochs, "--retrain_epochs")
        if FLAGS.tuning_role != "single" or FLAGS["oracle_timeout"].present:
            import math

            if not math.isfinite(FLAGS.oracle_timeout) or FLAGS.oracle_timeout <= 0:
                raise ValueError(f"--oracle_timeout must be a finite number of seconds > 0, "
                                 f"got {FLAGS.oracle_timeout!r}.")
    except ValueError as err:
        cli.fail(COMMAND, err)
    cli.import_tensorflow()
    import grpc

    from adt_tf import tuning
    from adt_tf.core.interrupts import interruptible
    from adt_tf.training.callbacks import NonFiniteLossError
    from adt_tf.training.config import override
    from adt_tf.training.report import format_report
    from adt_tf.training.run import apply_threads, run_training

    try:
        apply_threads(config.compute)
        tuning.distributed.configure(FLAGS.tuning_role, FLAGS.oracle_address, FLAGS.tuner_id)
        searched = tuning.knobs_to_search(config.method.name, FLAGS.tune)
        for name in searched:
            if name in config.method.params:
                cli.warn(COMMAND, f"{name} is searched; the value given is ignored.")
        with interruptible(COMMAND, f"The finished trials are kept under {FLAGS.directory}"
                           ": rerun the same command to resume the search."):
            result = tuning.tune(
                config, tuner_kind=FLAGS.tuner, max_trials=FLAGS.max_trials,
                executions_per_trial=FLAGS.executions_per_trial,
                directory=FLAGS.directory, project_name=_project_name(config, FLAGS.tuner),
                overwrite=FLAGS.overwrite, space=_space(), tune_knobs=tuple(FLAGS.tune),
                hyperband_factor=FLAGS.hyperband_factor, oracle_timeout=FLAGS.oracle_timeout)
    except (ValueError, OSError) as err:
        cli.fail(COMMAND, err)
    except grpc.RpcError as err:  # a worker whose chief is gone or unreachable
        role = tuning.distributed.current_role()
        message = tuning.distributed.peer_lost_message(role, err, FLAGS.oracle_timeout)
        print(f"{COMMAND}: {message}", file=sys.stderr)
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
        retrain = override(config, {"run.workdir": workdir,
                                    "optim.epochs": FLAGS.retrain_epochs,
                                    "method.params": best["method_params"],
                                    "validation.examples": 0})
        print(f"Retraining the best configuration for {FLAGS.retrain_epochs} epoch(s) "
              f"in {workdir}.")
        try:
            report = run_training(retrain)
        except (ValueError, NonFiniteLossError, OSError) as err:
            cli.fail(COMMAND, err)
        print(format_report(report))


def run():
    """Console-script entry point (`adt-tune`)."""
    from adt_tf.training.config import flag_paths

    flag_of = {path: name for name, path in flag_paths().items()}
    for path, value in RUN_DEFAULTS.items():  # shown by --help
        FLAGS.set_default(flag_of[path], value)
    FLAGS["epochs"].help = "Training epochs of each trial."
    FLAGS["workdir"].help = ("Where --retrain_best trains (default: "
                             "<directory>/<project_name>/best).")
    cli.run(COMMAND, main, __doc__, SEARCH_FLAGS + train_cli.OWN_FLAGS)


if __name__ == "__main__":
    run()
