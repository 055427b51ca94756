"""Does reduced precision keep robustness? float32 against the mixed policy, on real CIFAR-10.

Trains AT_PGD and ADT_EXP with the CPU recipe of `bench.robustness` (the same recipe, data and
method settings as the robustness table) twice per seed: under float32 and under the mixed
policy (`--mixed_precision`: bfloat16 compute on CPU, float16 with loss scaling on GPU; the
inner maximisation's mu, v, entropy and x + delta stay float32, see `adt_tf.core.precision`).
Every model is then evaluated **in float32** (`adt_tf.core.precision.float32_copy`: the function
its weights define, without the rounding of low-precision activations, which could blunt the
gradient attacks and flatter the mixed models) on the first `eval_examples` test images:
clean, PGD-20 (every clean-correct input) and the standard `autoattack` suite (APGD-CE,
APGD-T, FAB-T, Square, each on the inputs still robust; its worst case is the AutoAttack
accuracy). Writes bench/results/precision_cifar10_<scale>.md and .json.

    # one single-threaded process per seed, side by side, then the table:
    python -m bench.precision --seeds=0 --threads=1 &
    python -m bench.precision --seeds=1 --threads=1 &
    wait; python -m bench.precision --table_only

Resumable like `bench.robustness`: runs live in <workdir>/<precision>/<method>-seed<s>/, a
finished training is kept, an interrupted one resumes from its last epoch, and each attack's
per-example results are cached. Training wall times depend on what ran beside them; the
step-time ratio of the two precisions comes from `bench.speed` (one idle run, BUILD_NOTES).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from absl import app, flags

from adt_tf.core.files import write_text
from bench.kit.flags import define_run_flags
from bench.kit.recipes import RECIPES, Recipe, classifier_path, overridden, run_dir, train
from bench.kit.runs import (
    ROOT,
    collect_summaries,
    command_line,
    fail,
    read_json,
    require_data,
    set_threads,
    write_json,
)
from bench.kit.stats import binomial_se, cell, holds
from bench.kit.variants import variant

PRECISIONS = ("float32", "mixed")
METHODS = ("pgd_at", "adt_exp")
#: Stage 1 on every clean-correct input; stage 2 AutoAttack's standard version.
PGD_SUITE, AUTOATTACK_SUITE = "pgd20", "autoattack"

FLAGS = flags.FLAGS


def define_flags() -> None:
    if "precisions" in FLAGS:
        return
    flags.DEFINE_enum("scale", "cpu", list(RECIPES), "The recipe of bench.robustness.")
    flags.DEFINE_list("methods", list(METHODS), "Methods (keys of bench.kit.variants).")
    flags.DEFINE_list("precisions", list(PRECISIONS), "float32 and/or mixed.")
    flags.DEFINE_list("seeds", None, "Seeds this process runs (default: the recipe's).")
    flags.DEFINE_list("all_seeds", None, "Every seed of the table (default: --seeds).")
    define_run_flags("bench/runs/precision_<scale>", "the table and JSON",
                     ("epochs", "train_examples", "eval_examples"))


def precision_dir(workdir: str, precision: str) -> str:
    return os.path.join(workdir, precision)


def evaluate_run(recipe: Recipe, key: str, seed: int, data: str, workdir: str,
                 verbose: int) -> dict[str, Any]:
    """Clean, PGD-20 and the autoattack suite in float32 on one model; stores summary.json."""
    from adt_tf import data as data_lib
    from adt_tf.artifacts.loading import file_id, load_classifier
    from adt_tf.core.precision import float32_copy
    from adt_tf.data import resolve_threat
    from adt_tf.evaluation import evaluate
    from adt_tf.evaluation.staged import wall_seconds

    d = run_dir(workdir, key, seed)
    summary_path = os.path.join(d, "summary.json")
    path = classifier_path(workdir, key, seed)
    summary = read_json(summary_path, None)
    if summary is not None and summary.get("model_id") == file_id(path):
        return summary
    loaded = load_classifier(path)
    classifier = float32_copy(loaded)
    splits = data_lib.load(f"npz:{data}", max_test_examples=recipe.eval_examples)
    x, y = splits.x_test, splits.y_test
    common = dict(threat=resolve_threat(recipe.norm, None, splits.info),
                  batch_size=recipe.eval_batch_size, seed=seed,
                  cache_dir=os.path.join(d, "eval", "cache"), model_id=file_id(path),
                  dataset="cifar10 (offline copy, test split)", verbose=verbose,
                  model_name=path)
    pgd = evaluate(classifier, x, y, suite=PGD_SUITE, per_attack="all", **common)
    pgd.save(os.path.join(d, "eval"), stem="pgd")
    aa = evaluate(classifier, x, y, suite=AUTOATTACK_SUITE, per_attack="remaining", **common)
    aa.save(os.path.join(d, "eval"), stem="autoattack")
    timing = read_json(os.path.join(d, "timing.json"), {})
    summary = {
        "method": key, "seed": seed, "model_id": file_id(path),
        "trained_compute_dtype": getattr(loaded, "compute_dtype", "float32"),
        "evaluated_compute_dtype": getattr(classifier, "compute_dtype", "float32"),
        "num_examples": pgd.num_examples, "clean": pgd.clean_accuracy,
        "pgd20": pgd.attacks[0].accuracy, "autoattack": aa.robust_accuracy,
        "attacks": {a.name: {"label": a.label, "attacked": a.num_attacked,
                             "broken": a.num_broken, "seconds": a.seconds}
                    for a in aa.attacks},
        "train_seconds": timing.get("train_seconds"),
        "eval_seconds": wall_seconds(pgd) + wall_seconds(aa),
        "environment": pgd.environment,
    }
    write_json(summary_path, summary)
    print(f"[eval] {key} seed {seed} ({os.path.basename(workdir)}): clean "
          f"{100 * summary['clean']:.2f}%, PGD-20 {100 * summary['pgd20']:.2f}%, AutoAttack "
          f"{100 * summary['autoattack']:.2f}% on {summary['num_examples']} inputs", flush=True)
    return summary


def collect(workdir: str, methods, precisions, seeds) -> tuple[dict, list[str]]:
    found, missing = collect_summaries({
        (precision, key, seed): run_dir(precision_dir(workdir, precision), key, seed)
        for precision in precisions for key in methods for seed in seeds})
    return found, [f"{p}/{k}-seed{s}" for p, k, s in missing]


def build_table(recipe: Recipe, scale: str, workdir: str, methods, precisions, seeds,
                output_dir: str, command: str, hardware: str) -> str | None:
    found, missing = collect(workdir, methods, precisions, seeds)
    if not found:
        print("No finished run to tabulate yet.")
        return None
    any_run = next(iter(found.values()))
    env, n = any_run["environment"], any_run["num_examples"]
    lines = [f"# float32 against mixed precision, CIFAR-10, `{scale}` recipe", ""]
    if missing:
        lines += [f"**Partial table**: {len(missing)} of {len(missing) + len(found)} runs are "
                  f"not finished yet ({', '.join(missing)}); rerunning the command resumes "
                  "them.", ""]
    lines += [
        f"- Recipe: {recipe.describe()}; AT_PGD and ADT_EXP with the settings of the "
        "robustness table (`bench/robustness.py`).",
        "- float32: every tensor float32. mixed: `--mixed_precision` (`mixed_bfloat16` on "
        "CPU, `mixed_float16` with loss scaling on GPU): the classifier computes in the low "
        "precision with float32 weights and float32 logits; ADT's mu, v, entropy, the "
        "perturbed inputs and every loss stay float32 (`adt_tf/core/precision.py`).",
        "- Every model is evaluated in float32 (`adt_tf.core.precision.float32_copy`), on the "
        f"first {n} test images: PGD-20 (epsilon 8/255, step 2/255, random start) on every "
        "clean-correct input; AutoAttack: the standard `autoattack` suite (APGD-CE, APGD-T "
        "with 9 targets, FAB-T with 9 targets, Square with 5,000 queries), each on the inputs "
        "still robust, the per-example worst case.",
        f"- Seeds {', '.join(map(str, seeds))}; cells mean ± spread (half the range), percent; "
        f"the binomial standard error of one accuracy near 40% on {n} inputs is "
        f"{binomial_se(0.4, n):.1f} points.",
        f"- Hardware: {env.get('cpu')}, {env.get('cpu_count')} cores, GPUs "
        f"{env.get('gpus') or 'none'}; `native_reduced_precision()`: {hardware}. TensorFlow "
        f"{env.get('tensorflow')}, Keras {env.get('keras')}. Training times are wall-clock "
        "with other runs beside them (one single-threaded process per seed): compare step "
        "times with `bench.speed` instead.",
        f"- Command: `{command}`.",
        "",
        "| method | precision | seeds | clean (%) | PGD-20 (%) | AutoAttack (%) | train (min) "
        "| eval (min) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key in methods:
        for precision in precisions:
            runs = [found[(precision, key, s)] for s in seeds if (precision, key, s) in found]
            if not runs:
                continue
            train = np.mean([r["train_seconds"] or 0.0 for r in runs]) / 60
            evals = np.mean([r["eval_seconds"] for r in runs]) / 60
            lines.append(
                f"| {variant(key).label} | {precision} | {len(runs)} | "
                f"{cell([r['clean'] for r in runs])} | {cell([r['pgd20'] for r in runs])}"
                f" | {cell([r['autoattack'] for r in runs])} | {train:.1f} | {evals:.1f} |")
    lines += ["", "## Does mixed precision keep robustness?", ""]
    for key in methods:
        for metric, what in (("clean", "clean"), ("pgd20", "PGD-20"),
                             ("autoattack", "AutoAttack")):
            a = [found[("float32", key, s)][metric] for s in seeds
                 if ("float32", key, s) in found]
            b = [found[("mixed", key, s)][metric] for s in seeds if ("mixed", key, s) in found]
            answer = holds(a, b)
            text = {"holds": "within the seed spread of float32 (the ranges overlap)",
                    "lower": "below float32 beyond the seed spread",
                    "higher": "above float32 beyond the seed spread",
                    "not enough seeds": "not enough seeds to compare"}[answer]
            lines.append(f"- {variant(key).label}, {what}: mixed {text}.")
    lines.append("")
    lines += ["## Per run", "", "| run | clean | PGD-20 | AutoAttack | APGD-CE / APGD-T / FAB-T "
              "/ Square broken | train (min) |", "|---|---:|---:|---:|---|---:|"]
    for (precision, key, seed), r in sorted(found.items()):
        broken = " / ".join(str(r["attacks"].get(a, {}).get("broken", "-"))
                            for a in ("apgd_ce", "apgd_t", "fab_t", "square"))
        lines.append(f"| {precision}/{key}-seed{seed} | {100 * r['clean']:.1f} | "
                     f"{100 * r['pgd20']:.1f} | {100 * r['autoattack']:.1f} | {broken} | "
                     f"{(r['train_seconds'] or 0) / 60:.1f} |")
    os.makedirs(output_dir, exist_ok=True)
    stem = os.path.join(output_dir, f"precision_cifar10_{scale}")
    write_text(stem + ".md", "\n".join(lines) + "\n")
    write_json(stem + ".json", {f"{p}/{k}-seed{s}": r for (p, k, s), r in found.items()})
    print(f"Wrote {stem}.md ({len(found)} runs, {len(missing)} missing).")
    return stem + ".md"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    recipe = overridden(RECIPES[FLAGS.scale], FLAGS,
                           ("epochs", "train_examples", "eval_examples"))
    methods = [m.strip() for m in FLAGS.methods]
    for key in methods:
        variant(key)
    precisions = [p.strip() for p in FLAGS.precisions]
    for p in precisions:
        if p not in PRECISIONS:
            fail("bench.precision", f"--precisions: unknown {p!r}; known: "
                     f"{', '.join(PRECISIONS)}.")
    seeds = list(recipe.seeds)
    all_seeds = [int(s) for s in FLAGS.all_seeds] if FLAGS.all_seeds else seeds
    if not FLAGS.table_only:
        require_data(FLAGS.data, "bench.precision")
    workdir = FLAGS.workdir or os.path.join(ROOT, "bench", "runs", f"precision_{FLAGS.scale}")
    set_threads(FLAGS.threads)
    from adt_tf.core.precision import native_reduced_precision

    native, reason = native_reduced_precision()
    hardware = f"{'native' if native else 'not native'} ({reason})"
    command = command_line("bench.precision")
    if not FLAGS.table_only:
        for key in methods:
            for seed in seeds:
                for precision in precisions:
                    wd = precision_dir(workdir, precision)
                    train(recipe, key, seed, FLAGS.data, wd, FLAGS.verbose,
                          mixed_precision=precision == "mixed", benchmark="bench.precision")
                    evaluate_run(recipe, key, seed, FLAGS.data, wd, FLAGS.verbose)
                    build_table(recipe, FLAGS.scale, workdir, methods, precisions, all_seeds,
                                FLAGS.output_dir, command, hardware)
    build_table(recipe, FLAGS.scale, workdir, methods, precisions, all_seeds, FLAGS.output_dir,
                command, hardware)


if __name__ == "__main__":
    define_flags()
    app.run(main)
