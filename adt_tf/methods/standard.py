"""Standard (non-adversarial) training."""

from __future__ import annotations

import keras

from adt_tf.methods.base import AdversarialTrainer, FloorPass
from adt_tf.threat import EVERY_NORM


@keras.saving.register_keras_serializable(package="adt_tf")
class StandardTraining(AdversarialTrainer):
    """Plain empirical risk minimisation on clean inputs: min_theta E[L(f(x), y)].

    The baseline "Standard" of the ADT paper (Table 1). It keeps the trainer interface so
    that every method shares one pipeline, evaluation and export.

    Args:
        classifier: a Keras model returning logits.
        epsilon: stored for the evaluation that follows; unused by training.
        seed: unused by training (no randomness of its own); kept for a uniform interface.

    Mathematical details:
        Each step minimises the batch mean of L(f(x), y) (the compiled loss, cross-entropy
        on logits) plus the classifier's regularisation losses; nothing is perturbed.

    Reference:
        Dong, Deng, Pang, Zhu, Su. "Adversarial Distributional Training for Robust Deep
        Learning", NeurIPS 2020, Table 1 ("Standard").

    Example:
        >>> trainer = StandardTraining(build_model("small_cnn", (32, 32, 3), 10))
        >>> trainer.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(
        ...     from_logits=True), metrics=["accuracy"])
    """

    NORMS = EVERY_NORM  # it trains on clean inputs whatever the threat model

    def floor_passes(self):
        return [FloorPass("train", 1, 1)]
