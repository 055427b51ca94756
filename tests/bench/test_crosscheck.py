"""A short cross-check against adversarial-robustness-toolbox, in the fast suite (the long one
is bench/crosscheck.py): the same trained classifier and inputs, PGD-20 then APGD-CE chained
AutoAttack's way on both sides."""

import numpy as np
import pytest

pytest.importorskip("art")

from bench.crosscheck import compare, ours, toolbox, toolbox_stages  # noqa: E402
from tests.helpers import trained_tiny_classifier  # noqa: E402

EPS = 8 / 255


def test_our_chain_is_as_strong_as_the_toolboxs():
    model, x, y = trained_tiny_classifier()
    x, y = x[:96], y[:96]
    mine = ours(model, x, y, EPS, suite="pgd20,apgd_ce",
                overrides={"apgd_ce": {"steps": 30}}, batch_size=96)
    stages = toolbox_stages(EPS, apgd_steps=30, apgd_restarts=1, batch_size=96)[:2]
    theirs = toolbox(model, x, y, EPS, stages)
    row = compare("tiny", len(y), mine, theirs)
    assert row["clean"] == row["clean_toolbox"] > 0.3
    # Both sides break something: the chains really ran.
    assert row["ours_worst"] < row["clean"] and row["toolbox_worst"] < row["clean"]
    # Ours may lose at most two of the 96 inputs to the toolbox (its random starts differ).
    assert row["ours_worst"] <= row["toolbox_worst"] + 2 / len(y), row
    assert [s["survivors"] for s in row["ours"]] == sorted(
        (s["survivors"] for s in row["ours"]), reverse=True)
    assert np.isfinite(row["time_ratio"])
