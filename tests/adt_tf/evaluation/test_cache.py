"""`adt_tf.evaluation.cache`: keyed by the weights and the attack code."""


import os

import keras
import numpy as np
import pytest

from adt_tf.evaluation import evaluate
from adt_tf.evaluation.cache import load_cached, store
from tests.adt_tf.evaluation.helpers import EPS, small
from tests.helpers import start_python, trained_tiny_classifier

#: The images of the `trained` fixture (conftest.py) these tests attack.
TRAINED_EXAMPLES = 48


def test_cache_is_keyed_by_the_weights_whatever_the_model_is_called(tmp_path):
    """One changed weight reuses nothing, even under the same model_id."""
    model, x, y = trained_tiny_classifier()
    model = keras.models.clone_model(model)
    model.set_weights(trained_tiny_classifier()[0].get_weights())
    x, y = x[:32], y[:32]
    kwargs = dict(threat=EPS, suite="fgsm,pgd20", overrides=small("fgsm,pgd20"),
                  batch_size=32, verbose=0, sanity_checks=False, cache_dir=str(tmp_path),
                  model_id="my-model")
    evaluate(model, x, y, **kwargs)
    assert all(a.cached for a in evaluate(model, x, y, **kwargs).attacks)
    kernel = model.layers[-1].kernel
    kernel.assign(kernel.numpy() + np.eye(*kernel.shape, dtype=np.float32) * 1e-3)
    assert not any(a.cached for a in evaluate(model, x, y, **kwargs).attacks)


def test_code_version_follows_the_attacks_code():
    from adt_tf.attacks import cw, mim, pgd, square
    from adt_tf.evaluation.cache import code_version

    assert code_version(pgd) == code_version(pgd)
    assert code_version(pgd) != code_version(square)
    # MIM and C&W are PGD underneath: their versions cover pgd.py too, and differ from it.
    assert len({code_version(pgd), code_version(mim), code_version(cw)}) == 3


SOURCE = """\"\"\"An attack.\"\"\"
from adt_tf.attacks import base

def step(x, size=0.1):
    \"\"\"One step.\"\"\"
    return base.clip(x + size)
"""


def test_code_digest_ignores_moves_comments_and_docs_not_code():
    from adt_tf.evaluation.cache import code_digest

    moved = SOURCE.replace("from adt_tf.attacks import base",
                           "from adt_tf.core import base  # moved\nimport numpy as np")
    documented = SOURCE.replace("One step.", "One step of the ascent.").replace(
        "    return", "    # the sign step\n\n    return")
    assert code_digest(SOURCE) == code_digest(moved) == code_digest(documented)
    for changed in (SOURCE.replace("0.1", "0.2"), SOURCE.replace("x + size", "x - size"),
                    SOURCE.replace("base.clip", "base.project"),
                    SOURCE + "\nLIMIT = 3\n"):
        assert code_digest(changed) != code_digest(SOURCE)


def test_a_torn_entry_is_recomputed_with_a_warning(tmp_path, capsys):
    path = str(tmp_path / "pgd20-abc.npz")
    mask = np.array([True, False, True])
    store(path, np.array([True, False, False]), mask, 1.5)
    with open(path, "r+b") as f:  # torn: another writer's crash, a full disk
        f.truncate(20)
    assert load_cached(path, mask) is None
    assert "cannot be read" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_storing_into_one_cache_never_share_a_temporary_file(tmp_path):
    """Concurrent stores of the same entry: every store succeeds and the entry reads back
    (one fixed temporary name made 2-3% of them fail and could leave a torn file)."""

    script = ("import sys, numpy as np; from adt_tf.evaluation.cache import store\n"
              "for i in range(150):\n"
              "    store(sys.argv[1], np.ones(1000, bool), np.ones(1000, bool), float(i))\n")
    path = str(tmp_path / "entry.npz")
    procs = [start_python(script, path) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    correct, _ = load_cached(path, np.ones(1000, bool))
    assert correct.all() and not [n for n in os.listdir(tmp_path) if n != "entry.npz"]
