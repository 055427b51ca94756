"""The evaluation: worst case across a suite, per-attack modes, cache, report, sanity checks,
gradient-free attacks on a gradient-blocked model, bad input."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf.attacks import ATTACKS
from adt_tf.evaluation import evaluate, sanity
from adt_tf.evaluation.report import EvaluationResult
from adt_tf.evaluation.suites import CATALOGUE, SUITES, parse_overrides, resolve_suite
from adt_tf.loading import load_classifier
from tests.helpers import tiny_classifier, trained_tiny_classifier

EPS = 8 / 255
SMALL = {"square": {"num_queries": 100}, "spsa": {"steps": 8, "samples": 32},
         "pgd20": {"steps": 10}}


def small(suite):
    """The SMALL settings of the attacks in `suite` (overriding others is an error)."""
    return {k: v for k, v in SMALL.items() if k in suite.split(",")}


#: The images of the `trained` fixture (conftest.py) these tests attack.
TRAINED_EXAMPLES = 48


class StopGradient(keras.layers.Layer):
    def call(self, x):
        return tf.stop_gradient(x)


class Noise(keras.layers.Layer):
    def call(self, x):
        return x + tf.random.normal(tf.shape(x), stddev=0.05)


def wrap(model, before=None, after=None):
    inputs = keras.Input(model.input_shape[1:])
    h = before(inputs) if before is not None else inputs
    out = model(h)
    return keras.Model(inputs, after(out) if after is not None else out)


def test_worst_case_is_the_per_example_and_of_the_attacks(trained):
    model, x, y = trained
    result = evaluate(model, x, y, threat=EPS, suite="fgsm,pgd20,square", per_attack="all",
                      overrides=small("fgsm,pgd20,square"), batch_size=64, seed=5, verbose=0,
                      sanity_checks=False)
    clean = np.argmax(model(x), -1) == y
    idx = np.flatnonzero(clean)
    expected = clean.copy()
    for spec in resolve_suite("fgsm,pgd20,square", small("fgsm,pgd20,square")):
        # One batch (64 >= N): its seed is [seed, 0].
        x_adv = ATTACKS[spec.attack](model, x[idx], y[idx], EPS, seed=tf.constant([5, 0]),
                                     **spec.params)
        correct = np.zeros(len(x), bool)
        correct[idx] = np.argmax(model(x_adv), -1) == y[idx]
        np.testing.assert_array_equal(result.per_example[spec.name], correct)
        assert result.attack(spec.name).accuracy == pytest.approx(correct.mean())
        assert result.attack(spec.name).evaluated_on == "clean_correct"
        expected &= correct
    np.testing.assert_array_equal(result.per_example["robust"], expected)
    assert result.robust_accuracy == pytest.approx(expected.mean())
    assert result.clean_accuracy == pytest.approx(clean.mean())
    assert result.robust_accuracy < result.clean_accuracy
    for attack in result.attacks:
        assert result.robust_accuracy <= attack.accuracy


def test_remaining_mode_attacks_only_survivors_and_says_so(trained, tmp_path):
    model, x, y = trained
    kwargs = dict(threat=EPS, suite="fgsm,pgd20,square", per_attack="remaining",
                  overrides=small("fgsm,pgd20,square"), batch_size=64, verbose=0,
                  sanity_checks=False)
    result = evaluate(model, x, y, cache_dir=str(tmp_path), **kwargs)
    survivors = result.per_example["clean"].copy()
    for attack in result.attacks:
        assert attack.accuracy is None and attack.evaluated_on == "still_robust"
        assert attack.num_attacked == survivors.sum()
        survivors &= result.per_example[attack.name]
        assert attack.robust_after == pytest.approx(survivors.mean())
    assert result.robust_accuracy == pytest.approx(survivors.mean())

    # Resumable: the same call again reads every attack from the cache.
    again = evaluate(model, x, y, cache_dir=str(tmp_path), **kwargs)
    assert all(a.cached for a in again.attacks)
    np.testing.assert_array_equal(again.per_example["robust"], result.per_example["robust"])
    # The time the cached attacks took when they ran is kept and said apart from this run's.
    assert result.cached_seconds == 0.0
    assert again.cached_seconds == pytest.approx(sum(a.seconds for a in result.attacks))
    assert f"took {again.cached_seconds:.1f} s more" in again.to_markdown()
    assert "from the cache" not in result.to_markdown()
    # Other settings are another cache entry.
    other = evaluate(model, x, y, cache_dir=str(tmp_path), **dict(kwargs, threat=4 / 255))
    assert not any(a.cached for a in other.attacks)


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


def test_result_writes_json_markdown_and_per_example(trained, tmp_path):
    model, x, y = trained
    result = evaluate(model, x[:16], y[:16], threat=EPS, suite="quick", verbose=0,
                      model_name="tiny", dataset="tiny_cifar", sanity_inputs=16)
    paths = result.save(str(tmp_path))
    data = json.loads(open(paths["json"]).read())
    assert data["num_examples"] == 16 and data["epsilon"] == pytest.approx(EPS)
    assert data["attacks"][0]["params"] == {"steps": 20, "restarts": 1, "random_start": True,
                                            "epsilon": EPS, "seed": 0}
    assert "per_example" not in data and data["environment"]["tensorflow"] == tf.__version__
    assert EvaluationResult.from_dict(data).robust_accuracy == result.robust_accuracy
    text = open(paths["md"]).read()
    assert "| PGD-20 | white-box |" in text and "16 inputs" in text and "8/255" in text
    assert np.load(paths["npz"])["robust"].shape == (16,)


def test_suites_are_as_documented():
    assert SUITES["quick"] == ("pgd20",)
    assert SUITES["autoattack"] == ("apgd_ce", "apgd_t", "fab_t", "square")
    assert SUITES["full"] == SUITES["paper"] + ("fea_distinct", "spsa512") + SUITES["autoattack"]
    paper = {CATALOGUE[n].attack for n in SUITES["paper"]}
    assert paper == {"fgsm", "pgd", "mim", "cw", "fea", "spsa", "transfer", "exp", "exp_am",
                     "imp_am"}
    assert CATALOGUE["pgd100"].params["steps"] == 100
    assert CATALOGUE["square"].params["num_queries"] == 5000
    assert CATALOGUE["fea"].params["num_targets"] == 200
    # The paper suite's FeaAttack and SPSA are the authors' scripts'; ours stay in `full`.
    assert CATALOGUE["fea"].params["random_start"] and CATALOGUE["fea"].params[
        "with_replacement"]
    assert CATALOGUE["spsa"].params["samples"] == 128  # samples_per_draw=256 evaluations
    assert not CATALOGUE["spsa"].params["random_start"]
    assert CATALOGUE["spsa512"].params["samples"] == 256
    assert not CATALOGUE["fea_distinct"].params["with_replacement"]
    assert resolve_suite("paper", {"fea": {"num_targets": 20}})[5].display_label == \
        "FeaAttack (20 targets)"


def test_skipped_attacks_are_reported_not_counted(trained):
    model, x, y = trained
    result = evaluate(model, x[:16], y[:16], threat=EPS, suite="fgsm,transfer_pgd20",
                      verbose=0, sanity_checks=False)
    assert result.attack("transfer_pgd20").skipped == "no source model given"
    assert result.robust_accuracy == pytest.approx(result.attack("fgsm").robust_after)
    assert "skipped: no source model given" in result.to_markdown()


def test_black_box_attacks_need_no_gradient_and_masking_is_flagged(trained):
    model, x, y = trained
    blocked = wrap(model, before=StopGradient())
    np.testing.assert_allclose(blocked(x), model(x), atol=1e-6)
    result = evaluate(blocked, x, y, threat=EPS, suite="pgd20,spsa,square", per_attack="all",
                      overrides=SMALL, verbose=0, sanity_inputs=48)
    pgd_acc = result.attack("pgd20").accuracy
    # PGD sees a zero gradient: only its random start moves the input.
    assert pgd_acc >= result.clean_accuracy - 0.1
    for name in ("spsa", "square"):
        assert result.attack(name).accuracy < pgd_acc - 0.1, name
    text = " ".join(result.warnings)
    correct = int(np.sum(np.argmax(model(x[:48]), -1) == y[:48]))
    assert "exactly zero" in text and f"on {correct} of {correct} clean-correct inputs" in text
    assert "stronger than every white-box attack" in text
    assert "epsilon = 1" in text  # PGD cannot move even with the whole pixel range allowed
    assert result.sanity["gradients"]["zero"] == 1.0
    assert result.sanity["gradients"]["loss"] == "dlr"


def test_black_box_check_sees_inputs_later_attacks_skipped_in_remaining_mode(trained):
    """Square before APGD-CE, AutoAttack's way: the inputs Square breaks are never given to
    APGD-CE; the check must still see that the gradient attacks could not break them."""
    model, x, y = trained
    blocked = wrap(model, before=StopGradient())
    suite = "pgd20,square,apgd_ce"
    overrides = {"square": {"num_queries": 200}, "apgd_ce": {"steps": 5}}
    result = evaluate(blocked, x, y, threat=EPS, suite=suite, per_attack="remaining",
                      overrides=overrides, verbose=0, sanity_inputs=8)
    assert result.attack("square").num_broken >= 2
    assert any("survived every white-box attack" in w for w in result.warnings)
    # The healthy model: whatever Square breaks, APGD-CE breaks too: no such warning.
    healthy = evaluate(model, x, y, threat=EPS, suite=suite, per_attack="remaining",
                       overrides=overrides, verbose=0, sanity_inputs=8)
    assert not any("survived every white-box attack" in w for w in healthy.warnings)


def test_healthy_model_passes_the_model_checks(trained):
    model, x, y = trained
    warnings = sanity.check_logits(model(x).numpy())
    warnings += sanity.check_gradients(model, x, y, EPS)[0] + sanity.check_randomness(model, x)[0]
    assert warnings == []
    sweep = sanity.epsilon_sweep(model, x, y, EPS, steps=5)
    assert sanity.check_epsilon_sweep(sweep) == []
    assert sweep["accuracy"][-1] < sweep["accuracy"][0]
    unbounded = sanity.unbounded_accuracy(model, x, y)
    assert unbounded["accuracy"] <= sanity.UNBOUNDED_THRESHOLD
    assert sanity.check_unbounded(unbounded) == []


class Quantised:
    """A classifier behind a non-differentiable input quantisation (64 levels, finer than
    epsilon): its input gradient is zero everywhere, yet small perturbations change it."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x, training=False):
        return self.model(tf.stop_gradient(tf.round(x * 64.0) / 64.0), training=False)


def test_masking_by_quantisation_is_flagged_by_the_gradient_and_unbounded_checks(trained):
    model, x, y = trained
    masked = Quantised(model)
    warnings, stats = sanity.check_gradients(masked, x, y, EPS)
    n = stats["num_inputs"]
    assert n == int(np.sum(np.argmax(masked(x), -1) == y)) > 0
    assert stats["zero_inputs"] == n and f"on {n} of {n} clean-correct" in warnings[0]
    unbounded = sanity.unbounded_accuracy(masked, x, y)
    assert unbounded["accuracy"] > 0.3  # it never moves from the clean inputs
    assert "epsilon = 1" in sanity.check_unbounded(unbounded)[0]


def test_one_input_with_a_zero_gradient_is_enough_to_warn(trained):
    """AutoAttack's rule (any input), not a share."""
    model, x, y = trained
    keep = np.argmax(model(x), -1) == y
    x, y = x[keep][:20], y[keep][:20]

    def partly_masked(images, training=False):
        logits = model(images, training=False)
        first = tf.one_hot(tf.zeros([1], tf.int32), logits.shape[-1]) * 0.0
        frozen = tf.stop_gradient(logits[:1]) + first
        return tf.concat([frozen, logits[1:]], axis=0)

    warnings, stats = sanity.check_gradients(partly_masked, x, y, EPS)
    assert stats["zero_inputs"] == 1 and f"on 1 of {len(y)} clean-correct" in warnings[0]


def test_probabilities_and_randomness_are_flagged(trained):
    model, x, _ = trained
    probs = wrap(model, after=keras.layers.Softmax())
    assert "probabilities" in sanity.check_logits(probs(x).numpy())[0]
    noisy = wrap(model, before=Noise())
    assert "randomised" in sanity.check_randomness(noisy, x)[0][0]


def test_epsilon_sweep_check():
    flat = {"epsilons": [1 / 255, 2 / 255, 4 / 255], "accuracy": [0.5, 0.5, 0.5],
            "num_inputs": 100}
    rising = dict(flat, accuracy=[0.3, 0.5, 0.2])
    falling = dict(flat, accuracy=[0.5, 0.3, 0.1])
    assert "does not fall" in sanity.check_epsilon_sweep(flat)[0]
    assert "rises" in sanity.check_epsilon_sweep(rising)[0]
    assert sanity.check_epsilon_sweep(falling) == []


def test_savedmodel_export_is_evaluated_like_the_keras_model(trained, tmp_path):
    from export.exporter import export_classifier

    model, x, y = trained
    base = str(tmp_path / "exports")
    export_classifier(model, base, "tiny", verify_export=False, serving_root=base)
    loaded = load_classifier(os.path.join(base, "tiny"))  # picks the version folder 1
    assert loaded.image_shape == (16, 16, 3)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-5)
    kwargs = dict(threat=EPS, suite="pgd20,fea,exp_am", per_attack="all", verbose=0,
                  sanity_checks=False,
                  overrides={"pgd20": {"steps": 5}, "fea": {"num_targets": 1, "steps": 2},
                             "exp_am": {"train_steps": 3, "generator_width": 2,
                                        "check_samples": 2}})
    from_export = evaluate(loaded, x, y, model_id="export", **kwargs)
    from_keras = evaluate(model, x, y, **kwargs)
    assert from_export.attack("pgd20").accuracy == pytest.approx(
        from_keras.attack("pgd20").accuracy, abs=1 / 48)
    assert "penultimate" in from_export.attack("fea").skipped
    assert "divide by 4" in from_export.attack("exp_am").skipped
    # The Keras model runs both: FeaAttack and a generator fitted on the evaluation inputs.
    assert from_keras.attack("fea").skipped is None
    assert from_keras.attack("exp_am").num_attacked == from_keras.attack("pgd20").num_attacked
    assert from_keras.attack("exp_am").params["train_steps"] == 3


def test_bad_input(trained, tmp_path):
    model, x, y = trained
    for eps in (0.0, -0.01, 8.0, float("nan")):
        with pytest.raises(ValueError, match="epsilon"):
            evaluate(model, x, y, threat=eps, verbose=0)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        evaluate(model, x, y, threat=EPS, overrides={"pgd20": {"steps": 0}}, verbose=0)
    with pytest.raises(ValueError, match="suites: autoattack, full, paper, paper_l2, quick; "
                                         "attacks: fgsm, pgd20"):
        evaluate(model, x, y, threat=EPS, suite="strongest", verbose=0)
    with pytest.raises(ValueError, match="Unknown suite or attack 'pgd20,deepfool'"):
        resolve_suite("pgd20,deepfool")
    with pytest.raises(ValueError, match="unknown parameter 'stepz'.*known: .*steps"):
        resolve_suite("quick", {"pgd20": {"stepz": 3}})
    with pytest.raises(ValueError, match="not in the suite"):
        resolve_suite("quick", {"square": {"num_queries": 3}})
    with pytest.raises(ValueError, match="ATTACK.PARAM=VALUE"):
        parse_overrides("steps=3")
    # A value of the wrong type names the parameter (not int()'s "invalid literal").
    for text, match in (("pgd20.steps=abc", "pgd20.steps must be a number, got 'abc'"),
                        ("pgd20.step_size=fast", "pgd20.step_size must be a number"),
                        ("pgd20.random_start=3", "pgd20.random_start must be true or false"),
                        ("pgd20.steps=2.5", "pgd20.steps must be an integer >= 1, got 2.5")):
        with pytest.raises(ValueError, match=match):
            resolve_suite("quick", parse_overrides(text))
    assert resolve_suite("quick", parse_overrides("pgd20.step_size=null"))[0].params[
        "step_size"] is None
    with pytest.raises(ValueError, match="per_attack mode"):
        evaluate(model, x, y, threat=EPS, per_attack="some", verbose=0)
    big = np.zeros((4, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match=r"shape \(32, 32, 3\) but the model expects "
                                         r"\(16, 16, 3\)"):
        evaluate(model, big, np.zeros(4, int), threat=EPS, verbose=0)
    with pytest.raises(ValueError, match="Labels must lie in"):
        evaluate(model, x[:2], np.array([0, 10]), threat=EPS, verbose=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate(model, x[:2] * 255, y[:2], threat=EPS, verbose=0)
    with pytest.raises(ValueError, match="does not exist"):
        load_classifier(str(tmp_path / "missing.keras"))
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="garbage.keras is not a readable .keras archive"):
        load_classifier(str(garbage))
    with pytest.raises(ValueError, match="without classifier.keras or saved_model.pb"):
        load_classifier(str(tmp_path))
    with pytest.raises(ValueError, match="model_id"):
        evaluate(lambda a, training=False: tiny_classifier()(a), x[:2], y[:2], threat=EPS,
                 cache_dir=str(tmp_path), verbose=0)


def test_a_foreign_keras_file_and_a_savedmodel_without_variables_are_named(tmp_path):
    """Hostile model arguments (issue 28 point 6): a .keras archive of a class nobody
    registered, and an exported SavedModel whose variables were removed: a ValueError
    naming the path and the reason (adt-evaluate and adt-export exit 2 with it)."""
    import shutil
    import zipfile

    from export.exporter import export_classifier

    foreign = tmp_path / "foreign.keras"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("config.json", '{"class_name": "Whatever", "config": {}, '
                                        '"module": "nowhere"}')
        archive.writestr("metadata.json", '{"keras_version": "3.15.1"}')
    with pytest.raises(ValueError, match=r"Could not load a Keras classifier from .*foreign"
                                         r"\.keras .*Whatever"):
        load_classifier(str(foreign))
    folder = export_classifier(tiny_classifier(), str(tmp_path / "exports"), "m",
                               verify_export=False)
    shutil.rmtree(os.path.join(folder, "variables"))
    with pytest.raises(ValueError, match=r"Could not load the SavedModel at .*variables"):
        load_classifier(folder)
