"""The attack registry: every attack registers itself, with its facts, where it is defined.

`register_attack` puts an attack function in `ATTACKS` under its name with what the rest of
the package needs to know of it: the norms it is defined for and whether it is black-box
(never reads a gradient of the attacked model). The function it returns is the attack as
users call it: the budget may be a number (the radius of an L-infinity ball, the paper's
threat model) or a ball of `adt_tf.threat`; a ball of a norm the attack does not have is a
ValueError naming both. The attack's own code receives a ball, always.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from adt_tf.core.registry import Registry
from adt_tf.threat import Ball, LinfBall, as_threat, require_norm

ATTACKS: Registry[Callable] = Registry("attack")


def register_attack(name: str, *, title: str, norms: tuple[str, ...] = (LinfBall.norm,),
                    black_box: bool = False):
    """Registers the decorated attack `(classifier, x, y, threat: Ball, ...) -> x_adv` as
    `name` and returns its public form (a number for `threat` is an L-infinity radius).

    Args:
        name: the registry name (what suites and `--attack_params` use).
        title: how messages name it ("FeaAttack").
        norms: the norms it is defined for.
        black_box: True if it never reads a gradient of the attacked model (score-based or
            transfer attacks).
    """
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def attack(classifier, x, y, threat: float | Ball, *args, **kwargs):
            ball = require_norm(as_threat(threat), norms, title)
            return fn(classifier, x, y, ball, *args, **kwargs)

        return ATTACKS.add(name, attack, title=title, norms=tuple(norms), black_box=black_box)
    return decorate


def attacks_for(norm: str) -> tuple[str, ...]:
    """The registered attacks defined for `norm`."""
    return ATTACKS.names(lambda facts: norm in facts["norms"])


def get_attack(name: str) -> Callable:
    """The attack registered under `name` (ValueError listing the known ones)."""
    return ATTACKS.lookup(name)


__all__ = ["ATTACKS", "attacks_for", "get_attack", "register_attack"]
