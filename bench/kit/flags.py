"""The flags every benchmark that trains runs has, defined once (each benchmark adds its own).

The benchmarks define their flags on first use, not at import: several of them are imported
into one test process, and absl refuses a flag defined twice."""

from __future__ import annotations

from absl import flags

from bench.kit.runs import DEFAULT_DATA, RESULTS_DIR

#: The recipe overrides a benchmark may offer, with their help.
RECIPE_OVERRIDES = {
    "epochs": "Override the recipe's epochs.",
    "train_examples": "Override the recipe's training images.",
    "eval_examples": "Override the recipe's test inputs.",
    "subset_examples": "Override the subset of the per-input attacks.",
}


def define_run_flags(workdir_default: str, outputs: str, overrides: tuple[str, ...] = ("epochs",),
                     verbose: int = 1) -> None:
    """--data, --workdir (its default in words: `workdir_default`), --output_dir (what goes
    there: `outputs`), the recipe `overrides` (names of `RECIPE_OVERRIDES`), --threads,
    --table_only and --verbose (its default `verbose`)."""
    flags.DEFINE_string("data", DEFAULT_DATA, "Folder holding train.npz and test.npz.")
    flags.DEFINE_string("workdir", None, f"Where the runs live (default: {workdir_default}).")
    flags.DEFINE_string("output_dir", RESULTS_DIR, f"Where {outputs} go.")
    for name in overrides:
        flags.DEFINE_integer(name, None, RECIPE_OVERRIDES[name])
    flags.DEFINE_integer("threads", 0, "TensorFlow intra- and inter-op threads (0: default).")
    flags.DEFINE_bool("table_only", False, "Only build the table from the finished runs.")
    flags.DEFINE_integer("verbose", verbose, "0 quiet, 1 progress bars, 2 one line per epoch.")


__all__ = ["RECIPE_OVERRIDES", "define_run_flags"]
