"""Every method: one step under MirroredStrategy on two CPU replicas equals one step on one
device with the same global batch (conftest splits the CPU into two logical devices).

A replica sees half the batch, so anything that forgets to turn its per-replica sums into the
global mean (the loss, the inner objective, the generator's inputs and regulariser, the
optimiser's all-reduce, the weight decay) shows up as a factor of two. The methods' random
draws come from `noise_source`; a deterministic source (the same numbers for every example) makes
the two runs comparable, since the default draws are per replica.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.core.noise import NoiseSource
from adt_tf.methods import METHODS
from adt_tf.numerics.optimizers import make_optimizer
from tests.helpers import ce_loss, make_tiny_images, slow_cases, tiny_classifier


class PatternNoise(NoiseSource):
    """Deterministic draws that depend on the position along the last axis only, so every
    example (on one device or on either replica) gets the same non-degenerate numbers."""

    @staticmethod
    def _wave(shape, frequency, phase):
        shape = tf.convert_to_tensor(shape, tf.int32)
        j = tf.cast(tf.range(shape[-1]), tf.float32)
        return tf.broadcast_to(tf.sin(frequency * j + phase), shape)

    def normal(self, shape, seed, dtype=tf.float32):
        return tf.cast(1.5 * self._wave(shape, 0.7, 0.3), dtype)

    def uniform(self, shape, seed, minval, maxval, dtype=tf.float32):
        unit = 0.5 + 0.5 * self._wave(shape, 1.3, 0.4)
        return tf.cast(minval + (maxval - minval) * unit, dtype)

    def truncated_normal(self, shape, seed, dtype=tf.float32):
        return tf.cast(1.5 * self._wave(shape, 0.9, 0.1), dtype)


#: Small settings per method (a few steps, tiny generators).
SETTINGS = {
    "standard": {},
    "adt_exp": {"inner_steps": 3, "mc_samples": 2},
    "pgd_at": {"attack_steps": 3},
    "fast_at": {},
    "alp": {"attack_steps": 3},
    "trades": {"attack_steps": 3},
    "adt_exp_am": {"generator_width": 4, "generator_blocks": 2},
    "adt_imp_am": {"generator_width": 4, "generator_blocks": 2, "z_dim": 8,
                   "encoder_width": 4},
    # The weight step's direction is the whole batch's (its gradient summed over replicas).
    "awp_at": {"attack_steps": 3},
    "awp_trades": {"attack_steps": 3, "awp_warmup": 0},
    "awp_adt_exp": {"inner_steps": 3, "mc_samples": 2},
}
#: Methods whose inner problem couples the examples of a batch, so that a replica's half-batch
#: is another problem than the whole batch (not a bug: the same holds for any data-parallel
#: implementation of them).
BATCH_COUPLED = {
    "fgsm_at": "replaces the first half of each batch: under 2 replicas the first half of each "
               "replica's half, other examples than one device's first half",
    "feascatter": "its perturbation maximises an optimal-transport distance between the "
                  "batch's clean and perturbed logits, a coupling of the whole (local) batch",
}


def test_every_method_is_covered():
    assert set(SETTINGS) | set(BATCH_COUPLED) == set(METHODS)


def one_step(strategy, name, init, x, y):
    with strategy.scope():
        trainer = METHODS[name](tiny_classifier(dropout=0.0), seed=0, **SETTINGS[name])
        trainer.noise_source = PatternNoise()
        # The classifier's optimiser as adt-train builds it (coupled weight decay).
        trainer.compile(optimizer=make_optimizer(0.1, momentum=0.9, weight_decay=2e-4),
                        loss=ce_loss())
        trainer(x[:1])
        trainer.set_weights(init)
    trainer.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    return trainer.get_weights()


# adt_exp and pgd_at in the fast set (an explicit distribution, an attack); the others slow.
REPLICA_NAMES = slow_cases(sorted(SETTINGS), fast=("adt_exp", "pgd_at"))


@pytest.mark.parametrize("name", REPLICA_NAMES)
def test_mirrored_step_equals_single_device_step(two_device_strategy, name):
    x, y = make_tiny_images(16)
    keras.utils.set_random_seed(1)
    probe = METHODS[name](tiny_classifier(dropout=0.0), seed=0, **SETTINGS[name])
    if hasattr(probe, "generator_optimizer"):
        probe.compile(optimizer="sgd", loss=ce_loss())
    probe(x[:1])
    init = probe.get_weights()
    single = one_step(tf.distribute.get_strategy(), name, init, x, y)
    mirrored = one_step(two_device_strategy, name, init, x, y)
    assert two_device_strategy.num_replicas_in_sync == 2
    assert max(np.abs(a - b).max() for a, b in zip(single, init)) > 1e-4  # the step moved
    for i, (a, b) in enumerate(zip(single, mirrored)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6, err_msg=f"{name}: weight {i}")
