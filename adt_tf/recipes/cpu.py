"""The CPU-scale recipe of the robustness benchmark (`bench.robustness --scale=cpu`): a
SmallCNN of width 16 with BatchNorm and no dropout, the first 10,000 training images, 6
epochs, batch 64, SGD lr 0.05 x0.1 from epoch 5 (mirroring the reference's last two epochs
at 0.1x), momentum 0.9, coupled weight decay 2e-4, pixels in [0, 1] with no normalisation
layer, epsilon 8/255. About 10 to 40 minutes per run on one core of a 2-core CPU.

Why BatchNorm: PGD-AT of the plain SmallCNN (no BatchNorm) at epsilon 8/255 on these 10,000
images stayed at chance (loss 2.303) for every rate and width tried; with BatchNorm it
reached 32-34% clean / 23% PGD-20 after 3 epochs.

    adt-train --config=cpu --dataset=npz:../shared/data/cifar10 --workdir=runs/cpu_adt_exp
"""

from adt_tf.training.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    ReportConfig,
    RunConfig,
)


def get_config() -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset="cifar10", max_train_examples=10000),
        model=ModelConfig(name="small_cnn",
                          params={"width": 16, "batch_norm": True, "dropout": 0.0}),
        optim=OptimConfig(epochs=6, batch_size=64, lr=0.05, lr_decay_epochs=(5,),
                          momentum=0.9, weight_decay=2e-4, weight_decay_form="coupled"),
        report=ReportConfig(eval_examples=500, eval_batch_size=250),
    )
