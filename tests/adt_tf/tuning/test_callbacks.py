"""`adt_tf.tuning.callbacks`: the robust-accuracy objective."""


import numpy as np
import pytest

from adt_tf import tuning
from tests.helpers import trained_tiny_classifier


def test_robust_accuracy_callback_sets_the_objective():
    # A trained classifier: an untrained one can be constant (every ReLU dead), and then no
    # attack changes a prediction.
    classifier, x, y = trained_tiny_classifier()
    x, y = x[:32], y[:32]
    logs = {}
    weak = tuning.RobustAccuracyCallback(x, y, 1e-4, steps=2)
    weak.set_model(classifier)
    weak.on_epoch_end(0, logs)
    clean = float(np.mean(np.argmax(classifier.predict(x, verbose=0), -1) == y))
    assert logs["val_clean_accuracy"] == pytest.approx(clean)
    assert 0 <= logs["val_robust_accuracy"] <= logs["val_clean_accuracy"]
    strong = tuning.RobustAccuracyCallback(x, y, 1.0, steps=3)
    strong.set_model(classifier)
    strong_logs = {}
    strong.on_epoch_end(0, strong_logs)
    assert strong_logs["val_robust_accuracy"] < max(clean, 1e-9)  # eps = 1: PGD wins
