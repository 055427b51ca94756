"""`adt_tf.evaluation.runner`: the worst case across a suite, the per-attack modes, black-box
attacks on a gradient-blocked model, SavedModels, bad input."""

import os

import numpy as np
import pytest
import tensorflow as tf

from adt_tf.artifacts.loading import load_classifier
from adt_tf.attacks import ATTACKS
from adt_tf.evaluation import evaluate
from adt_tf.evaluation.suites import parse_overrides, resolve_suite
from tests.adt_tf.evaluation.helpers import EPS, SMALL, StopGradient, small, wrap
from tests.helpers import make_tiny_images, tiny_classifier

#: The images of the `trained` fixture (conftest.py) these tests attack.
TRAINED_EXAMPLES = 48


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


def test_skipped_attacks_are_reported_not_counted(trained):
    model, x, y = trained
    result = evaluate(model, x[:16], y[:16], threat=EPS, suite="fgsm,transfer_pgd20",
                      verbose=0, sanity_checks=False)
    assert result.attack("transfer_pgd20").skipped == "no source model given"
    assert result.robust_accuracy == pytest.approx(result.attack("fgsm").robust_after)
    assert "skipped: no source model given" in result.to_markdown()


@pytest.mark.slow
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


@pytest.mark.slow
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
    for text, match in (("pgd20.steps=abc", "pgd20.steps must be an integer, got 'abc'"),
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


def test_attack_overrides_read_settings_as_the_command_line_does():
    """--attack_params spells a switch and a number as every other flag does (true/false/1/0
    in any case, fractions a/b), and still refuses what is neither."""
    for text, value in (("False", False), ("TRUE", True), ("0", False), ("1", True)):
        spec = resolve_suite("quick", parse_overrides(f"pgd20.random_start={text}"))[0]
        assert spec.params["random_start"] is value
    spec = resolve_suite("quick", parse_overrides("pgd20.step_size=2/255,pgd20.steps=7"))[0]
    assert spec.params["step_size"] == pytest.approx(2 / 255)
    assert spec.params["steps"] == 7 and isinstance(spec.params["steps"], int)
    with pytest.raises(ValueError, match="pgd20.random_start must be true, false, 1 or 0, "
                                         "got 'maybe'"):
        resolve_suite("quick", parse_overrides("pgd20.random_start=maybe"))
    with pytest.raises(ValueError, match="pgd20.steps must be an integer, got '7/2'"):
        resolve_suite("quick", parse_overrides("pgd20.steps=7/2"))


def test_a_foreign_keras_file_and_a_savedmodel_without_variables_are_named(tmp_path):
    """Hostile model arguments: a .keras archive of a class nobody
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


def test_a_transfer_source_with_fewer_classes_than_the_data_is_named():
    x, y = make_tiny_images(16)
    with pytest.raises(ValueError, match="--source_model: Labels must lie in"):
        evaluate(tiny_classifier(), x, y, 8 / 255, suite="transfer_pgd20",
                 source_model=tiny_classifier(num_classes=2), sanity_checks=False, verbose=0)
