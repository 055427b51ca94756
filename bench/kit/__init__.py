"""The benchmark kit: what every benchmark under `bench/` shares, so that no benchmark
imports another's.

- `bench.kit.runs`: the repository's paths, a run folder's bookkeeping (the check before a
  finished run is reused, JSON files, timed training, the restore of a committed results
  JSON, collecting the runs' summaries), a command line as a table states it, exit 2 on bad
  input.
- `bench.kit.recipes`: the recipes read from the run schema (`adt_tf/recipes`) and one run
  of a recipe (a method's variant, a seed, the data, its folder).
- `bench.kit.variants`: the training methods the benchmarks compare, by key.
- `bench.kit.stats`: the seeds' mean and spread, table cells, sampling error, the verdicts'
  comparisons.

The staged robustness evaluation is the library's (`adt_tf.evaluation.staged`).
"""
