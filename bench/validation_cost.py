"""What robust validation costs per epoch: the validation PGD on the held-out split
against the training epoch, for AT_PGD and ADT_EXP, at the overfitting benchmark's recipe.

    python -m bench.validation_cost --threads=1

Trains each method for two epochs (bench.overfitting's recipe: SmallCNN width 16 with
BatchNorm, 4,000 training images, 1,000 held out, `--validation_attack=pgd10`) and times, in
the same process, each epoch (without the validation) and each validation (the
`RobustAccuracyCallback`'s scoring). The ratio is what counts: it holds on a loaded machine,
the seconds do not. Writes bench/results/validation_cost_cpu.md.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

from absl import app, flags

from adt_tf.core.files import write_text
from bench.kit.recipes import OverfittingRecipe, overfitting_config
from bench.kit.runs import DEFAULT_DATA, RESULTS_DIR, require_data, set_threads
from bench.kit.variants import variant

#: The methods timed (`bench.kit.variants` keys).
METHODS = ("pgd_at", "adt_exp")

FLAGS = flags.FLAGS
flags.DEFINE_integer("threads", 0, "TensorFlow intra- and inter-op threads (0: default).")
flags.DEFINE_string("data", DEFAULT_DATA, "Folder holding train.npz and test.npz.")
flags.DEFINE_string("output_dir", RESULTS_DIR, "Table folder.")
flags.DEFINE_string("validation_attack", "pgd10", "The validation's attack (pgd<steps>).")


def measure(key: str, data: str, attack: str) -> dict[str, list[float]]:

    import keras

    from adt_tf.training.callbacks import robust_accuracy
    from adt_tf.training.config import override
    from adt_tf.training.run import run_training

    times: dict[str, list[float]] = {"epoch": [], "validation": []}

    class EpochTimer(keras.callbacks.Callback):  # runs before the validation callback
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times["epoch"].append(time.perf_counter() - self.started)

    original = robust_accuracy.RobustAccuracyCallback.evaluate

    def timed(callback):
        started = time.perf_counter()
        try:
            return original(callback)
        finally:
            times["validation"].append(time.perf_counter() - started)

    workdir = tempfile.mkdtemp(prefix=f"validation_cost_{key}_")
    config = override(overfitting_config(OverfittingRecipe(), key, 0, False, data, workdir), {
        "optim.epochs": 2, "report.eval_examples": 100, "validation.attack": attack,
        "run.verbose": 0})
    robust_accuracy.RobustAccuracyCallback.evaluate = timed
    try:
        run_training(config, monitors=(EpochTimer(),))
    finally:
        robust_accuracy.RobustAccuracyCallback.evaluate = original
        shutil.rmtree(workdir, ignore_errors=True)
    return times


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    require_data(FLAGS.data, "bench.validation_cost")
    set_threads(FLAGS.threads)
    rows = []
    for key in METHODS:
        label = variant(key).label
        t = measure(key, FLAGS.data, FLAGS.validation_attack)
        # the second epoch: the first one's numbers include tracing
        share = t["validation"][-1] / t["epoch"][-1]
        rows.append(f"| {label} | {' / '.join(f'{v:.1f}' for v in t['epoch'])} | "
                    f"{' / '.join(f'{v:.1f}' for v in t['validation'])} | {100 * share:.0f}% |")
    from adt_tf.evaluation import environment

    env = environment()
    lines = [
        "# What robust validation costs per epoch", "",
        "- Recipe: bench.overfitting's model and data (SmallCNN width 16 with BatchNorm, the "
        "first 5,000 training images of the offline CIFAR-10 copy, 1,000 of them held out, "
        "4,000 trained on; batch 64, lr 0.05), two epochs; validation "
        f"`--validation_attack={FLAGS.validation_attack}` (the evaluation's PGD, steps of "
        "epsilon/4 from a random start) on the 1,000 held-out images after every epoch.",
        f"- Machine: {env['cpu']}, {env['cpu_count']} cores, {FLAGS.threads or 'default'} "
        "thread(s); the seconds depend on the load, the share does not much (both measured "
        "in the same process).",
        "", "| method | epoch without validation (s): 1st / 2nd | validation (s): 1st / 2nd "
        "| validation / epoch (2nd) |", "|---|---:|---:|---:|", *rows, "",
        f"Command: `python -m bench.validation_cost {' '.join(sys.argv[1:])}`", ""]
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    path = os.path.join(FLAGS.output_dir, "validation_cost_cpu.md")
    write_text(path, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
