"""Argument checks shared by the library: each raises a ValueError naming the value."""

from __future__ import annotations

import math
from collections.abc import Iterable


def check_epsilon(epsilon: float, name: str = "epsilon") -> float:
    """Checks that a perturbation budget lies in (0, 1] (the [0, 1] pixel scale)."""
    try:
        value = float(epsilon)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1], got {epsilon!r}.") from None
    if not math.isfinite(value) or value <= 0 or value > 1:
        hint = f"; did you mean {value:g}/255?" if value > 1 else "."
        raise ValueError(f"{name} must be in (0, 1], got {epsilon!r}{hint}")
    return value


def check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    """Checks an integer count such as a number of steps or samples."""
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_non_negative(value: float, name: str) -> float:
    """Checks a weight such as the entropy weight lambda."""
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return v


def check_positive(value: float, name: str) -> float:
    """Checks a step size or a learning rate."""
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return v


def check_in_range(value: float, name: str, low: float, high: float) -> float:
    """Checks low <= value <= high (for example Adam's beta coefficients)."""
    v = float(value)
    if not (low <= v <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}.")
    return v


def check_choice(value: str, name: str, choices: Iterable[str]) -> str:
    """Checks that a name is one of the known ones, and lists them if not."""
    known = sorted(choices)
    if value not in known:
        raise ValueError(f"Unknown {name} {value!r}; known: {', '.join(known)}.")
    return value
