"""What a search may pick: the lambda values (`SearchSpace`), how each constructor argument is
searched (`KNOBS`), which arguments each method searches (`METHOD_KNOBS`), and the
validation split held out of the training set."""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import keras_tuner as kt
import numpy as np

from adt_tf.core import checks
from adt_tf.methods import get_method

PAPER_LAMBDAS = (0.0, 0.001, 0.01, 0.1, 1.0)  # Fig. 5 of the paper


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The values of lambda (`entropy_weight`) a search may pick.

    The default is the paper's grid {0, 0.001, 0.01, 0.1, 1.0}: log-spaced from `lambda_min`
    to `lambda_max` with `points_per_decade` values per factor of 10, plus 0. A Choice over
    these ordered values serves every tuner: grid search enumerates them, random search draws
    one per decade as often as 0, and Bayesian optimisation models them by their rank, that
    is on a log scale.

    Args:
        lambda_min, lambda_max: the smallest and largest positive lambda (0 < min <= max).
        points_per_decade: values per factor of 10 (1 gives 0.001, 0.01, ...).
        include_zero: add lambda = 0 (no entropy term) as a choice.
        values: an explicit list of lambdas (each >= 0), used instead of the range.
    """

    lambda_min: float = 1e-3
    lambda_max: float = 1.0
    points_per_decade: int = 1
    include_zero: bool = True
    values: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.values is not None:
            if len(self.values) == 0:
                raise ValueError("values must list at least one lambda, got an empty list.")
            for v in self.values:
                checks.check_non_negative(v, "lambda values")
            return
        low = checks.check_positive(self.lambda_min, "lambda_min")
        high = checks.check_positive(self.lambda_max, "lambda_max")
        if high < low:
            raise ValueError(f"lambda_max must be >= lambda_min = {low!r}, got {high!r}.")
        checks.check_positive_int(self.points_per_decade, "points_per_decade")

    def lambdas(self) -> tuple[float, ...]:
        """The sorted distinct lambdas to choose from."""
        if self.values is not None:
            return tuple(sorted({float(v) for v in self.values}))
        low, high = math.log10(self.lambda_min), math.log10(self.lambda_max)
        n = max(1, round((high - low) * self.points_per_decade)) + 1 if high > low else 1
        grid = {float(f"{10 ** e:.3g}") for e in np.linspace(low, high, n)}
        return tuple(sorted(grid | ({0.0} if self.include_zero else set())))


# How each constructor argument is searched: name -> function(hp, space) -> value.
# Discrete ordered choices around the reference defaults: every tuner (grid included) can
# use them, and the table of trials stays readable.
KNOBS: dict[str, Callable[[kt.HyperParameters, SearchSpace], Any]] = {
    "entropy_weight": lambda hp, s: hp.Choice("entropy_weight", list(s.lambdas())),
    "trades_beta": lambda hp, s: hp.Choice("trades_beta", [1.0, 3.0, 6.0, 9.0], default=6.0),
    "alp_weight": lambda hp, s: hp.Choice("alp_weight", [0.1, 0.3, 0.5, 1.0], default=0.5),
    "adv_weight": lambda hp, s: hp.Choice("adv_weight", [0.1, 0.3, 0.5, 0.7], default=0.3),
    "inner_lr": lambda hp, s: hp.Choice("inner_lr", [0.03, 0.1, 0.3, 1.0], default=0.3),
    "inner_steps": lambda hp, s: hp.Choice("inner_steps", [1, 3, 5, 7, 10], default=7),
    "mc_samples": lambda hp, s: hp.Choice("mc_samples", [1, 2, 5, 10], default=5),
    "attack_steps": lambda hp, s: hp.Choice("attack_steps", [3, 5, 7, 10], default=10),
    "generator_lr": lambda hp, s: hp.Choice("generator_lr", [5e-5, 2e-4, 1e-3], default=2e-4),
    "encoder_lr": lambda hp, s: hp.Choice("encoder_lr", [5e-5, 2e-4, 1e-3], default=2e-4),
    "tau": lambda hp, s: hp.Choice("tau", [0.0, 0.5, 0.9, 1.5], default=0.9),
}

# What each method searches: (always, on request). Arguments a method's constructor lacks
# (e.g. trades_beta of an adt_exp without the TRADES loss) are left out; names of methods
# not registered on this branch are ignored.
METHOD_KNOBS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "standard": ((), ()),
    "adt_exp": (("entropy_weight",), ("inner_lr", "inner_steps", "mc_samples", "trades_beta")),
    "adt_exp_am": (("entropy_weight",), ("generator_lr",)),
    "adt_imp_am": (("entropy_weight",), ("generator_lr", "encoder_lr", "tau")),
    "pgd_at": ((), ("attack_steps",)),
    "trades": (("trades_beta",), ("attack_steps",)),
    "alp": (("alp_weight",), ("attack_steps",)),
    "fgsm_at": (("adv_weight",), ()),
}


def _constructor_args(method: str) -> set[str]:
    return set(inspect.signature(get_method(method).__init__).parameters)


def searchable_knobs(method: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(primary, optional) knobs of a registered method that its constructor accepts."""
    args = _constructor_args(method)  # ValueError for an unknown method
    default = (("entropy_weight",) if "entropy_weight" in args else (), ())
    primary, optional = METHOD_KNOBS.get(method, default)
    return (tuple(k for k in primary if k in args), tuple(k for k in optional if k in args))


def knobs_to_search(method: str, tune: Sequence[str] = ()) -> tuple[str, ...]:
    """The knobs a search over `method` uses: its primary ones plus those asked for."""
    primary, optional = searchable_knobs(method)
    for name in tune:
        if name not in optional and name not in primary:
            raise ValueError(f"Cannot tune {name!r} for method {method!r}; it can tune: "
                             f"{', '.join(primary + optional) or 'nothing'}.")
    return primary + tuple(k for k in optional if k in tune and k not in primary)


__all__ = ["KNOBS", "METHOD_KNOBS", "PAPER_LAMBDAS", "SearchSpace", "knobs_to_search",
           "searchable_knobs"]
