"""adt-train: train a robust classifier with ADT or a baseline.

    adt-train --method=adt_exp --dataset=cifar10_sample --epochs=5 --workdir=runs/adt_exp
    adt-train --config=cpu --dataset=npz:DIR --seed=1 --workdir=runs/cpu   # a recipe

Every flag is a setting of the run schema (adt_tf.training.config.RunConfig); --config
starts from a recipe file (or a shipped recipe by name) and the flags given beside it
override it. A method's and a model's own arguments go in --method_params and
--model_params (NAME=VALUE,...; =help lists them).

Writes <workdir>/config.json (the run resolved: every setting explicit), TensorBoard logs,
history.csv, a checkpoint every epoch (a rerun with the same workdir resumes where it
stopped), <workdir>/classifier.keras, and a report (clean and PGD-20 accuracy on the test
split) to stdout and report.json.

Exit status: 0 done; 2 bad settings or a non-finite loss; 3 a peer worker of a multi-worker
run stopped (restart this worker: the run resumes); 130 interrupted (the completed epochs
are kept).
"""

from __future__ import annotations

import os
import sys

from trainers import cli

COMMAND = "adt-train"
EXIT_RESTART = 3  # a peer worker of a multi-worker run stopped: restart this one to resume

#: The per-method flags of earlier releases, each now an argument of --method_params.
REMOVED_METHOD_FLAGS = (
    "entropy_weight", "inner_steps", "mc_samples", "inner_lr", "inner_branches",
    "inner_gradients", "generator_width", "generator_blocks", "generator_lr",
    "generator_decay_steps", "z_dim", "tau", "encoder_lr", "encoder_width", "outer_loss",
    "trades_beta", "attack_steps", "attack_step_size", "perturb_mode", "adv_fraction",
    "adv_weight", "random_epsilon", "alp_weight", "init_std", "label_smoothing",
    "sinkhorn_reg", "sinkhorn_iterations", "sinkhorn_tolerance")
#: Every removed flag and its new spelling.
REMOVED_FLAGS = {
    **{name: f"--method_params={name}=VALUE" for name in REMOVED_METHOD_FLAGS},
    "model_width": "--model_params=width=VALUE",
    "model_depth": "--model_params=depth=VALUE",
    "model_batch_norm": "--model_params=batch_norm=true",
}

OWN_FLAGS = cli.define_schema_flags()
cli.define_removed_flags(REMOVED_FLAGS)


def arguments_help(config) -> str | None:
    """The text of --method_params=help / --model_params=help, if asked for."""
    from adt_tf.training.config import HELP
    from adt_tf.training.resolve import describe_arguments, method_signature, model_signature

    parts = []
    if HELP in config.method.params:
        parts.append(describe_arguments(method_signature(config.method.name),
                                        f"--method={config.method.name}"))
    if HELP in config.model.params:
        parts.append(describe_arguments(model_signature(config.model.name),
                                        f"--model={config.model.name}"))
    return "\n".join(parts) or None


def main(argv):
    try:
        cli.unexpected_arguments(argv)
        config = cli.config_from_flags()
    except ValueError as err:
        cli.fail(COMMAND, err)
    cli.import_tensorflow()
    from adt_tf.core.interrupts import interruptible
    from adt_tf.core.precision import emulation_warning
    from adt_tf.training import run as run_lib
    from adt_tf.training.callbacks import NonFiniteLossError
    from adt_tf.training.report import format_report

    try:
        listing = arguments_help(config)
        if listing:
            print(listing)
            return
        run_lib.apply_threads(config.compute)
        cli.warn(COMMAND, emulation_warning(config.compute.mixed_precision))
        kept = (f"The epochs completed so far are kept in "
                f"{os.path.join(config.run.workdir, 'backup')} (no file is left "
                "half-written): rerun the same command to resume.")
        with interruptible(COMMAND, kept):
            report = run_lib.run_training(config)
    except (ValueError, NonFiniteLossError, OSError) as err:
        cli.fail(COMMAND, err)
    except run_lib.WorkerLostError as err:  # multi-worker: the cluster manager restarts it
        print(f"{COMMAND}: {err}", file=sys.stderr)
        sys.exit(EXIT_RESTART)
    print(format_report(report))


def run():
    """Console-script entry point (`adt-train`)."""
    cli.run(COMMAND, main, __doc__, OWN_FLAGS)


if __name__ == "__main__":
    run()
