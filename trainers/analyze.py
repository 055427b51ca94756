r"""adt-analyze: pictures and numbers that explain a robust classifier.

    adt-analyze --model=runs/standard,runs/adt_exp --dataset=cifar10_sample \
        --num_examples=100 --out=runs/analysis --analyses=diversity,landscape,curvature

Analyses (--analyses, comma-separated):
  diversity  EXP-attack samples against PGD random restarts: average pairwise L2 distance
             per input and a PCA scatter grid (paper Fig. 1)
  landscape  cross-entropy on a grid along the gradient sign and a random sign (Fig. 2a-e)
  curvature  dominant eigenvalue of the input Hessian by power iteration (Fig. 2f)
  lambda     robust accuracy and entropy against lambda, from the models (their lambda read
             from each run's config.json, or --lambdas) or from --lambda_table (Fig. 5)

Writes <out>/<analysis>.json, PNGs and <out>/summary.json, and prints a short summary.
"""

from __future__ import annotations

from absl import flags

from trainers import cli

COMMAND = "adt-analyze"
FLAGS = flags.FLAGS
#: The analyses and landscape plots the flags name (the library's tuples, written out so that
#: --help needs no TensorFlow; tests/trainers/test_cli.py holds them equal).
ANALYSIS_NAMES = ("diversity", "landscape", "curvature", "lambda")
LANDSCAPE_PLOTS = ("contour", "surface")

flags.DEFINE_list("model", [], "Classifiers, comma-separated: .keras files or training "
                  "workdirs containing classifier.keras.")
flags.DEFINE_enum("checkpoint", None, ["last", "best"], "Training workdirs' classifier: last "
                  "or best (the epoch of the highest validation robust accuracy); default "
                  "best for a run that held out a validation split, else last.")
flags.DEFINE_string("dataset", "cifar10_sample", "Dataset (its test split): cifar10, "
                    "cifar100, svhn_cropped, mnist, fashion_mnist, cifar10_sample or npz:DIR.")
flags.DEFINE_string("data_dir", None, "Where tensorflow-datasets keeps its files.")
cli.define_flag("num_examples", 100, "N: analyse the first N test inputs.")
flags.DEFINE_string("out", "runs/analysis", "Output folder (PNG and JSON).")
flags.DEFINE_list("analyses", ["diversity", "landscape", "curvature"],
                  f"Analyses to run: {', '.join(ANALYSIS_NAMES)}.")
cli.define_flag("epsilon", None, "L-inf budget in [0, 1] pixels; a fraction such as 8/255 "
                "is read (default: the dataset's, 8/255 for CIFAR).", float | None)
cli.define_flag("seed", 0, "Seed of every random choice (EXP noise, PGD starts, random "
                     "direction, power-iteration start).")
cli.define_flag("batch_size", 32, "Inputs per batch.")
cli.define_flag("verbose", 1, "0 silent, 1 progress bars.")
# diversity
cli.define_flag("num_samples", 10, "Diversity: n samples of the EXP distribution and n "
                     "PGD restarts per input (>= 2).")
cli.define_flag("exp_steps", 20, "EXP attack: inner Adam steps T (also the lambda study's "
                     "entropy).")
cli.define_flag("exp_mc_samples", 10, "EXP attack: Monte Carlo samples k per step.")
cli.define_flag("exp_entropy_weight", 0.01, "EXP attack: entropy weight lambda.")
cli.define_flag("pgd_steps", 20, "Diversity: PGD iterations per restart (step eps/4).")
cli.define_flag("pca_inputs", 8, "Diversity: inputs drawn in the PCA scatter grid.")
# landscape
cli.define_flag("grid_size", 21, "Landscape: points per axis (odd keeps the clean input "
                     "on the grid).")
cli.define_flag("landscape_span", 1.0, "Landscape: the grid spans [-span, span] epsilons.")
cli.define_flag("landscape_inputs", 2, "Landscape: inputs drawn (rows of the picture).")
flags.DEFINE_enum("landscape_plot", "contour", list(LANDSCAPE_PLOTS), "Landscape: plot kind.")
# curvature
cli.define_flag("power_iterations", 20, "Curvature: Hessian-vector products per input.")
# lambda study
flags.DEFINE_string("lambda_table", None, "Lambda study: a trial table (.csv or .json with "
                    "columns lambda, clean accuracy, robust accuracy, entropy), e.g. adt-tune's "
                    "trials.csv; plotted instead of evaluating the models.")
flags.DEFINE_list("lambdas", None, "Lambda study: the lambda of each model (default: "
                  "method.params.entropy_weight of each run's record, config.json).")
flags.DEFINE_list("lambda_attacks", ["fgsm", "pgd"], "Lambda study: attacks (registry names, "
                  "each with its defaults; pgd is PGD-20).")


def config_from_flags():
    from adt_tf.analysis.runner import AnalysisConfig

    lambdas = None
    if FLAGS.lambdas is not None:
        try:
            lambdas = [float(v) for v in FLAGS.lambdas]
        except ValueError:
            raise ValueError(f"lambdas must be numbers, got {FLAGS.lambdas}.") from None
    return AnalysisConfig(
        models=list(FLAGS.model), checkpoint=FLAGS.checkpoint, dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        num_examples=FLAGS.num_examples, out=FLAGS.out, analyses=tuple(FLAGS.analyses),
        epsilon=FLAGS.epsilon, seed=FLAGS.seed, batch_size=FLAGS.batch_size,
        verbose=FLAGS.verbose, num_samples=FLAGS.num_samples, exp_steps=FLAGS.exp_steps,
        exp_mc_samples=FLAGS.exp_mc_samples, exp_entropy_weight=FLAGS.exp_entropy_weight,
        pgd_steps=FLAGS.pgd_steps, pca_inputs=FLAGS.pca_inputs, grid_size=FLAGS.grid_size,
        landscape_span=FLAGS.landscape_span, landscape_inputs=FLAGS.landscape_inputs,
        landscape_plot=FLAGS.landscape_plot, power_iterations=FLAGS.power_iterations,
        lambda_table=FLAGS.lambda_table, lambdas=lambdas,
        lambda_attacks=tuple(FLAGS.lambda_attacks))


def main(argv):
    try:
        cli.unexpected_arguments(argv)
    except ValueError as err:
        cli.fail(COMMAND, err)
    cli.import_tensorflow()
    from adt_tf.analysis.runner import format_summary, run_analyses
    from adt_tf.core.interrupts import interruptible

    try:
        with interruptible(COMMAND, "No file is left half-written: rerun the command."):
            summary = run_analyses(config_from_flags())
    except (ValueError, OSError) as err:
        cli.fail(COMMAND, err)
    print(format_summary(summary))


def run():
    """Console-script entry point (`adt-analyze`)."""
    cli.run(COMMAND, main, __doc__, [f.name for f in FLAGS.get_flags_for_module(__name__)])


if __name__ == "__main__":
    run()
