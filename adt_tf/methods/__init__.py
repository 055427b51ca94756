"""Training methods, one per module, each a keras.Model with its own train_step.

`METHODS` maps the command-line name of a method to its class; a new method is one module
plus one line here.
"""

from adt_tf.methods.adt_exp import ADTExp
from adt_tf.methods.adt_exp_am import ADTExpAM
from adt_tf.methods.adt_imp_am import ADTImpAM
from adt_tf.methods.alp import ALP
from adt_tf.methods.amortized import AmortizedAdversarialTrainer
from adt_tf.methods.base import AdversarialTrainer
from adt_tf.methods.fast_at import FastAT
from adt_tf.methods.feascatter import FeaScatter
from adt_tf.methods.fgsm_at import FGSMAT
from adt_tf.methods.pgd_at import PGDAT
from adt_tf.methods.standard import StandardTraining
from adt_tf.methods.trades import TRADES

METHODS: dict[str, type[AdversarialTrainer]] = {
    "standard": StandardTraining,
    "adt_exp": ADTExp,
    "adt_exp_am": ADTExpAM,
    "adt_imp_am": ADTImpAM,
    "pgd_at": PGDAT,
    "fgsm_at": FGSMAT,
    "fast_at": FastAT,
    "alp": ALP,
    "trades": TRADES,
    "feascatter": FeaScatter,
}


def get_method(name: str) -> type[AdversarialTrainer]:
    """The method class registered under `name` (ValueError listing the known ones)."""
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; known: {', '.join(sorted(METHODS))}.")
    return METHODS[name]


def check_method_arguments(name: str, **arguments) -> None:
    """Checks a method's constructor arguments (epsilon, norm, seed and its own) without a
    model or data: the method is built around a throwaway 4x4 classifier, so every check its
    constructor makes fails here, with its message, before a run reads any data."""
    import keras

    inputs = keras.Input((4, 4, 1))
    probe = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    get_method(name)(probe, **arguments)


__all__ = ["ALP", "FGSMAT", "METHODS", "PGDAT", "TRADES", "ADTExp", "ADTExpAM", "ADTImpAM",
           "AdversarialTrainer", "AmortizedAdversarialTrainer", "FastAT", "FeaScatter",
           "StandardTraining", "check_method_arguments", "get_method"]
