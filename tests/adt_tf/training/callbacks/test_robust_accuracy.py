"""`adt_tf.training.callbacks.robust_accuracy`: robust validation after an epoch."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from adt_tf.training.callbacks import RobustAccuracyCallback
from adt_tf.training.config import RunConfig
from adt_tf.training.run import run_training
from tests.helpers import trained_tiny_classifier


def history(workdir):
    with open(os.path.join(workdir, "history.csv")) as f:
        return list(csv.DictReader(f))


def test_a_run_shorter_than_validation_every_is_scored_at_its_last_epoch(tmp_path):
    """--validation_every=5 with 2 epochs held images out and never scored them (no
    best.keras, and --checkpoint=best then said the run had no validation split)."""
    report = run_training(RunConfig.from_flags(
        workdir=str(tmp_path / "w"), epochs=2, validation_examples=32, validation_every=5,
        method="standard", max_train_examples=96, batch_size=32, eval_examples=16, verbose=0,
        model_params={"width": 4, "dense_units": 16, "dropout": 0.0}))
    assert report["best"]["epoch"] == 2
    with open(tmp_path / "w" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["val_robust_accuracy"] in ("nan", "NA", "")
    assert float(rows[1]["val_robust_accuracy"]) >= 0


def test_robust_accuracy_callback_sets_the_objective():
    # A trained classifier: an untrained one can be constant (every ReLU dead), and then no
    # attack changes a prediction.
    classifier, x, y = trained_tiny_classifier()
    x, y = x[:32], y[:32]
    logs = {}
    weak = RobustAccuracyCallback(x, y, 1e-4, steps=2)
    weak.set_model(classifier)
    weak.on_epoch_end(0, logs)
    clean = float(np.mean(np.argmax(classifier.predict(x, verbose=0), -1) == y))
    assert logs["val_clean_accuracy"] == pytest.approx(clean)
    assert 0 <= logs["val_robust_accuracy"] <= logs["val_clean_accuracy"]
    strong = RobustAccuracyCallback(x, y, 1.0, steps=3)
    strong.set_model(classifier)
    strong_logs = {}
    strong.on_epoch_end(0, strong_logs)
    assert strong_logs["val_robust_accuracy"] < max(clean, 1e-9)  # eps = 1: PGD wins
