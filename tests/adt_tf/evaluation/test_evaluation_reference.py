"""Our PGD-20 against an independent implementation: adversarial-robustness-toolbox's
ProjectedGradientDescent on the same Keras classifier, inputs and settings (slow; needs the
`reference` extra: pip install adversarial-robustness-toolbox)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from adt_tf import data as data_lib
from adt_tf.attacks import pgd
from adt_tf.models import build_model

art_classification = pytest.importorskip("art.estimators.classification")
art_evasion = pytest.importorskip("art.attacks.evasion")


@pytest.fixture(scope="module")
def setting():
    """A SmallCNN trained on the bundled sample, its test split, and ART's wrapper of it."""
    keras.utils.set_random_seed(0)
    splits = data_lib.load(data_lib.SAMPLE)
    x_train = splits.x_train.astype("float32") / 255.0
    x_test = splits.x_test.astype("float32") / 255.0
    y_test = splits.y_test.astype("int32")
    mean, std = data_lib.channel_stats(splits.x_train)
    model = build_model("small_cnn", (32, 32, 3), 10, width=16, dense_units=64, dropout=0.0,
                        mean=mean, std=std)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.Adam(1e-3), ce)
    model.fit(x_train, splits.y_train, epochs=12, batch_size=64, verbose=0)
    reference = art_classification.TensorFlowV2Classifier(
        model=model, nb_classes=10, input_shape=(32, 32, 3), loss_object=ce,
        clip_values=(0.0, 1.0))
    return model, x_test, y_test, reference


@pytest.mark.slow
def test_pgd20_agrees_with_art_within_one_point(setting):
    model, x_test, y_test, reference = setting

    def accuracy(x_adv):
        return float(np.mean(np.argmax(model.predict(x_adv, verbose=0), -1) == y_test))

    clean = accuracy(x_test)
    report = [f"clean {100 * clean:.2f}% on {len(y_test)} inputs"]
    for eps in (1 / 255, 2 / 255, 8 / 255):
        ours_fn = tf.function(lambda a, b, eps=eps: pgd(model, a, b, eps, steps=20,
                                                         step_size=eps / 4, random_start=True,
                                                         seed=1))
        ours = np.concatenate([ours_fn(x_test[i:i + 250], y_test[i:i + 250]).numpy()
                               for i in range(0, len(x_test), 250)])
        attack = art_evasion.ProjectedGradientDescent(
            reference, norm=np.inf, eps=eps, eps_step=eps / 4, max_iter=20, num_random_init=1,
            batch_size=250, verbose=False)
        theirs = attack.generate(x_test, y=y_test)
        ours_acc, art_acc = accuracy(ours), accuracy(theirs)
        report.append(f"eps {eps * 255:.0f}/255: ours {100 * ours_acc:.2f}%, "
                      f"ART {100 * art_acc:.2f}%")
        print(report[-1])
        assert np.abs(theirs - x_test).max() <= eps + 1e-6
        assert ours_acc < clean, report
        assert abs(ours_acc - art_acc) < 0.01, report


@pytest.mark.slow
def test_pgd20_l2_agrees_with_art_within_one_point(setting):
    """The same under L2 balls: our PGD-L2 (exact projection onto ball and box,
    per-example best iterate) against ART's norm=2 PGD (scale-then-clip, last iterate)."""
    from adt_tf.threat import L2Ball

    model, x_test, y_test, reference = setting

    def accuracy(x_adv):
        return float(np.mean(np.argmax(model.predict(x_adv, verbose=0), -1) == y_test))

    clean = accuracy(x_test)
    report = [f"clean {100 * clean:.2f}% on {len(y_test)} inputs"]
    for eps in (0.1, 0.25, 0.5):
        ours_fn = tf.function(lambda a, b, eps=eps: pgd(model, a, b, L2Ball(eps), steps=20,
                                                         step_size=eps / 4, random_start=True,
                                                         seed=1))
        ours = np.concatenate([ours_fn(x_test[i:i + 250], y_test[i:i + 250]).numpy()
                               for i in range(0, len(x_test), 250)])
        attack = art_evasion.ProjectedGradientDescent(
            reference, norm=2, eps=eps, eps_step=eps / 4, max_iter=20, num_random_init=1,
            batch_size=250, verbose=False)
        theirs = attack.generate(x_test, y=y_test)
        ours_acc, art_acc = accuracy(ours), accuracy(theirs)
        report.append(f"L2 eps {eps}: ours {100 * ours_acc:.2f}%, ART {100 * art_acc:.2f}%")
        print(report[-1])
        for adv in (ours, theirs):
            norms = np.linalg.norm((adv - x_test).reshape(len(x_test), -1), axis=1)
            assert norms.max() <= eps * (1 + 1e-5)
        assert ours_acc < clean, report
        assert abs(ours_acc - art_acc) < 0.01, report


@pytest.mark.slow
def test_apgd_ce_l2_agrees_with_art_within_one_point(setting):
    """APGD-CE under L2 against ART's AutoProjectedGradientDescent(norm=2): the
    same 100 steps, one start, cross-entropy, on the same model and inputs."""
    from adt_tf.attacks import apgd
    from adt_tf.threat import L2Ball

    model, x_test, y_test, reference = setting

    def accuracy(x_adv):
        return float(np.mean(np.argmax(model.predict(x_adv, verbose=0), -1) == y_test))

    report = []
    for eps in (0.25, 0.5):
        ours_fn = tf.function(lambda a, b, eps=eps: apgd(model, a, b, L2Ball(eps), steps=100,
                                                          seed=1))
        ours = np.concatenate([ours_fn(x_test[i:i + 250], y_test[i:i + 250]).numpy()
                               for i in range(0, len(x_test), 250)])
        attack = art_evasion.AutoProjectedGradientDescent(
            reference, norm=2, eps=eps, eps_step=2 * eps, max_iter=100, targeted=False,
            nb_random_init=1, batch_size=250, loss_type="cross_entropy", verbose=False)
        theirs = attack.generate(x_test, y=y_test)
        ours_acc, art_acc = accuracy(ours), accuracy(theirs)
        report.append(f"APGD-CE L2 eps {eps}: ours {100 * ours_acc:.2f}%, "
                      f"ART {100 * art_acc:.2f}%")
        print(report[-1])
        norms = np.linalg.norm((ours - x_test).reshape(len(x_test), -1), axis=1)
        assert norms.max() <= eps * (1 + 1e-5)
        assert ours_acc <= art_acc + 0.01, report  # not weaker than the reference
        assert abs(ours_acc - art_acc) < 0.01, report
