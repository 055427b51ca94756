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

import inspect
import os
import sys

import tensorflow as tf
from absl import app, flags, logging

from adt_tf import data as data_lib
from adt_tf.interrupts import interruptible
from adt_tf.methods import METHODS, get_method
from adt_tf.models import MODELS
from adt_tf.precision import emulation_warning
from adt_tf.threat import resolve_threat
from adt_tf.training import (
    STRATEGIES,
    NonFiniteLossError,
    TrainConfig,
    WorkerLostError,
    format_report,
    method_param_names,
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

# Method hyperparameters: a flag named like a constructor argument of the selected method
# class is passed to it; None means "the method's own default".
flags.DEFINE_float("entropy_weight", None, "ADT: entropy weight lambda (adt_exp, adt_exp_am: "
                   "0.01; adt_imp_am: 1.0).")
flags.DEFINE_integer("inner_steps", None, "ADT_EXP: inner ascent steps T (7).")
flags.DEFINE_integer("mc_samples", None, "ADT_EXP: Monte Carlo samples k per step (5).")
flags.DEFINE_float("inner_lr", None, "ADT_EXP: inner Adam learning rate (0.3).")
flags.DEFINE_integer("inner_branches", None, "ADT_EXP: split each inner step's k*B batch into "
                     "this many passes run side by side (1; a CPU speed setting, see "
                     "docs/performance.md).")
flags.DEFINE_string("inner_gradients", None, "adt_exp: 'accumulate' (the reference: the inner "
                    "steps' gradients are summed, never zeroed; default) or 'fresh' (one "
                    "gradient per step, a non-default variant).")
flags.DEFINE_integer("generator_width", None, "ADT_*-AM: base channels w of the full-resolution "
                     "generator (w, 2w, 2w, w; 256 as the reference, about 10M parameters; "
                     "CPU runs need fewer).")
flags.DEFINE_integer("generator_blocks", None, "ADT_*-AM: residual blocks of the generator (3).")
flags.DEFINE_float("generator_lr", None, "ADT_*-AM: the generator Adam's learning rate (2e-4).")
flags.DEFINE_integer("generator_decay_steps", None, "ADT_*-AM: decay the generator's learning "
                     "rate linearly to 0 over this many steps (epochs x steps per epoch); "
                     "0 keeps it constant (0).")
flags.DEFINE_integer("z_dim", None, "ADT_IMP-AM: dimension of the generator's noise z (64).")
flags.DEFINE_float("tau", None, "ADT_IMP-AM: margin tau of the entropy penalty "
                   "lambda * relu(-E[log q(z|delta)] - tau) (0.9).")
flags.DEFINE_float("encoder_lr", None, "ADT_IMP-AM: the entropy encoder Adam's learning rate "
                   "(2e-4).")
flags.DEFINE_integer("encoder_width", None, "ADT_IMP-AM: first-layer channels of the entropy "
                     "encoder (32 as the reference; then 2x, 4x, 8x).")
flags.DEFINE_string("outer_loss", None, "adt_exp: the loss L of the ADT objective, 'ce' (default) "
                    "or 'trades' (CE(f(x), y) + trades_beta * KL(f(x) || f(x_adv))).")
flags.DEFINE_float("trades_beta", None, "trades, adt_exp with --outer_loss=trades: weight beta "
                   "of the KL term (6.0).")
flags.DEFINE_integer("attack_steps", None, "Steps of the training attack: pgd_at, alp, trades 10; "
                     "feascatter 1.")
flags.DEFINE_float("attack_step_size", None, "Step of the training attack in [0, 1] pixels: "
                   "pgd_at, alp 2/255; trades 0.007; fast_at 1.25 * epsilon; feascatter epsilon.")
flags.DEFINE_string("perturb_mode", None, "fast_at: 'training' (the authors': the FGSM "
                    "gradient with the classifier in training mode; default) or 'inference'.")
flags.DEFINE_float("adv_fraction", None, "fgsm_at: fraction of each batch replaced by "
                   "adversarial examples (0.5).")
flags.DEFINE_float("adv_weight", None, "fgsm_at: weight lambda of the adversarial part of the "
                   "loss (0.3).")
flags.DEFINE_bool("random_epsilon", None, "fgsm_at: draw each example's budget from N(0, "
                  "(epsilon/2)^2) truncated to [0, epsilon], as Kurakin et al. (False).")
flags.DEFINE_float("alp_weight", None, "alp: weight of the logit-pairing penalty (0.5).")
flags.DEFINE_float("init_std", None, "trades: std of the Gaussian start of the inner "
                   "maximisation (0.001).")
flags.DEFINE_float("label_smoothing", None, "feascatter: label smoothing of the outer "
                   "cross-entropy (0.5).")
flags.DEFINE_float("sinkhorn_reg", None, "feascatter: entropic regularisation of the optimal "
                   "transport (0.01).")
flags.DEFINE_integer("sinkhorn_iterations", None, "feascatter: maximum Sinkhorn iterations (100).")
flags.DEFINE_float("sinkhorn_tolerance", None, "feascatter: Sinkhorn early-stop tolerance on the "
                   "dual potential (0.1; 0 runs every iteration).")


def method_params_from_flags(method: str) -> dict:
    """The selected method's constructor arguments, from flags or the method's defaults.

    Raises:
        ValueError: a method flag was given that the selected method does not take (it
            would be silently ignored otherwise).
    """
    signature = inspect.signature(get_method(method).__init__).parameters
    own = set(method_param_names(method))
    others = sorted({name for m in METHODS for name in method_param_names(m)} - own)
    stray = [name for name in others if name in FLAGS and FLAGS[name].present]
    if stray:
        takers = {name: sorted(m for m in METHODS if name in method_param_names(m))
                  for name in stray}
        details = "; ".join(f"--{n} applies to {', '.join(takers[n])}" for n in stray)
        raise ValueError(f"--method={method} does not take {', '.join('--' + n for n in stray)} "
                         f"({details}); drop it or pick one of those methods.")
    params = {}
    epsilon = resolve_threat(FLAGS.norm, FLAGS.epsilon, FLAGS.dataset).epsilon
    by_norm = get_method(method).norm_defaults(FLAGS.norm, epsilon)
    for name in method_param_names(method):
        value = FLAGS[name].value if name in FLAGS else None
        if value is None and name in by_norm:
            value = by_norm[name]  # e.g. a step size: 2/255 for linf, epsilon / 4 for l2
        if value is None:
            default = signature[name].default
            if default is inspect.Parameter.empty:
                raise ValueError(f"method {method!r} needs --{name}.")
            value = default
        params[name] = value
    return params


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
        warning = emulation_warning(config.mixed_precision)
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
