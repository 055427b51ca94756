"""Registries: the one way a name on a command line becomes a method, an attack or a model.

A `Registry` maps names to entries of one kind and keeps, beside each entry, the facts it was
registered with (an attack's norms and whether it reads gradients, say), so that nothing
keeps a parallel list of names. Looking up an unknown name is one error message for every
kind: `Unknown attack 'deepfool'; known: apgd, apgd_t, ...`.

Example:
    >>> SHAPES = Registry("shape")
    >>> @SHAPES.register("square", corners=4)
    ... def square(side):
    ...     return side * side
    >>> SHAPES.lookup("square")(3), SHAPES.facts("square")["corners"]
    (9, 4)
    >>> sorted(SHAPES), "circle" in SHAPES
    (['square'], False)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from adt_tf.core import checks

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Names -> entries of one kind, each with the facts it was registered with.

    A read-only `Mapping` for its users (`registry[name]`, `name in registry`, iteration in
    registration order); entries are added with `add` or the `register` decorator.

    Args:
        kind: what the entries are ("method", "attack", "model"), for error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._facts: dict[str, Mapping[str, Any]] = {}

    def add(self, name: str, entry: T, **facts: Any) -> T:
        """Registers `entry` under `name` with its facts; returns the entry."""
        if name in self._entries:
            raise ValueError(f"The {self.kind} {name!r} is registered twice.")
        self._entries[name] = entry
        self._facts[name] = MappingProxyType(dict(facts))
        return entry

    def register(self, name: str, **facts: Any) -> Callable[[T], T]:
        """A decorator form of `add`."""
        def decorate(entry: T) -> T:
            return self.add(name, entry, **facts)
        return decorate

    def lookup(self, name: str) -> T:
        """The entry registered under `name`; a ValueError listing the known names if none
        is (what a command line reports as a bad flag value)."""
        return self._entries[checks.check_choice(name, self.kind, self._entries)]

    def facts(self, name: str) -> Mapping[str, Any]:
        """The facts `name` was registered with (read-only)."""
        self.lookup(name)
        return self._facts[name]

    def names(self, where: Callable[[Mapping[str, Any]], bool] | None = None) -> tuple[str, ...]:
        """The registered names, in registration order; with `where`, those whose facts it
        accepts (e.g. `where=lambda f: "l2" in f["norms"]`)."""
        return tuple(n for n in self._entries if where is None or where(self._facts[n]))

    def __getitem__(self, name: str) -> T:
        try:
            return self.lookup(name)
        except ValueError as error:
            raise KeyError(str(error)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


__all__ = ["Registry"]
