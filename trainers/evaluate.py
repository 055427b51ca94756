"""adt-evaluate: measure a classifier's robustness with a suite of attacks.

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
import sys

from absl import app, flags, logging

from adt_tf import checks
from adt_tf import data as data_lib
from adt_tf.evaluation import PER_ATTACK_MODES, evaluate
from adt_tf.evaluation.suites import CATALOGUE, SUITES, parse_overrides, resolve_suite
from adt_tf.interrupts import interruptible
from adt_tf.loading import CHECKPOINTS, file_id, load_classifier, resolve_model_path
from adt_tf.precision import COMPUTE_DTYPES
from adt_tf.threat import THREATS, resolve_threat

FLAGS = flags.FLAGS
#: Training images the EXP-AM / IMP-AM generators are fitted on (the first ones).
TRAIN_POOL_SIZE = 10000


def define_flags() -> None:
    """Defines the command line's flags (on first use only: trainers/train.py defines flags
    of the same names, and both modules may be imported by one process, e.g. the tests)."""
    if "suite" in FLAGS:
        return
    flags.DEFINE_string("model", None, "The classifier: a .keras file or a SavedModel export "
                        "folder (its serving_default signature's `logits` output).")
    flags.DEFINE_enum("checkpoint", None, list(CHECKPOINTS), "A training workdir's classifier: "
                      "last (classifier.keras) or best (best.keras, the epoch of the highest "
                      "validation robust accuracy); default best when the run held out a "
                      "validation split, else last. The choice is printed.")
    flags.DEFINE_string("dataset", data_lib.SAMPLE,
                        f"Dataset: {', '.join(data_lib.known_datasets())}.")
    flags.DEFINE_string("data_dir", None, "Where tensorflow-datasets keeps its files.")
    flags.DEFINE_string("suite", "quick",
                        f"Suite ({', '.join(sorted(SUITES))}) or a comma-separated list of "
                        f"attacks ({', '.join(CATALOGUE)}).")
    flags.DEFINE_list("attack_params", [], "Attack settings, ATTACK.PARAM=VALUE, e.g. "
                      "fea.num_targets=20,spsa.samples=512,square.num_queries=1000.")
    flags.DEFINE_enum("per_attack", None, list(PER_ATTACK_MODES),
                      "'all': every attack on every clean-correct input (own accuracy per "
                      "attack); 'remaining': each on the inputs still robust (default for the "
                      "autoattack and full suites).")
    flags.DEFINE_enum("norm", "linf", list(THREATS),
                      "Threat model: linf (the paper's) or l2 (suites quick and paper_l2).")
    flags.DEFINE_float("epsilon", None, "Budget in the [0, 1] pixel scale (default: the "
                       "dataset's for --norm, 8/255 L-inf and 0.5 L2 for CIFAR).")
    flags.DEFINE_integer("num_examples", None, "Evaluate the first N test inputs (default: "
                         "all).")
    flags.DEFINE_integer("batch_size", 256, "Inputs per attack batch.")
    flags.DEFINE_string("source_model", None, "Source model of the transfer attacks (.keras or "
                        "SavedModel); without it they are skipped.")
    flags.DEFINE_string("out", "runs/eval", "Output folder (JSON, Markdown, cache).")
    flags.DEFINE_integer("seed", 0, "Seed of the attacks.")
    flags.DEFINE_bool("jit_compile", False, "Compile the attacks with XLA.")
    flags.DEFINE_bool("sanity_checks", True, "Run the gradient-masking sanity checks.")
    flags.DEFINE_enum("compute_dtype", "float32", list(COMPUTE_DTYPES),
                      "float32: attack the function the weights define (a model trained under "
                      "--mixed_precision is evaluated through its float32 copy; a low-"
                      "precision forward can blunt gradient attacks); policy: attack the model "
                      "in the dtype policy it was saved with (the deployed one). The report "
                      "says which.")
    flags.DEFINE_integer("verbose", 1, "0 silent, 1 progress bars.")


def run_evaluation(model: str, dataset: str = data_lib.SAMPLE, *, data_dir=None,
                   suite: str = "quick", attack_params=None, per_attack=None, epsilon=None,
                   norm: str = "linf",
                   num_examples=None, batch_size: int = 256, source_model=None,
                   out: str = "runs/eval", seed: int = 0, jit_compile: bool = False,
                   sanity_checks: bool = True, compute_dtype: str = "float32",
                   checkpoint: str | None = None, verbose: int = 1):
    """What `adt-evaluate` does, as a function: returns (EvaluationResult, written paths)."""
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
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.model:
        print("adt-evaluate: error: --model is required (a .keras file or a SavedModel "
              "folder).", file=sys.stderr)
        sys.exit(2)
    kept = (f"The attacks finished so far are cached in {os.path.join(FLAGS.out, 'cache')}: "
            "rerun the same command to resume from them.")
    try:
        with interruptible("adt-evaluate", kept):
            result, paths = run_evaluation(
                FLAGS.model, FLAGS.dataset, data_dir=FLAGS.data_dir, suite=FLAGS.suite,
                attack_params=FLAGS.attack_params, per_attack=FLAGS.per_attack,
                epsilon=FLAGS.epsilon, norm=FLAGS.norm, num_examples=FLAGS.num_examples,
                batch_size=FLAGS.batch_size, source_model=FLAGS.source_model, out=FLAGS.out,
                seed=FLAGS.seed, jit_compile=FLAGS.jit_compile,
                sanity_checks=FLAGS.sanity_checks, compute_dtype=FLAGS.compute_dtype,
                checkpoint=FLAGS.checkpoint, verbose=FLAGS.verbose)
    except (ValueError, RuntimeError, OSError) as err:
        logging.error("%s", err)
        print(f"adt-evaluate: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(result.to_markdown())
    print(f"Written: {paths['json']}, {paths['md']}")


def run():
    """Console-script entry point (`adt-evaluate`)."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
