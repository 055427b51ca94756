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

How the `full` suite is run here (the same for every model):
- Stage 1, on the first `eval_examples` test images: clean, then FGSM, PGD-20, PGD-100,
  MIM-20, C&W, transfer PGD-20 and MIM-20, EXP, EXP-AM, IMP-AM and APGD-CE, each on every
  clean-correct input (its own accuracy is reported).
- Stage 2, AutoAttack's way: APGD-T and FAB-T on the inputs still robust after stage 1.
- Stage 3: the attacks whose cost is per input (FeaAttack and SPSA as the ADT authors ran
  them and in the evaluation's stronger variants, Square), on the inputs still robust after
  stages 1 and 2 among the first `subset_examples`; A_rob (all attacks) is the per-example
  worst case over the whole suite on that subset.
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

import numpy as np
from absl import app, flags

from adt_tf.core.files import write_text
from bench.runs import (
    check_recorded_run,
    command_line,
    fail,
    read_json,
    require_data,
    restore_summary,
    write_json,
)
from bench.variants import variant

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "cifar10"))

#: The amortised methods' generator width on the CPU recipe (the reference's is 256: one
#: ADT_EXP-AM step of the full-resolution generator costs 217 ms at width 16 and 1,023 ms at
#: width 32 on this machine's SmallCNN batch of 64, against 514 ms for ADT_EXP).
CPU_GENERATOR_WIDTH = 16
#: Methods that take `generator_width` (set from the recipe).
AMORTISED = ("adt_exp_am", "adt_imp_am")

#: The table's rows, in order: (key, label in the table, registered method, method
#: parameters beyond the defaults), from `bench.variants`.
METHODS: list[tuple[str, str, str, dict[str, Any]]] = [tuple(variant(k)) for k in (
    "standard", "pgd_at", "trades", "adt_exp", "adt_exp_fresh", "adt_exp_trades",
    "adt_exp_am", "adt_imp_am", "adt_exp_lowrank", "adt_exp_matrix_normal")]
METHOD_KEYS = [m[0] for m in METHODS]
#: The ADT variants the verdict compares with AT_PGD (the ablation is compared with ADT_EXP).
ADT_KEYS = ("adt_exp", "adt_exp_trades", "adt_exp_am", "adt_imp_am", "adt_exp_lowrank",
            "adt_exp_matrix_normal")

#: Stage 1, on `eval_examples` inputs: each attack on every clean-correct input (its own
#: accuracy is measured).
MAIN_ATTACKS = ("fgsm", "pgd20", "pgd100", "mim20", "cw30", "transfer_pgd20", "transfer_mim20",
                "exp", "exp_am", "imp_am", "apgd_ce")
#: Stage 2, AutoAttack's way: only on the inputs still robust after stage 1.
LATE_ATTACKS = ("apgd_t", "fab_t")
#: Stage 3, the attacks whose cost is per input: on the inputs still robust after stages 1
#: and 2 among the first `subset_examples`.
SUBSET_ATTACKS = ("fea", "fea_distinct", "spsa", "spsa512", "square")
ALL_ATTACKS = MAIN_ATTACKS + LATE_ATTACKS + SUBSET_ATTACKS
#: The methods of an L2 table unless --methods says otherwise.
L2_METHODS = ("standard", "pgd_at", "trades", "adt_exp")


def stage_attacks(norm: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The three stages' attacks under `norm`: all of them for L-infinity; under L2 those
    with an L2 version (FeaAttack and SPSA have none)."""
    if norm == "linf":
        return MAIN_ATTACKS, LATE_ATTACKS, SUBSET_ATTACKS
    from adt_tf.attacks import attacks_for
    from adt_tf.evaluation.suites import CATALOGUE

    def keep(names):
        return tuple(n for n in names if CATALOGUE[n].attack in attacks_for(norm))

    return keep(MAIN_ATTACKS), keep(LATE_ATTACKS), keep(SUBSET_ATTACKS)


def all_attacks(norm: str) -> tuple[str, ...]:
    main, late, subset = stage_attacks(norm)
    return main + late + subset


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One shared training and evaluation recipe (every method gets the same): the training
    run is a config of the run schema (a recipe file of `adt_tf/recipes`, which
    `adt-train --config=NAME` trains too); the rest says how the benchmark evaluates it."""

    config: Any  # adt_tf.training.config.RunConfig: the training recipe
    eval_examples: int = 1000  # the first N test images (the training report's too)
    subset_examples: int = 100  # stage 3 on the first M of them
    eval_batch_size: int = 250
    seeds: tuple[int, ...] = (0, 1)
    generator_width: int = 256  # the amortised methods' (the reference's 256)

    @property
    def norm(self) -> str:
        return self.config.threat.norm

    @property
    def epsilon_text(self) -> str:
        """The budget as the table states it (the dataset's default for the norm)."""
        return "epsilon 8/255 (L-infinity)" if self.norm == "linf" else "L2 epsilon 0.5"

    def describe(self) -> str:
        return describe_run(self.config) + f"; {self.epsilon_text}"


def describe_run(config) -> str:
    """The training recipe of a config, in words (for the tables)."""
    model, optim, data = config.model, config.optim, config.data
    params = ", ".join(f"{k}={v}" for k, v in sorted(model.params.items()))
    n = ("all 50,000" if data.max_train_examples is None
         else f"the first {data.max_train_examples:,}")
    decay = ", ".join(map(str, optim.lr_decay_epochs))
    validation = config.validation
    return (f"{model.name}({params}); {n} training images (random crop with 4-pixel padding "
            f"and horizontal flip), {optim.epochs} epochs, batch {optim.batch_size}, SGD lr "
            f"{optim.lr} (x{optim.lr_decay_factor:g} from epoch {decay} on, epochs counted from "
            f"1 as the reference), momentum {optim.momentum}, weight decay "
            f"{optim.weight_decay} ({optim.weight_decay_form}"
            + (": added to the gradient before momentum, PyTorch's form, as the reference); "
               if optim.weight_decay_form == "coupled" else "); ")
            + ("inputs normalised by the training set's channel mean/std inside the model"
               if data.normalize else "pixels in [0, 1] with no normalisation layer (the "
               "reference's)")
            + (f"; {validation.examples:,} training images held out (stratified) for "
               f"{validation.attack.upper().replace('PGD', 'PGD-')} validation every "
               f"{'epoch' if validation.every == 1 else f'{validation.every} epochs'}, the "
               "best epoch's checkpoint evaluated" if validation.examples else ""))


def _recipes() -> dict[str, Recipe]:
    from adt_tf.training.config import load_config_file

    return {
        # About 2 h on a 2-core CPU: two single-threaded processes side by side
        # (bench/README.md). Why this recipe: adt_tf/recipes/cpu.py.
        "cpu": Recipe(load_config_file("cpu"), eval_examples=500, subset_examples=50,
                      generator_width=CPU_GENERATOR_WIDTH),
        # The paper's setting on the whole training set, evaluated on the 2,000 test images
        # of the offline copy.
        "paper": Recipe(load_config_file("paper"), eval_examples=2000, subset_examples=500,
                        eval_batch_size=200),
        # The ADT paper's Table 6 (adt_tf/recipes/rice2020.py). GPU scale: not run here.
        "rice2020": Recipe(load_config_file("rice2020"), eval_examples=2000,
                           subset_examples=500, eval_batch_size=200),
    }


RECIPES = _recipes()

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
    flags.DEFINE_string("data", DEFAULT_DATA, "Folder holding train.npz and test.npz.")
    flags.DEFINE_string("workdir", None, "Where the runs live (default: "
                        "bench/runs/robustness_<scale>, + _l2 under --norm=l2).")
    flags.DEFINE_string("output_dir", os.path.join(ROOT, "bench", "results"),
                        "Where the table, chart and JSON go.")
    flags.DEFINE_integer("epochs", None, "Override the recipe's epochs.")
    flags.DEFINE_integer("train_examples", None, "Override the recipe's training images.")
    flags.DEFINE_integer("eval_examples", None, "Override the recipe's test inputs.")
    flags.DEFINE_integer("subset_examples", None, "Override the subset of the per-input attacks.")
    flags.DEFINE_integer("threads", 0, "TensorFlow intra- and inter-op threads (0: default).")
    flags.DEFINE_bool("table_only", False, "Only build the table from the finished runs.")
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
    flags.DEFINE_integer("verbose", 1, "0 quiet, 1 progress bars, 2 one line per epoch.")


def overridden(recipe: Recipe, flag_values, names: tuple[str, ...]) -> Recipe:
    """`recipe` with the flags `names` (epochs, train_examples, eval_examples,
    subset_examples) that are set, and --seeds; the decay epochs beyond a shorter --epochs
    dropped."""
    from adt_tf.training.config import override

    changes = {k: getattr(flag_values, k) for k in names if getattr(flag_values, k)}
    config = recipe.config
    if changes.get("epochs"):
        config = override(config, {
            "optim.epochs": changes["epochs"],
            "optim.lr_decay_epochs": tuple(e for e in config.optim.lr_decay_epochs
                                           if e <= changes["epochs"])})
    if changes.get("train_examples"):
        config = override(config, {"data.max_train_examples": changes["train_examples"]})
    kept = {k: v for k, v in changes.items() if k in ("eval_examples", "subset_examples")}
    if flag_values.seeds:
        kept["seeds"] = tuple(int(s) for s in flag_values.seeds)
    return dataclasses.replace(recipe, config=config, **kept)


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


def run_dir(workdir: str, key: str, seed: int) -> str:
    return os.path.join(workdir, f"{key}-seed{seed}")


def classifier_path(workdir: str, key: str, seed: int) -> str:
    """The classifier a run is evaluated as: its best epoch's (best.keras) when it held out a
    validation split, else the last (classifier.keras)."""
    d = run_dir(workdir, key, seed)
    best = os.path.join(d, "best.keras")
    return best if os.path.exists(best) else os.path.join(d, "classifier.keras")


def training_finished(workdir: str, key: str, seed: int) -> bool:
    d = run_dir(workdir, key, seed)
    return all(os.path.exists(os.path.join(d, f)) for f in ("classifier.keras", "report.json"))


def attack_code_versions(norm: str = "linf") -> dict[str, str]:
    """The code version of each attack of the suite (`adt_tf.evaluation.cache.code_version`)."""
    from adt_tf.attacks import get_attack
    from adt_tf.evaluation.cache import code_version
    from adt_tf.evaluation.suites import CATALOGUE

    return {name: code_version(get_attack(CATALOGUE[name].attack))
            for name in all_attacks(norm)}


def evaluation_finished(workdir: str, key: str, seed: int, norm: str = "linf") -> bool:
    """Whether the run has a summary with every attack of the suite, each run with the
    attack's present code (a summary that lacks an attack added later, or made with an attack
    changed since, is redone; what is still valid comes back from the cache)."""
    summary = read_json(os.path.join(run_dir(workdir, key, seed), "summary.json"), None)
    return (summary is not None and all(a in summary["attacks"] for a in all_attacks(norm))
            and summary.get("attack_code") == attack_code_versions(norm))


def model_needed(workdir: str, key: str, seed: int, all_seeds: list[int],
                 norm: str = "linf") -> bool:
    """A model has to be trained while its own evaluation, or that of a run it is the transfer
    source of, is unfinished (an evaluation restored from an earlier sitting needs none)."""
    if not evaluation_finished(workdir, key, seed, norm):
        return True
    return any(_source_seed(s, all_seeds) == seed
               and not evaluation_finished(workdir, key, s, norm) for s in all_seeds)


# ------------------------------------------------------------------------------ training
def train_config(recipe: Recipe, key: str, seed: int, data: str, workdir: str,
                 verbose: int = 1, mixed_precision: bool = False):
    """The `RunConfig` of one (method, seed) of the recipe (what its folder must hold): the
    recipe's config with the method, its parameters, the seed, the data and the folder.
    `adt-train --config=<scale> --dataset=npz:<data> --method=... --seed=... --workdir=...`
    describes the same run (and resumes or extends it)."""
    from adt_tf.training.config import override

    _, _, method, params = method_spec(key)
    return override(recipe.config, {
        "run.workdir": run_dir(workdir, key, seed), "run.seed": seed, "run.verbose": verbose,
        "method.name": method,
        "method.params": dict(params, **({"generator_width": recipe.generator_width}
                                         if key in AMORTISED else {})),
        "data.dataset": f"npz:{data}",
        "report.eval_examples": recipe.eval_examples,
        "report.eval_batch_size": recipe.eval_batch_size,
        "compute.mixed_precision": mixed_precision})


def train(recipe: Recipe, key: str, seed: int, data: str, workdir: str, verbose: int,
          mixed_precision: bool = False) -> None:
    """Trains one (method, seed) of the recipe into its run folder (kept if finished, resumed
    if interrupted); `mixed_precision` trains under the device's mixed policy. A folder that
    holds another run (another norm, method, recipe, seed, precision or data) is refused
    (`bench.runs.check_recorded_run`)."""
    from adt_tf.training.run import run_training

    label = method_spec(key)[1]
    d = run_dir(workdir, key, seed)
    config = train_config(recipe, key, seed, data, workdir, verbose, mixed_precision)
    check_recorded_run(d, config, "bench.robustness")
    if training_finished(workdir, key, seed):
        print(f"[train] {label}, seed {seed}: finished earlier, kept ({d}).")
        return
    print(f"[train] {label}, seed {seed} -> {d}", flush=True)
    timing_path = os.path.join(d, "timing.json")
    os.makedirs(d, exist_ok=True)
    spent = read_json(timing_path, {}).get("train_seconds", 0.0)
    t0 = time.perf_counter()
    report = run_training(config)
    spent += time.perf_counter() - t0
    write_json(timing_path, {"train_seconds": spent})
    print(f"[train] {label}, seed {seed}: {spent / 60:.1f} min; clean "
          f"{100 * report['clean_accuracy']:.2f}%, PGD-20 {100 * report['pgd20_accuracy']:.2f}%"
          f" on {report['num_examples']} test inputs", flush=True)


# ---------------------------------------------------------------------------- evaluation
def evaluate_run(recipe: Recipe, key: str, seed: int, all_seeds: list[int], data: str,
                 workdir: str, verbose: int, wait_minutes: int) -> dict[str, Any]:
    """The full suite on one trained model; returns (and stores) its summary."""
    from adt_tf import data as data_lib
    from adt_tf.artifacts.loading import file_id, load_classifier
    from adt_tf.data import resolve_threat
    from adt_tf.evaluation import evaluate
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
    # FeaAttack's targets come from the whole test split, as in the authors' script.
    pools = {"target_pool": (splits.x_test, splits.y_test),
             "train_pool": (splits.x_train[:10000], splits.y_train[:10000])}
    model_id = file_id(path) + ("+" + file_id(source_path) if source is not None else "")
    main_attacks, late_attacks, subset_attacks = stage_attacks(recipe.norm)
    common = dict(threat=resolve_threat(recipe.norm, None, splits.info),
                  batch_size=recipe.eval_batch_size, seed=seed,
                  cache_dir=os.path.join(d, "eval", "cache"), model_id=model_id,
                  dataset="cifar10 (offline copy, test split)", verbose=verbose, **pools)
    main = evaluate(classifier, x, y, suite=",".join(main_attacks), per_attack="all",
                    source_model=source, model_name=path, **common)
    main.save(os.path.join(d, "eval"), stem="main")
    robust = main.per_example["robust"].copy()
    stages = {}
    m = min(recipe.subset_examples, len(x))
    for stem, names, limit in (("late", late_attacks, len(x)), ("subset", subset_attacks, m)):
        idx = np.flatnonzero(robust[:limit])
        result = None
        if len(idx):
            result = evaluate(classifier, x[idx], y[idx], suite=",".join(names),
                              per_attack="remaining", sanity_checks=False, model_name=path,
                              **common)
            result.save(os.path.join(d, "eval"), stem=stem)
            robust[idx] &= result.per_example["robust"]
        stages[stem] = (result, names, idx)
    summary = summarize(main, stages, m, key, seed, source_seed, d)
    summary["attack_code"] = attack_code_versions(recipe.norm)
    # What was trained, so that a later --restore_from can check it is the recipe's run.
    summary["run_config"] = read_record(d).to_dict()
    write_json(summary_path, summary)
    print(f"[eval] {label}, seed {seed}: clean {100 * summary['clean']:.2f}%, A_rob "
          f"{100 * summary['a_rob_main']:.2f}% ({summary['num_examples']} inputs, without "
          f"{'/'.join(subset_attacks)}), {100 * summary['a_rob_subset']:.2f}% (all attacks, "
          f"first {m})", flush=True)
    return summary


def summarize(main, stages: dict, m: int, key: str, seed: int, source_seed: int | None,
              d: str) -> dict[str, Any]:
    """One run's numbers. `stages` maps "late" and "subset" to (EvaluationResult or None when
    no input was left, attack names, indices of the inputs it ran on)."""
    from adt_tf.evaluation.suites import CATALOGUE

    n = main.num_examples
    robust = main.per_example["robust"].copy()
    attacks: dict[str, Any] = {}
    for a in main.attacks:
        attacks[a.name] = {"label": a.label, "accuracy": a.accuracy, "skipped": a.skipped,
                           "seconds": a.seconds, "params": a.params, "inputs": n}
    warnings, seconds = list(main.warnings), _wall_seconds(main)
    after_late = None
    for stem in ("late", "subset"):
        result, names, idx = stages[stem]
        if result is not None:
            robust[idx] &= result.per_example["robust"]
            warnings += result.warnings
            seconds += _wall_seconds(result)
        by_name = {a.name: a for a in result.attacks} if result is not None else {}
        for name in names:
            a = by_name.get(name)
            spec = CATALOGUE[name]
            attacks[name] = {
                "label": a.label if a else spec.display_label, "accuracy": None,
                "skipped": a.skipped if a else None, "attacked": a.num_attacked if a else 0,
                "broken": a.num_broken if a else 0, "seconds": a.seconds if a else 0.0,
                "params": a.params if a else dict(spec.params, epsilon=main.epsilon, seed=seed),
                "inputs": n if stem == "late" else m, "stage": stem}
        if stem == "late":
            after_late = robust.copy()
    timing = read_json(os.path.join(d, "timing.json"), {})
    return {
        "method": key, "seed": seed, "transfer_source_seed": source_seed,
        "num_examples": n, "subset_examples": m, "clean": main.clean_accuracy,
        "a_rob_stage1": main.robust_accuracy,
        "a_rob_main": float(after_late.mean()),
        "a_rob_main_on_subset": float(after_late[:m].mean()),
        "a_rob_subset": float(robust[:m].mean()),
        "attacks": attacks, "warnings": warnings,
        "train_seconds": timing.get("train_seconds"), "eval_seconds": seconds,
        "environment": main.environment,
    }


def _wall_seconds(result) -> float:
    """An evaluation's time over all sittings: the wall time of the last call, which took
    cached attacks from the cache, plus the time those attacks took when they ran."""
    return result.seconds + result.cached_seconds


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
    """Writes <workdir>/<method>-seed<s>/summary.json for each run of `methods` x `seeds` that
    the results JSON at `path` holds and the workdir lacks; returns the runs restored. An
    entry evaluated on another number of inputs than the recipe's, or whose recorded training
    configuration (`run_config`) is not the recipe's, is refused (ValueError naming the field
    and both values); an entry written before runs recorded it is restored as it is, and the
    table says so."""
    previous = read_json(path, {})
    restored = []
    for key in methods:
        for seed in seeds:
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


# --------------------------------------------------------------------------------- table
def collect(workdir: str, seeds: list[int], methods: list[str]) -> tuple[dict, list[str]]:
    found, missing = {}, []
    for key in methods:
        for seed in seeds:
            summary = read_json(os.path.join(run_dir(workdir, key, seed), "summary.json"), None)
            if summary is None:
                missing.append(f"{key}-seed{seed}")
            else:
                found[(key, seed)] = summary
    return found, missing


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and spread (half the range: max - mean) of the seeds' values, in percent."""
    arr = 100 * np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float((arr.max() - arr.min()) / 2)


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean, spread = mean_spread(values)
    return f"{mean:.2f} ± {spread:.2f}" if len(values) > 1 else f"{mean:.2f}"


def verdict(found: dict, seeds: list[int], key: str, baseline: str = "pgd_at",
            metric: str = "a_rob_subset") -> str:
    a = [found[(key, s)][metric] for s in seeds if (key, s) in found]
    b = [found[(baseline, s)][metric] for s in seeds if (baseline, s) in found]
    if len(a) < 2 or len(b) < 2:
        return "not enough seeds to compare"
    (ma, sa), (mb, sb) = mean_spread(a), mean_spread(b)
    if ma - sa > mb + sb:
        return f"beats AT_PGD beyond the seed spread ({ma:.2f} ± {sa:.2f} vs {mb:.2f} ± {sb:.2f})"
    if ma + sa < mb - sb:
        return (f"is below AT_PGD beyond the seed spread ({ma:.2f} ± {sa:.2f} vs {mb:.2f} ± "
                f"{sb:.2f})")
    return (f"does not differ from AT_PGD beyond the seed spread ({ma:.2f} ± {sa:.2f} vs "
            f"{mb:.2f} ± {sb:.2f})")


def in_short(found: dict, seeds: list[int], keys: list[str]) -> str:
    """One sentence: which ADT variants beat AT_PGD beyond the seed spread, on both A_rob
    measures."""
    parts = []
    for metric, what in (("a_rob_subset", "A_rob (all attacks)"),
                         ("a_rob_main", "A_rob after stage 2")):
        verdicts = {k: verdict(found, seeds, k, metric=metric) for k in keys}
        if any(v == "not enough seeds to compare" for v in verdicts.values()):
            return "**In short:** not every run has two seeds yet; no verdict."
        winners = [method_spec(k)[1] for k, v in verdicts.items() if v.startswith("beats")]
        parts.append(f"on {what}, {', '.join(winners) if winners else 'no ADT variant'} "
                     "beats AT_PGD beyond the seed spread")
    return f"**In short:** at this scale, {parts[0]}; {parts[1]}."


def binomial_se(p: float, n: int) -> float:
    """Standard error, in percentage points, of an accuracy p measured on n inputs."""
    return 100 * float(np.sqrt(p * (1 - p) / n)) if n else float("nan")


def build_table(recipe: Recipe, scale: str, workdir: str, seeds: list[int], methods: list[str],
                output_dir: str, command: str, data: str = DEFAULT_DATA) -> str | None:
    """Writes robustness_cifar10_<scale>.md/.json/.png (+ _l2 under L2) from the finished runs
    in `workdir`; returns the Markdown path (None when no run has finished)."""
    main_attacks, late_attacks, subset_attacks = stage_attacks(recipe.norm)
    l2 = recipe.norm == "l2"
    found, missing = collect(workdir, seeds, methods)
    if not found:
        print("No finished run to tabulate yet.")
        return None
    any_run = next(iter(found.values()))
    attack_labels = {name: info["label"] for name, info in any_run["attacks"].items()}
    env = any_run["environment"]
    cols = [a for a in main_attacks if not all(found[k]["attacks"].get(a, {}).get("skipped")
                                               for k in found)]
    n, m = any_run["num_examples"], any_run["subset_examples"]
    lines = [
        f"# Robustness on CIFAR-10, `{scale}` recipe" + (", L2 ball of radius 0.5" if l2 else ""),
        "",
    ]
    if missing:
        lines += [f"**Partial table**: {len(missing)} of {len(missing) + len(found)} runs are "
                  f"not finished yet ({', '.join(missing)}); the rerun of the same command "
                  "resumes them (bench/README.md).", ""]
    lines += [
        f"- Recipe (the same for every method): {recipe.describe()}. Each method's inner "
        "settings are the paper's (the defaults of `adt_tf.methods`): "
        + ("AT_PGD 10 steps of epsilon / 4 = 0.125 (normalised gradient) with a uniform "
           "start in the ball; TRADES beta 6, 10 steps of 0.125; ADT_EXP T = 7, k = 5, Adam lr "
           "0.3, lambda 0.01, the radial distribution onto the L2 ball "
           "(`adt_tf.threat.bijectors.RadialTanh`), "
           if l2 else "AT_PGD 10 steps of 2/255 with random start, trained on the last "
           "iterate (Madry et al.'s); TRADES beta 6, 10 steps of 0.007 from x + 0.001 N(0, I), "
           "three training-mode forwards per step (the reference's); ADT_EXP T = 7, k = 5, "
           "Adam lr 0.3, lambda 0.01, ")
        + "the inner gradients accumulated over the steps as in the "
        "authors' code (the ablation row: a fresh gradient per step instead); ADT_EXP "
        "(TRADES loss) the same with beta 6; ADT_EXP-AM lambda 0.01 and ADT_IMP-AM lambda 1, "
        "tau 0.9, with the reference's full-resolution generator at width "
        f"{recipe.generator_width} (the reference's is 256) and PyTorch's Adam (lr 2e-4).",
        f"- Data: `{os.path.relpath(data, ROOT)}` "
        "(the offline CIFAR-10 copy: its training images in the original order, most of them "
        "decoded from a JPEG copy, so not pixel-exact CIFAR-10; the first 2,000 official "
        "test images, pixel-exact).",
        f"- Seeds: {', '.join(map(str, seeds))} (training and attacks); cells are mean ± "
        "spread over the seeds, spread = half the range (max - min) / 2, in percent.",
        f"- Test inputs: the first {n} test images. Stage 1: clean and each attack of the "
        "accuracy columns on every clean-correct input (the attack's own accuracy). Stage 2 "
        "(AutoAttack's way): APGD-T and FAB-T only on the inputs still robust after stage 1. "
        f"Stage 3: {', '.join(attack_labels.get(a, a) for a in subset_attacks)} (cost per "
        f"input) only on the inputs still robust after stages 1 and 2 among the first {m}.",
        f"- A_rob: per-example worst case (paper Eq. 12): after stage 1 ({n} inputs); after "
        f"stage 2 ({n} inputs, and the same restricted to the first {m}); **A_rob (all)**: "
        f"after stage 3, the whole "
        + ("suite (the `full` suite's attacks that have an L2 version: all but FeaAttack "
           "and SPSA; stages 1-3 hold the whole L2 AutoAttack, APGD-CE, APGD-T, FAB-T and "
           "Square)" if l2 else "`full` suite")
        + f", on the first {m} inputs.",
        f"- Why {n} and {m} inputs: on one thread, per robust model, the EXP-AM and IMP-AM "
        "generator fits, APGD-T, FAB-T, FeaAttack and SPSA cost minutes each, and the recipe "
        "has to fit a few hours on 2 cores.",
        f"- {recipe.epsilon_text[0].upper() + recipe.epsilon_text[1:]}; every attack with the "
        "evaluation's own settings "
        "(`adt_tf.evaluation.suites.CATALOGUE`), listed below the table. Transfer attacks: "
        "crafted on "
        "the same method trained with the other seed (an independently trained copy).",
        f"- Machine: {env.get('cpu')}, {env.get('cpu_count')} cores, GPUs: "
        f"{env.get('gpus') or 'none'}; TensorFlow {env.get('tensorflow')}, Keras "
        f"{env.get('keras')}; adt_tf {env.get('adt_tf')}. Times are wall-clock per run (the "
        "CPU recipe ran one single-threaded process per seed, side by side).",
        "",
        "| method | seeds | clean (%) | " + " | ".join(attack_labels[a] for a in cols)
        + f" | A_rob stage 1 ({n}) | A_rob stage 2 ({n}) | stage 2 on first {m} "
        f"| **A_rob (all), first {m}** | train (min) | eval (min) |",
        "|---|---:|---:|" + "---:|" * len(cols) + "---:|---:|---:|---:|---:|---:|",
    ]
    for key in methods:
        runs = [found[(key, s)] for s in seeds if (key, s) in found]
        if not runs:
            continue
        label = method_spec(key)[1]
        attack_cells = [_cell([r["attacks"][a]["accuracy"] for r in runs
                               if r["attacks"][a]["accuracy"] is not None]) for a in cols]
        train_min = np.mean([r["train_seconds"] or 0.0 for r in runs]) / 60
        eval_min = np.mean([r["eval_seconds"] for r in runs]) / 60
        lines.append(
            f"| {label} | {len(runs)} | {_cell([r['clean'] for r in runs])} | "
            + " | ".join(attack_cells)
            + f" | {_cell([r['a_rob_stage1'] for r in runs])} | "
            f"{_cell([r['a_rob_main'] for r in runs])} | "
            f"{_cell([r['a_rob_main_on_subset'] for r in runs])} | "
            f"**{_cell([r['a_rob_subset'] for r in runs])}** | {train_min:.1f} | "
            f"{eval_min:.1f} |")
    lines += ["", "## Does ADT beat AT_PGD here?", ""]
    if ("pgd_at", seeds[0]) in found:
        lines += [in_short(found, seeds, [k for k in ADT_KEYS if k in methods]), ""]
        for key in ADT_KEYS:
            if key in methods and any((key, s) in found for s in seeds):
                lines.append(f"- {method_spec(key)[1]}: A_rob (all, first {m}) "
                             f"{verdict(found, seeds, key)}; A_rob after stage 2 ({n} inputs) "
                             f"{verdict(found, seeds, key, metric='a_rob_main')}.")
        if "adt_exp_fresh" in methods and any(("adt_exp_fresh", s) in found for s in seeds):
            lines.append(
                f"- Ablation, ADT_EXP with fresh inner gradients against ADT_EXP (the "
                f"reference's accumulated ones): A_rob (all, first {m}) "
                + verdict(found, seeds, "adt_exp_fresh", baseline="adt_exp").replace(
                    "AT_PGD", "ADT_EXP") + f"; A_rob after stage 2 ({n} inputs) "
                + verdict(found, seeds, "adt_exp_fresh", baseline="adt_exp",
                          metric="a_rob_main").replace("AT_PGD", "ADT_EXP") + ".")
        lines += ["", "(\"Beyond the seed spread\": the intervals mean ± spread do not "
                  f"overlap; with {len(seeds)} seeds this is a weak test, and at this scale "
                  "the models are far from the paper's.)"]
        base = [found[("pgd_at", s)] for s in seeds if ("pgd_at", s) in found]
        lines += ["", "Sampling error of the test inputs alone, beside the seed spread: the "
                  "binomial standard error of one run's A_rob at AT_PGD's level is "
                  f"{binomial_se(np.mean([r['a_rob_main'] for r in base]), n):.2f} points on "
                  f"{n} inputs and "
                  f"{binomial_se(np.mean([r['a_rob_subset'] for r in base]), m):.2f} on {m}."]
    restored = sorted(f"{k}-seed{s}" for (k, s), r in found.items() if r.get("restored_from"))
    if restored:
        lines += ["", f"Evaluations restored from an earlier sitting's results JSON "
                  f"(`--restore_from`): {', '.join(restored)}. {restored_check(workdir, found)}"]
        unrecorded = sorted(f"{k}-seed{s}" for (k, s), r in found.items()
                            if r.get("restored_from") and "run_config" not in r)
        if unrecorded:
            lines[-1] += (f" **Not checked against this recipe**: {', '.join(unrecorded)} "
                          "(written before the results recorded each run's training "
                          "configuration; they are taken to be this recipe's runs).")
    lines += ["", "## Attack settings", ""]
    for name in main_attacks + late_attacks + subset_attacks:
        info = any_run["attacks"].get(name)
        if info is None:
            continue
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(info["params"].items()))
        inputs = (f"first {n}, every clean-correct input" if name in main_attacks else
                  f"first {n}, inputs still robust after stage 1" if name in late_attacks
                  else f"first {m}, inputs still robust after stages 1 and 2")
        lines.append(f"- {info['label']} (`{name}`): {params or '-'}; {inputs}.")
    warnings = sorted({f"{method_spec(k)[1]}, seed {s}: {w}" for (k, s), r in found.items()
                       for w in r["warnings"]})
    lines += ["", "## Sanity-check warnings", ""]
    lines += [f"- {w}" for w in warnings] or ["- None."]
    if missing:
        lines += ["", f"Runs not finished yet (not in the table): {', '.join(missing)}."]
    lines += ["", f"Command: `{command}`", ""]
    os.makedirs(output_dir, exist_ok=True)
    stem = os.path.join(output_dir, f"robustness_cifar10_{scale}" + ("_l2" if l2 else ""))
    write_text(stem + ".md", "\n".join(lines))
    write_json(stem + ".json", {f"{k}-seed{s}": r for (k, s), r in found.items()})
    plot(found, seeds, methods, stem + ".png", n, m, scale, recipe.epsilon_text)
    print(f"Written {stem}.md, .json, .png")
    return stem + ".md"


def restored_check(workdir: str, found: dict) -> str:
    """For restored evaluations whose model was trained again in this sitting (as a transfer
    source): whether the new model's clean accuracy on the same test inputs (its training
    report) equals the evaluated one's, i.e. whether the seeded training reproduced it."""
    same, differ = [], []
    for (key, seed), summary in sorted(found.items()):
        report = read_json(os.path.join(run_dir(workdir, key, seed), "report.json"), None)
        if not summary.get("restored_from") or report is None:
            continue
        if report.get("num_examples") != summary["num_examples"]:
            continue
        (same if round(report["clean_accuracy"] * report["num_examples"])
         == round(summary["clean"] * summary["num_examples"]) else differ).append(
            f"{key}-seed{seed}")
    text = []
    if same:
        text.append(f"Trained again here as transfer sources, with the clean accuracy of the "
                    f"evaluated model on the same inputs: {', '.join(same)}.")
    if differ:
        text.append(f"**Trained again here with a clean accuracy that differs from the "
                    f"evaluated model's** (the transfer attacks of the other seed used the new "
                    f"model): {', '.join(differ)}.")
    return " ".join(text)


def plot(found: dict, seeds: list[int], methods: list[str], path: str, n: int, m: int,
         scale: str, budget: str = "epsilon 8/255") -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [k for k in methods if any((k, s) in found for s in seeds)]
    metrics = [("clean", f"clean ({n})"), ("pgd20", f"PGD-20 ({n})"),
               ("a_rob_main", f"A_rob after stage 2 ({n})"),
               ("a_rob_subset", f"A_rob, all attacks (first {m})")]
    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(metrics)
    for i, (metric, name) in enumerate(metrics):
        means, spreads = [], []
        for k in keys:
            runs = [found[(k, s)] for s in seeds if (k, s) in found]
            vals = [r["attacks"]["pgd20"]["accuracy"] if metric == "pgd20" else r[metric]
                    for r in runs]
            mean, spread = mean_spread(vals)
            means.append(mean)
            spreads.append(spread)
        pos = np.arange(len(keys)) + (i - (len(metrics) - 1) / 2) * width
        ax.bar(pos, means, width, yerr=spreads, capsize=3, label=name)
    ax.set_xticks(np.arange(len(keys)))
    ax.set_xticklabels([method_spec(k)[1] for k in keys], rotation=15)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"CIFAR-10, {scale} recipe, {budget}: mean over seeds "
                 f"{', '.join(map(str, seeds))}, bars = spread")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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
    if FLAGS.threads:
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
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
