"""The learning-rate and momentum schedules (adt_tf.numerics.schedules): the reference's epoch
steps counted from 1, Fast AT's triangle and its momentum as PyTorch's CyclicLR runs them."""

from __future__ import annotations

import numpy as np
import pytest

from adt_tf.numerics.optimizers import make_optimizer
from adt_tf.numerics.schedules import EpochStepDecay, TriangularCyclic, TriangularCyclicMomentum
from tests.helpers import slow_cases

SPE = 782  # steps per epoch of CIFAR-10 at batch 64


def torch_cyclic(peak, total, base_momentum=0.8, max_momentum=0.9):
    """torch.optim.lr_scheduler.CyclicLR(base_lr=0, max_lr=peak, step_size_up=total / 2,
    step_size_down=total / 2, mode='triangular') with its defaults cycle_momentum=True,
    base_momentum=0.8, max_momentum=0.9, written out: the rate and the momentum of each of
    the `total` optimizer steps (`get_lr` at last_epoch = the step's index sets both from
    one scale factor; the scheduler is stepped after every batch)."""
    up = down = total / 2
    rates, momenta = [], []
    for count in range(total):
        cycle = np.floor(1 + count / (up + down))
        x = 1.0 + count / (up + down) - cycle
        scale = x / (up / (up + down)) if x <= up / (up + down) else (x - 1) / (
            up / (up + down) - 1)
        rates.append(0.0 + (peak - 0.0) * scale)
        momenta.append(max_momentum - (max_momentum - base_momentum) * scale)
    return np.array(rates), np.array(momenta)


def torch_cyclic_lr(peak, total):
    return torch_cyclic(peak, total)[0]


@pytest.mark.parametrize(("epoch", "rate"), [(1, 0.1), (74, 0.1), (75, 0.01), (76, 0.01),
                                             (89, 0.01), (90, 0.001), (99, 0.001),
                                             (100, 1e-4)])
def test_step_schedule_counts_epochs_from_one(epoch, rate):
    """x0.1 from epoch 75 on (74 epochs at 0.1, then 0.01), from 90 and from 100: checked at
    the first and the last step of each epoch."""
    schedule = EpochStepDecay(0.1, (75, 90, 100), 0.1, SPE)
    first, last = (epoch - 1) * SPE, epoch * SPE - 1
    np.testing.assert_allclose(float(schedule(first)), rate, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(last)), rate, rtol=1e-6)


def test_76_epochs_are_74_at_the_rate_and_2_decayed():
    opt = make_optimizer(0.1, momentum=0.9, weight_decay=2e-4, decay_epochs=(75, 90, 100),
                         steps_per_epoch=SPE)
    schedule = opt._learning_rate  # the schedule make_optimizer built
    rates = np.array([float(schedule(s)) for s in range(0, 76 * SPE, SPE)])
    assert np.sum(np.isclose(rates, 0.1)) == 74 and np.sum(np.isclose(rates, 0.01)) == 2


@pytest.mark.parametrize("total", slow_cases([10, 11, 15 * 391], {15 * 391}))
def test_cyclic_schedule_is_fast_ats_cyclic_lr(total):
    schedule = TriangularCyclic(0.2, total)
    ours = np.array([float(schedule(s)) for s in range(total)])
    np.testing.assert_allclose(ours, torch_cyclic_lr(0.2, total), rtol=1e-5, atol=1e-7)
    assert ours[0] == 0.0 and 0.2 * (1 - 2 / total) <= ours.max() <= 0.2 + 1e-7


@pytest.mark.parametrize("total", [10, 11, 15 * 391])
def test_cyclic_momentum_is_cyclic_lrs_default(total):
    """0.9 where the rate is 0, 0.8 at its peak, from the same scale factor as the rate."""
    momentum = TriangularCyclicMomentum(0.9, 0.8, total)
    ours = np.array([float(momentum(s)) for s in range(total)])
    np.testing.assert_allclose(ours, torch_cyclic(0.2, total)[1], rtol=1e-6)
    assert ours[0] == pytest.approx(0.9) and ours.min() <= 0.8 + 0.1 * 2 / total + 1e-6
