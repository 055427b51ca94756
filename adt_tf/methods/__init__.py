"""Training methods, one per module, each a keras.Model with its own train_step.

`METHODS` (an `adt_tf.core.registry.Registry`) maps the command-line name of a method to its
class, with the norms it is defined for as its fact; a new method is one module plus one line
here.
"""

import inspect
from typing import Any

from adt_tf.core.registry import Registry
from adt_tf.methods.adt_exp import ADTExp
from adt_tf.methods.adt_exp_am import ADTExpAM
from adt_tf.methods.adt_imp_am import ADTImpAM
from adt_tf.methods.alp import ALP
from adt_tf.methods.amortized_base import AmortizedAdversarialTrainer
from adt_tf.methods.awp import AWPAT, AWPTRADES, AWPADTExp
from adt_tf.methods.base import AdversarialTrainer
from adt_tf.methods.fast_at import FastAT
from adt_tf.methods.feascatter import FeaScatter
from adt_tf.methods.fgsm_at import FGSMAT
from adt_tf.methods.pgd_at import PGDAT
from adt_tf.methods.standard import StandardTraining
from adt_tf.methods.trades import TRADES

METHODS: Registry[type[AdversarialTrainer]] = Registry("method")
for _name, _cls in (("standard", StandardTraining), ("adt_exp", ADTExp),
                    ("adt_exp_am", ADTExpAM), ("adt_imp_am", ADTImpAM), ("pgd_at", PGDAT),
                    ("fgsm_at", FGSMAT), ("fast_at", FastAT), ("alp", ALP), ("trades", TRADES),
                    ("feascatter", FeaScatter), ("awp_at", AWPAT), ("awp_trades", AWPTRADES),
                    ("awp_adt_exp", AWPADTExp)):
    METHODS.add(_name, _cls, norms=_cls.NORMS)


def get_method(name: str) -> type[AdversarialTrainer]:
    """The method class registered under `name` (ValueError listing the known ones)."""
    return METHODS.lookup(name)


#: Constructor arguments every method takes, set by the command's shared flags.
SHARED_ARGUMENTS = ("self", "classifier", "epsilon", "seed", "norm", "kwargs")


def method_arguments(name: str) -> dict[str, Any]:
    """The method's own constructor arguments (beyond `SHARED_ARGUMENTS`), each with its
    default (None for a default that depends on the threat model: `norm_defaults`), in
    signature order: what `adt-train --method_params` accepts for it."""
    params = inspect.signature(get_method(name).__init__).parameters
    return {p: params[p].default for p in params if p not in SHARED_ARGUMENTS}


def check_method_arguments(name: str, input_shape=None, **arguments) -> None:
    """Checks a method's constructor arguments (epsilon, norm, seed and its own) without a
    model or data: the method is built around a throwaway one-layer classifier, so every
    check its constructor makes fails here, with its message, before a run reads any data;
    with `input_shape` (H, W, C), also whether its settings fit such inputs
    (`AdversarialTrainer.check_input_shape`)."""
    import keras

    inputs = keras.Input(tuple(input_shape) if input_shape is not None else (4, 4, 1))
    probe = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    trainer = get_method(name)(probe, **arguments)
    if input_shape is not None:
        trainer.check_input_shape(tuple(input_shape))


__all__ = ["ALP", "AWPAT", "AWPTRADES", "FGSMAT", "METHODS", "PGDAT", "TRADES", "ADTExp",
           "ADTExpAM", "ADTImpAM", "AWPADTExp",
           "AdversarialTrainer", "AmortizedAdversarialTrainer", "FastAT", "FeaScatter",
           "SHARED_ARGUMENTS", "StandardTraining", "check_method_arguments", "get_method",
           "method_arguments"]
