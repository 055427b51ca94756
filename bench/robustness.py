"""Robustness benchmark on real CIFAR-10: does ADT beat AT_PGD, measured with the full battery?

Trains Standard, AT_PGD, TRADES, ADT_EXP, ADT_EXP (TRADES loss), ADT_EXP-AM and ADT_IMP-AM
with one shared recipe on the offline CIFAR-10 copy (../shared/data/cifar10), evaluates each
with the `full` suite, and writes bench/results/robustness_cifar10_<scale>.md (+ a bar chart
PNG and the raw numbers as JSON).

    # The CPU recipe: two seeds, one single-threaded process per seed (about 1 h each on a
    # quiet 2-core machine), then the table:
    python -m bench.robustness --scale=cpu --seeds=0 --threads=1 &
    python -m bench.robustness --scale=cpu --seeds=1 --threads=1 &
    wait; python -m bench.robustness --scale=cpu --table_only

    # The paper's recipe (WRN-28-10, 76 epochs), for GPU machines:
    python -m bench.robustness --scale=paper

    # Under the L2 ball of radius 0.5 (beyond the paper; RobustBench's L2 budget): Standard,
    # AT_PGD, TRADES and ADT_EXP by default, the attacks with an L2 version, its own runs and
    # table (bench/runs/robustness_<scale>_l2, bench/results/robustness_cifar10_<scale>_l2.md):
    python -m bench.robustness --scale=cpu --norm=l2 --seeds=0 --threads=1 &

Resumable per (method, seed): each run lives in <workdir>/<method>-seed<s>/; a finished
training (classifier.keras + report.json) is kept and skipped, an interrupted one resumes from
its last epoch, and each attack's per-example results are cached, so an interrupted evaluation
resumes at the attack it was running. The table is built from every finished run it finds
(the ones missing are listed), so it can be made over several sittings.

How the `full` suite is run here (the same for every model): the library's staged
evaluation (`adt_tf.evaluation.staged`) on the first `eval_examples` test images, stage 3 on
the first `subset_examples`.
- Transfer attacks: the source is the same method trained with the next seed of `--all_seeds`
  (an independently trained copy); with a single seed they are skipped. A process waits for its
  source model when another process is still training it.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from typing import Any

from absl import app, flags

from bench.kit.flags import define_run_flags
from bench.kit.recipes import (
    RECIPES,
    Recipe,
    classifier_path,
    overridden,
    run_dir,
    run_seeds,
    train,
    train_config,
    training_finished,
)
from bench.kit.runs import (
    DEFAULT_DATA,
    ROOT,
    check_recorded_run,
    command_line,
    fail,
    read_json,
    require_data,
    restore_summary,
    set_threads,
    train_seconds,
    write_json,
)
from bench.kit.variants import variant
from bench.robustness_table import build_table

#: The table's rows, in order (`bench.kit.variants` keys).
METHOD_KEYS = ["standard", "pgd_at", "trades", "adt_exp", "adt_exp_fresh", "adt_exp_trades",
               "adt_exp_am", "adt_imp_am", "adt_exp_lowrank", "adt_exp_matrix_normal"]
#: The methods of an L2 table unless --methods says otherwise.
L2_METHODS = ("standard", "pgd_at", "trades", "adt_exp")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags (defined on first use: other modules of the project define
    flags of the same names, and the tests import several of them into one process)."""
    if "scale" in FLAGS:
        return
    flags.DEFINE_enum("scale", "cpu", list(RECIPES), "Which recipe.")
    flags.DEFINE_list("methods", METHOD_KEYS, f"Methods to run: {', '.join(METHOD_KEYS)} "
                      f"(default: all of them; under --norm=l2 {', '.join(L2_METHODS)}).")
    flags.DEFINE_enum("norm", "linf", ["linf", "l2"], "Threat model of training and "
                      "evaluation (the dataset's budget: 8/255 L-infinity, 0.5 L2); an L2 "
                      "table has its own runs and files (suffix _l2).")
    flags.DEFINE_list("seeds", None, "Seeds this process runs (default: the recipe's).")
    flags.DEFINE_list("all_seeds", None, "Every seed of the table (default: --seeds); the transfer "
                      "source of seed s is the next one in this list.")
    define_run_flags("bench/runs/robustness_<scale>, + _l2 under --norm=l2",
                     "the table, chart and JSON",
                     ("epochs", "train_examples", "eval_examples", "subset_examples"))
    flags.DEFINE_bool("interleave", False, "Train and evaluate method by method (a finished row "
                      "sooner) instead of training every method first.")
    flags.DEFINE_bool("train_only", False, "Only train (no evaluation): lets several processes "
                      "share the evaluations out once every model is trained.")
    flags.DEFINE_string("restore_from", None, "A results JSON of an earlier sitting (e.g. "
                        "bench/results/robustness_cifar10_cpu.json): the evaluations it holds "
                        "that this workdir lacks are taken from it (bench/runs/ is not "
                        "committed, so a new machine starts without them).")
    flags.DEFINE_integer("source_wait_minutes", 120, "How long to wait for a transfer source "
                         "that another process is still training.")


def recipe_from_flags() -> Recipe:
    from adt_tf.training.config import override

    recipe = overridden(RECIPES[FLAGS.scale], FLAGS,
                        ("epochs", "train_examples", "eval_examples", "subset_examples"))
    return dataclasses.replace(recipe, config=override(recipe.config,
                                                       {"threat.norm": FLAGS.norm}))


def method_spec(key: str) -> tuple[str, str, str, dict[str, Any]]:
    if key not in METHOD_KEYS:
        raise ValueError(f"Unknown method {key!r}; known: {', '.join(METHOD_KEYS)}.")
    return tuple(variant(key))


def evaluation_finished(workdir: str, key: str, seed: int, norm: str = "linf") -> bool:
    """Whether the run has a current summary of the staged evaluation
    (`adt_tf.evaluation.staged.summary_is_current`)."""
    from adt_tf.evaluation.staged import summary_is_current

    return summary_is_current(
        read_json(os.path.join(run_dir(workdir, key, seed), "summary.json"), None), norm)


def model_needed(workdir: str, key: str, seed: int, all_seeds: list[int],
                 norm: str = "linf") -> bool:
    """A model has to be trained while its own evaluation, or that of a run it is the transfer
    source of, is unfinished (an evaluation restored from an earlier sitting needs none)."""
    if not evaluation_finished(workdir, key, seed, norm):
        return True
    return any(_source_seed(s, all_seeds) == seed
               and not evaluation_finished(workdir, key, s, norm) for s in all_seeds)




# ---------------------------------------------------------------------------- evaluation
def evaluate_run(recipe: Recipe, key: str, seed: int, all_seeds: list[int], data: str,
                 workdir: str, verbose: int, wait_minutes: int) -> dict[str, Any]:
    """The full suite on one trained model (`adt_tf.evaluation.staged`); returns (and
    stores) its summary."""
    from adt_tf import data as data_lib
    from adt_tf.artifacts.loading import file_id, load_classifier
    from adt_tf.data import resolve_threat
    from adt_tf.evaluation.staged import attack_code_versions, evaluate_staged, stage_attacks
    from adt_tf.training.record import read_record

    _, label, _, _ = method_spec(key)
    d = run_dir(workdir, key, seed)
    summary_path = os.path.join(d, "summary.json")
    check_recorded_run(d, train_config(recipe, key, seed, data, workdir), "bench.robustness")
    if evaluation_finished(workdir, key, seed, recipe.norm):
        print(f"[eval] {label}, seed {seed}: finished earlier, kept.")
        return read_json(summary_path, None)
    path = classifier_path(workdir, key, seed)
    source_seed = _source_seed(seed, all_seeds)
    source = None
    if source_seed is not None:
        source_path = classifier_path(workdir, key, source_seed)
        _wait_for(lambda: training_finished(workdir, key, source_seed), wait_minutes,
                  f"the transfer source {source_path}")
        source = load_classifier(source_path)
    print(f"[eval] {label}, seed {seed}", flush=True)
    classifier = load_classifier(path)
    splits = data_lib.load(f"npz:{data}")
    x, y = splits.x_test[:recipe.eval_examples], splits.y_test[:recipe.eval_examples]
    model_id = file_id(path) + ("+" + file_id(source_path) if source is not None else "")
    main, stages, m = evaluate_staged(
        classifier, x, y, norm=recipe.norm, subset_examples=recipe.subset_examples,
        save_dir=os.path.join(d, "eval"), model_name=path, source_model=source,
        threat=resolve_threat(recipe.norm, None, splits.info),
        batch_size=recipe.eval_batch_size, seed=seed,
        cache_dir=os.path.join(d, "eval", "cache"), model_id=model_id,
        dataset="cifar10 (offline copy, test split)", verbose=verbose,
        # FeaAttack's targets come from the whole test split, as in the authors' script.
        target_pool=(splits.x_test, splits.y_test),
        train_pool=(splits.x_train[:10000], splits.y_train[:10000]))
    summary = summarize(main, stages, m, key, seed, source_seed, d)
    summary["attack_code"] = attack_code_versions(recipe.norm)
    # What was trained, so that a later --restore_from can check it is the recipe's run.
    summary["run_config"] = read_record(d).to_dict()
    write_json(summary_path, summary)
    subset_attacks = stage_attacks(recipe.norm)[2]
    print(f"[eval] {label}, seed {seed}: clean {100 * summary['clean']:.2f}%, A_rob "
          f"{100 * summary['a_rob_main']:.2f}% ({summary['num_examples']} inputs, without "
          f"{'/'.join(subset_attacks)}), {100 * summary['a_rob_subset']:.2f}% (all attacks, "
          f"first {m})", flush=True)
    return summary


def summarize(main, stages: dict, m: int, key: str, seed: int, source_seed: int | None,
              d: str) -> dict[str, Any]:
    """One run's numbers: the staged evaluation's (`summarize_stages`) with the method, the
    seed, the transfer source's seed and the training time."""
    from adt_tf.evaluation.staged import summarize_stages

    return {"method": key, "seed": seed, "transfer_source_seed": source_seed,
            **summarize_stages(main, stages, m, seed), "train_seconds": train_seconds(d)}


def _source_seed(seed: int, all_seeds: list[int]) -> int | None:
    if len(all_seeds) < 2 or seed not in all_seeds:
        return None
    return all_seeds[(all_seeds.index(seed) + 1) % len(all_seeds)]


def _wait_for(ready, minutes: int, what: str) -> None:
    deadline = time.time() + 60 * minutes
    announced = False
    while not ready():
        if time.time() > deadline:
            raise RuntimeError(f"Waited {minutes} min for {what}; train it first (run this "
                               "script for its seed) or pass --all_seeds with this seed only.")
        if not announced:
            print(f"Waiting for {what} (another process is training it)...", flush=True)
            announced = True
        time.sleep(20)


def restore_summaries(path: str, recipe: Recipe, workdir: str, methods: list[str],
                      seeds: list[int], data: str = DEFAULT_DATA) -> list[str]:
    """Writes <workdir>/<method>-seed<s>/summary.json for each run of `methods` x `seeds` (and
    of a further seed of a method, which some rows have) that the results JSON at `path` holds
    and the workdir lacks; returns the runs restored. An
    entry evaluated on another number of inputs than the recipe's, or whose recorded training
    configuration (`run_config`) is not the recipe's, is refused (ValueError naming the field
    and both values); an entry written before runs recorded it is restored as it is, and the
    table says so."""
    previous = read_json(path, {})
    restored = []
    # The table's seeds, and any further seed a row of the JSON has (a third seed run for
    # some rows only, `bench.robustness_table.further_seeds`).
    runs = [(key, seed) for key in methods for seed in seeds] + [
        (key, seed) for key in methods for seed in run_seeds(previous, key) if seed not in seeds]
    for key, seed in runs:
        name = f"{key}-seed{seed}"
        entry = previous.get(name)
        if entry is None or os.path.exists(
                os.path.join(run_dir(workdir, key, seed), "summary.json")):
            continue
        n, m = entry.get("num_examples"), entry.get("subset_examples")
        if n != recipe.eval_examples or m != min(recipe.subset_examples, n):
            raise ValueError(
                f"{path}: {name} was evaluated on {n} inputs (subset {m}); this "
                f"recipe evaluates {recipe.eval_examples} (subset {recipe.subset_examples}).")
        if restore_summary(path, name, entry, run_dir(workdir, key, seed),
                           train_config(recipe, key, seed, data, workdir)):
            restored.append(name)
    if restored:
        print(f"Restored from {path}: {', '.join(restored)}.", flush=True)
    return restored


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    recipe = recipe_from_flags()
    methods = [m.strip() for m in FLAGS.methods]
    if recipe.norm == "l2" and not FLAGS["methods"].present:
        methods = list(L2_METHODS)
    for key in methods:
        try:
            method_spec(key)
        except ValueError as err:
            fail("bench.robustness", f"--methods: {err}")
    seeds = list(recipe.seeds)
    all_seeds = [int(s) for s in FLAGS.all_seeds] if FLAGS.all_seeds else seeds
    if not FLAGS.table_only:
        require_data(FLAGS.data, "bench.robustness")
    workdir = FLAGS.workdir or os.path.join(
        ROOT, "bench", "runs", f"robustness_{FLAGS.scale}" + ("_l2" if recipe.norm == "l2" else ""))
    command = command_line("bench.robustness")
    set_threads(FLAGS.threads)
    if FLAGS.restore_from:
        restore_summaries(FLAGS.restore_from, recipe, workdir, methods, all_seeds, FLAGS.data)
    if not FLAGS.table_only:
        print(f"Recipe '{FLAGS.scale}': {recipe.describe()}; seeds {seeds}; "
              f"{platform.node()}", flush=True)
        groups = [[key] for key in methods] if FLAGS.interleave else [methods]
        for group in groups:
            for seed in seeds:
                for key in group:
                    if model_needed(workdir, key, seed, all_seeds, recipe.norm):
                        train(recipe, key, seed, FLAGS.data, workdir, FLAGS.verbose)
                    else:
                        print(f"[train] {method_spec(key)[1]}, seed {seed}: not needed (its "
                              "evaluation, and those it is the transfer source of, are "
                              "finished).")
            if not FLAGS.train_only:
                for seed in seeds:
                    for key in group:
                        evaluate_run(recipe, key, seed, all_seeds, FLAGS.data, workdir,
                                     FLAGS.verbose, FLAGS.source_wait_minutes)
                if FLAGS.interleave:  # the table so far, after every finished method
                    build_table(recipe, FLAGS.scale, workdir, all_seeds, methods,
                                FLAGS.output_dir, command, FLAGS.data)
    build_table(recipe, FLAGS.scale, workdir, all_seeds, methods, FLAGS.output_dir, command,
                FLAGS.data)


if __name__ == "__main__":
    define_flags()
    app.run(main)
