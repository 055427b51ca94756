"""Attacks, one per module; each a function (classifier, x, y, threat, ...) -> x_adv.

Each attack registers itself where it is defined (`adt_tf.attacks.registry.register_attack`),
with its name, the norms it is defined for and whether it is black-box; `ATTACKS` is that
registry, so a new attack is one module plus its import here. Every attack works on batches
of images in [0, 1], stays inside the ball and [0, 1], keeps the input's shape and dtype,
takes a `seed` (int or stateless seed tensor) and runs under `tf.function` (its loops are
`tf.while_loop`s). Its `threat` is a ball of `adt_tf.threat` (`LinfBall`, `L2Ball`) or a
number, the radius of an L-infinity ball; `attacks_for("l2")` lists those that take an L2
ball (the others refuse one with a ValueError).
"""

from adt_tf.attacks.fgsm import fgsm  # noqa: I001  (the import order is the registry's order)
from adt_tf.attacks.pgd import pgd
from adt_tf.attacks.mim import mim
from adt_tf.attacks.cw import cw
from adt_tf.attacks.fea import fea_attack
from adt_tf.attacks.spsa import spsa
from adt_tf.attacks.transfer import transfer
from adt_tf.attacks.exp import exp_attack
from adt_tf.attacks.generator_samples import exp_am, imp_am
from adt_tf.attacks.apgd import apgd, apgd_targeted
from adt_tf.attacks.fab import fab_targeted
from adt_tf.attacks.square import square
from adt_tf.attacks.registry import ATTACKS, attacks_for, get_attack

__all__ = ["ATTACKS", "apgd", "apgd_targeted", "attacks_for", "cw", "exp_am", "exp_attack",
           "fab_targeted", "fea_attack", "fgsm", "get_attack", "imp_am", "mim", "pgd", "spsa",
           "square", "transfer"]
