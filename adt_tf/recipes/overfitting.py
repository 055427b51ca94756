"""The CPU-scale robust-overfitting recipe (`bench.overfitting`): a SmallCNN of width 16
with BatchNorm and no dropout on the first 2,000 training images, 1,000 of them held out
(seeded, class-stratified) for PGD-20 validation every epoch, so 1,000 trained on; 80 epochs,
batch 64, SGD lr 0.05 x0.1 from epoch 41, momentum 0.9, coupled weight decay 2e-4, pixels in
[0, 1], epsilon 8/255; the best epoch (highest validation robust accuracy) kept.

Why this one: the first recipe (4,000 images trained on, 40 epochs: `overfitting_4000`) did
not overfit robustly; a one-seed AT_PGD pilot of this one did (test PGD-20 on 500 inputs:
24.8% at its peak, epoch 24, 18.8% at the end), the small network memorising its 1,000
images after the decay as Rice et al.'s WRN memorises CIFAR-10.

    adt-train --config=overfitting --dataset=npz:../shared/data/cifar10 --method=pgd_at \\
        --workdir=runs/overfitting_pgd_at
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
        data=DataConfig(dataset="cifar10", max_train_examples=2000),
        model=ModelConfig(name="small_cnn",
                          params={"width": 16, "batch_norm": True, "dropout": 0.0}),
        optim=OptimConfig(epochs=80, batch_size=64, lr=0.05, lr_decay_epochs=(41,),
                          momentum=0.9, weight_decay=2e-4, weight_decay_form="coupled"),
        validation=ValidationConfig(examples=1000, every=1, attack="pgd20"),
        report=ReportConfig(eval_examples=500, eval_batch_size=250),
    )
