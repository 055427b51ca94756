"""Recipes: config files of the run schema (`adt_tf.training.config.RunConfig`).

Each module's `get_config()` returns a complete `RunConfig`; `adt-train --config=NAME` (or
`--config=path/to/file.py` for a copy of one) starts from it, and flags given beside it
override single settings. Copy a file to make a recipe of your own.

- `paper`: the ADT paper's CIFAR-10 recipe (WRN-28-10, 76 epochs, lr x0.1 from epoch 75).
- `rice2020`: the paper's Table 6 recipe (Rice, Wong, Kolter 2020: WRN-34-10, 200 epochs,
  robust validation on 1,000 held-out images, the best epoch kept).
- `cpu`: the CPU-scale recipe of the robustness benchmark (SmallCNN, 10,000 images, 6 epochs).
- `overfitting`: the CPU-scale robust-overfitting recipe (`bench.overfitting`: 1,000 images
  trained on, 80 epochs); `overfitting_4000`: its first version (4,000 images, 40 epochs),
  which did not overfit.
"""
