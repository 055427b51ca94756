"""`adt_tf.analysis.runner` and adt-analyze: bad input, every output, several models and a lambda
table."""

import json
import os

import keras
import numpy as np
import pytest
from matplotlib.image import imread

from adt_tf.analysis import (
    AnalysisConfig,
    average_pairwise_distance,
    curvature_analysis,
    diversity_analysis,
    load_classifier,
    loss_grid,
    resolve_model_path,
    run_analyses,
)
from tests.adt_tf.analysis.helpers import EPS
from tests.helpers import make_tiny_images, run_command, tiny_classifier


def test_bad_input_is_a_clear_value_error(tmp_path):
    model = tiny_classifier()
    x, y = make_tiny_images(2, 16)
    with pytest.raises(ValueError, match="number of inputs N must be an integer >= 1, got 0"):
        diversity_analysis(model, x[:0], y[:0], EPS, verbose=False)
    with pytest.raises(ValueError, match="number of inputs N .* got 0"):
        curvature_analysis(model, x[:0], y[:0], verbose=False)
    with pytest.raises(ValueError, match="num_samples must be an integer >= 2, got 1"):
        diversity_analysis(model, x, y, EPS, num_samples=1, verbose=False)
    with pytest.raises(ValueError, match=r"n must be an integer >= 2, got 1"):
        average_pairwise_distance(np.zeros((3, 1, 4)))
    missing = str(tmp_path / "nowhere.keras")
    with pytest.raises(ValueError, match="nowhere.keras.*does not exist"):
        load_classifier(missing)
    with pytest.raises(ValueError, match="folder without classifier.keras or saved_model.pb"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(ValueError, match="num_examples must be an integer >= 1, got 0"):
        AnalysisConfig(models=[missing], num_examples=0).validate()
    with pytest.raises(ValueError, match="nowhere.keras"):
        run_analyses(AnalysisConfig(models=[missing], out=str(tmp_path / "out")))
    with pytest.raises(ValueError, match="Unknown analysis 'hessian'"):
        AnalysisConfig(models=[missing], analyses=("hessian",)).validate()
    with pytest.raises(ValueError, match="grid_size must be an integer >= 2, got 1"):
        loss_grid(model, x, y, EPS, grid_size=1)


def tiny_npz_dataset(tmp_path):
    """A dataset folder (train.npz, test.npz) of 8 tiny 16x16 images; returns its path."""
    x, y = make_tiny_images(8, 16)
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        np.savez(data / f"{split}.npz", x=(x * 255).round().astype(np.uint8), y=y,
                 **({"num_classes": 10} if split == "train" else {}))
    return data


@pytest.mark.slow
def test_adt_analyze_end_to_end_writes_every_output(tmp_path):
    # A 16x16 dataset folder and a saved tiny classifier in a training workdir whose
    # config.json gives lambda.
    data = tiny_npz_dataset(tmp_path)
    workdir = tmp_path / "run_b"
    workdir.mkdir()
    tiny_classifier().save(workdir / "classifier.keras")
    (workdir / "config.json").write_text(json.dumps({"method_params": {"entropy_weight": 0.01}}))
    out = tmp_path / "out"
    args = [f"--model={workdir}", f"--dataset=npz:{data}", "--num_examples=3", f"--out={out}",
            "--analyses=diversity,landscape,curvature,lambda", "--num_samples=3",
            "--exp_steps=2", "--exp_mc_samples=2", "--pgd_steps=2", "--pca_inputs=2",
            "--grid_size=3", "--landscape_inputs=1", "--power_iterations=2",
            "--lambda_attacks=fgsm", "--batch_size=4", "--verbose=0"]
    proc = run_command("adt-analyze", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "diversity  run_b: average pairwise L2, EXP" in proc.stdout
    assert "curvature  run_b: dominant Hessian eigenvalue" in proc.stdout
    assert "lambda 0.01 (run_b)" in proc.stdout  # read from the run's config.json
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["pictures"]) == {"diversity_run_b", "landscape", "curvature",
                                        "lambda_study"}
    for pic in summary["pictures"].values():
        assert imread(pic["path"]).shape[:2] == (pic["height"], pic["width"])
    diversity = json.loads((out / "diversity.json").read_text())
    assert len(diversity["run_b"]["exp_distance"]) == 3
    curvature = json.loads((out / "curvature.json").read_text())
    assert len(curvature["run_b"]["eigenvalues"]) == 3
    landscape = json.loads((out / "landscape.json").read_text())
    assert np.array(landscape["run_b"]["losses"]).shape == (1, 3, 3)
    lam = json.loads((out / "lambda_study.json").read_text())
    assert [p["lambda"] for p in lam["points"]] == [0.01]
    assert set(lam["points"][0]["robust_accuracy"]) == {"fgsm"}

    bad = run_command("adt-analyze", "--model=no/such.keras", f"--out={out}")
    assert bad.returncode == 2 and "'no/such.keras' does not exist" in bad.stderr


@pytest.mark.slow
def test_several_models_side_by_side_and_a_lambda_table(tmp_path):
    # In-process: a .keras file and a workdir analysed together, lambdas given explicitly,
    # then the lambda study from a trial table without any model.
    data = tiny_npz_dataset(tmp_path)
    tiny_classifier().save(tmp_path / "a.keras")
    (tmp_path / "b").mkdir()
    keras.utils.set_random_seed(1)
    tiny_classifier().save(tmp_path / "b" / "classifier.keras")
    models = [str(tmp_path / "a.keras"), str(tmp_path / "b")]
    summary = run_analyses(AnalysisConfig(
        models=models, dataset=f"npz:{data}", num_examples=2, out=str(tmp_path / "out"),
        analyses=("landscape", "curvature"), grid_size=3, power_iterations=2, verbose=0))
    assert set(summary["curvature"]) == {"a", "b"}
    pic = summary["pictures"]["landscape"]
    assert imread(pic["path"]).shape[:2] == (pic["height"], pic["width"])
    assert pic["width"] == 2 * 300  # one column per model
    tiny_classifier(input_shape=(20, 20, 3)).save(tmp_path / "big.keras")
    with pytest.raises(ValueError, match=r"takes inputs of shape \(20, 20, 3\)"):
        run_analyses(AnalysisConfig(models=[str(tmp_path / "big.keras")],
                                    dataset=f"npz:{data}", out=str(tmp_path / "out3")))
    with pytest.raises(ValueError, match="No lambda known for model"):
        AnalysisConfig(models=models, analyses=("lambda",)).validate()
    with pytest.raises(ValueError, match="Got 1 lambdas for 2 models"):
        AnalysisConfig(models=models, analyses=("lambda",), lambdas=[0.0]).validate()
    table = tmp_path / "trials.json"
    table.write_text(json.dumps([{"lambda": 0.0, "clean_accuracy": 0.9, "pgd_accuracy": 0.4,
                                  "entropy": -3.0},
                                 {"lambda": 0.1, "clean_accuracy": 0.85, "pgd_accuracy": 0.5,
                                  "entropy": -2.5}]))
    summary = run_analyses(AnalysisConfig(analyses=("lambda",), lambda_table=str(table),
                                          out=str(tmp_path / "out2"), verbose=0))
    assert [p["lambda"] for p in summary["lambda"]["points"]] == [0.0, 0.1]
    assert os.path.getsize(summary["pictures"]["lambda_study"]["path"]) > 1000


def test_a_model_with_fewer_outputs_than_the_datas_classes_is_named(tmp_path):
    """Labels beyond the model's logits: a clear error naming the model (it was a traceback
    in the curvature and diversity analyses)."""
    path = str(tmp_path / "two.keras")
    tiny_classifier((32, 32, 3), num_classes=2).save(path)
    with pytest.raises(ValueError, match="returns 2 logits, but cifar10_sample has labels up"):
        run_analyses(AnalysisConfig(models=[path], dataset="cifar10_sample", num_examples=20,
                                    analyses=("curvature",), out=str(tmp_path / "out"),
                                    verbose=0))
