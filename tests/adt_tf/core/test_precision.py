"""Mixed precision (bfloat16 on CPU, float16 with loss scaling) and XLA for the methods."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.adt.distributions import ExplicitAdversarialDistribution
from adt_tf.adt.inner_maximization import explicit_inner_maximization
from adt_tf.core.precision import (
    as_float32,
    float32_copy,
    mixed_policy_name,
    native_reduced_precision,
    precision_policy,
)
from adt_tf.methods import METHODS, ADTExp
from adt_tf.training.config import RunConfig
from adt_tf.training.run import run_training
from tests.adt_tf.adt.test_distributions import numpy_neg_log_prob
from tests.helpers import ce_loss, make_tiny_images, tiny_classifier

EPS = 8 / 255


@pytest.fixture
def policy():
    """Sets a global Keras dtype policy for one test and restores float32 afterwards."""
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy("float32")


def test_policy_names_and_the_context_restores_the_previous_policy():
    assert mixed_policy_name() == ("mixed_float16" if tf.config.list_physical_devices("GPU")
                                   else "mixed_bfloat16")
    with precision_policy(True) as name:
        assert keras.config.dtype_policy().name == name == mixed_policy_name()
    assert keras.config.dtype_policy().name == "float32"
    with precision_policy(False) as name:
        assert name == "float32"
    assert as_float32(tf.ones([2], tf.bfloat16)).dtype == tf.float32
    assert as_float32(tf.ones([2], tf.float64)).dtype == tf.float64


def test_distribution_from_low_precision_parameters_is_float32():
    rng = np.random.default_rng(0)
    mu = tf.constant(rng.normal(0, 2, (2, 4, 4, 3)), tf.bfloat16)
    v = tf.constant(rng.normal(0, 1, (2, 4, 4, 3)), tf.float16)
    with tf.GradientTape() as tape:
        tape.watch([mu, v])
        dist = ExplicitAdversarialDistribution(mu, v, EPS)
        s = dist.sample(3, seed=tf.constant([1, 2]))
        objective = tf.reduce_mean(s.neg_log_prob)
    assert s.delta.dtype == s.pre_tanh.dtype == s.neg_log_prob.dtype == tf.float32
    mu32, v32 = (tf.cast(t, tf.float32).numpy() for t in (mu, v))
    want = np.stack([numpy_neg_log_prob(s.pre_tanh[i], mu32, v32, EPS) for i in range(3)])
    np.testing.assert_allclose(s.neg_log_prob, want, rtol=1e-4, atol=1e-4)
    g_mu, g_v = tape.gradient(objective, [mu, v])
    assert g_mu.dtype == tf.bfloat16 and g_v.dtype == tf.float16  # flows back through casts
    assert np.all(np.isfinite(tf.cast(g_mu, tf.float32))) and float(tf.reduce_sum(
        tf.abs(tf.cast(g_v, tf.float32)))) > 0


def moved_fraction(classifier, x, y):
    """Fraction of pixels whose mu took the first near-sign step (|step| = lr = 0.3)."""
    result = explicit_inner_maximization(
        classifier, x, y, threat=EPS, entropy_weight=0.01, steps=1, samples=2, lr=0.3,
        beta1=0.0, beta2=0.0, seed=tf.constant([1, 2]))
    for t in (result.loc, result.raw_scale, result.objective, result.entropy):
        assert t.dtype == tf.float32 and np.all(np.isfinite(t.numpy()))
    return float(np.mean(np.abs(result.loc.numpy()) > 0.15))


@pytest.mark.parametrize("mixed", [  # float16 (with its loss scaling) in the slow set
    "mixed_bfloat16", pytest.param("mixed_float16", marks=pytest.mark.slow)])
def test_inner_loop_keeps_float32_with_a_low_precision_classifier(policy, mixed):
    x, y = make_tiny_images(16)
    init = tiny_classifier().get_weights()
    reference = moved_fraction(tiny_classifier(), x, y)  # float32
    policy(mixed)
    classifier = tiny_classifier()
    classifier.set_weights(init)
    assert classifier.layers[2].compute_dtype == mixed.split("_")[1]
    # As many pixels take their step as in float32 (clipped pixels have no gradient in
    # either, and low precision flips a few signs): no wholesale underflow of the input
    # gradients to zero in the float16 backward pass.
    assert reference > 0.5
    assert moved_fraction(classifier, x, y) >= reference - 0.02


def fit_fixed_batch(policy_name, init, x, y):
    keras.config.set_dtype_policy(policy_name)
    classifier = tiny_classifier(width=8, dense_units=32)
    classifier.set_weights(init)
    trainer = ADTExp(classifier, inner_steps=3, mc_samples=2, seed=1)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=ce_loss())
    history = trainer.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False).history
    return trainer, history, classifier.get_weights()


@pytest.mark.slow
@pytest.mark.parametrize("mixed", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_training_stays_close_to_float32(policy, mixed):
    x, y = make_tiny_images(32)
    init = tiny_classifier(width=8, dense_units=32).get_weights()
    _, reference, ref_weights = fit_fixed_batch("float32", init, x, y)
    trainer, history, weights = fit_fixed_batch(mixed, init, x, y)
    assert trainer.classifier.layers[2].compute_dtype == mixed.split("_")[1]
    assert trainer.classifier.layers[2].kernel.dtype == "float32"  # float32 master weights
    if mixed == "mixed_float16":  # Keras wraps the optimizer; the train step scales the loss
        assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert history["loss"][-1] < history["loss"][0]
    np.testing.assert_allclose(history["loss"], reference["loss"], atol=0.01)
    np.testing.assert_allclose(history["entropy"], reference["entropy"], atol=0.01)
    # The low-precision run ends near the float32 one, measured over all weights: closer to
    # it than half the distance float32 training moved (0.27 and 0.30 of it in the one test
    # order where a bound of 0.25 failed; the largest single-weight difference failed too).
    flat = lambda ws: np.concatenate([np.ravel(w) for w in ws])  # noqa: E731
    moved = np.linalg.norm(flat(ref_weights) - flat(init))
    diff = np.linalg.norm(flat(ref_weights) - flat(weights))
    assert diff < 0.5 * moved, (diff, moved)


@pytest.mark.slow
def test_run_training_with_mixed_precision(tmp_path):
    report = run_training(RunConfig.from_flags(
        workdir=str(tmp_path / "run"), epochs=1, max_train_examples=32, batch_size=16,
        model_params={"width": 4}, eval_examples=16, mixed_precision=True, verbose=0,
        method_params={"inner_steps": 1, "mc_samples": 2}))
    assert keras.config.dtype_policy().name == "float32"  # restored after the run
    classifier = keras.saving.load_model(report["classifier_path"])
    assert classifier.get_layer("conv1").dtype_policy.name == mixed_policy_name()
    assert classifier.get_layer("logits").compute_dtype == "float32"
    with open(os.path.join(tmp_path, "run", "config.json")) as f:
        recorded = json.load(f)
    assert recorded["compute"]["mixed_precision"] is True
    assert recorded["resolved"]["precision_policy"] == mixed_policy_name()
    # The final report attacks the weights' float32 function, not the bfloat16 forward.
    assert report["compute_dtype"] == "float32"


def one_step(method, x, y, jit_compile):
    trainer = METHODS[method](tiny_classifier(), epsilon=EPS, seed=0)
    trainer.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=ce_loss(),
                    metrics=["accuracy"], jit_compile=jit_compile)
    history = trainer.fit(x, y, batch_size=len(x), epochs=2, verbose=0).history
    return trainer, history


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_under_mixed_bfloat16(policy, method):
    x, y = make_tiny_images(8)
    policy("mixed_bfloat16")
    trainer, history = one_step(method, x, y, jit_compile=False)
    assert trainer.classifier.layers[2].compute_dtype == "bfloat16"
    for values in history.values():
        assert np.all(np.isfinite(values)), history


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_under_xla(method):
    x, y = make_tiny_images(8)
    _, history = one_step(method, x, y, jit_compile=True)
    for values in history.values():
        assert np.all(np.isfinite(values)), history


@pytest.mark.parametrize("flags,native", [("fpu sse2 avx512f avx512_bf16", True),
                                          ("fpu sse2 amx_bf16 amx_tile", True),
                                          ("fpu sse2 avx2 avx512f", False)])
def test_native_reduced_precision_reads_the_cpu_flags(tmp_path, flags, native):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("GPU machine: the answer comes from the compute capability")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    answer, reason = native_reduced_precision(str(cpuinfo))
    assert answer is native
    assert ("lacks" in reason) is (not native)
    answer, reason = native_reduced_precision(str(tmp_path / "missing"))
    assert answer is False and "unknown" in reason


def test_float32_copy_computes_the_same_function_in_float32(policy, tmp_path):
    from adt_tf.models import build_model

    policy("mixed_bfloat16")
    mixed = build_model("small_cnn", (16, 16, 3), 10, width=4, batch_norm=True, dropout=0.0)
    policy("float32")
    x, _ = make_tiny_images(8, 16, seed=1)
    mixed(x, training=True)  # moves the BatchNorm statistics away from their start
    # As saved and loaded: the model's own policy reads float32, its layers keep bfloat16.
    path = str(tmp_path / "mixed.keras")
    mixed.save(path)
    mixed = keras.saving.load_model(path, compile=False)
    assert "bfloat16" in {layer.compute_dtype for layer in mixed.layers}
    copy = float32_copy(mixed)
    assert copy.compute_dtype == "float32"
    assert all(layer.compute_dtype == "float32" for layer in copy.layers)
    for a, b in zip(mixed.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    exact = copy(x, training=False).numpy()
    rounded = tf.cast(mixed(x, training=False), tf.float32).numpy()
    assert exact.dtype == np.float32
    # bfloat16 keeps 8 bits of mantissa: the mixed model is the copy up to its rounding,
    # and the copy is not the mixed model (it does not round).
    scale = np.abs(exact).max()
    assert np.abs(exact - rounded).max() < 0.05 * scale
    assert np.abs(exact - rounded).max() > 0
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        total = tf.reduce_sum(copy(xt, training=False))
    assert tape.gradient(total, xt).dtype == tf.float32
    plain = build_model("small_cnn", (16, 16, 3), 10, width=4)
    assert float32_copy(plain) is plain


def test_evaluation_attacks_a_mixed_model_in_float32_unless_asked_for_its_policy(
        policy, tmp_path):
    from adt_tf.evaluation import evaluate
    from adt_tf.models import build_model
    from trainers.evaluate import run_evaluation

    policy("mixed_bfloat16")
    mixed = build_model("small_cnn", (32, 32, 3), 10, width=4, dropout=0.0)
    policy("float32")
    path = str(tmp_path / "mixed.keras")
    mixed.save(path)
    x, y = make_tiny_images(16, 32, seed=2)
    common = dict(threat=EPS, suite="pgd20", overrides={"pgd20": {"steps": 3}},
                  sanity_checks=False, verbose=0, cache_dir=str(tmp_path / "cache"))
    default = evaluate(keras.saving.load_model(path), x, y, **common)
    assert default.compute_dtype == "float32"
    reference = evaluate(float32_copy(keras.saving.load_model(path)), x, y,
                         **dict(common, cache_dir=None))
    np.testing.assert_array_equal(default.per_example["pgd20"], reference.per_example["pgd20"])
    deployed = evaluate(keras.saving.load_model(path), x, y, compute_dtype="policy", **common)
    assert deployed.compute_dtype == "bfloat16"
    assert not deployed.attack("pgd20").cached  # another model for the cache
    assert "Computed in: bfloat16" in deployed.to_markdown()
    result, paths = run_evaluation(path, num_examples=8, out=str(tmp_path / "eval"),
                                   attack_params=["pgd20.steps=2"], sanity_checks=False,
                                   verbose=0)
    assert result.compute_dtype == "float32"
    assert "Computed in: float32" in open(paths["md"]).read()
    with pytest.raises(ValueError, match="compute_dtype must be one of float32, policy"):
        evaluate(mixed, x, y, threat=EPS, compute_dtype="half", verbose=0)


def test_emulation_warning_only_for_mixed_precision_without_native_support(monkeypatch):
    from adt_tf.core import precision

    monkeypatch.setattr(precision, "native_reduced_precision", lambda: (False, "no bf16"))
    assert "emulated" in precision.emulation_warning(True)
    assert "no bf16" in precision.emulation_warning(True)
    assert precision.emulation_warning(False) is None
    monkeypatch.setattr(precision, "native_reduced_precision", lambda: (True, "avx512_bf16"))
    assert precision.emulation_warning(True) is None
