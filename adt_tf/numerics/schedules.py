"""The learning-rate and momentum schedules of the classifier's optimiser, as the reference
code runs them (`adt_tf.numerics.optimizers.make_optimizer` builds them).

- `EpochStepDecay`: the reference's schedule counts epochs from 1 and multiplies the rate by
  0.1 from epoch 75 on (and again from 90 and from 100), so a 76-epoch run has 74 epochs at
  0.1 and 2 at 0.01.
- `TriangularCyclic` and `TriangularCyclicMomentum`: Fast AT's cyclic schedule
  (locuslab/fast_adversarial `CIFAR10/train_fgsm.py`) is PyTorch's `CyclicLR` with its
  defaults, which cycle the momentum too, inversely to the rate (`cycle_momentum=True`,
  `base_momentum=0.8`, `max_momentum=0.9`): 0.9 at the rate 0 and 0.8 at the peak.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from adt_tf.core import checks

#: The learning-rate schedules: the reference's epoch steps, or Fast AT's triangle.
LR_SCHEDULES = ("step", "cyclic")


@keras.saving.register_keras_serializable(package="adt_tf")
class EpochStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """The reference's step schedule: epochs counted from 1, the rate times `factor` from each
    decay epoch on.

    Args:
        initial_learning_rate: the rate of epoch 1.
        decay_epochs: epochs (counted from 1) from which the rate is multiplied by `factor`
            once more (75, 90, 100 in the reference).
        factor: the multiplier (0.1).
        steps_per_epoch: optimizer steps in one epoch.

    Mathematical details:
        With the optimizer's step counter s (0 at the first step), the epoch is
        e = floor(s / steps_per_epoch) + 1 and lr(s) = lr0 * factor^#{d in decay_epochs: e >= d}.
        With decay_epochs = (75,) and 76 epochs: 74 epochs at lr0, 2 at 0.1 lr0.

    Example:
        >>> schedule = EpochStepDecay(0.1, (75, 90, 100), 0.1, steps_per_epoch=782)
        >>> round(float(schedule(74 * 782 - 1)), 6), round(float(schedule(74 * 782)), 6)
        (0.1, 0.01)
    """

    def __init__(self, initial_learning_rate: float, decay_epochs: Sequence[int],
                 factor: float, steps_per_epoch: int):
        self.initial_learning_rate = checks.check_positive(initial_learning_rate, "lr")
        self.decay_epochs = tuple(sorted(checks.check_positive_int(e, "lr_decay_epochs")
                                         for e in decay_epochs))
        self.factor = checks.check_positive(factor, "lr_decay_factor")
        self.steps_per_epoch = checks.check_positive_int(steps_per_epoch, "steps_per_epoch")

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        epoch = step // self.steps_per_epoch + 1
        decays = tf.zeros([], tf.float32)
        for boundary in self.decay_epochs:
            decays += tf.cast(epoch >= boundary, tf.float32)
        return self.initial_learning_rate * tf.pow(tf.constant(self.factor, tf.float32), decays)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_epochs": list(self.decay_epochs), "factor": self.factor,
                "steps_per_epoch": self.steps_per_epoch}


@keras.saving.register_keras_serializable(package="adt_tf")
class TriangularCyclic(keras.optimizers.schedules.LearningRateSchedule):
    """Fast AT's cyclic rate: up linearly from 0 to the peak over the first half of the run,
    back down to 0 over the second, one value per step (PyTorch's `CyclicLR(base_lr=0,
    max_lr=peak, step_size_up=total / 2, step_size_down=total / 2)` stepped after every
    batch, as locuslab/fast_adversarial's `train_fgsm.py`).

    Args:
        peak_learning_rate: the rate at the middle of the run (0.2 in Fast AT).
        total_steps: optimizer steps of the whole run (epochs x steps per epoch).

    Mathematical details:
        lr(s) = peak * (1 - |s / (total / 2) - 1|) for the step counter s = 0, 1, ...: the
        first step is taken at rate 0, as with PyTorch's scheduler.

    Example:
        >>> schedule = TriangularCyclic(0.2, total_steps=15 * 391)
        >>> float(schedule(0)), round(float(schedule(15 * 391 / 2)), 3)
        (0.0, 0.2)
    """

    def __init__(self, peak_learning_rate: float, total_steps: int):
        self.peak_learning_rate = checks.check_positive(peak_learning_rate, "lr")
        self.total_steps = checks.check_positive_int(total_steps, "total_steps")

    def __call__(self, step):
        return self.peak_learning_rate * _triangle(step, self.total_steps)

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate, "total_steps": self.total_steps}


def _triangle(step, total_steps: int) -> tf.Tensor:
    """PyTorch's `CyclicLR` scale factor of one cycle of `total_steps` steps, half up, half
    down: max(1 - |s / (total / 2) - 1|, 0) for the step counter s (0 at both ends)."""
    half = tf.constant(total_steps / 2, tf.float32)
    position = tf.cast(step, tf.float32) / half
    return tf.maximum(1.0 - tf.abs(position - 1.0), 0.0)


#: PyTorch's `CyclicLR` defaults base_momentum=0.8, max_momentum=0.9, as a fraction: the
#: momentum at the cyclic rate's peak is this times the momentum at the rate 0.
CYCLIC_MOMENTUM_LOW = 0.8 / 0.9


@keras.saving.register_keras_serializable(package="adt_tf")
class TriangularCyclicMomentum(keras.optimizers.schedules.LearningRateSchedule):
    """The momentum that PyTorch's `CyclicLR` cycles with Fast AT's rate (its defaults
    `cycle_momentum=True`, `base_momentum=0.8`, `max_momentum=0.9`, which
    locuslab/fast_adversarial's `train_fgsm.py` keeps): `max_momentum` where the rate is 0,
    down to `base_momentum` at the rate's peak, then back, inversely to `TriangularCyclic`.

    Args:
        max_momentum: the momentum at the start and the end of the run (0.9).
        base_momentum: the momentum at the middle, where the rate peaks (0.8).
        total_steps: optimizer steps of the whole run (as `TriangularCyclic`'s).

    Mathematical details:
        m(s) = max_momentum - (max_momentum - base_momentum) * tri(s),
        tri(s) = max(1 - |s / (total / 2) - 1|, 0): PyTorch's `get_lr` computes the rate
        and the momentum of a step from the same scale factor tri(s), so the step at the
        rate peak * tri(s) uses the momentum m(s).

    Example:
        >>> momentum = TriangularCyclicMomentum(0.9, 0.8, total_steps=100)
        >>> round(float(momentum(0)), 6), round(float(momentum(50)), 6)
        (0.9, 0.8)

    Reference:
        Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017;
        `torch.optim.lr_scheduler.CyclicLR`; Wong, Rice, Kolter, ICLR 2020 (`train_fgsm.py`).
    """

    def __init__(self, max_momentum: float, base_momentum: float, total_steps: int):
        self.max_momentum = checks.check_in_range(max_momentum, "max_momentum", 0.0, 1.0)
        self.base_momentum = checks.check_in_range(base_momentum, "base_momentum", 0.0, 1.0)
        self.total_steps = checks.check_positive_int(total_steps, "total_steps")

    def __call__(self, step):
        height = self.max_momentum - self.base_momentum
        return self.max_momentum - height * _triangle(step, self.total_steps)

    def get_config(self):
        return {"max_momentum": self.max_momentum, "base_momentum": self.base_momentum,
                "total_steps": self.total_steps}


__all__ = ["CYCLIC_MOMENTUM_LOW", "LR_SCHEDULES", "EpochStepDecay", "TriangularCyclic",
           "TriangularCyclicMomentum"]
