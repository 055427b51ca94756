"""The training run: its description, its record, and the run itself.

- `config`: `RunConfig`, the one typed, nested schema of a run (imports no TensorFlow, so a
  command can parse its flags before TensorFlow starts), recipe files, values from text.
- `record`: `resolve` (the config made fully explicit against the dataset and the
  registries, once), the record written to `<workdir>/config.json` and read back by every
  command, and the one "same run?" comparison.
- `run`: `run_training` (what `adt-train` runs) and the final report.

This package's `__init__` imports nothing: `adt_tf.training.config` stays importable without
TensorFlow.
"""
