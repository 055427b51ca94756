"""Attacks, one per module; each a function (classifier, x, y, epsilon, ...) -> x_adv.

`ATTACKS` maps an attack's name to its function; a new attack is one module plus one line.
Every attack works on batches of images in [0, 1], stays inside the ball and [0, 1], keeps
the input's shape and dtype, takes a `seed` (int or stateless seed tensor) and runs under
`tf.function` (its loops are `tf.while_loop`s). Its `epsilon` is an L-infinity radius or a
threat model (`adt_tf.threat.LinfBall`, `L2Ball`); `L2_ATTACKS` lists those that take an L2
ball (the others say so with a ValueError).
"""

from adt_tf.attacks.amortized import exp_am, imp_am
from adt_tf.attacks.apgd import apgd, apgd_targeted
from adt_tf.attacks.cw import cw
from adt_tf.attacks.distributional import exp_attack
from adt_tf.attacks.fab import fab_targeted
from adt_tf.attacks.feature import fea_attack
from adt_tf.attacks.fgsm import fgsm
from adt_tf.attacks.mim import mim
from adt_tf.attacks.pgd import pgd
from adt_tf.attacks.spsa import spsa
from adt_tf.attacks.square import square
from adt_tf.attacks.transfer import transfer

ATTACKS = {
    "fgsm": fgsm,
    "pgd": pgd,
    "mim": mim,
    "cw": cw,
    "fea": fea_attack,
    "spsa": spsa,
    "transfer": transfer,
    "exp": exp_attack,
    "exp_am": exp_am,
    "imp_am": imp_am,
    "apgd": apgd,
    "apgd_t": apgd_targeted,
    "fab_t": fab_targeted,
    "square": square,
}

# Attacks that take an L2 ball (`adt_tf.threat.L2Ball`) as well as an L-infinity one.
L2_ATTACKS = frozenset({"fgsm", "pgd", "mim", "cw", "transfer", "exp", "exp_am", "imp_am",
                        "apgd", "apgd_t", "fab_t", "square"})

# Attacks that never read a gradient of the attacked model (score-based or transfer).
BLACK_BOX = frozenset({"spsa", "square", "transfer"})


def get_attack(name: str):
    """The attack function registered under `name` (ValueError listing the known ones)."""
    if name not in ATTACKS:
        raise ValueError(f"Unknown attack {name!r}; known: {', '.join(sorted(ATTACKS))}.")
    return ATTACKS[name]


__all__ = ["ATTACKS", "BLACK_BOX", "L2_ATTACKS", "apgd", "apgd_targeted", "cw", "exp_am",
           "exp_attack", "fab_targeted", "fea_attack", "fgsm", "get_attack", "imp_am", "mim",
           "pgd", "spsa", "square", "transfer"]
