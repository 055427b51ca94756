"""Robust overfitting at CPU scale: does ADT_EXP overfit robustly less than AT_PGD?

Rice, Wong, Kolter (ICML 2020) show that adversarially trained networks overfit robustly: the
robust test accuracy peaks shortly after the first learning-rate decay and then falls while
the training accuracy keeps rising. This benchmark trains AT_PGD, ADT_EXP, AWP-AT and ADT_EXP
with the matrix-normal Gaussian (the faithful defaults of each) on a small-data,
long-schedule CPU recipe where that shows, three seeds each, with a held-out validation
split (`adt-train --validation_examples`) that selects the best epoch, and compares the best
checkpoint with the last:

- per epoch (history.csv of each run): the training inputs' robust accuracy (PGD-20 on a fixed
  500 of them), the validation split's clean / PGD-20 accuracy (what selects the best
  epoch), and the test split's clean / PGD-20 accuracy on 500 inputs (for the plot only,
  never for selection);
- after training: the `autoattack` suite on the first 500 test inputs, for the last and the
  best checkpoint of each run; and the same for one seed trained with weight averaging
  (`--ema_decay`).

    python -m bench.overfitting --seeds=0,1,2 --threads=1   # a few core-hours per run
    python -m bench.overfitting --table_only
    # In a fresh clone, taking the runs an earlier sitting finished from its committed JSON:
    python -m bench.overfitting --restore_from=bench/results/overfitting_cifar10_cpu.json

(The runs, their two evaluations, the curve and gap tables and the plot of one experiment;
its verdict in words is `bench.overfitting_verdict`.)

Resumable per run (training resumes at its last epoch, every attack is cached); the table is
built from whatever has finished, the rest listed as missing. Writes
bench/results/overfitting_cifar10_cpu.md, .json and .png.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from absl import app, flags

from adt_tf.core.files import write_text
from adt_tf.training.workdir import BACKUP_DIR
from bench.kit.flags import define_run_flags
from bench.kit.recipes import OverfittingRecipe as Recipe
from bench.kit.recipes import overfitting_config, run_name
from bench.kit.runs import (
    ROOT,
    check_recorded_run,
    collect_summaries,
    command_line,
    fail,
    read_json,
    require_data,
    restore_summary,
    set_threads,
    timed_training,
    train_seconds,
    write_json,
)
from bench.kit.stats import binomial_se, cell
from bench.kit.variants import variant
from bench.overfitting_verdict import verdict

#: The runs' methods (`bench.kit.variants`: the faithful defaults of each).
#: AT_PGD first: every other method's gap is compared with its. ADT_EXP's richer family is
#: the matrix-normal one: of the two Gaussians the cheaper (bench/results/
#: speed_cpu2_families.md) and the one the paper names; the flow is above the budget.
METHOD_SPECS = tuple(tuple(variant(k)) for k in (
    "pgd_at", "adt_exp", "awp_at", "adt_exp_matrix_normal"))
METHODS = tuple((key, label) for key, label, _, _ in METHOD_SPECS)
#: The recipes (adt_tf/recipes/) and the stem of their tables under bench/results/.
RECIPE_TABLES = {"overfitting": "overfitting_cifar10_cpu",
                 "overfitting_4000": "overfitting_cifar10_cpu_4000"}
MONITOR_INPUTS = 500  # training and test inputs scored every epoch (plot only)


FLAGS = flags.FLAGS


def define_flags() -> None:
    if "table_only" in FLAGS:
        return
    flags.DEFINE_enum("recipe", "overfitting", list(RECIPE_TABLES), "The training recipe "
                      "(adt_tf/recipes/): overfitting (1,000 images trained on, 80 epochs) or "
                      "overfitting_4000 (the first version: 4,000 images, 40 epochs).")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds this process runs.")
    flags.DEFINE_list("all_seeds", None, "Every seed of the table (default: --seeds).")
    flags.DEFINE_list("methods", [m for m, _ in METHODS], "Methods.")
    define_run_flags("bench/runs/<recipe>_cpu", "the table, plot and JSON", verbose=2)
    flags.DEFINE_string("restore_from", None, "A results JSON of an earlier sitting (e.g. "
                        "bench/results/overfitting_cifar10_cpu.json): its finished runs are "
                        "taken as done (each checked against the recipe).")
    flags.DEFINE_bool("ema", True, "Also train the EMA run of --ema_seed (each method).")
    flags.DEFINE_bool("raw_of_ema", False, "Score the raw weights of each finished EMA run "
                      "that lacks them (its per-epoch backup holds them; a run this release "
                      "trains has them), also with --table_only.")


def train_config(recipe: Recipe, key: str, seed: int, ema: bool, data: str, workdir: str):
    """The `RunConfig` of one run (`bench.kit.recipes.overfitting_config`)."""
    return overfitting_config(recipe, key, seed, ema, data, workdir)


def monitors(config, data: str):
    """The per-epoch scorers of the plot: PGD-20 on 500 training inputs that are trained on,
    and on the first 500 test inputs (logged as train_* and test_*; they select nothing)."""
    import numpy as np

    from adt_tf import data as data_lib
    from adt_tf.training.callbacks import RobustAccuracyCallback
    from adt_tf.training.resolve import resolve

    splits = data_lib.load(f"npz:{data}", max_train_examples=config.data.max_train_examples)
    record = resolve(config, splits)
    train = np.setdiff1d(np.arange(len(splits.x_train)), record.validation_indices)
    seen = train[:MONITOR_INPUTS]
    threat = record.threat
    seed = config.run.seed
    return (RobustAccuracyCallback(splits.x_train[seen], splits.y_train[seen], threat, steps=20,
                                   seed=seed, prefix="train_"),
            RobustAccuracyCallback(splits.x_test[:MONITOR_INPUTS],
                                   splits.y_test[:MONITOR_INPUTS], threat, steps=20,
                                   seed=seed, prefix="test_"))


def train_and_evaluate(recipe: Recipe, key: str, seed: int, ema: bool, data: str,
                       workdir: str) -> dict[str, Any]:
    """Trains (or resumes) one run, then AutoAttack on its last and best checkpoints."""
    config = train_config(recipe, key, seed, ema, data, workdir)
    d = config.run.workdir
    check_recorded_run(d, config, "bench.overfitting")
    summary_path = os.path.join(d, "summary.json")
    summary = read_json(summary_path, None)
    if summary is not None:
        return _with_record(d, summary)
    if not os.path.exists(os.path.join(d, "report.json")):
        print(f"[train] {run_name(key, seed, ema)} -> {d}", flush=True)
        timed_training(config, monitors=monitors(config, data))
    out = {"method": key, "seed": seed, "ema": ema, "history": _history(d),
           "train_seconds": train_seconds(d)}
    record = read_json(os.path.join(d, "best.json"), {})
    for checkpoint in ("last", "best"):
        print(f"[eval] {run_name(key, seed, ema)} {checkpoint}", flush=True)
        out[checkpoint] = {**autoattack(d, checkpoint, recipe, seed, data),
                           **(record if checkpoint == "best" else {})}
    if ema:
        out["raw_last"] = evaluate_raw_last(d, recipe, seed, data)
    write_json(summary_path, out)
    return _with_record(d, out)


#: Each checkpoint's classifier file in a run folder: the last and the best epoch's (the
#: averaged weights under EMA), and an EMA run's raw weights at its last epoch.
CHECKPOINT_FILES = {"last": "classifier.keras", "best": "best.keras",
                    "raw_last": "raw_last.keras"}


def autoattack(d: str, checkpoint: str, recipe: Recipe, seed: int, data: str) -> dict:
    """The `autoattack` suite on the recipe's test inputs for one checkpoint of the run in
    `d` (`CHECKPOINT_FILES`), its per-example results saved in d/eval/<checkpoint>.*: clean,
    PGD-20 and AutoAttack accuracy, and the number of inputs."""
    from adt_tf import data as data_lib
    from adt_tf.artifacts.loading import file_id, load_classifier
    from adt_tf.data import resolve_threat
    from adt_tf.evaluation import evaluate

    splits = data_lib.load(f"npz:{data}", max_test_examples=recipe.eval_examples)
    threat = resolve_threat("linf", None, splits.info)
    path = os.path.join(d, CHECKPOINT_FILES[checkpoint])
    result = evaluate(load_classifier(path), splits.x_test, splits.y_test, threat,
                      suite="pgd20,apgd_ce,apgd_t,fab_t,square", per_attack="remaining",
                      batch_size=250, seed=seed, model_id=file_id(path),
                      cache_dir=os.path.join(d, "eval", "cache"), model_name=path,
                      dataset="cifar10 (offline copy, test split)", sanity_checks=False,
                      verbose=0)
    result.save(os.path.join(d, "eval"), stem=checkpoint)
    return {"clean": result.clean_accuracy, "pgd20": float(result.per_example["pgd20"].mean()),
            "autoattack": result.robust_accuracy, "num_examples": result.num_examples}


def evaluate_raw_last(d: str, recipe: Recipe, seed: int, data: str) -> dict:
    """An EMA run's own raw weights at its last epoch (from its per-epoch backup:
    `adt_tf.artifacts.loading.load_backup_classifier`), kept as d/raw_last.keras and scored
    as the other checkpoints: EMA against the trajectory it averaged, where the raw run of
    the same seed may have taken another (`bench.overfitting_verdict.diverged_at`)."""
    from adt_tf.artifacts.loading import load_backup_classifier
    from adt_tf.core.files import atomic_path
    from adt_tf.training.record import read_record

    path = os.path.join(d, CHECKPOINT_FILES["raw_last"])
    if not os.path.exists(path):
        classifier, epoch = load_backup_classifier(d)
        epochs = read_record(d).config.optim.epochs
        if epoch != epochs:
            raise ValueError(f"{d}: its backup is of epoch {epoch}, not the last ({epochs}); "
                             "finish the run first.")
        with atomic_path(path) as tmp:
            classifier.save(tmp)
    print(f"[eval] {os.path.basename(d)} raw_last", flush=True)
    return autoattack(d, "raw_last", recipe, seed, data)


def add_raw_of_ema(recipe: Recipe, workdir: str, methods: list[str], data: str) -> list[str]:
    """Scores the raw last weights of each finished EMA run of `methods` whose summary lacks
    them (`evaluate_raw_last`) and writes them into its summary; returns those runs. A run
    without its backup folder (restored from a results JSON) is passed over, said so."""
    done = []
    for key in methods:
        d = os.path.join(workdir, run_name(key, recipe.ema_seed, True))
        summary = read_json(os.path.join(d, "summary.json"), None)
        if summary is None or "raw_last" in summary:
            continue
        if not os.path.isdir(os.path.join(d, BACKUP_DIR)):  # restored from a results JSON
            print(f"{os.path.basename(d)}: no backup here (a run restored from a results "
                  "JSON keeps no weights): its raw weights are not scored.", flush=True)
            continue
        summary = dict(summary, raw_last=evaluate_raw_last(d, recipe, summary["seed"], data))
        summary.pop("robust", None)  # rebuilt with raw_last's from the per-example files
        write_json(os.path.join(d, "summary.json"), summary)
        done.append(os.path.basename(d))
    return done


def _with_record(d: str, summary: dict[str, Any], write: bool = True) -> dict[str, Any]:
    """The summary with the run's training configuration (`run_config`, from its
    config.json), written back once unless `write` is false: what a later `--restore_from`
    checks the run against."""
    from adt_tf.training.record import read_record, record_path

    if "run_config" not in summary and os.path.exists(record_path(d)):
        summary = dict(summary, run_config=read_record(d).to_dict())
        if write:
            write_json(os.path.join(d, "summary.json"), summary)
    return summary


def restore_runs(path: str, recipe: Recipe, workdir: str, methods: list[str],
                 seeds: list[int], data: str, ema: bool = True) -> list[str]:
    """Writes the summary.json of each run of `methods` x `seeds` (and the EMA run of each
    method) that the committed results JSON at `path` holds and `workdir` lacks, so that a
    later sitting resumes the benchmark where an earlier one stopped; returns the runs
    restored. An entry evaluated on another number of test inputs than the recipe's, or
    trained with another configuration, is refused (ValueError naming both)."""
    previous = read_json(path, {})
    runs = [(k, s, False) for k in methods for s in seeds]
    runs += [(k, recipe.ema_seed, True) for k in methods] if ema else []
    restored = []
    for key, seed, averaged in runs:
        name = run_name(key, seed, averaged)
        entry = previous.get(name)
        d = os.path.join(workdir, name)
        if entry is None or os.path.exists(os.path.join(d, "summary.json")):
            continue
        counts = {entry[c].get("num_examples") for c in ("last", "best") if c in entry}
        if counts != {recipe.eval_examples}:
            raise ValueError(f"{path}: {name} was evaluated on {sorted(counts)} test inputs; "
                             f"this recipe evaluates {recipe.eval_examples}.")
        if restore_summary(path, name, entry, d,
                           train_config(recipe, key, seed, averaged, data, workdir)):
            restored.append(name)
    if restored:
        print(f"Restored from {path}: {', '.join(restored)}.", flush=True)
    return restored


def _history(d: str) -> list[dict[str, float]]:
    import csv

    path = os.path.join(d, "history.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    keep = ("accuracy", "train_robust_accuracy", "val_clean_accuracy", "val_robust_accuracy",
            "test_clean_accuracy", "test_robust_accuracy", "learning_rate")
    return [{k: float(r[k]) for k in keep if k in r and r[k] not in ("", "NA")} for r in rows]


def build_table(recipe: Recipe, workdir: str, seeds: list[int], methods: list[str],
                output_dir: str, command: str, data: str) -> str:
    runs = [(k, s, False) for k in methods for s in seeds] + [
        (k, recipe.ema_seed, True) for k in methods]
    found, missing = collect_summaries({run: os.path.join(workdir, run_name(*run))
                                        for run in runs})
    for run, summary in found.items():  # what older sittings' summaries lack, not written
        d = os.path.join(workdir, run_name(*run))
        summary = _with_record(d, summary, write=False)
        if "robust" not in summary:
            bits = robust_bits(d)
            summary = dict(summary, robust=bits) if bits else summary
        check_bits(run_name(*run), summary)
        found[run] = summary
    missing = [run_name(*run) for run in missing]
    labels = dict(METHODS)
    n = recipe.eval_examples
    lines = ["# Robust overfitting at CPU scale: "
             + ", ".join(labels[k] for k in methods), ""]
    if missing:
        lines += [f"**Partial table**: {len(missing)} of {len(runs)} runs not finished "
                  f"({', '.join(missing)}); rerunning the command resumes them (with "
                  f"`--restore_from=` this table's JSON in a fresh clone).", ""]
    restored = sorted(run_name(*k) for k, r in found.items() if r.get("restored_from"))
    if restored:
        lines += [f"Restored from an earlier sitting's results JSON (`--restore_from`), "
                  f"checked against this recipe: {', '.join(restored)}.", ""]
    lines += [
        f"- Recipe (every method, its faithful defaults): {recipe.describe()}.",
        f"- Data: `{os.path.relpath(data, ROOT)}` (the offline CIFAR-10 copy: training "
        "images in the original order, most decoded from a JPEG copy; the first 2,000 "
        "official test images, pixel-exact).",
        f"- Test: the first {n} test images, never used to choose anything. AutoAttack: PGD-20, "
        "then APGD-CE, APGD-T (9 targets), FAB-T (9 targets) and Square (5,000 queries), each "
        "on the inputs still robust; the per-example worst case.",
        f"- Seeds {', '.join(map(str, seeds))}; cells mean ± spread (half the range) in percent. "
        f"The binomial standard error of one run's accuracy near 25% on {n} inputs is "
        f"{binomial_se(0.25, n):.1f} points; a best - last gap is a paired difference (both "
        "checkpoints scored on the same inputs), its error from the inputs robust at only one "
        "of the two (each run's per-input results are `robust` in the JSON); so is every "
        "difference the verdict tests, the seeds averaged input by input "
        "(`bench.overfitting_verdict`: the seeds share the inputs, so their errors are not "
        "independent).",
        "",
        "| method | weights | runs | best epoch | clean best / last | PGD-20 best / last | "
        "AutoAttack best / last | **gap (best - last)** |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key in methods:
        for ema in (False, True):
            rows = [r for (k, s, e), r in found.items() if k == key and e == ema]
            if not rows:
                continue
            best = [r["best"]["epoch"] for r in rows if r.get("best")]
            gap = [r["best"]["autoattack"] - r["last"]["autoattack"] for r in rows]
            lines.append(
                f"| {labels[key]} | {'EMA ' + str(recipe.ema_decay) if ema else 'raw'} | "
                f"{len(rows)} | {', '.join(map(str, best))} | "
                f"{cell([r['best']['clean'] for r in rows], 1)} / "
                f"{cell([r['last']['clean'] for r in rows], 1)} | "
                f"{cell([r['best']['pgd20'] for r in rows], 1)} / "
                f"{cell([r['last']['pgd20'] for r in rows], 1)} | "
                f"{cell([r['best']['autoattack'] for r in rows], 1)} / "
                f"{cell([r['last']['autoattack'] for r in rows], 1)} | **{cell(gap, 1)}** |")
    lines += ["", "## The per-epoch curves (PGD-20; plot only, they select nothing)", "",
              f"PGD-20 (step epsilon/4, random start) after every epoch on {MONITOR_INPUTS} "
              f"training images that are trained on and on the first {MONITOR_INPUTS} test "
              "images. Robust overfitting shows as a test peak well above the last epoch and "
              "a train - test gap that keeps widening after the decay.", "",
              "| run | test peak (epoch) | test at the last epoch | train at the last epoch | "
              "train - test, last epoch | train - test, at the decay |",
              "|---|---:|---:|---:|---:|---:|"]
    lines += [curve_row(run_name(*k), r["history"], recipe.lr_decay_epochs[0])
              for k, r in sorted(found.items()) if r["history"]]
    lines += ["", "## Verdict", "", verdict(found, methods, n), "",
              f"Command: `{command}`", ""]
    os.makedirs(output_dir, exist_ok=True)
    stem = os.path.join(output_dir, RECIPE_TABLES[recipe.name])
    write_text(stem + ".md", "\n".join(lines))
    write_json(stem + ".json", {run_name(*k): v for k, v in found.items()})
    if found:
        plot(found, stem + ".png")
    print(f"Written {stem}.md")
    return stem + ".md"


def robust_bits(d: str) -> dict[str, str] | None:
    """Which test inputs are robust (under AutoAttack) at the best and at the last checkpoint
    of the run in `d`, from its per-example results (eval/best_per_example.npz,
    eval/last_per_example.npz), as strings of 0 and 1 in the inputs' order: what the paired
    errors of the verdict need (the JSON keeps them, so a restored run has them too); and
    an EMA run's raw last weights' (raw_last) where they were scored. None when the best's
    or the last's file is missing."""
    paths = {c: os.path.join(d, "eval", f"{c}_per_example.npz") for c in CHECKPOINT_FILES}
    if not all(os.path.exists(paths[c]) for c in ("best", "last")):
        return None
    paths = {c: p for c, p in paths.items() if os.path.exists(p)}  # raw_last: EMA runs
    return {c: "".join("1" if r else "0" for r in np.load(p)["robust"].astype(bool))
            for c, p in paths.items()}


def check_bits(name: str, summary: dict[str, Any]) -> None:
    """A run's per-input results must be its AutoAttack accuracies: as many bits as inputs
    scored, their share of ones the accuracy; else ValueError naming the run (a mismatch
    would pair the wrong inputs silently)."""
    for checkpoint, bits in summary.get("robust", {}).items():
        point = summary.get(checkpoint, {})
        n, accuracy = point.get("num_examples"), point.get("autoattack")
        if n is None or accuracy is None:
            continue
        if len(bits) != n or set(bits) - {"0", "1"} or abs(bits.count("1") / n - accuracy) > 1e-9:
            raise ValueError(
                f"{name}: its per-input results at the {checkpoint} checkpoint ({len(bits)} "
                f"inputs, {bits.count('1')} robust) are not its AutoAttack accuracy "
                f"({accuracy} on {n} inputs); rerun its evaluation (delete its "
                "summary.json and eval/) or drop `robust` from its entry.")


def curve_row(name: str, history: list[dict[str, float]], decay_epoch: int) -> str:
    """One run's per-epoch PGD-20 curve in numbers: the test peak and its epoch, the last
    epoch, and the train - test gap at the last epoch and at the epoch before the decay."""
    test = [100 * h.get("test_robust_accuracy", np.nan) for h in history]
    train = [100 * h.get("train_robust_accuracy", np.nan) for h in history]
    peak = int(np.nanargmax(test))
    before = min(decay_epoch - 1, len(history)) - 1  # the last epoch at the first rate
    return (f"| {name} | {test[peak]:.1f} ({peak + 1}) | {test[-1]:.1f} | {train[-1]:.1f} | "
            f"{train[-1] - test[-1]:+.1f} | {train[before] - test[before]:+.1f} |")


def plot(found: dict, path: str) -> None:
    """The per-epoch PGD-20 curves (test, validation, training), one colour per method: its
    seeds thin, their mean thick (over the epochs every seed reached), its EMA run dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.8))
    FigureCanvasAgg(fig)
    labels = dict(METHODS)
    order = [k for k, _ in METHODS]  # a method's colour is its place in METHODS
    keys = [k for k in order if any(run[0] == k for run in found)]
    for i, metric in enumerate(("test_robust_accuracy", "val_robust_accuracy",
                                "train_robust_accuracy")):
        ax = fig.add_subplot(1, 3, i + 1)
        for key in keys:
            color = f"C{order.index(key)}"
            curves = {(s, e): [100 * h[metric] for h in r["history"] if metric in h]
                      for (k, s, e), r in sorted(found.items()) if k == key}
            raw = [c for (s, e), c in curves.items() if not e and c]
            for c in raw:
                ax.plot(range(1, len(c) + 1), c, color=color, linewidth=0.7, alpha=0.35)
            if raw:
                length = min(map(len, raw))
                ax.plot(range(1, length + 1), np.mean([c[:length] for c in raw], axis=0),
                        color=color, linewidth=2,
                        label=f"{labels[key]} (mean of {len(raw)} seeds)" if len(raw) > 1
                        else f"{labels[key]} (one seed)")
            for (s, e), c in curves.items():
                if e and c:
                    ax.plot(range(1, len(c) + 1), c, color=color, linestyle="--",
                            linewidth=1.2, label=f"{labels[key]} EMA (seed {s})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a metric no run recorded: an empty panel
            ax.legend(fontsize=7)
    fig.suptitle("Robust overfitting, CPU recipe: PGD-20 accuracy per epoch "
                 "(thin: one seed; thick: their mean; dashed: EMA weights)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    recipe = Recipe(name=FLAGS.recipe, epochs=FLAGS.epochs)
    workdir = FLAGS.workdir or os.path.join(ROOT, "bench", "runs", f"{FLAGS.recipe}_cpu")
    seeds = [int(s) for s in FLAGS.seeds]
    all_seeds = [int(s) for s in FLAGS.all_seeds] if FLAGS.all_seeds else seeds
    methods = list(FLAGS.methods)
    for key in methods:
        if key not in dict(METHODS):
            fail("bench.overfitting", f"--methods: unknown {key!r}; known: "
                 f"{', '.join(dict(METHODS))}.")
    if not FLAGS.table_only:
        require_data(FLAGS.data, "bench.overfitting")
    set_threads(FLAGS.threads)
    command = command_line("bench.overfitting")
    if FLAGS.restore_from:
        try:
            restore_runs(FLAGS.restore_from, recipe, workdir, methods, all_seeds, FLAGS.data,
                         ema=FLAGS.ema)
        except (OSError, ValueError) as err:
            fail("bench.overfitting", f"--restore_from: {err}")
    if FLAGS.raw_of_ema:
        require_data(FLAGS.data, "bench.overfitting")
        try:
            add_raw_of_ema(recipe, workdir, methods, FLAGS.data)
        except (OSError, ValueError) as err:
            fail("bench.overfitting", f"--raw_of_ema: {err}")
    if not FLAGS.table_only:
        for key in methods:
            for seed in seeds:
                train_and_evaluate(recipe, key, seed, False, FLAGS.data, workdir)
            if FLAGS.ema and recipe.ema_seed in seeds:
                train_and_evaluate(recipe, key, recipe.ema_seed, True, FLAGS.data,
                                   workdir)
            try:  # the table so far; a bug in it must not stop hours of training
                build_table(recipe, workdir, all_seeds, methods, FLAGS.output_dir, command,
                            FLAGS.data)
            except Exception as err:  # noqa: BLE001
                print(f"bench.overfitting: the interim table failed ({type(err).__name__}: "
                      f"{err}); training goes on.", flush=True)
    build_table(recipe, workdir, all_seeds, methods, FLAGS.output_dir, command,
                FLAGS.data)


if __name__ == "__main__":
    define_flags()
    app.run(main)
