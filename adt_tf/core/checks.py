"""Argument checks shared by the library: each raises a ValueError naming the value."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from typing import Any


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


def _number(value, name: str, what: str) -> float:
    """float(value), or a ValueError naming `name` when value is no number (a string, None):
    "abc" must not surface as int()'s own message. A ValueError, as the CLIs report."""
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"{name} must be {what}, got {value!r}.")  # noqa: TRY004
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {what}, got {value!r}.") from None


def check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    """Checks an integer count such as a number of steps or samples."""
    what = f"an integer >= {minimum}"
    v = _number(value, name, what)
    if not math.isfinite(v) or int(v) != v or v < minimum:
        raise ValueError(f"{name} must be {what}, got {value!r}.")  # noqa: TRY004
    return int(v)


def check_non_negative(value: float, name: str) -> float:
    """Checks a weight such as the entropy weight lambda."""
    v = _number(value, name, "a finite number >= 0")
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return v


def check_positive(value: float, name: str) -> float:
    """Checks a step size or a learning rate."""
    v = _number(value, name, "a finite number > 0")
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return v


def check_in_range(value: float, name: str, low: float, high: float) -> float:
    """Checks low <= value <= high (for example Adam's beta coefficients)."""
    v = _number(value, name, f"a number in [{low}, {high}]")
    if not (low <= v <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}.")
    return v


def check_choice(value: str, name: str, choices: Iterable[str]) -> str:
    """Checks that a name is one of the known ones, and lists them if not."""
    known = sorted(choices)
    if value not in known:
        raise ValueError(f"Unknown {name} {value!r}; known: {', '.join(known)}.")
    return value


def parse_assignments(items: str | Iterable[str] | None, flag: str, example: str = "", *,
                      as_text: bool = False, bare: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parses "NAME=VALUE,..." (or a list of such items, as absl's list flags give) into
    {NAME: VALUE}: a value read as JSON when it parses (numbers, true/false, null), else as a
    string, or left as text with `as_text` (to be typed later from the signature it belongs
    to). A name of `bare` may stand alone (its value ''). A malformed item or a name given
    twice is a ValueError naming `flag` (and showing `example`, if any)."""
    if not items:
        return {}
    parts = items.split(",") if isinstance(items, str) else list(items)
    out: dict[str, Any] = {}
    for item in (i.strip() for i in parts):
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name = name.strip()
        if name in bare and not sep:
            out[name] = ""
            continue
        if not sep or not name:
            raise ValueError(f"{flag}: {item!r} must look like NAME=VALUE"
                             + (f" (e.g. {example})." if example else "."))
        if name in out:
            raise ValueError(f"{flag}: {name} is given twice.")
        if as_text:
            out[name] = raw.strip()
            continue
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            out[name] = raw.strip()
    return out


#: The spellings a boolean setting accepts, any case (the CLIs' and the config files').
BOOL_SPELLINGS = {"true": True, "false": False, "1": True, "0": False}


def parse_bool(text: str, name: str) -> bool:
    """true/false/1/0 (any case) -> bool; anything else is a ValueError naming `name` and
    the allowed spellings (so 'False' is False and 'yes' is refused)."""
    if isinstance(text, bool):
        return text
    if isinstance(text, int) and text in (0, 1):
        return bool(text)
    key = str(text).strip().lower()
    if key not in BOOL_SPELLINGS:
        raise ValueError(f"{name} must be true, false, 1 or 0, got {text!r}.")
    return BOOL_SPELLINGS[key]


def parse_number(text: str, name: str, kind: type) -> int | float:
    """An int, or a float where a fraction a/b is read too (8/255)."""
    if isinstance(text, bool):
        raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, got "  # noqa: TRY004
                         f"{text!r}.")
    if isinstance(text, (int, float)):
        value = text
    else:
        raw = str(text).strip()
        match = re.fullmatch(r"([^/]+)/([^/]+)", raw)
        try:
            value = (float(match.group(1)) / float(match.group(2)) if match and kind is float
                     else (int(raw) if kind is int else float(raw)))
        except (ValueError, ZeroDivisionError):
            what = "an integer" if kind is int else "a number (a fraction a/b is read too)"
            raise ValueError(f"{name} must be {what}, got {text!r}.") from None
    if kind is int:
        if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
            raise ValueError(f"{name} must be an integer, got {text!r}.")
        return int(value)
    return float(value)


def check_writable_dir(path: str, name: str) -> str:
    """Makes folder `path` (and its parents) or raises a ValueError naming `name` (a flag,
    e.g. "--out") and the reason: a file in the way, no permission, a read-only disk.
    Called before long work starts, so it does not fail at the end."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name}={path} is a file, not a folder.")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise ValueError(f"Cannot create {name}={path}: {err.strerror}.") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"Cannot write into {name}={path}: permission denied.")
    return path
