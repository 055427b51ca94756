"""The benchmarks' recipes, read from the run schema: a training recipe is a config file of
`adt_tf/recipes` (`adt_tf.training.config.load_config_file`), which `adt-train --config=NAME`
trains too; a benchmark recipe adds how the benchmark evaluates it. One (method, seed) of a
recipe is the recipe's config with the method's variant (`bench.kit.variants`), the seed,
the data and the run's folder.

- `Recipe` and `RECIPES`: the robustness recipes (cpu, paper, rice2020), which
  `bench.robustness` and `bench.precision` run; `train_config` / `train` one of their runs.
- `OverfittingRecipe`: the small-data, long-schedule recipe of `bench.overfitting` (and
  `bench.validation_cost`), with its EMA runs; `overfitting_config` one of its runs.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from bench.kit.runs import check_recorded_run, timed_training
from bench.kit.variants import variant

#: The amortised methods' generator width on the CPU recipe (the reference's is 256: one
#: ADT_EXP-AM step of the full-resolution generator costs 217 ms at width 16 and 1,023 ms at
#: width 32 on this machine's SmallCNN batch of 64, against 514 ms for ADT_EXP).
CPU_GENERATOR_WIDTH = 16
#: Methods that take `generator_width` (set from the recipe).
AMORTISED = ("adt_exp_am", "adt_imp_am")


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


def shortened(config, epochs: int | None):
    """`config` trained for `epochs` (the decay epochs beyond it dropped); `config` itself
    when `epochs` is None or 0."""
    from adt_tf.training.config import override

    if not epochs:
        return config
    return override(config, {
        "optim.epochs": epochs,
        "optim.lr_decay_epochs": tuple(e for e in config.optim.lr_decay_epochs if e <= epochs)})


def variant_config(config, key: str, seed: int, data: str, run_dir: str, **changes):
    """`config` with the variant `key`'s method and parameters, the seed, the npz data
    folder and the run's folder, and `changes` (schema paths, as `override` takes them)."""
    from adt_tf.training.config import override

    _, _, method, params = variant(key)
    return override(config, {
        "run.workdir": run_dir, "run.seed": seed, "method.name": method,
        "method.params": dict(params), "data.dataset": f"npz:{data}", **changes})


# ------------------------------------------------------------------- the robustness recipes
@dataclasses.dataclass(frozen=True)
class Recipe:
    """One shared training and evaluation recipe (every method gets the same): the training
    run is a config of the run schema; the rest says how the benchmark evaluates it."""

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


def overridden(recipe: Recipe, flag_values, names: tuple[str, ...]) -> Recipe:
    """`recipe` with the flags `names` (epochs, train_examples, eval_examples,
    subset_examples) that are set, and --seeds; the decay epochs beyond a shorter --epochs
    dropped."""
    from adt_tf.training.config import override

    changes = {k: getattr(flag_values, k) for k in names if getattr(flag_values, k)}
    config = shortened(recipe.config, changes.get("epochs"))
    if changes.get("train_examples"):
        config = override(config, {"data.max_train_examples": changes["train_examples"]})
    kept = {k: v for k, v in changes.items() if k in ("eval_examples", "subset_examples")}
    if flag_values.seeds:
        kept["seeds"] = tuple(int(s) for s in flag_values.seeds)
    return dataclasses.replace(recipe, config=config, **kept)


def run_dir(workdir: str, key: str, seed: int) -> str:
    return os.path.join(workdir, f"{key}-seed{seed}")


def run_seeds(names, key: str) -> list[int]:
    """The seeds of `key`'s runs among `names` (run folders or results-JSON entries, named
    `<key>-seed<s>` as `run_dir` names them; another method's `<key>_x-seed<s>` is not one),
    sorted."""
    found = (re.fullmatch(re.escape(key) + r"-seed(\d+)", name) for name in names)
    return sorted(int(match.group(1)) for match in found if match)


def classifier_path(workdir: str, key: str, seed: int) -> str:
    """The classifier a run is evaluated as: its best epoch's (best.keras) when it held out a
    validation split, else the last (classifier.keras)."""
    from adt_tf.training.workdir import BEST_FILE, CLASSIFIER_FILE

    d = run_dir(workdir, key, seed)
    best = os.path.join(d, BEST_FILE)
    return best if os.path.exists(best) else os.path.join(d, CLASSIFIER_FILE)


def training_finished(workdir: str, key: str, seed: int) -> bool:
    from adt_tf.training.workdir import CLASSIFIER_FILE, REPORT_FILE

    d = run_dir(workdir, key, seed)
    return all(os.path.exists(os.path.join(d, f)) for f in (CLASSIFIER_FILE, REPORT_FILE))


def train_config(recipe: Recipe, key: str, seed: int, data: str, workdir: str,
                 verbose: int = 1, mixed_precision: bool = False):
    """The `RunConfig` of one (method, seed) of the recipe (what its folder must hold): the
    recipe's config with the method, its parameters, the seed, the data and the folder.
    `adt-train --config=<scale> --dataset=npz:<data> --method=... --seed=... --workdir=...`
    describes the same run (and resumes or extends it)."""
    params = dict(variant(key).params, **({"generator_width": recipe.generator_width}
                                          if key in AMORTISED else {}))
    return variant_config(recipe.config, key, seed, data, run_dir(workdir, key, seed), **{
        "run.verbose": verbose, "method.params": params,
        "report.eval_examples": recipe.eval_examples,
        "report.eval_batch_size": recipe.eval_batch_size,
        "compute.mixed_precision": mixed_precision})


def train(recipe: Recipe, key: str, seed: int, data: str, workdir: str, verbose: int,
          mixed_precision: bool = False, benchmark: str = "bench.robustness") -> None:
    """Trains one (method, seed) of the recipe into its run folder (kept if finished, resumed
    if interrupted); `mixed_precision` trains under the device's mixed policy. A folder that
    holds another run (another norm, method, recipe, seed, precision or data) is refused
    (`bench.kit.runs.check_recorded_run`)."""
    label = variant(key).label
    d = run_dir(workdir, key, seed)
    config = train_config(recipe, key, seed, data, workdir, verbose, mixed_precision)
    check_recorded_run(d, config, benchmark)
    if training_finished(workdir, key, seed):
        print(f"[train] {label}, seed {seed}: finished earlier, kept ({d}).")
        return
    print(f"[train] {label}, seed {seed} -> {d}", flush=True)
    report, spent = timed_training(config)
    print(f"[train] {label}, seed {seed}: {spent / 60:.1f} min; clean "
          f"{100 * report['clean_accuracy']:.2f}%, PGD-20 {100 * report['pgd20_accuracy']:.2f}%"
          f" on {report['num_examples']} test inputs", flush=True)


# ------------------------------------------------------------------ the overfitting recipe
@dataclasses.dataclass(frozen=True)
class OverfittingRecipe:
    """The small-data, long-schedule recipe (the same for every method): the training run is
    a recipe file of `adt_tf/recipes` (`overfitting`); EMA settings for the averaged runs
    (with the warm-up, the schema's default whenever EMA is on)."""

    name: str = "overfitting"
    ema_decay: float = 0.999
    ema_seed: int = 0
    epochs: int | None = None  # an override of the recipe's (tests, smoke runs)

    @property
    def config(self):
        from adt_tf.training.config import load_config_file

        return shortened(load_config_file(self.name), self.epochs)

    @property
    def eval_examples(self) -> int:
        return self.config.report.eval_examples

    @property
    def lr_decay_epochs(self) -> tuple[int, ...]:
        return self.config.optim.lr_decay_epochs

    def describe(self) -> str:
        return describe_run(self.config) + "; epsilon 8/255 (L-infinity)"


def run_name(key: str, seed: int, ema: bool) -> str:
    """An overfitting run's folder name."""
    return f"{key}{'-ema' if ema else ''}-seed{seed}"


def overfitting_config(recipe: OverfittingRecipe, key: str, seed: int, ema: bool, data: str,
                       workdir: str):
    """The `RunConfig` of one overfitting run (with EMA when `ema`)."""
    return variant_config(recipe.config, key, seed, data,
                          os.path.join(workdir, run_name(key, seed, ema)), **{
                              "run.verbose": 2,
                              "validation.ema_decay": recipe.ema_decay if ema else None})


__all__ = ["AMORTISED", "CPU_GENERATOR_WIDTH", "RECIPES", "OverfittingRecipe", "Recipe",
           "classifier_path", "describe_run", "overfitting_config", "overridden", "run_dir",
           "run_name", "run_seeds", "shortened", "train", "train_config", "training_finished",
           "variant_config"]
