"""The ADT paper's CIFAR-10 recipe (Sec. 5, and the authors' code): WRN-28-10, 76 epochs,
batch 64, SGD lr 0.1 with momentum 0.9 and PyTorch's coupled weight decay 2e-4, the rate
x0.1 from epoch 75 (epochs counted from 1), crop-and-flip augmentation, pixels in [0, 1] with
no normalisation layer, epsilon 8/255 (L-infinity). GPU scale.

    adt-train --config=paper --method=adt_exp --workdir=runs/paper_adt_exp
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
        data=DataConfig(dataset="cifar10"),
        model=ModelConfig(name="wrn_28_10"),
        optim=OptimConfig(epochs=76, batch_size=64, lr=0.1, lr_decay_epochs=(75,),
                          momentum=0.9, weight_decay=2e-4, weight_decay_form="coupled"),
        report=ReportConfig(eval_batch_size=200),
    )
