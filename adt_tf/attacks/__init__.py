"""Attacks, one per module; each a function (classifier, x, y, epsilon, ...) -> x_adv.

`ATTACKS` maps an attack's name to its function; a new attack is one module plus one line.
"""

from adt_tf.attacks.fgsm import fgsm
from adt_tf.attacks.pgd import pgd

ATTACKS = {
    "fgsm": fgsm,
    "pgd": pgd,
}


def get_attack(name: str):
    """The attack function registered under `name` (ValueError listing the known ones)."""
    if name not in ATTACKS:
        raise ValueError(f"Unknown attack {name!r}; known: {', '.join(sorted(ATTACKS))}.")
    return ATTACKS[name]


__all__ = ["ATTACKS", "fgsm", "get_attack", "pgd"]
