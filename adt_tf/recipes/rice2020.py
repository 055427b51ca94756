"""The ADT paper's Table 6 recipe: "the same settings/hyperparameters as in [52]" (Rice,
Wong, Kolter 2020; locuslab/robust_overfitting's train_cifar.py): WRN-34-10, 200 epochs,
batch 128, SGD 0.1, momentum 0.9, weight decay 5e-4 (PyTorch's, coupled), the rate x0.1
after 100 and 150 epochs (their per-batch piecewise schedule switches on the last batch of
epoch 100; here from epoch 101), inputs normalised, 1,000 training images held out (theirs a
seeded permutation, here a seeded stratified draw) for PGD-10 validation each epoch, the best
epoch kept (best.keras). GPU scale.

    adt-train --config=rice2020 --method=adt_exp --workdir=runs/rice2020_adt_exp
"""

from adt_tf.training.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    ReportConfig,
    RunConfig,
    ValidationConfig,
)


def get_config() -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset="cifar10", normalize=True),
        model=ModelConfig(name="wrn_34_10"),
        optim=OptimConfig(epochs=200, batch_size=128, lr=0.1, lr_decay_epochs=(101, 151),
                          momentum=0.9, weight_decay=5e-4, weight_decay_form="coupled"),
        validation=ValidationConfig(examples=1000, every=1, attack="pgd10"),
        report=ReportConfig(eval_batch_size=200),
    )
