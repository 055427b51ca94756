"""adt_tf.core.registry and the three registries built on it (methods, attacks, models)."""

from __future__ import annotations

import pytest

from adt_tf.attacks import ATTACKS, attacks_for
from adt_tf.core.registry import Registry
from adt_tf.methods import METHODS
from adt_tf.models import MODELS
from adt_tf.threat import EVERY_NORM


def test_entries_keep_their_facts_and_order():
    shapes = Registry("shape")
    shapes.add("square", 4, corners=4)
    shapes.register("triangle", corners=3)(3)
    assert list(shapes) == ["square", "triangle"] and len(shapes) == 2
    assert shapes["triangle"] == 3 and shapes.lookup("square") == 4
    assert shapes.names(lambda f: f["corners"] > 3) == ("square",)
    with pytest.raises(TypeError):
        shapes.facts("square")["corners"] = 5  # read-only


def test_one_message_for_an_unknown_name_and_no_silent_overwrite():
    shapes = Registry("shape")
    shapes.add("square", 4)
    with pytest.raises(ValueError, match=r"^Unknown shape 'circle'; known: square\.$"):
        shapes.lookup("circle")
    with pytest.raises(KeyError, match="Unknown shape 'circle'"):
        shapes["circle"]  # noqa: B018
    with pytest.raises(ValueError, match="The shape 'square' is registered twice"):
        shapes.add("square", 5)
    for registry, kind in ((METHODS, "method"), (ATTACKS, "attack"), (MODELS, "model")):
        with pytest.raises(ValueError, match=f"^Unknown {kind} 'nope'; known: "):
            registry.lookup("nope")


def test_the_registries_facts_are_those_of_their_entries():
    for name in METHODS:
        assert METHODS.facts(name)["norms"] == METHODS[name].NORMS
    assert set(attacks_for("linf")) == set(ATTACKS)  # every attack has the paper's norm
    l2 = set(attacks_for("l2"))
    assert {"pgd", "apgd", "square", "exp_am"} <= l2 and not {"fea", "spsa"} & l2
    assert all(set(ATTACKS.facts(n)["norms"]) <= set(EVERY_NORM) for n in ATTACKS)
    assert {n for n in ATTACKS if ATTACKS.facts(n)["black_box"]} >= {"spsa", "square",
                                                                     "transfer"}
