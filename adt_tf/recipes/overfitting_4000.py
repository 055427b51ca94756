"""The first CPU-scale robust-overfitting recipe (`bench.overfitting --recipe=overfitting_4000`,
bench/results/overfitting_cifar10_cpu_4000.md), which did not overfit: a SmallCNN of width 16
with BatchNorm and no dropout on the first 5,000 training images, 1,000 of them held out
(seeded, class-stratified) for PGD-20 validation every epoch, so 4,000 trained on; 40 epochs,
batch 64, SGD lr 0.05 x0.1 from epoch 21, momentum 0.9, coupled weight decay 2e-4, pixels in
[0, 1], epsilon 8/255; the best epoch (highest validation robust accuracy) kept.

    adt-train --config=overfitting_4000 --dataset=npz:../shared/data/cifar10 \\
        --method=pgd_at --workdir=runs/overfitting_4000_pgd_at
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
        data=DataConfig(dataset="cifar10", max_train_examples=5000),
        model=ModelConfig(name="small_cnn",
                          params={"width": 16, "batch_norm": True, "dropout": 0.0}),
        optim=OptimConfig(epochs=40, batch_size=64, lr=0.05, lr_decay_epochs=(21,),
                          momentum=0.9, weight_decay=2e-4, weight_decay_form="coupled"),
        validation=ValidationConfig(examples=1000, every=1, attack="pgd20"),
        report=ReportConfig(eval_examples=500, eval_batch_size=250),
    )
