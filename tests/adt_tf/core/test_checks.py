"""`adt_tf.core.checks`: the argument checks and the one parser of NAME=VALUE,... flags."""

from __future__ import annotations

import math

import pytest

from adt_tf.core.checks import check_epsilon, check_positive_int, parse_assignments


def test_assignments_are_typed_as_json_or_left_as_text():
    typed = parse_assignments("a=1, b=true,c=x,d=0.5,e=null", "--attack_params", "fea.n=2")
    assert typed == {"a": 1, "b": True, "c": "x", "d": 0.5, "e": None}
    text = parse_assignments(["a=1", "b=true", "c= x "], "--method_params", as_text=True)
    assert text == {"a": "1", "b": "true", "c": "x"}
    assert parse_assignments("", "--x") == {} and parse_assignments(None, "--x") == {}


def test_a_bare_name_stands_alone_only_when_allowed():
    assert parse_assignments("help", "--method_params", as_text=True,
                             bare=("help",)) == {"help": ""}
    with pytest.raises(ValueError, match=r"--method_params: 'tau' must look like NAME=VALUE\.$"):
        parse_assignments("tau", "--method_params", as_text=True, bare=("help",))
    with pytest.raises(ValueError, match=r"'tau' must look like NAME=VALUE \(e\.g\. fea\.n=2\)"):
        parse_assignments("tau", "--attack_params", "fea.n=2")


def test_a_name_given_twice_is_refused():
    with pytest.raises(ValueError, match="--attack_params: a is given twice"):
        parse_assignments("a=1,a=2", "--attack_params", "fea.n=2")


def test_range_checks_name_the_value():
    assert check_epsilon(8 / 255) == pytest.approx(8 / 255)
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="epsilon"):
            check_epsilon(bad)
    with pytest.raises(ValueError, match="steps"):
        check_positive_int(0, "steps")
