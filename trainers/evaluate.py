r"""adt-evaluate: measure a classifier's robustness with a suite of attacks.

    adt-evaluate --model=runs/adt/classifier.keras --dataset=cifar10_sample --suite=paper \
        --num_examples=500 --out=runs/adt/eval

Writes <out>/robustness.json (every setting, per-attack and worst-case accuracy, timings,
sanity warnings), <out>/robustness.md (the same as a table) and per-example results; each
attack's per-example results are cached in <out>/cache, so a rerun with the same model, data
and settings skips the attacks already done (an interrupted run resumes).

FeaAttack draws its targets from the whole test split (as the authors' script); the EXP-AM
and IMP-AM generators are fitted on the first 10,000 training images. Transfer attacks need
--source_model (they are reported as skipped without it).
"""

from __future__ import annotations

import os

from absl import flags

from trainers import cli

COMMAND = "adt-evaluate"
FLAGS = flags.FLAGS
#: Training images the EXP-AM / IMP-AM generators are fitted on (the first ones).
TRAIN_POOL_SIZE = 10000
#: The suites, norms, checkpoints and compute dtypes the flags name (the library's own
#: tuples, written out so that --help needs no TensorFlow; tests/trainers/test_cli.py holds
#: them equal).
SUITE_NAMES = ("quick", "paper", "paper_l2", "autoattack", "full")
PER_ATTACK_CHOICES = ("all", "remaining")
CHECKPOINT_CHOICES = ("last", "best")
COMPUTE_DTYPE_CHOICES = ("float32", "policy")
NORM_CHOICES = ("linf", "l2")


def define_flags() -> list[str]:
    """Defines the command line's flags (on first use only: adt-train defines flags of the
    same names, and both modules may be imported by one process, e.g. the tests); returns
    their names."""
    names = ["model", "checkpoint", "dataset", "data_dir", "suite", "attack_params",
             "per_attack", "norm", "epsilon", "num_examples", "batch_size", "source_model",
             "out", "seed", "jit_compile", "sanity_checks", "compute_dtype", "verbose"]
    if "suite" in FLAGS:
        return names
    flags.DEFINE_string("model", None, "The classifier: a .keras file, a training workdir "
                        "(its classifier.keras or best.keras; its record gives the dataset "
                        "and the threat model unless --dataset, --norm or --epsilon say "
                        "otherwise) or a SavedModel export folder.")
    flags.DEFINE_enum("checkpoint", None, list(CHECKPOINT_CHOICES), "A training workdir's "
                      "classifier: last (classifier.keras) or best (best.keras, the epoch of "
                      "the highest validation robust accuracy); default best when the run "
                      "held out a validation split, else last. The choice is printed.")
    flags.DEFINE_string("dataset", None, "Dataset: cifar10, cifar100, svhn_cropped, mnist, "
                        "fashion_mnist, cifar10_sample or npz:DIR (default: the training "
                        "run's, for a workdir; else cifar10_sample).")
    flags.DEFINE_string("data_dir", None, "Where tensorflow-datasets keeps its files.")
    flags.DEFINE_string("suite", "quick", f"Suite ({', '.join(SUITE_NAMES)}; "
                        "docs/evaluation.md) or a comma-separated list of attacks of the "
                        "catalogue (e.g. pgd20,apgd_ce).")
    flags.DEFINE_list("attack_params", [], "Attack settings, ATTACK.PARAM=VALUE, e.g. "
                      "fea.num_targets=20,spsa.samples=512,square.num_queries=1000.")
    flags.DEFINE_enum("per_attack", None, list(PER_ATTACK_CHOICES),
                      "'all': every attack on every clean-correct input (own accuracy per "
                      "attack); 'remaining': each on the inputs still robust (default for the "
                      "autoattack and full suites).")
    flags.DEFINE_enum("norm", None, list(NORM_CHOICES), "Threat model: linf (the paper's) or "
                      "l2 (default: the training run's, for a workdir; else linf).")
    cli.define_flag("epsilon", None, "Budget in the [0, 1] pixel scale; a fraction such as "
                    "8/255 is read (default: the training run's, for a workdir of the same "
                    "norm; else the dataset's: 8/255 L-inf, 0.5 L2 for CIFAR).", float | None)
    cli.define_flag("num_examples", None, "Evaluate the first N test inputs (default: all).",
                    int | None)
    cli.define_flag("batch_size", 256, "Inputs per attack batch.", int)
    flags.DEFINE_string("source_model", None, "Source model of the transfer attacks (.keras, "
                        "workdir or SavedModel); without it they are skipped.")
    flags.DEFINE_string("out", "runs/eval", "Output folder (JSON, Markdown, cache).")
    cli.define_flag("seed", 0, "Seed of the attacks.", int)
    cli.define_flag("jit_compile", False, "Compile the attacks with XLA.", bool)
    cli.define_flag("sanity_checks", True, "Run the gradient-masking sanity checks.", bool)
    flags.DEFINE_enum("compute_dtype", "float32", list(COMPUTE_DTYPE_CHOICES),
                      "float32: attack the function the weights define (a model trained under "
                      "--mixed_precision is evaluated through its float32 copy; a low-"
                      "precision forward can blunt gradient attacks); policy: attack the model "
                      "in the dtype policy it was saved with (the deployed one). The report "
                      "says which.")
    cli.define_flag("verbose", 1, "0 silent, 1 progress bars (one line per attack into a "
                    "file or a pipe).", int)
    return names


def run_evaluation(model: str, dataset: str | None = None, *, data_dir=None,
                   suite: str = "quick", attack_params=None, per_attack=None, epsilon=None,
                   norm: str | None = None,
                   num_examples=None, batch_size: int = 256, source_model=None,
                   out: str = "runs/eval", seed: int = 0, jit_compile: bool = False,
                   sanity_checks: bool = True, compute_dtype: str = "float32",
                   checkpoint: str | None = None, verbose: int = 1):
    """What `adt-evaluate` does, as a function: returns (EvaluationResult, written paths).

    A model from a training workdir is evaluated, unless told otherwise, on its run's
    dataset and under its run's threat model, as its record (config.json) states them.
    """
    from adt_tf import data as data_lib
    from adt_tf.artifacts.loading import file_id, load_classifier, resolve_model_path, run_record
    from adt_tf.core import checks
    from adt_tf.data import resolve_threat
    from adt_tf.evaluation import evaluate
    from adt_tf.evaluation.suites import parse_overrides, resolve_suite
    from adt_tf.threat import THREATS

    record = run_record(model) if os.path.exists(model) else None
    run = record.config if record is not None else None
    if dataset is None:
        dataset = run.data.dataset if run is not None else data_lib.SAMPLE
        data_dir = data_dir or (run.data.data_dir if run is not None else None)
    if norm is None:
        norm = run.threat.norm if run is not None else "linf"
    if epsilon is None and run is not None and run.threat.norm == norm \
            and run.threat.epsilon is not None and dataset == run.data.dataset:
        epsilon = run.threat.epsilon
    overrides = parse_overrides(attack_params)
    checks.check_choice(norm, "norm", tuple(THREATS))
    # Bad names, and attacks without a version for the norm, fail before anything is loaded.
    resolve_suite(suite, overrides, THREATS[norm])
    # The threat model is made once: here when --epsilon is given (the budget is checked
    # before anything is loaded), else from the dataset's info once it is read.
    threat = None if epsilon is None else resolve_threat(norm, epsilon, dataset)
    if num_examples is not None:
        checks.check_positive_int(num_examples, "num_examples")
    checks.check_positive_int(batch_size, "batch_size")
    checks.check_writable_dir(out, "--out")  # not after hours of attacks
    resolved = resolve_model_path(model, checkpoint)
    if verbose and os.path.isdir(model) and resolved.endswith(".keras"):
        print(f"Evaluating {resolved} (--checkpoint="
              f"{'best' if resolved.endswith('best.keras') else 'last'}).")
    classifier = load_classifier(model, checkpoint)
    source = load_classifier(source_model) if source_model else None
    splits = data_lib.load(dataset, data_dir)
    if threat is None:
        threat = resolve_threat(norm, None, splits.info)
    n = len(splits.x_test) if num_examples is None else min(num_examples, len(splits.x_test))
    model_id = file_id(model, checkpoint)
    if source_model:
        model_id += "+" + file_id(source_model)
    result = evaluate(
        classifier, splits.x_test[:n], splits.y_test[:n], threat, suite=suite,
        overrides=overrides, per_attack=per_attack, batch_size=batch_size, seed=seed,
        source_model=source,
        target_pool=(splits.x_test, splits.y_test),
        train_pool=(splits.x_train[:TRAIN_POOL_SIZE], splits.y_train[:TRAIN_POOL_SIZE]),
        cache_dir=os.path.join(out, "cache"), model_id=model_id, model_name=resolved,
        dataset=dataset, sanity_checks=sanity_checks, jit_compile=jit_compile,
        compute_dtype=compute_dtype, verbose=verbose)
    return result, result.save(out)


def main(argv):
    try:
        cli.unexpected_arguments(argv)
        if not FLAGS.model:
            raise ValueError("--model is required (a .keras file, a training workdir or a "
                             "SavedModel folder).")
    except ValueError as err:
        cli.fail(COMMAND, err)
    cli.import_tensorflow()
    from adt_tf.core.interrupts import interruptible

    kept = (f"The attacks finished so far are cached in {os.path.join(FLAGS.out, 'cache')}: "
            "rerun the same command to resume from them.")
    try:
        with interruptible(COMMAND, kept):
            result, paths = run_evaluation(
                FLAGS.model, FLAGS.dataset, data_dir=FLAGS.data_dir, suite=FLAGS.suite,
                attack_params=FLAGS.attack_params, per_attack=FLAGS.per_attack,
                epsilon=FLAGS.epsilon, norm=FLAGS.norm, num_examples=FLAGS.num_examples,
                batch_size=FLAGS.batch_size, source_model=FLAGS.source_model, out=FLAGS.out,
                seed=FLAGS.seed, jit_compile=FLAGS.jit_compile,
                sanity_checks=FLAGS.sanity_checks, compute_dtype=FLAGS.compute_dtype,
                checkpoint=FLAGS.checkpoint, verbose=FLAGS.verbose)
    except (ValueError, RuntimeError, OSError) as err:
        cli.fail(COMMAND, err)
    print(result.to_markdown())
    print(f"Written: {paths['json']}, {paths['md']}")


def run():
    """Console-script entry point (`adt-evaluate`)."""
    cli.run(COMMAND, main, __doc__, define_flags())


if __name__ == "__main__":
    run()
