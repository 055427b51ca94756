"""AT_PGD: Madry et al.'s adversarial training on PGD examples."""

from __future__ import annotations

import keras

from adt_tf.attacks.pgd import pgd
from adt_tf.core import checks
from adt_tf.methods.base import AdversarialTrainer, FloorPass
from adt_tf.threat import EVERY_NORM, LinfBall


def resolve_step_size(value, default, name: str = "attack_step_size") -> float:
    """A step size argument: `default` when None, else a checked positive number."""
    return float(default) if value is None else checks.check_positive(value, name)


@keras.saving.register_keras_serializable(package="adt_tf")
class PGDAT(AdversarialTrainer):
    """Adversarial training on projected-gradient-descent examples (AT_PGD).

    Mathematical details:
        min_theta E_(x,y) [ max_{||delta||_inf <= eps} CE(f_theta(x + delta), y) ].

        Inner: PGD from a uniform random point of the ball, `attack_steps` signed-gradient
        steps of `attack_step_size` on the cross-entropy, each projected onto the ball and
        [0, 1] (classifier in inference mode; `adt_tf.attacks.pgd` with
        `best_iterate=False`): training uses the *last* iterate x_T, as Madry et al.'s
        `LinfPGDAttack.perturb` returns it, not the evaluation's per-example best iterate.
        Outer: the compiled loss (cross-entropy) on f(x_adv), classifier in training mode.

    Args:
        classifier: a Keras model returning logits.
        epsilon: L-infinity budget (8/255 for CIFAR).
        attack_steps: PGD iterations (10, Madry et al.'s CIFAR-10 `config.json`: 10 steps of
            2/255 from a uniform random start).
        attack_step_size: PGD step in pixel units (2/255; None means 2/255).
        seed: integer seed of the random starts.

    Example:
        >>> trainer = PGDAT(build_model("wrn_28_10", (32, 32, 3), 10), epsilon=8 / 255)
        >>> # 10 steps of 2/255 from a random start: Madry et al.'s config.json
        >>> trainer.compile(  # the reference's SGD: coupled weight decay, x0.1 from epoch 75
        ...     optimizer=make_optimizer(0.1, momentum=0.9, weight_decay=2e-4,
        ...                              decay_epochs=(75,), steps_per_epoch=782),
        ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...     metrics=["accuracy"])
        >>> trainer.fit(train_ds, epochs=76)

    Reference:
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
        ICLR 2018.
    """

    NORMS = EVERY_NORM

    def __init__(self, classifier, epsilon=8 / 255, attack_steps=10, attack_step_size=None,
                 seed=None, **kwargs):
        super().__init__(classifier, epsilon=epsilon, seed=seed, **kwargs)
        self.attack_steps = checks.check_positive_int(attack_steps, "attack_steps")
        self.attack_step_size = resolve_step_size(
            attack_step_size, self.norm_defaults(self.threat)["attack_step_size"])

    @classmethod
    def norm_defaults(cls, threat):
        # Madry et al.'s 2/255 for L-infinity; for L2 epsilon / 4, the 2.5 epsilon / steps
        # of Madry et al.'s L2 runs with 10 steps (and the ADT paper's PGD-20 ratio).
        return {"attack_step_size": 2 / 255 if threat.norm == LinfBall.norm
                else threat.epsilon / 4}

    def adversarial_examples(self, x, y):
        """PGD examples of (x, y) against the current classifier (inference mode)."""
        return pgd(self.classifier, x, y, self.threat, steps=self.attack_steps,
                   step_size=self.attack_step_size, random_start=True, seed=self.next_seed(),
                   noise=self.noise_source, best_iterate=False)

    def perturb(self, x, y):
        return self.adversarial_examples(x, y), {}

    def floor_passes(self):
        return [FloorPass("input_gradient", 1, self.attack_steps), FloorPass("train", 1, 1)]

    def get_config(self):
        config = super().get_config()
        config.update({
            "attack_steps": self.attack_steps,
            "attack_step_size": self.attack_step_size,
        })
        return config
