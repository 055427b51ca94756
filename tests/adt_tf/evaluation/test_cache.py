"""`adt_tf.evaluation.cache`: keyed by the weights and the attack code."""


import keras
import numpy as np

from adt_tf.evaluation import evaluate
from tests.adt_tf.evaluation.helpers import EPS, small
from tests.helpers import trained_tiny_classifier

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
