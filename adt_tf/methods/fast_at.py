"""Fast adversarial training: FGSM from a random start (Wong, Rice, Kolter 2020)."""

from __future__ import annotations

import keras

from adt_tf.attacks.fgsm import fgsm
from adt_tf.core import checks
from adt_tf.methods.base import AdversarialTrainer, FloorPass
from adt_tf.threat import EVERY_NORM


@keras.saving.register_keras_serializable(package="adt_tf")
class FastAT(AdversarialTrainer):
    """"Fast is better than free": adversarial training on FGSM examples from a random start.

    Mathematical details:
        min_theta E_(x,y) CE(f_theta(x_adv), y), with
        x0 = clip(x + U(-eps, eps)^d, 0, 1),
        x_adv = Proj_{B(x, eps)}(x0 + a * sign(grad_x CE(f(x0), y))),  a = 1.25 eps.

        One gradient per step for the perturbation; the random start is what keeps the
        one-step method from the catastrophic overfitting of FGSM training from x. As in the
        authors' `train_fgsm.py`, the FGSM gradient is taken with the classifier in training
        mode (BatchNorm on the batch's statistics; its running statistics move twice per
        step, at x0 and at x_adv); `perturb_mode="inference"` is this package's convention
        for inner maximisations instead (a named, non-default option). Outer: the compiled
        loss on f(x_adv).
        Under `norm="l2"` (beyond the paper) the same algorithm with the L2 ball's own
        operations (`adt_tf.threat.L2Ball`: uniform start in the ball, the step a g / ||g||,
        the exact projection).

    Args:
        classifier: a Keras model returning logits.
        epsilon: the budget, the radius of the ball of `norm` (8/255 L-infinity for CIFAR).
        norm: "linf" (the paper's) or "l2".
        attack_step_size: the FGSM step a (None: 1.25 * epsilon, the paper's 10/255 for
            eps = 8/255).
        perturb_mode: "training" (the authors': the FGSM forward in training mode) or
            "inference" (BatchNorm's running statistics, untouched by the perturbation).
        seed: integer seed of the random starts.

    Example:
        >>> trainer = FastAT(build_model("preact_resnet18", (32, 32, 3), 10), epsilon=8 / 255)

    The published recipe (PreAct ResNet-18, 15 epochs, batch 128, a cyclic learning rate
    0 -> 0.2 -> 0 with the momentum cycled 0.9 -> 0.8 -> 0.9 against it, as PyTorch's
    `CyclicLR` defaults do (`adt_tf.numerics.optimizers.TriangularCyclicMomentum`), weight
    decay 5e-4, normalised inputs) is README's `adt-train` command
    "Fast AT as published"; Fast AT with the ADT recipe is not Fast AT as published.

    Reference:
        Wong, Rice, Kolter, "Fast is Better than Free: Revisiting Adversarial Training",
        ICLR 2020.
    """

    NORMS = EVERY_NORM
    PERTURB_MODES = ("training", "inference")

    def __init__(self, classifier, epsilon=8 / 255, attack_step_size=None,
                 perturb_mode="training", seed=None, **kwargs):
        super().__init__(classifier, epsilon=epsilon, seed=seed, **kwargs)
        self.attack_step_size = (None if attack_step_size is None else
                                 checks.check_positive(attack_step_size, "attack_step_size"))
        self.perturb_mode = checks.check_choice(perturb_mode, "perturb_mode",
                                                    self.PERTURB_MODES)

    @property
    def step_size(self) -> float:
        """The FGSM step in use (1.25 * epsilon unless `attack_step_size` was given)."""
        return 1.25 * self.epsilon if self.attack_step_size is None else self.attack_step_size

    def perturb(self, x, y):
        x_adv = fgsm(self.classifier, x, y, self.threat, step_size=self.step_size,
                     random_start=True, seed=self.next_seed(), noise=self.noise_source,
                     training=self.perturb_mode == "training")
        return x_adv, {}

    def floor_passes(self):
        # one FGSM gradient from the random start, one outer pass
        return [FloorPass("input_gradient", 1, 1), FloorPass("train", 1, 1)]

    def get_config(self):
        config = super().get_config()
        config["attack_step_size"] = self.attack_step_size
        config["perturb_mode"] = self.perturb_mode
        return config
