"""Training methods, one per module, each a keras.Model with its own train_step.

`METHODS` maps the command-line name of a method to its class; a new method is one module
plus one line here.
"""

from adt_tf.methods.adt_exp import ADTExp
from adt_tf.methods.adt_exp_am import ADTExpAM
from adt_tf.methods.adt_imp_am import ADTImpAM
from adt_tf.methods.amortized import AmortizedAdversarialTrainer
from adt_tf.methods.base import AdversarialTrainer
from adt_tf.methods.standard import StandardTraining

METHODS: dict[str, type[AdversarialTrainer]] = {
    "standard": StandardTraining,
    "adt_exp": ADTExp,
    "adt_exp_am": ADTExpAM,
    "adt_imp_am": ADTImpAM,
}


def get_method(name: str) -> type[AdversarialTrainer]:
    """The method class registered under `name` (ValueError listing the known ones)."""
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; known: {', '.join(sorted(METHODS))}.")
    return METHODS[name]


__all__ = ["METHODS", "ADTExp", "ADTExpAM", "ADTImpAM", "AdversarialTrainer",
           "AmortizedAdversarialTrainer", "StandardTraining", "get_method"]
