"""adt-train: train a robust classifier with ADT or a baseline, from the command line.

    adt-train --method=adt_exp --dataset=cifar10_sample --model=small_cnn --epochs=5 \
        --workdir=runs/adt_exp

Writes <workdir>/config.json (the resolved settings), TensorBoard logs, a checkpoint every
epoch (a rerun with the same workdir resumes where it stopped), <workdir>/classifier.keras,
and a report (clean and PGD-20 accuracy on the test split) to stdout and report.json.

Several machines: start the same command on each with --strategy=multiworker and TF_CONFIG
set (docs/multiworker.md). Exit status: 0 done; 2 bad settings or a non-finite loss; 3 a
peer worker of a multi-worker run stopped (restart this worker: the run resumes).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import tensorflow as tf
from absl import app, flags, logging

from adt_tf import checks
from adt_tf import data as data_lib
from adt_tf.interrupts import interruptible
from adt_tf.methods import METHODS, get_method, method_arguments
from adt_tf.models import MODELS
from adt_tf.precision import emulation_warning
from adt_tf.training import (
    STRATEGIES,
    NonFiniteLossError,
    TrainConfig,
    WorkerLostError,
    format_report,
    run_training,
)

FLAGS = flags.FLAGS
EXIT_RESTART = 3  # a peer worker of a multi-worker run stopped: restart this one to resume

flags.DEFINE_string("method", "adt_exp", f"Training method: {', '.join(sorted(METHODS))}.")
flags.DEFINE_string("dataset", data_lib.SAMPLE,
                    f"Dataset: {', '.join(data_lib.known_datasets())}.")
flags.DEFINE_string("data_dir", None, "Where tensorflow-datasets keeps its files.")
flags.DEFINE_string("model", "small_cnn", f"Classifier: {', '.join(sorted(MODELS))}.")
flags.DEFINE_integer("model_width", None, "Width of the classifier (its builder's `width`).")
flags.DEFINE_integer("model_depth", None, "Depth of a wide_resnet (6n + 4).")
flags.DEFINE_bool("model_batch_norm", None, "small_cnn: BatchNorm after each convolution "
                  "(default off, as TRADES's SmallCNN; the plain SmallCNN can stay at chance "
                  "under adversarial training, see BUILD_NOTES).")
flags.DEFINE_bool("normalize", False, "Normalise inputs by the training set's channel "
                  "mean/std inside the classifier (off: the ADT reference and the paper feed "
                  "pixels in [0, 1] as they are; Fast AT's recipe normalises).")
flags.DEFINE_integer("epochs", 76, "Training epochs (the reference schedule: 76).")
flags.DEFINE_integer("batch_size", 64, "Global batch size.")
flags.DEFINE_float("lr", 0.1, "SGD learning rate.")
flags.DEFINE_list("lr_decay_epochs", ["75", "90", "100"],
                  "Epochs (counted from 1) from which the learning rate is multiplied by "
                  "--lr_decay_factor once more; the reference's 75 gives 74 epochs at --lr "
                  "and 2 at --lr x 0.1 in a 76-epoch run.")
flags.DEFINE_float("lr_decay_factor", 0.1, "Learning-rate decay factor.")
flags.DEFINE_enum("lr_schedule", "step", ["step", "cyclic"],
                  "step: the reference's (--lr, x --lr_decay_factor from each of "
                  "--lr_decay_epochs); cyclic: Fast AT's triangle, 0 -> --lr at the middle of "
                  "the run -> 0, one value per step (the decay epochs are not used).")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("weight_decay", 2e-4, "SGD weight decay: the L2 term wd * w added to the "
                   "gradient before momentum (PyTorch's SGD, the reference), see "
                   "--weight_decay_form.")
flags.DEFINE_enum("weight_decay_form", "coupled", ["coupled", "decoupled"],
                  "coupled: PyTorch's L2-in-the-gradient (the reference); decoupled: Keras's "
                  "SGD(weight_decay=...), w -= lr * wd * w, about 10x weaker at momentum 0.9.")
flags.DEFINE_enum("norm", "linf", ["linf", "l2"],
                  "Threat model: linf (the paper's) or l2 (every method; ADT's distributions "
                  "are then mapped radially onto the L2 ball).")
flags.DEFINE_float("epsilon", None, "Budget in the [0, 1] pixel scale (default: the dataset's "
                   "for --norm: 8/255 L-inf, 0.5 L2 for CIFAR).")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and the method's noise.")
flags.DEFINE_string("workdir", "runs/adt", "Output folder; rerunning resumes the run there.")
flags.DEFINE_integer("max_train_examples", None, "Use only the first N training examples.")
flags.DEFINE_integer("eval_examples", None, "Test inputs of the final report (default: all).")
flags.DEFINE_bool("jit_compile", False, "Compile train steps with XLA (usually a win on GPU "
                  "and TPU, a loss on CPU).")
flags.DEFINE_integer("intra_op_threads", 0, "TensorFlow's threads per op (0: its default). With "
                     "--inner_branches=2 on a 2-core CPU, 1 here and 2 for --inter_op_threads "
                     "runs each branch on its own core (docs/performance.md).")
flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow's threads running ops side by side "
                     "(0: its default).")
flags.DEFINE_bool("deterministic_ops", False, "TensorFlow's deterministic kernels "
                  "(tf.config.experimental.enable_op_determinism): needed for a fixed run on GPUs "
                  "(cuDNN's backward passes); a CPU run is deterministic without it, on one "
                  "kind of CPU (see README, 'A fixed seed, a fixed run').")
flags.DEFINE_bool("mixed_precision", False, "Compute in float16 on GPU, bfloat16 on CPU/TPU, "
                  "with float32 variables, losses and adversarial distributions.")
flags.DEFINE_enum("strategy", "default", list(STRATEGIES),
                  "Distribution strategy: default (one device), mirrored (all local GPUs), "
                  "multiworker (the machines listed in the TF_CONFIG environment variable; "
                  "start the same command on each, see docs/multiworker.md), tpu.")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu (default: "
                    "TensorFlow's discovery, e.g. the TPU VM's own).")
flags.DEFINE_integer("verbose", 1, "Keras verbosity: 0 silent, 1 progress bar, 2 one line.")
flags.DEFINE_integer("validation_examples", 0, "Hold out this many training images (a seeded, "
                     "class-stratified draw recorded in <workdir>/validation_split.json; never "
                     "trained on) and score clean and robust accuracy on them each epoch; "
                     "keeps <workdir>/best.keras, the epoch of the highest "
                     "val_robust_accuracy. 0: no split (all images trained on).")
flags.DEFINE_integer("validation_every", 1, "Score the validation split every this many epochs.")
flags.DEFINE_string("validation_attack", "pgd10", "The validation's attack: pgd<steps>, the "
                    "evaluation's PGD (steps of epsilon/4 from a uniform random start; "
                    "PGD-L2 under --norm=l2).")
flags.DEFINE_float("ema_decay", None, "Keep an exponential moving average of the weights with "
                   "this decay (e.g. 0.999; Keras's optimizer EMA): validation, best.keras, "
                   "classifier.keras and exports use the averaged weights. Off by default.")


def _method_params_help() -> str:
    """--method_params's help: every method's own arguments with their defaults, read from
    the constructors (one source for the names and the defaults)."""
    lines = []
    for method in METHODS:
        args = method_arguments(method)
        if args:
            lines.append(f"{method}: " + ", ".join(
                f"{name}={'(by --norm)' if default is None else default}"
                for name, default in args.items()))
    return ("The method's own arguments, NAME=VALUE,... (values read as JSON: numbers, "
            "true/false, else text), e.g. --method=adt_exp --method_params=entropy_weight=0.05,"
            "inner_steps=10; an argument left out keeps the method's default. Each method's "
            "arguments and defaults: " + "; ".join(lines) + ".")


flags.DEFINE_list("method_params", [], _method_params_help())

#: The per-method flags of earlier versions, one per method argument (e.g. --entropy_weight):
#: still read, with a warning naming the --method_params spelling.
DEPRECATED_METHOD_FLAGS = (
    "entropy_weight", "inner_steps", "mc_samples", "inner_lr", "inner_branches",
    "inner_gradients", "generator_width", "generator_blocks", "generator_lr",
    "generator_decay_steps", "z_dim", "tau", "encoder_lr", "encoder_width", "outer_loss",
    "trades_beta", "attack_steps", "attack_step_size", "perturb_mode", "adv_fraction",
    "adv_weight", "random_epsilon", "alp_weight", "init_std", "label_smoothing",
    "sinkhorn_reg", "sinkhorn_iterations", "sinkhorn_tolerance")
_FLAG_KINDS = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
               str: flags.DEFINE_string}
_DEFAULTS = {name: default for method in METHODS
             for name, default in method_arguments(method).items()}
for _name in DEPRECATED_METHOD_FLAGS:
    _kind = _FLAG_KINDS[float if _DEFAULTS[_name] is None else type(_DEFAULTS[_name])]
    _kind(_name, None, f"Deprecated: use --method_params={_name}=VALUE.")


def deprecated_flag_warnings() -> list[str]:
    """One warning per per-method flag given, naming its --method_params spelling."""
    return [f"--{name} is deprecated and will be removed; use "
            f"--method_params={name}={_flag_text(FLAGS[name].value)} instead."
            for name in DEPRECATED_METHOD_FLAGS if FLAGS[name].present]


def _flag_text(value) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def given_method_params() -> dict[str, Any]:
    """The method arguments the command line sets: --method_params and the deprecated
    per-method flags (ValueError for a malformed item or one argument given both ways)."""
    given = checks.parse_assignments(FLAGS.method_params, "--method_params",
                                     "entropy_weight=0.05,inner_steps=10")
    for name in DEPRECATED_METHOD_FLAGS:
        if FLAGS[name].present:
            if name in given:
                raise ValueError(f"{name} is given twice: by --method_params and by --{name}; "
                                 "keep the --method_params one.")
            given[name] = FLAGS[name].value
    return given


def method_params_from_flags(method: str) -> dict:
    """The selected method's constructor arguments: --method_params (and the deprecated
    per-method flags), else the method's defaults. An argument whose default depends on the
    threat model stays None here: `training.with_norm_defaults` sets it once the run has
    made its ball.

    Raises:
        ValueError: an argument the selected method does not take (it would be silently
            ignored otherwise), naming the methods that take it; one given both ways.
    """
    given = given_method_params()
    own = method_arguments(method)
    stray = [name for name in given if name not in own]
    if stray:
        details = []
        for name in stray:
            takers = [m for m in METHODS if name in method_arguments(m)]
            details.append(f"{name} applies to {', '.join(takers)}" if takers
                           else f"no method takes {name}")
        takes = ", ".join(own) if own else "no arguments of its own"
        raise ValueError(f"--method={method} does not take {', '.join(stray)} "
                         f"({'; '.join(details)}); it takes {takes}.")
    return {name: given.get(name, default) for name, default in own.items()}


def config_from_flags() -> TrainConfig:
    get_method(FLAGS.method)  # unknown method -> ValueError listing the known ones
    model_params = {}
    if FLAGS.model_width is not None:
        model_params["width"] = FLAGS.model_width
    if FLAGS.model_depth is not None:
        model_params["depth"] = FLAGS.model_depth
    if FLAGS.model_batch_norm is not None:
        if FLAGS.model != "small_cnn":
            raise ValueError(f"--model_batch_norm applies to --model=small_cnn only, got "
                             f"--model={FLAGS.model}.")
        model_params["batch_norm"] = FLAGS.model_batch_norm
    try:
        decay = tuple(int(e) for e in FLAGS.lr_decay_epochs)
    except ValueError:
        raise ValueError(
            f"lr_decay_epochs must be integers, got {FLAGS.lr_decay_epochs}.") from None
    return TrainConfig(
        workdir=FLAGS.workdir, method=FLAGS.method, dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir, model=FLAGS.model, model_params=model_params,
        normalize=FLAGS.normalize, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
        lr=FLAGS.lr, lr_decay_epochs=decay, lr_decay_factor=FLAGS.lr_decay_factor,
        lr_schedule=FLAGS.lr_schedule,
        momentum=FLAGS.momentum, weight_decay=FLAGS.weight_decay,
        weight_decay_form=FLAGS.weight_decay_form, epsilon=FLAGS.epsilon, norm=FLAGS.norm,
        method_params=method_params_from_flags(FLAGS.method), seed=FLAGS.seed,
        max_train_examples=FLAGS.max_train_examples, eval_examples=FLAGS.eval_examples,
        jit_compile=FLAGS.jit_compile, mixed_precision=FLAGS.mixed_precision,
        strategy=FLAGS.strategy, tpu=FLAGS.tpu, verbose=FLAGS.verbose,
        validation_examples=FLAGS.validation_examples, validation_every=FLAGS.validation_every,
        validation_attack=FLAGS.validation_attack, ema_decay=FLAGS.ema_decay)


def apply_thread_flags() -> None:
    """--intra_op_threads / --inter_op_threads (and --deterministic_ops), set before
    TensorFlow starts its thread pools (its first op); adt-tune applies them too."""
    if FLAGS.intra_op_threads < 0 or FLAGS.inter_op_threads < 0:
        raise app.UsageError("--intra_op_threads and --inter_op_threads must be >= 0.")
    if FLAGS.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
    if FLAGS.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    if "deterministic_ops" in FLAGS and FLAGS.deterministic_ops:
        tf.config.experimental.enable_op_determinism()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    apply_thread_flags()
    kept = (f"The epochs completed so far are kept in {os.path.join(FLAGS.workdir, 'backup')}"
            " (no file is left half-written): rerun the same command to resume.")
    try:
        config = config_from_flags()
        for warning in [*deprecated_flag_warnings(), emulation_warning(config.mixed_precision)]:
            if warning:
                logging.warning("%s", warning)
                print(f"adt-train: warning: {warning}", file=sys.stderr)
        with interruptible("adt-train", kept):
            report = run_training(config)
    except (ValueError, NonFiniteLossError, OSError) as err:
        logging.error("%s", err)
        print(f"adt-train: error: {err}", file=sys.stderr)
        sys.exit(2)
    except WorkerLostError as err:  # multi-worker: the cluster manager restarts this worker
        logging.error("%s", err)
        print(f"adt-train: {err}", file=sys.stderr)
        sys.exit(EXIT_RESTART)
    print(format_report(report))


def run():
    """Console-script entry point (`adt-train`)."""
    app.run(main)


if __name__ == "__main__":
    run()
