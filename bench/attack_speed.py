"""Wall time of every attack of the evaluation on CIFAR-10 test images, on this machine.

    PYTHONPATH=. python bench/attack_speed.py            # writes bench/results/attack_speed_cpu.md

A small classifier (SmallCNN, width 16) is trained briefly on the offline CIFAR-10 copy
(../shared/data/cifar10); a second one, with another seed, is the source of the transfer
attack. Each attack of `adt_tf.evaluation.suites.CATALOGUE` then runs with its evaluation
settings on the first `--num_examples` test images (all of them, misclassified ones included),
batch by batch,
and its wall time is measured (the first batch's tracing included). Attacks whose cost per
input is large (FeaAttack with 200 targets, SPSA, Square with 5000 queries, the generator
attacks) run on a stated subset; the table says which. The classifier is not robust, so the
attacks that stop early on broken inputs (FeaAttack, SPSA, Square, APGD-T, FAB-T) stop
early here: the column "budget" gives their worst-case cost per input, reached on a robust model.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from adt_tf import data as data_lib
from adt_tf.core.files import write_text
from adt_tf.evaluation import correct_under_attack, environment, fit_amortized_adversary
from adt_tf.evaluation.suites import CATALOGUE
from adt_tf.models import build_model

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "shared", "data", "cifar10")
EPSILON = 8 / 255

# Catalogue name -> (inputs it runs on at most, settings replacing the catalogue's, budget).
# None: all --num_examples inputs, the evaluation's own settings.
PLAN = {
    "fgsm": (None, {}, "1 gradient"),
    "pgd20": (None, {}, "21 gradients"),
    "pgd100": (None, {}, "101 gradients"),
    "mim20": (None, {}, "21 gradients"),
    "cw30": (None, {}, "31 gradients"),
    "apgd_ce": (None, {}, "101 gradients"),
    "apgd_dlr": (None, {}, "101 gradients"),
    "apgd_t": (None, {}, "9 x 101 gradients"),
    "fab_t": (None, {}, "9 x (100 gradients + 200 forward)"),
    "transfer_pgd20": (None, {}, "21 gradients of the source"),
    "exp": (None, {}, "20 x 10 sample gradients + 11 forward"),
    "fea": (50, {}, "200 targets x 50 gradients"),
    "spsa": (50, {}, "100 x 512 forward"),
    "square": (200, {}, "5000 forward"),
    "exp_am": (None, {"train_steps": 200}, "generator fit + 3 gradients + 10 forward"),
    "imp_am": (None, {"train_steps": 200}, "generator fit + 3 gradients + 10 forward"),
}


def train_classifier(x, y, seed: int, epochs: int, mean, std) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = build_model("small_cnn", (32, 32, 3), 10, width=16, dense_units=128, dropout=0.0,
                        mean=mean, std=std)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=128, verbose=0)
    return model


def load_average() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_examples", type=int, default=1000)
    parser.add_argument("--train_examples", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=250)
    parser.add_argument("--attacks", default=",".join(PLAN))
    parser.add_argument("--subset_scale", type=float, default=1.0,
                        help="Multiply the subsets of the expensive attacks (smoke runs).")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "attack_speed_cpu.md"))
    args = parser.parse_args()

    load_before = load_average()
    started = time.perf_counter()
    splits = data_lib.load(f"npz:{DATA}", max_train_examples=args.train_examples)
    mean, std = data_lib.channel_stats(splits.x_train)
    x_train = data_lib.as_unit_float(splits.x_train)
    t0 = time.perf_counter()
    model = train_classifier(x_train, splits.y_train, 0, args.epochs, mean, std)
    train_seconds = time.perf_counter() - t0
    source = train_classifier(x_train, splits.y_train, 1, max(1, args.epochs // 2), mean, std)
    x = data_lib.as_unit_float(splits.x_test[:args.num_examples])
    y = splits.y_test[:args.num_examples].astype(np.int32)
    clean = correct_under_attack(model, x, y, None, batch_size=args.batch_size, verbose=False)

    rows = []
    for name in args.attacks.split(","):
        subset, override, budget = PLAN[name]
        spec = CATALOGUE[name].with_params(**override) if override else CATALOGUE[name]
        n = len(x) if subset is None else min(len(x), max(1, int(subset * args.subset_scale)))
        extra = {}
        t0 = time.perf_counter()
        if "source_model" in spec.needs:
            extra["source"] = source
        if "target_pool" in spec.needs:
            extra["target_images"], extra["target_labels"] = x, y
        if "adversary" in spec.needs:
            fit = {k: v for k, v in spec.params.items() if k.startswith(("train_", "generator_"))}
            extra["adversary"] = fit_amortized_adversary(model, x_train, splits.y_train,
                                                         EPSILON, kind=spec.attack, **fit)
        fn = spec.attack

        def attack(m, xb, yb, seed, fn=fn, spec=spec, extra=extra):
            from adt_tf.attacks import get_attack

            return get_attack(fn)(m, xb, yb, EPSILON, seed=seed, **spec.params, **extra)

        correct = correct_under_attack(model, x[:n], y[:n], attack, batch_size=args.batch_size,
                                       verbose=False, seed=0)
        seconds = time.perf_counter() - t0
        rows.append((spec, n, seconds, float(correct.mean()), float(clean[:n].mean()), budget))
        print(f"{spec.display_label}: {n} inputs, {seconds:.1f} s, accuracy "
              f"{100 * correct.mean():.1f}% (clean {100 * clean[:n].mean():.1f}%)", flush=True)

    env = environment()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = env["cpu_count"]
    lines = [
        "# Attack speed on CPU",
        "",
        f"Machine: {env['cpu']}, {env['cpu_count']} logical cores ({usable} usable by this "
        f"process), {platform.system()} {platform.release()}; TensorFlow {env['tensorflow']}, "
        f"Keras {env['keras']}; no GPU. The machine is shared: load average (1/5/15 min) "
        f"{load_before} at the start, {load_average()} at the end, so times are upper bounds.",
        "",
        f"Classifier: SmallCNN (width 16, dense 128, inputs normalised inside), standard "
        f"training, {args.epochs} epochs on the first {args.train_examples} CIFAR-10 training "
        f"images ({train_seconds:.0f} s); clean accuracy {100 * clean.mean():.1f}% on the first "
        f"{len(x)} test images of ../shared/data/cifar10. Epsilon 8/255, batch "
        f"{args.batch_size}, every setting the evaluation's own "
        "(`adt_tf.evaluation.suites.CATALOGUE`) "
        "unless stated. Each attack runs on all the inputs of its row (misclassified ones "
        "too); the time includes tracing the tf.function (no XLA).",
        "",
        "The model is not robust: attacks that stop early once an input is broken (FeaAttack, "
        "SPSA, Square, APGD-T's later targets) stop early here. On a robust model they spend "
        "up to the budget column per input that survives, so expect far longer times there.",
        "",
        "| attack | settings | inputs | wall time (s) | ms per input | accuracy under attack "
        "(clean on the same inputs) | budget per input |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for spec, n, seconds, acc, clean_acc, budget in rows:
        subset = "" if n == len(x) else " (subset)"
        lines.append(f"| {spec.display_label} | {spec.describe()} | {n}{subset} | "
                     f"{seconds:.1f} | {1000 * seconds / n:.1f} | {100 * acc:.1f}% "
                     f"({100 * clean_acc:.1f}%) | {budget} |")
    changed = [f"{spec.display_label}: " + ", ".join(
        f"{k}={v} (the evaluation's default: {CATALOGUE[spec.name].params.get(k)})"
        for k, v in PLAN[spec.name][1].items()) for spec, *_ in rows if PLAN[spec.name][1]]
    if changed:
        lines += ["", "Settings changed from the evaluation's defaults for this benchmark: "
                  + "; ".join(changed) + "."]
    lines += ["", f"Total wall time of the benchmark: {time.perf_counter() - started:.0f} s.",
              "", "Command: `PYTHONPATH=. python bench/attack_speed.py"
              + "".join(f" {a}" for a in sys.argv[1:]) + "`", ""]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    tf.get_logger().setLevel("ERROR")
    main()
