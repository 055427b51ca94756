import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from matplotlib.image import imread

from adt_tf.analysis import (
    AnalysisConfig,
    LambdaPoint,
    average_pairwise_distance,
    curvature_analysis,
    diversity_analysis,
    dominant_hessian_eigenvalue,
    exp_samples,
    hessian_vector_product,
    load_classifier,
    loss_grid,
    pca_project,
    pgd_samples,
    plot_curvature,
    plot_diversity,
    plot_lambda_study,
    plot_landscapes,
    read_trial_table,
    resolve_model_path,
    run_analyses,
)
from adt_tf.analysis.curvature import CurvatureResult
from adt_tf.losses import per_example_ce
from adt_tf.threat import L2Ball
from tests.helpers import ROOT, make_tiny_images, tiny_classifier

EPS = 8 / 255


def smooth_model(seed=1, dtype="float32"):
    """A tiny conv + dense net with smooth activations: its input Hessian is non-trivial."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4, 4, 1), dtype=dtype)
    h = keras.layers.Conv2D(3, 3, activation="softplus", dtype=dtype)(inputs)
    h = keras.layers.Dense(8, activation="tanh", dtype=dtype)(keras.layers.Flatten()(h))
    return keras.Model(inputs, keras.layers.Dense(3, dtype=dtype)(h))


def explicit_hessian(model, x, y):
    """The 16 x 16 input Hessian of one example's cross-entropy, by nested tapes."""
    x = tf.constant(x[None])
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
                tf.constant([y]), model(x), from_logits=True))
        grad = inner.gradient(loss, x)
    return tf.reshape(outer.jacobian(grad, x), [16, 16]).numpy().astype(np.float64)


# ------------------------------------------------------------------------- diversity
def test_average_pairwise_distance_equals_direct_numpy():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(3, 5, 4, 4, 3)).astype(np.float32)
    expected = []
    for s in samples:
        flat = s.reshape(5, -1).astype(np.float64)
        d = [np.linalg.norm(flat[i] - flat[j]) for i in range(5) for j in range(i + 1, 5)]
        expected.append(np.mean(d))
    np.testing.assert_allclose(average_pairwise_distance(samples), expected, rtol=1e-10)
    # Identical samples are at distance 0 (no NaN from rounding below zero).
    same = np.repeat(samples[:, :1], 4, axis=1) + 0.3
    np.testing.assert_array_equal(average_pairwise_distance(same), 0.0)


def test_pca_equals_numpy_svd_projection():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(12, 6, 6, 2)) * np.linspace(0.1, 3, 72).reshape(6, 6, 2)
    projection, ratio = pca_project(points, 2)
    centred = points.reshape(12, -1) - points.reshape(12, -1).mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    assert projection.shape == (12, 2)
    for c in range(2):  # a principal axis is defined up to its sign
        sign = np.sign(expected[:, c] @ projection[:, c])
        np.testing.assert_allclose(projection[:, c], sign * expected[:, c], atol=1e-8)
    np.testing.assert_allclose(ratio, s[:2] ** 2 / np.sum(s**2), rtol=1e-8)


def test_pgd_and_exp_samples_stay_in_the_ball_and_differ():
    x, y = make_tiny_images(3, 16)
    model = tiny_classifier()
    for fn in (exp_samples, pgd_samples):
        kwargs = {"mc_samples": 2} if fn is exp_samples else {}
        samples = fn(model, x, y, EPS, 4, steps=2, seed=3, **kwargs).numpy()
        assert samples.shape == (4, 3, 16, 16, 3)
        assert np.abs(samples - x[None]).max() <= EPS + 1e-6
        assert samples.min() >= 0 and samples.max() <= 1
        assert np.all(average_pairwise_distance(np.swapaxes(samples, 0, 1)) > 0), fn.__name__


def test_l2_samples_stay_in_the_l2_ball_and_the_analysis_takes_the_norm():
    x, y = make_tiny_images(3, 16)
    model = tiny_classifier()
    for fn in (exp_samples, pgd_samples):
        kwargs = {"mc_samples": 2} if fn is exp_samples else {}
        samples = fn(model, x, y, L2Ball(0.5), 4, steps=2, seed=3, **kwargs).numpy()
        norms = np.linalg.norm((samples - x[None]).reshape(12, -1), axis=1)
        assert norms.max() <= 0.5 * (1 + 1e-5) and samples.min() >= 0 and samples.max() <= 1
        assert norms.max() > 3 * np.abs(samples - x[None]).max()  # an L2 shape, not a box
        assert np.all(average_pairwise_distance(np.swapaxes(samples, 0, 1)) > 0), fn.__name__
    result = diversity_analysis(model, x, y, L2Ball(0.5), num_samples=3, exp_steps=2,
                                exp_mc_samples=2, pgd_steps=2, batch_size=3, num_projected=1,
                                verbose=False)
    # Two points of the ball are at most its diameter apart.
    assert np.all(result.exp_distance <= 1.0 + 1e-5) and np.all(result.pgd_distance <= 1.0)
    assert result.settings["norm"] == "l2"


def test_diversity_analysis_numbers_and_projections():
    x, y = make_tiny_images(4, 16)
    result = diversity_analysis(tiny_classifier(), x, y, EPS, num_samples=3, exp_steps=2,
                                exp_mc_samples=2, pgd_steps=2, batch_size=2, num_projected=3,
                                verbose=False)
    diameter = 2 * EPS * np.sqrt(16 * 16 * 3)  # the largest L2 distance inside the ball
    for d in (result.exp_distance, result.pgd_distance):
        assert d.shape == (4,) and np.all(d > 0) and np.all(d <= diameter)
    assert len(result.projections) == 3  # spread over two batches
    assert result.projections[0][0].shape == (3, 2) == result.projections[0][1].shape
    assert 0 <= result.exp_fooling_rate <= 1 and 0 <= result.pgd_fooling_rate <= 1
    blob = json.loads(json.dumps(result.to_json()))
    assert blob["exp_mean_distance"] == pytest.approx(result.exp_distance.mean())
    assert blob["settings"]["num_samples"] == 3


# ------------------------------------------------------------------------- curvature
def test_power_iteration_matches_eigvalsh_of_the_explicit_hessian():
    model = smooth_model()
    x = np.random.default_rng(0).uniform(size=(3, 4, 4, 1)).astype(np.float32)
    y = np.array([0, 1, 2], np.int32)
    hessians = [explicit_hessian(model, x[b], y[b]) for b in range(3)]
    v = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    hv = hessian_vector_product(model, tf.constant(x), tf.constant(y), tf.constant(v)).numpy()
    for b in range(3):  # the batched HVP gives each example its own H_b v_b
        np.testing.assert_allclose(hv[b].ravel(), hessians[b] @ v[b].ravel(), rtol=1e-4,
                                   atol=1e-6)
    eig = tf.function(lambda a, b: dominant_hessian_eigenvalue(model, a, b, iterations=60))(
        tf.constant(x), tf.constant(y)).numpy()
    for b in range(3):
        w = np.linalg.eigvalsh((hessians[b] + hessians[b].T) / 2)
        assert abs(w).max() > 1e-3  # non-trivial
        assert eig[b] == pytest.approx(w[np.argmax(np.abs(w))], rel=1e-3)


def test_power_iteration_keeps_the_sign_of_a_negative_dominant_eigenvalue():
    # Logits [-50, q(x)] with q = -sum(x^2) and label 0: CE = 50 + log(e^-50 + e^q), which
    # is 50 + q(x) up to e^-50, so the Hessian is -2 I and the dominant eigenvalue is -2.
    inputs = keras.Input((2, 2, 1))
    q = keras.layers.Lambda(lambda t: -tf.reduce_sum(tf.square(t), axis=[1, 2, 3])[:, None])(
        inputs)
    logits = keras.layers.Lambda(lambda t: tf.concat([tf.fill(tf.shape(t), -50.0), t], 1))(q)
    model = keras.Model(inputs, logits)
    x = tf.constant(np.full((2, 2, 2, 1), 0.1, np.float32))
    eig = dominant_hessian_eigenvalue(model, x, tf.constant([0, 0]), iterations=3).numpy()
    np.testing.assert_allclose(eig, -2.0, rtol=1e-4)


def test_curvature_analysis_batches_and_json():
    x, y = make_tiny_images(4, 16)
    result = curvature_analysis(tiny_classifier(), x, y, iterations=3, batch_size=2,
                                verbose=False)
    assert result.eigenvalues.shape == (4,) and np.all(np.isfinite(result.eigenvalues))
    assert json.loads(json.dumps(result.to_json()))["mean"] == pytest.approx(result.mean)


# ------------------------------------------------------------------------- landscape
def test_loss_grid_origin_is_the_clean_loss_and_axes_are_sign_directions():
    x, y = make_tiny_images(2, 16)
    model = tiny_classifier()
    result = loss_grid(model, x, y, EPS, grid_size=5, span=1.0, seed=4)
    clean = per_example_ce(model(x, training=False), y).numpy()
    assert result.losses.shape == (2, 5, 5)
    np.testing.assert_allclose(result.losses[:, 2, 2], clean, rtol=1e-5)
    np.testing.assert_allclose(result.clean_losses, clean, rtol=1e-5)
    # Corner (+1, -1): x + eps * sign(grad) - eps * r, clipped.
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        loss = per_example_ce(model(xt, training=False), y)
    grad = tape.gradient(loss, xt).numpy()
    from adt_tf.analysis.landscape import landscape_directions
    _, d_rand = landscape_directions(model, x, y, EPS, seed=4)
    np.testing.assert_allclose(np.abs(d_rand.numpy()), EPS, rtol=1e-6)
    corner = np.clip(x + EPS * np.sign(grad) - d_rand.numpy(), 0, 1)
    expected = per_example_ce(model(corner, training=False), y).numpy()
    np.testing.assert_allclose(result.losses[:, 4, 0], expected, rtol=1e-4)


# ------------------------------------------------------------------------- plots
def check_png(picture):
    assert os.path.getsize(picture.path) > 1000
    assert imread(picture.path).shape[:2] == (picture.height, picture.width)


def test_every_plot_writes_a_png_of_the_stated_size(tmp_path):
    rng = np.random.default_rng(0)
    pic = plot_diversity([(rng.normal(size=(4, 2)), rng.normal(size=(4, 2)))] * 5,
                         str(tmp_path / "div.png"), columns=3, panel_inches=2.0, dpi=50)
    assert (pic.width, pic.height) == (300, 2 * 100 + 20)
    check_png(pic)
    x, y = make_tiny_images(2, 16)
    grid = loss_grid(tiny_classifier(), x, y, EPS, grid_size=3)
    for kind in ("contour", "surface"):
        check_png(plot_landscapes({"a": grid, "b": grid}, str(tmp_path / f"l_{kind}.png"),
                                  kind=kind, panel_inches=2.0, dpi=50))
    curv = {"a": CurvatureResult(np.array([1.0, 2.0]), {}),
            "b": CurvatureResult(np.array([0.5, 0.7]), {})}
    check_png(plot_curvature(curv, str(tmp_path / "curv.png"), dpi=50))
    points = [LambdaPoint(0.0, 0.8, {"pgd": 0.4}, -3.1), LambdaPoint(0.01, 0.78, {"pgd": 0.45},
                                                                     -2.9),
              LambdaPoint(0.01, 0.79, {"pgd": 0.47}, None)]
    check_png(plot_lambda_study(points, str(tmp_path / "lam.png"), dpi=50))


# ------------------------------------------------------------------------- lambda table
def test_trial_tables_in_csv_and_json(tmp_path):
    rows = [
        {"trial_id": "0", "status": "COMPLETED", "entropy_weight": 0.0,
         "val_clean_accuracy": 0.8, "val_robust_accuracy": 0.40, "entropy": -3.2},
        {"trial_id": "1", "status": "COMPLETED", "entropy_weight": 0.01,
         "val_clean_accuracy": 0.79, "val_robust_accuracy": 0.45, "entropy": "n/a"},
        {"trial_id": "2", "status": "RUNNING", "entropy_weight": 0.1,
         "val_clean_accuracy": None, "val_robust_accuracy": None, "entropy": None},
    ]
    with open(tmp_path / "t.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "t.json").write_text(json.dumps(rows))
    for name in ("t.csv", "t.json"):
        points = read_trial_table(str(tmp_path / name))
        assert [p.lam for p in points] == [0.0, 0.01]  # the running trial is left out
        assert points[0].robust_accuracy == {"val_robust_accuracy": 0.4}
        assert points[0].clean_accuracy == 0.8 and points[1].entropy is None
    (tmp_path / "bad.csv").write_text("alpha,robust\n1,2\n")
    with pytest.raises(ValueError, match="no lambda column"):
        read_trial_table(str(tmp_path / "bad.csv"))
    with pytest.raises(ValueError, match="missing.csv"):
        read_trial_table(str(tmp_path / "missing.csv"))


# ------------------------------------------------------------------------- bad input
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


# ------------------------------------------------------------------------- adt-analyze
def test_adt_analyze_end_to_end_writes_every_output(tmp_path):
    # A 16x16 dataset folder and a saved tiny classifier in a training workdir whose
    # config.json gives lambda.
    x, y = make_tiny_images(8, 16)
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        np.savez(data / f"{split}.npz", x=(x * 255).round().astype(np.uint8), y=y,
                 **({"num_classes": 10} if split == "train" else {}))  # a few images
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
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "trainers.analyze", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
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

    bad = subprocess.run([sys.executable, "-m", "trainers.analyze", "--model=no/such.keras",
                          f"--out={out}"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode == 2 and "'no/such.keras' does not exist" in bad.stderr


def test_several_models_side_by_side_and_a_lambda_table(tmp_path):
    # In-process: a .keras file and a workdir analysed together, lambdas given explicitly,
    # then the lambda study from a trial table without any model.
    x, y = make_tiny_images(8, 16)
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        np.savez(data / f"{split}.npz", x=(x * 255).round().astype(np.uint8), y=y,
                 **({"num_classes": 10} if split == "train" else {}))  # a few images
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
