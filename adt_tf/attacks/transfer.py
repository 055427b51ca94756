"""Transfer attacks: adversarial examples crafted on a source model, evaluated on the target."""

from __future__ import annotations

import inspect

import tensorflow as tf

from adt_tf.attacks.registry import get_attack, register_attack
from adt_tf.threat import EVERY_NORM, Ball


@register_attack("transfer", title="Transfer", norms=EVERY_NORM, black_box=True)
def transfer(classifier, x, y, threat: Ball, *, source, attack: str = "pgd",
             best_iterate: bool = False, **attack_kwargs) -> tf.Tensor:
    """Crafts x_adv with a registered white-box attack on `source`; `classifier` is not used.

    Args:
        classifier: the target model (unused: the attack sees only the source).
        x: clean inputs in [0, 1]; y: integer labels.
        threat: the budget: a threat model (`adt_tf.threat`,
            e.g. `L2Ball(0.5)`: steps, projection and random start are then its own).
        source: the source logits model (e.g. an independently trained classifier).
        attack: the registry name of the attack run on the source ('pgd', 'mim', ...).
        best_iterate: passed to an attack that takes it (`pgd`, `mim`, `cw`). False (the
            default): the attack's last iterate, as the ADT authors' `evaluate_attacks.py`
            (`_pgd_blackbox`, `_mim_blackbox`, `_cw_blackbox` evaluate the target on the
            last iterate); True: the iterate that best fools the *source* model (a named,
            non-default variant: another attack, not a stronger one, since what fools the
            source best need not transfer best). Attacks without the parameter run as
            they are.
        **attack_kwargs: its settings (e.g. steps=20).

    Mathematical details:
        x_adv = A(f_source, x, y, threat), A's last iterate x_T; robustness is then measured
        on f_target(x_adv). A black-box threat: it reveals gradient masking when it beats
        white-box attacks.

    Example:
        >>> x_adv = transfer(target, x, y, 8 / 255, source=other_model, attack="mim")

    Reference:
        Papernot, McDaniel, Goodfellow. "Transferability in Machine Learning", 2016; the ADT
        paper's transfer setting (Dong et al., NeurIPS 2020, Sec. 5).

    Returns:
        x_adv, same shape and dtype as x.
    """
    if source is None:
        raise ValueError("transfer needs a source model (source=...).")
    if attack == "transfer":
        raise ValueError("transfer cannot wrap itself; pick a white-box attack such as 'pgd'.")
    function = get_attack(attack)
    if "best_iterate" in inspect.signature(function).parameters:
        attack_kwargs["best_iterate"] = bool(best_iterate)
    return function(source, x, y, threat, **attack_kwargs)
