"""adt-export (`export/export_saved_model.py`): a workdir exported, clear errors."""

import json
import os

import keras
import pytest

from adt_tf.data import CIFAR10_CLASSES
from tests.export.helpers import make_workdir
from tests.helpers import run_command


@pytest.mark.parametrize("verified", [
    False, pytest.param(True, marks=pytest.mark.slow)])
def test_cli_exports_a_workdir(normalised_model, tmp_path, verified):
    """End to end; verified: three fresh interpreters (CLI, verification, saved_model_cli)."""
    workdir, config = make_workdir(tmp_path, normalised_model[0])
    base = str(tmp_path / "exports")
    proc = run_command("adt-export", f"--model={workdir}", f"--export_dir={base}", "--version=3",
                       *([] if verified else ["--noverify"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Exported adt_run version 3" in proc.stdout
    assert ("verified in a fresh process" in proc.stdout) == verified
    card = json.load(open(os.path.join(base, "adt_run", "3", "model_card.json")))
    assert card["dataset"] == "cifar10_sample" and card["method"] == "adt_exp"
    assert card["epsilon"] == pytest.approx(8 / 255)
    assert card["clean_accuracy"] == 0.25 and card["robust_accuracy"] == 0.125
    assert card["training_config"] == config
    assert card["class_names"] == list(CIFAR10_CLASSES)
    assert card["warmup_and_verification_images"] == "cifar10_sample test split"
    assert os.path.exists(os.path.join(base, "models.config"))
    if verified:
        check = card["verification"]
        assert check["max_abs_diff"] <= 1e-5 and check["saved_model_cli"] == "ok"
        assert sorted(check["signatures"]) == ["predict", "serving_bytes", "serving_default"]
    else:
        assert "verification" not in card


def test_cli_errors_are_clear(tmp_path):
    proc = run_command("adt-export", f"--model={tmp_path / 'missing'}", f"--export_dir={tmp_path}")
    assert proc.returncode == 2
    assert "adt-export: error:" in proc.stderr and "missing does not exist" in proc.stderr
    proc = run_command("adt-export", f"--export_dir={tmp_path}")
    assert proc.returncode == 2 and "--model is required" in proc.stderr


@pytest.mark.parametrize("build, says", [
    (lambda: keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                               keras.layers.Dense(10, activation="softmax")]),
     "returns probabilities"),
    pytest.param(lambda: keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                                           keras.layers.Dense(1)]), "needs at least two",
                 marks=pytest.mark.slow),
    pytest.param(lambda: keras.Sequential([keras.Input((None, None, 3)),
                                           keras.layers.GlobalAveragePooling2D(),
                                           keras.layers.Dense(10)]),
                 "must have a fixed shape", marks=pytest.mark.slow),
])
def test_a_model_the_export_cannot_serve_right_exits_2(tmp_path, build, says):
    """softmax(softmax(.)) served as probabilities, a one-logit "classifier", an input of
    no fixed shape: refused with one line, nothing exported."""
    path = tmp_path / "model.keras"
    build().save(path)
    proc = run_command("adt-export", f"--model={path}", f"--export_dir={tmp_path / 'exports'}",
                       "--noverify")
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "exports" / "model").exists() or not [
        n for n in os.listdir(tmp_path / "exports" / "model") if n.isdigit()]


@pytest.mark.slow
def test_a_dataset_of_another_shape_is_refused(normalised_model, tmp_path):
    classifier = normalised_model[0]
    path = tmp_path / "model.keras"
    classifier.save(path)
    proc = run_command("adt-export", f"--model={path}", f"--export_dir={tmp_path / 'exports'}",
                       "--noverify",
                       "--dataset=mnist")
    assert proc.returncode == 2, proc.stderr
    assert "--dataset=mnist has images of shape [28, 28, 1]" in proc.stderr
    proc = run_command("adt-export", f"--model={path}", f"--export_dir={tmp_path / 'exports'}",
                       "--serving_root=")
    assert proc.returncode == 2 and "--serving_root must be the absolute path" in proc.stderr
