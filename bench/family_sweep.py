"""The step size of the richer families' factors: a small sweep of the inner problem.

ADT_EXP's inner loop takes near-sign Adam steps (beta = 0) of 0.3 in units of the pre-tanh u
for mu and v; the low-rank factor U and the matrix-normal factors A, B live on other scales
and get their own step (`factor_lr`). This sweep fits each family's distribution to the same
training images of a trained CPU-recipe model with the training settings (T = 7, k = 5,
lambda = 0.01, the reference's accumulated gradients) for each candidate step, and reports
what the inner loop maximises (the objective E[CE] + lambda H at the last step), its two
parts, the classifier's accuracy on fresh samples of the fitted distribution, and the time.
The step chosen is the one with the highest mean objective.

    python -m bench.family_sweep --model=runs/sweep_pgd_at --data=../shared/data/cifar10

Writes bench/results/family_sweep_cpu.md (+ .json).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags

from adt_tf.core.files import write_json, write_text
from bench.kit.runs import set_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "The classifier (a training workdir or .keras file).")
flags.DEFINE_string("data", os.path.normpath(os.path.join(ROOT, "..", "shared", "data",
                                                          "cifar10")),
                    "Folder holding train.npz and test.npz.")
flags.DEFINE_list("families", ["lowrank", "matrix_normal"], "Families to sweep.")
flags.DEFINE_list("factor_lrs", ["0.001", "0.003", "0.01", "0.03", "0.1", "0.3"],
                  "Candidate factor steps.")
flags.DEFINE_list("factor_inits", ["0.01", "0.1"], "Initial factor scales tried at each "
                  "family's best step (0, the diagonal start, is the step sweep's).")
flags.DEFINE_integer("rank", 8, "R of the low-rank family.")
flags.DEFINE_integer("num_examples", 256, "Training images fitted (the first ones).")
flags.DEFINE_integer("batch_size", 64, "Inputs per inner problem (the training batch).")
flags.DEFINE_integer("threads", 0, "TensorFlow threads (0: default).")
flags.DEFINE_string("output_dir", os.path.join(ROOT, "bench", "results"), "Output folder.")


def fit(classifier, x, y, family, seed: int) -> dict:
    """The inner problem on every batch, with the training settings; the batch means."""
    import tensorflow as tf

    from adt_tf.adt.inner_maximization import explicit_inner_maximization, sample_inputs
    from adt_tf.threat import LinfBall

    threat = LinfBall(8 / 255)

    @tf.function(reduce_retracing=True)
    def run(xb, yb, s):
        result = explicit_inner_maximization(
            classifier, xb, yb, threat=threat, entropy_weight=0.01, steps=7, samples=5,
            lr=0.3, beta1=0.0, beta2=0.0, seed=s, family=family)
        dist = result.distribution(threat, family)
        x_adv, _ = sample_inputs(xb, dist, 5, tf.random.experimental.stateless_fold_in(s, 9))
        logits = classifier(x_adv, training=False)
        correct = tf.reduce_mean(tf.cast(tf.equal(
            tf.argmax(logits, -1, output_type=tf.int32),
            tf.tile(tf.cast(yb, tf.int32), [5])), tf.float32))
        return result.objective, result.entropy, correct

    rows = []
    for start in range(0, len(x), FLAGS.batch_size):
        xb = tf.constant(x[start:start + FLAGS.batch_size])
        yb = tf.constant(y[start:start + FLAGS.batch_size])
        s = tf.constant([seed, start], tf.int32)
        run(xb, yb, s)  # trace (and warm up) outside the timing
        t0 = time.perf_counter()
        objective, entropy, correct = run(xb, yb, s)
        rows.append((float(objective), float(entropy), float(correct),
                     time.perf_counter() - t0))
    objective, entropy, correct, seconds = (float(np.mean(c)) for c in zip(*rows))
    return {"objective": objective, "entropy": entropy, "ce": objective - 0.01 * entropy,
            "sample_accuracy": correct, "seconds_per_batch": seconds}


def main(argv):
    del argv
    if not FLAGS.model:
        sys.exit("bench.family_sweep: --model is required.")

    set_threads(FLAGS.threads)
    from adt_tf import data as data_lib
    from adt_tf.adt.families import GaussianFamily
    from adt_tf.artifacts.loading import load_classifier

    classifier = load_classifier(FLAGS.model)
    splits = data_lib.load(f"npz:{FLAGS.data}", max_train_examples=FLAGS.num_examples)
    x, y = data_lib.as_unit_float(splits.x_train), splits.y_train
    results = {"diag": fit(classifier, x, y, GaussianFamily("diag"), 0)}
    print("diag", results["diag"], flush=True)
    for name in FLAGS.families:
        for lr in (float(v) for v in FLAGS.factor_lrs):
            family = GaussianFamily(name, rank=FLAGS.rank, factor_lr=lr)
            key = f"{name}@{lr:g}"
            results[key] = fit(classifier, x, y, family, 0)
            print(key, results[key], flush=True)
        best_lr = max((k for k in results if k.startswith(name + "@")),
                      key=lambda k: results[k]["objective"]).partition("@")[2]
        for init in (float(v) for v in FLAGS.factor_inits):
            family = GaussianFamily(name, rank=FLAGS.rank, factor_lr=float(best_lr),
                                    factor_init=init)
            key = f"{name}@{best_lr}+init{init:g}"
            results[key] = fit(classifier, x, y, family, 0)
            print(key, results[key], flush=True)
    lines = ["# The factors' step size of the richer families: a sweep of the inner problem",
             "",
             f"- Model: `{os.path.relpath(os.path.abspath(FLAGS.model), ROOT)}` (the CPU "
             "recipe's AT_PGD, `adt-train --config=cpu --method=pgd_at`); the first "
             f"{len(x)} training images of the offline CIFAR-10 copy, batches of "
             f"{FLAGS.batch_size}.",
             "- The inner problem as ADT_EXP trains: T = 7 Adam steps (lr 0.3 for mu and v, "
             "beta = 0, gradients accumulated as the reference), k = 5 samples, lambda = 0.01, "
             "epsilon 8/255; the factors start at the diagonal distribution (U = 0, A = B = I) "
             f"and take the candidate step; low-rank R = {FLAGS.rank}.",
             "- Objective: E[CE] + lambda H at the last step (what the inner loop maximises), "
             "mean over batches; sample accuracy: the classifier on 5 fresh samples per "
             "input of the fitted distribution (lower: a stronger adversary); time: one "
             "batch's inner problem (traced, single process).",
             "",
             "| family | factor step | factor init | objective | E[CE] | entropy H "
             "| sample accuracy (%) | s / batch |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, r in results.items():
        name, _, rest = key.partition("@")
        lr, _, init = rest.partition("+init")
        lines.append(f"| {name} | {lr or '-'} | {init or ('-' if not lr else '0')} | "
                     f"{r['objective']:.5f} | {r['ce']:.5f} | {r['entropy']:.4f} | "
                     f"{100 * r['sample_accuracy']:.2f} | {r['seconds_per_batch']:.2f} |")
    lines += ["", "Chosen (the highest objective per family):"]
    for name in FLAGS.families:
        best = max((k for k in results if k.startswith(name + "@")),
                   key=lambda k: results[k]["objective"])
        lines.append(f"- {name}: {best.partition('@')[2].replace('+init', ', init ')} "
                     f"(objective {results[best]['objective']:.5f} against the diagonal's "
                     f"{results['diag']['objective']:.5f}).")
    lines += ["", f"Command: `python -m bench.family_sweep {' '.join(sys.argv[1:])}`", ""]
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    stem = os.path.join(FLAGS.output_dir, "family_sweep_cpu")
    write_text(stem + ".md", "\n".join(lines))
    write_json(stem + ".json", results)
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
